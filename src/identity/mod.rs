//! Identity: users, contacts, passwords, second factors, devices, sessions, step-up, recovery.

pub mod password;
