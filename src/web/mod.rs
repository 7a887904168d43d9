//! The web pages (API.md, "Web pages"): single-page apps on the JSON API, embedded in the binary
//! (`web/` at the top of the repository holds their files; no build step). Only `/app`, the
//! shopper's wallet, exists so far. [`routes`] serves the files with the headers every page needs.

pub mod routes;
