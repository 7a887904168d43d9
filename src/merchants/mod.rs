//! Merchants, stores, terminals and their keys, store QR codes.

pub mod qr;
