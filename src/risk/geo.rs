//! Country of an address: `.mmdb`, CSV ranges, or built-in registration data. (Being written.)
