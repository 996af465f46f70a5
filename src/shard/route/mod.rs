//! Cluster route connections, owned by shards like clients: where they
//! come from (`dial`: the listener, configured and gossip-learned routes),
//! one connection's life (`conn`) and protocol (`link`), and what a shard
//! tells its routes (`announce`), route permissions (`perms`). What arrives is fed to the routing core
//! as a `LinkKind::Route` link (`subscribe_routed`, `publish_routed`);
//! what this server's subscriptions change is announced to every route by
//! the shard's interest task.
//!
//! Routes are pooled as nats-server pools them (`cluster::RoutePool`):
//! several connections per server pair, each account's interest on one of
//! them, pinned accounts on their own.

mod announce;
mod conn;
mod dial;
mod link;
mod perms;

pub use announce::{announce_interest, announce_lame_duck};
pub use dial::{accept_loop, keep_configured, poll_cluster};
