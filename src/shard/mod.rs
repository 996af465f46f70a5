//! The shards: one executor ([`crate::rt`]) per core (pinned only with
//! `--pin_shards`), each with its own SO_REUSEPORT listener, its [`ShardCore`] and its ends of the
//! inter-shard queues. This folder and `rt/` are the only code that does
//! socket I/O on an executor.

pub mod arrival;
pub mod auth_work;
pub mod buffer_gauge;
pub mod conn;
pub mod host;
pub mod leaf;
pub mod leaf_table;
pub mod link_reader;
pub mod link_s2;
pub mod mesh;
pub mod reports;
pub mod route;
pub mod route_table;
pub mod self_service;
pub mod socket;
pub mod state;
pub mod system;
pub mod transport;
pub mod websocket;
pub mod writer;

use state::{core_config, Shard};

use std::cell::{Cell, RefCell};
use std::net::TcpListener as StdListener;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::rt::net::TcpListener;

use crate::control::Shared;
use crate::core::ShardCore;
use crate::ids::{ConnId, ConnKind, ShardId};
use mesh::{Connected, MeshEnds, ShardEnds, ShardMsg};
use rustc_hash::FxHashMap;

/// First and longest wait after a failed accept.
const ACCEPT_MIN_SLEEP: Duration = Duration::from_millis(10);
const ACCEPT_MAX_SLEEP: Duration = Duration::from_secs(1);

/// How long a shard's traffic must have stopped before it hands the
/// memory it freed back to the system.
const SETTLE: Duration = Duration::from_secs(1);

/// Notices a shard going quiet: once its message count has not moved for
/// [`SETTLE`], and not again until it has moved.
#[derive(Default)]
struct Quiet {
    count: u64,
    since: Option<Instant>,
    done: bool,
}

impl Quiet {
    /// Whether the traffic count `now_count` has just settled.
    fn settled(&mut self, now_count: u64, now: Instant) -> bool {
        if now_count != self.count || self.since.is_none() {
            self.count = now_count;
            self.since = Some(now);
            self.done = false;
            return false;
        }
        if self.done || self.since.is_some_and(|t| now.duration_since(t) < SETTLE) {
            return false;
        }
        self.done = true;
        true
    }
}

/// How often an idle shard polls: what it must act on at once rings its
/// doorbell (`Shared::ring`), so waking 50 times a second without traffic
/// would only cost CPU (1.6 % of a core idle, against nats-server's 0.1 %).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// A started runtime: what the caller waits on.
pub struct Running {
    /// Receives `(shard, Err(text))` when an executor stops.
    pub exits: mpsc::Receiver<(usize, Result<(), String>)>,
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An executor failed to start.
    #[error("shard {shard} failed to start: {why}")]
    Executor {
        /// The shard.
        shard: usize,
        /// The executor's error.
        why: String,
    },
    /// Executors did not report in time.
    #[error("shards did not start within {0:?}")]
    Timeout(Duration),
}

