//! The EMVCo merchant-presented QR payload of a store. (Being written.)
