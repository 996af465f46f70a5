//! petrel: a NATS-compatible message server on a sharded thread-per-core
//! runtime. See ARCHITECTURE.md for the map.

pub mod core;
pub mod ids;
pub mod index;
pub mod proto;
pub mod stats;
pub mod subject;
pub mod cli;
pub mod logging;
pub mod options;
pub mod server;
pub mod shard;