/// Starts one executor per shard, each serving its listener. Returns once
/// every shard is running, or the first start failure.
pub fn start(
    shared: Arc<Shared>,
    listeners: Vec<StdListener>,
    ws_listeners: Vec<StdListener>,
    route_listeners: Vec<StdListener>,
    leaf_listeners: Vec<StdListener>,
) -> Result<Running, StartError> {
    let n = shared.nshards;
    let (spin_us, pin) = {
        let opts = shared.current().0;
        (opts.idle_spin_us, opts.pin_shards)
    };
    let cpus = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1);
    let mut mesh = MeshEnds::new(n);
    let (ready_tx, ready_rx) = mpsc::channel::<usize>();
    let (exit_tx, exit_rx) = mpsc::channel::<(usize, Result<(), String>)>();
    let mut ws_listeners = ws_listeners.into_iter();
    let mut route_listeners = route_listeners.into_iter();
    let mut leaf_listeners = leaf_listeners.into_iter();
    for (i, listener) in listeners.into_iter().enumerate() {
        let ends = mesh.take(i);
        let ws = ws_listeners.next();
        let routes = route_listeners.next();
        let leafs = leaf_listeners.next();
        let shared = shared.clone();
        let ready = ready_tx.clone();
        let mut builder = crate::rt::Builder::new(&format!("petrel-shard-{i}"));
        // Unpinned by default, as nats-server's threads are: on a host
        // shared with clients or other servers a pinned shard cannot leave
        // a core another process holds (nats.go request/reply 0.72x the
        // requests/s, p99 3x, pinned, and every `--shards 1` petrel on a
        // host on core 0). `--pin_shards` is for hosts petrel has to itself.
        if pin && n <= cpus {
            builder = builder.pin_to(i);
        }
        // Sleeping at once is the default: with request/reply on one shard
        // (connection affinity) a 50 us spin before each sleep cost a
        // nats.go client's round trip 25-35 % more server CPU and no
        // latency, and throughput shapes no rate (README, Performance).
        // Only a client that answers within the spin (a raw-protocol load
        // generator on idle cores) gains from it: `--idle_spin`.
        if spin_us > 0 {
            builder = builder.spin_before_park(Duration::from_micros(spin_us));
        }
        let spawned = builder.spawn(move || async move {
            let bind = |l: StdListener| TcpListener::from_std(l).map_err(|e| format!("listener: {e}"));
            let listener = bind(listener)?;
            let ws = ws.map(bind).transpose()?;
            let routes = routes.map(bind).transpose()?;
            let leafs = leafs.map(bind).transpose()?;
            shard_main(
                ShardId(i as u16),
                shared,
                ends,
                [Some(listener), ws, routes, leafs],
                ready,
            )
            .await;
            Ok::<(), String>(())
        });
        let exit = exit_tx.clone();
        match spawned {
            Ok(handle) => {
                std::thread::Builder::new()
                    .name(format!("petrel-watch-{i}"))
                    .spawn(move || {
                        let r = handle.join().and_then(|r| r);
                        let _ = exit.send((i, r));
                    })
                    .expect("spawn watcher thread");
            }
            Err(e) => {
                return Err(StartError::Executor {
                    shard: i,
                    why: e.to_string(),
                })
            }
        }
    }
    drop(ready_tx);
    let limit = Duration::from_secs(10);
    let deadline = std::time::Instant::now() + limit;
    let mut started = 0;
    while started < n {
        if let Ok((shard, r)) = exit_rx.try_recv() {
            return Err(StartError::Executor {
                shard,
                why: r.err().unwrap_or_else(|| "exited".into()),
            });
        }
        match ready_rx.recv_timeout(Duration::from_millis(20)) {
            Ok(_) => started += 1,
            Err(mpsc::RecvTimeoutError::Timeout) if std::time::Instant::now() < deadline => {}
            Err(mpsc::RecvTimeoutError::Timeout) => return Err(StartError::Timeout(limit)),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let (shard, r) = exit_rx
                    .recv_timeout(Duration::from_secs(1))
                    .unwrap_or((0, Err("exited".into())));
                return Err(StartError::Executor {
                    shard,
                    why: r.err().unwrap_or_else(|| "exited".into()),
                });
            }
        }
    }
    Ok(Running { exits: exit_rx })
}

