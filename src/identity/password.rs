//! Passwords: policy (length, blocklist, guessability, personal data) and Argon2id hashing.
//! (Being written: see the contract in the task description.)
