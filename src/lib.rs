#![recursion_limit = "256"]
//! petrel: a NATS-compatible message server on a sharded thread-per-core
//! runtime. See ARCHITECTURE.md for the map.

pub mod account_server;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod compress;
pub mod conf;
pub mod control;
pub mod core;
pub mod http;
pub mod ids;
pub mod index;
pub mod leaf;
pub mod listeners;
pub mod logging;
pub mod mapping;
pub mod monitor;
pub mod options;
pub mod profile;
pub mod proto;
pub mod reload;
pub mod route_tls;
pub mod rt;
pub mod server;
pub mod shard;
pub mod signal;
pub mod stats;
pub mod subject;
pub mod sys;
pub mod timefmt;
pub mod tls;
pub mod tool_client;
pub mod transform;
pub mod ws;