async fn shard_main(
    id: ShardId,
    shared: Arc<Shared>,
    ends: ShardEnds,
    [listener, ws_listener, route_listener, leaf_listener]: [Option<TcpListener>; 4],
    ready: mpsc::Sender<usize>,
) {
    let listener = listener.expect("every shard has a client listener");
    let Connected { outlets, receivers } = ends.connect();
    let (opts, info) = shared.current();
    let mut core = ShardCore::with_pools(
        id,
        shared.nshards,
        core_config(&opts),
        shared.pools.clone(),
        Instant::now(),
    );
    core.seed(fastrand::u64(..));
    core.set_server_name(&info.server_name);
    let verifier = shared.verifier();
    if shared.leaf.get().is_some() {
        // Before the imports: mapping sources count as interest for leafs.
        core.set_leafing();
    }
    core.set_imports(verifier.imports());
    core.set_system_account(verifier.accounts().system().id);
    if shared.cluster.get().is_some() {
        core.set_clustered();
    }
    // After the interest counting is set: routes hear its reply space.
    core.add_response_link(shared.next_cid());
    let route_perms = shared.cluster.get().and_then(|c| c.opts().permissions);
    let route_pool = shared.cluster.get().map_or_else(Default::default, |c| {
        crate::cluster::RoutePool::new(&c.opts(), &verifier.accounts().system().name)
    });
    let shard = Rc::new(Shard {
        id,
        core: RefCell::new(core),
        shared,
        outlets,
        opts: RefCell::new(opts),
        info: RefCell::new(info),
        generation: Cell::new(0),
        conns: RefCell::new(FxHashMap::default()),
        accept_tasks: RefCell::new(Vec::new()),
        lame_duck_started: Cell::new(false),
        account_seen: Cell::new(0),
        imports_seen: Cell::new(verifier.imports_generation()),
        verifier: RefCell::new(verifier),
        actions_seen: Cell::new(0),
        routes: route_table::Routes::new(route_perms, route_pool),
        leafs: Default::default(),
        routes_generation: Cell::new(0),
        urls_seen: Cell::new(0),
        arriving: RefCell::new(FxHashMap::default()),
        polling_idle: Cell::new(false),
        link_read_buffers: Cell::new(0),
        memory_published: Cell::new(None),
    });
    {
        let shard = shard.clone();
        let mut bell = shard
            .shared
            .take_doorbell(id.index())
            .and_then(|fd| crate::rt::net::UnixStream::from_owned(fd).ok());
        crate::rt::spawn_local(async move {
            let mut rung = [0u8; 64];
            let mut traffic = 0;
            let mut quiet = Quiet::default();
            loop {
                let wait = shard.next_poll(&mut traffic, IDLE_POLL);
                shard.polling_idle.set(wait == IDLE_POLL);
                // A shard that went quiet after a burst (a slow consumer's
                // 64 MiB queue, a benchmark) hands back what it freed.
                if quiet.settled(traffic, Instant::now()) {
                    crate::profile::heap::give_back_freed();
                }
                let sleep = async {
                    crate::rt::timer::sleep(wait).await;
                    true
                };
                let heard = match bell.as_mut() {
                    Some(b) => {
                        let read =
                            async { matches!(futures_lite::AsyncReadExt::read(b, &mut rung).await, Ok(n) if n > 0) };
                        futures_lite::future::or(sleep, read).await
                    }
                    None => sleep.await,
                };
                if !heard {
                    bell = None; // closed: poll on the timer alone
                }
                shard.apply_reload();
                shard.apply_client_actions();
                if id.index() == 0 {
                    if shard.shared.shutting_down.load(Relaxed) {
                        crate::rt::spawn_local(system::send_shutdown(shard.clone())).detach();
                    }
                    for acc in shard.shared.take_conns_to_announce() {
                        crate::rt::spawn_local(system::announce_conns(shard.clone(), acc)).detach();
                    }
                }
                if shard.apply_account_updates() {
                    // Subscriptions removed by new permissions reach the other shards now.
                    shard.flush().await;
                }
                shard.publish_memory(Instant::now());
                shard.answer_snapshot();
                shard.mark_affinity_moves();
                route::poll_cluster(&shard);
                leaf::poll_leafs(&shard);
                if shard.shared.lame_duck.load(Relaxed) && !shard.lame_duck_started.replace(true) {
                    crate::rt::spawn_local(lame_duck(shard.clone())).detach();
                }
            }
        })
        .detach();
    }
    for (rx, in_flight) in receivers.into_iter().flatten() {
        let shard = shard.clone();
        crate::rt::spawn_local(async move {
            while let Some(msg) = rx.recv().await {
                match msg {
                    ShardMsg::Batch(b) => {
                        {
                            let weight = b.weight;
                            let mut core = shard.core.borrow_mut();
                            // The pacing of slow subscribers reads the clock.
                            core.set_now(std::time::Instant::now());
                            core.apply_batch(b);
                            in_flight.landed(weight);
                        }
                        resume_arrived(&shard);
                        shard.note_traffic();
                        shard.cut_off_slow_consumers();
                        shard.publish_stats();
                        shard.send_batches();
                        // Pace this source while a subscriber here is nearly
                        // full; the queue filling up then stalls its publishers.
                        let stall = shard.core.borrow_mut().take_stall();
                        if stall {
                            writer::pace(&shard).await;
                        } else {
                            // Let the writers this batch woke run before the
                            // next: a queue that is never empty would starve
                            // them, and their subscribers (never seen
                            // reading) would never pace anyone.
                            futures_lite::future::yield_now().await;
                        }
                    }
                    ShardMsg::Move(parcel, arrival) => {
                        let cid = parcel.conn();
                        shard.core.borrow_mut().move_in(*parcel);
                        shard.arriving.borrow_mut().insert(cid, arrival);
                        shard.send_batches();
                    }
                    ShardMsg::Conn(stream, cid, kind) => {
                        let s = shard.clone();
                        if let Some(stream) = bind(&s, stream, true) {
                            crate::rt::spawn_local(conn::serve(s, stream, cid, kind)).detach();
                        }
                    }
                }
            }
        })
        .detach();
    }
    self_service::start(&shard);
    reports::start(&shard);
    if let Some(c) = shard.shared.cluster.get() {
        crate::rt::spawn_local(route::announce_interest(shard.clone())).detach();
        if let Some(l) = route_listener {
            crate::rt::spawn_local(route::accept_loop(shard.clone(), l)).detach();
        }
        // Configured routes are spread over the shards.
        for (i, url) in c.opts().routes.into_iter().enumerate() {
            if i % shard.shared.nshards == id.index() {
                route::keep_configured(&shard, url);
            }
        }
    }
    if let Some(l) = shard.shared.leaf.get() {
        if let Some(listener) = leaf_listener {
            crate::rt::spawn_local(leaf::accept_loop(shard.clone(), listener)).detach();
        }
        // Remotes are spread over the shards.
        for (i, remote) in l.opts().remotes.into_iter().enumerate() {
            if i % shard.shared.nshards == id.index() {
                crate::rt::spawn_local(leaf::keep_remote(shard.clone(), remote)).detach();
            }
        }
    }
    if id.index() == 0 {
        crate::rt::spawn_local(system::run(shard.clone())).detach();
    }
    let _ = ready.send(id.index());
    let mut tasks = vec![crate::rt::spawn_local(accept_loop(
        shard.clone(),
        listener,
        ConnKind::Standard,
    ))];
    if let Some(ws) = ws_listener {
        tasks.push(crate::rt::spawn_local(accept_loop(
            shard.clone(),
            ws,
            ConnKind::WebSocket,
        )));
    }
    *shard.accept_tasks.borrow_mut() = tasks;
    // The executor lives as long as the process; its tasks do the work.
    futures_lite::future::pending::<()>().await;
}

