//! The shards' runtime: one single-threaded executor per shard thread, an
//! epoll reactor under it, timers, sockets and the channels between
//! shards.
//!
//! Why not glommio (which the design first named): a shard under light
//! request/reply load wakes once per message, and glommio's reactor spends
//! eight `io_uring_enter` calls, a `membarrier` and its timer re-arming on
//! every wake-up. Measured with `perf/reactor-probe` (a forwarder between
//! a requester and a responder, 16 B round trips on this project's 2-vCPU
//! VM), forwarder CPU per round trip: glommio 45 us, a bare io_uring loop
//! 25-29 us, epoll 19 us at 1,000 round trips a second; 70 / 29-30 / 27 us
//! unpaced, where glommio also managed only 8.7k round trips a second
//! against 14-15k. Readiness through epoll with the reads and writes as
//! direct system calls is the data path glommio itself took for sockets
//! (its `recv`/`send` calls), without the three rings around it.
//!
//! The pieces, each in its own file: [`executor`] (tasks, the run loop,
//! waking from other threads), [`reactor`] (epoll, readiness per socket),
//! [`timer`] (sleep and timeout), [`net`] (TCP and Unix sockets) and
//! [`channel`] (the bounded queues between shards).

pub mod channel;
pub mod executor;
pub mod net;
pub mod reactor;
pub mod timer;

pub use executor::{spawn_blocking, spawn_local, Builder, Joiner, Task};
