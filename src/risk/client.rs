//! The client address: the peer, or behind trusted proxies the right-most untrusted
//! `X-Forwarded-For` address. (Being written.)