/// Takes an accepted connection onto this shard's reactor. One the kernel
/// will not register (epoll's watch limit) is closed, and forgotten when it
/// was `counted` as this shard's.
fn bind(shard: &Shard, stream: crate::rt::net::AcceptedTcpStream, counted: bool) -> Option<crate::rt::net::TcpStream> {
    match stream.bind_to_executor() {
        Ok(s) => Some(s),
        Err(e) => {
            crate::error!("Error registering a new connection: {e}");
            if counted {
                conn::forget(shard);
            }
            None
        }
    }
}

/// Starts the clients moved here that every shard has caught up with.
fn resume_arrived(shard: &Rc<Shard>) {
    let arrived = shard.core.borrow_mut().take_arrived();
    for cid in arrived {
        if let Some(a) = shard.arriving.borrow_mut().remove(&cid) {
            crate::rt::spawn_local(conn::resume(shard.clone(), cid, a)).detach();
        }
    }
}

/// Lame-duck mode on one shard: stop accepting (dropping the accept task
/// closes this shard's listener), tell clients with `ldm: true` in an INFO,
/// wait the grace period, then close this shard's clients spread over the
/// rest of the lame-duck duration (at most one second apart), as
/// nats-server does.
async fn lame_duck(shard: Rc<Shard>) {
    shard.accept_tasks.borrow_mut().clear();
    if shard.id.index() == 0 {
        let id = shard.info.borrow().server_id.clone();
        let block = serde_json::to_value(crate::sys::server_block(&shard.shared)).unwrap_or_default();
        shard.emit(&format!("$SYS.SERVER.{id}.LAMEDUCK"), block);
        shard.flush().await;
    }
    route::announce_lame_duck(&shard);
    let opts = shard.opts.borrow().clone();
    let mut ldm_info = shard.info.borrow().clone();
    ldm_info.ldm = true;
    let cids: Vec<ConnId> = {
        let conns = shard.conns.borrow();
        let mut core = shard.core.borrow_mut();
        for (cid, h) in conns.iter() {
            if h.session.borrow().takes_async_info() {
                let json = host::client_info(&ldm_info, *cid, &h.ip).to_json();
                if let Some(c) = core.conn_mut(*cid) {
                    crate::proto::encode::info(c.out.tail(), &json);
                }
                core.wake(*cid);
            }
        }
        conns.keys().copied().collect()
    };
    crate::rt::timer::sleep(opts.lame_duck_grace_period).await;
    let spread = opts.lame_duck_duration.saturating_sub(opts.lame_duck_grace_period);
    let per_client = (spread / cids.len().max(1) as u32).min(Duration::from_secs(1));
    for cid in cids {
        shard
            .core
            .borrow_mut()
            .close_conn(cid, crate::proto::errors::CloseReason::ServerShutdown);
        let pause = per_client.mul_f64(0.5 + fastrand::f64() * 0.5);
        crate::rt::timer::sleep(pause).await;
    }
}

