//! The web pages (API.md, "Web pages"): single-page apps on the JSON API, embedded in the binary
//! (`web/` at the top of the repository holds their files; no build step). `/app` is the shopper's
//! wallet, `/pos` the cashier's till. [`routes`] serves the files with the headers every page needs.

pub mod routes;
