//! Authentication and authorization: who a client is, which account it
//! belongs to, and what it may publish and subscribe to.

pub mod accounts;
pub mod config;
pub mod go_json;
pub mod jwt;
pub mod password;
pub mod perms;
pub mod store;
pub mod verify;
