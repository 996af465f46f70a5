//! Cluster route connections, owned by shards like clients: where they
//! come from (`dial`: the listener, configured and gossip-learned routes),
//! one connection's life (`conn`) and protocol (`link`), and what a shard
//! tells its routes (`announce`), route permissions (`perms`). What arrives is fed to the routing core
//! as a `LinkKind::Route` link (`subscribe_routed`, `publish_routed`);
//! what this server's subscriptions change is announced to every route by
//! the shard's interest task.
//!
//! petrel advertises no route pool: one connection per server pair, as a
//! nats-server with `pool_size: -1` (see `proto/route_info.rs`).

mod announce;
mod conn;
mod dial;
mod link;
mod perms;

pub use announce::{announce_interest, announce_lame_duck};
pub use dial::{accept_loop, keep_configured, poll_cluster};
