//! The sans-IO protocol core: parser, encoder, CONNECT/INFO documents, the
//! error table and the per-connection state machine. Nothing here touches a
//! socket, an executor or a clock.

pub mod connect;
pub mod encode;
pub mod errors;
pub mod info;
pub mod leaf_info;
pub mod parser;
pub mod route;
pub mod route_info;
pub mod session;
pub mod trace;