/// Accepts connections and keeps the shards' loads even: a shard with more
/// open connections than the least loaded one hands the new one over.
async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, kind: ConnKind) {
    let shared = shard.shared.clone();
    let name = match kind {
        ConnKind::Standard | ConnKind::Leaf | ConnKind::LeafWs => "Client",
        ConnKind::WebSocket => "Websocket",
    };
    // As nats-server: an accept error (out of file descriptors, say) is
    // logged and waited out, 10 ms doubling up to 1 s until one succeeds,
    // so a full process logs a line a second, not hundreds.
    let mut delay = ACCEPT_MIN_SLEEP;
    loop {
        let stream = match listener.shared_accept().await {
            Ok(s) => s,
            Err(_) if shared.listeners_stopped(crate::listeners::Facing::Clients) => return,
            Err(e) => {
                crate::error!("Temporary {name} Accept Error({e}), sleeping {}ms", delay.as_millis());
                crate::rt::timer::sleep(delay).await;
                delay = (delay * 2).min(ACCEPT_MAX_SLEEP);
                continue;
            }
        };
        delay = ACCEPT_MIN_SLEEP;
        let cid = shared.next_cid();
        let total = shared.total_conns.fetch_add(1, Relaxed) + 1;
        let max_connections = shard.opts.borrow().max_connections;
        if total > max_connections {
            shared.total_conns.fetch_sub(1, Relaxed);
            if let Some(stream) = bind(&shard, stream, false) {
                crate::rt::spawn_local(conn::refuse(shard.clone(), stream, cid, kind)).detach();
            }
            continue;
        }
        let me = shard.id.index();
        let (least, least_count) = shared
            .conn_counts
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.load(Relaxed)))
            .min_by_key(|&(i, c)| (c, i != me))
            .expect("at least one shard");
        let dest = if shared.conn_counts[me].load(Relaxed) > least_count {
            least
        } else {
            me
        };
        shared.conn_counts[dest].fetch_add(1, Relaxed);
        if dest == me {
            if let Some(stream) = bind(&shard, stream, true) {
                crate::rt::spawn_local(conn::serve(shard.clone(), stream, cid, kind)).detach();
            }
        } else {
            shard.send_conn(dest, stream, cid, kind);
        }
    }
}

#[cfg(test)]
mod quiet_tests {
    use super::*;

    #[test]
    fn a_shard_settles_once_per_quiet_spell() {
        let t0 = Instant::now();
        let mut q = Quiet::default();
        assert!(!q.settled(5, t0), "first look");
        assert!(!q.settled(5, t0 + SETTLE / 2), "not quiet long enough");
        assert!(q.settled(5, t0 + SETTLE), "quiet for SETTLE");
        assert!(!q.settled(5, t0 + SETTLE * 3), "once per spell");
        assert!(!q.settled(9, t0 + SETTLE * 4), "traffic again");
        assert!(q.settled(9, t0 + SETTLE * 5));
    }
}
