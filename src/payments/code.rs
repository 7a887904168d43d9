//! Payment codes shown by the phone. (Being written.)
