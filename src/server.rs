//! Server start-up and process lifecycle: identity, listeners, the banner
//! and readiness lines client harnesses wait for, pid and ports files,
//! signals, and shutdown.

use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::conf::options::Notices;
use crate::control::Shared;
use crate::listeners::{self, BindError, Facing, Stoppers};
use crate::options::Options;
use crate::proto::info::{ServerInfo, COMPAT_VERSION};
use crate::reload::{self, ReloadOutcome};
use crate::shard;
use crate::{error, fatal, info, warn};

/// petrel's own version.
pub const PETREL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The log file could not be opened.
    #[error("could not open log file {0}: {1}")]
    LogFile(PathBuf, std::io::Error),
    /// A listener could not be bound (address, busy port).
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The runtime did not start.
    #[error(transparent)]
    Start(#[from] shard::StartError),
    /// A file the server writes could not be written.
    #[error("could not write {0}: {1}")]
    WriteFile(PathBuf, std::io::Error),
    /// A listener could not be duplicated to be stopped at exit.
    #[error("could not keep a listener: {0}")]
    KeepListener(std::io::Error),
    /// The authentication set-up is unusable (operator JWT, resolver).
    #[error("{0}")]
    Auth(String),
}

fn url_host(host: &str) -> String {
    match host {
        "0.0.0.0" | "" => "127.0.0.1".to_string(),
        "::" | "[::]" => "[::1]".to_string(),
        h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        h => h.to_string(),
    }
}

/// The ports file nats-server writes: `<dir>/<exe>_<pid>.ports`.
pub fn ports_file_path(dir: &std::path::Path) -> PathBuf {
    let exe = std::env::args()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "petrel".to_string());
    dir.join(format!("{exe}_{}.ports", std::process::id()))
}

/// Where reloaded options come from: `main` re-reads the same command line
/// (so flags still win over the file). The server never reads the command
/// line itself.
pub type OptionsSource = Arc<dyn Fn() -> Result<(Options, Notices), String> + Send + Sync>;

/// Runs the server until a signal stops it. Returns the process exit code.
/// `source` gives the options again for each reload.
pub fn run(opts: Options, notices: Notices, source: OptionsSource) -> Result<i32, ServerError> {
    crate::logging::init_with(&opts.log_config())
        .map_err(|e| ServerError::LogFile(opts.log_file.clone().unwrap_or_default(), e))?;
    let key = nkeys::KeyPair::new_server();
    let server_id = key.public_key();
    let server_name = opts.server_name.clone().unwrap_or_else(|| server_id.clone());
    crate::sys::endpoints::prime_cores();
    let nshards = opts
        .shards
        .unwrap_or_else(|| std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1));

    info!("Starting petrel (nats-server compatible)");
    info!("  Version:  {COMPAT_VERSION} (petrel {PETREL_VERSION})");
    info!("  Name:     {server_name}");
    info!("  ID:       {server_id}");
    info!("  Shards:   {nshards}");
    if let Some(c) = &opts.config_file {
        info!("Using configuration file: {}", c.display());
    }
    for w in notices.warnings.iter().chain(&notices.without_effect) {
        warn!("{w}");
    }
    for line in &notices.info {
        info!("{line}");
    }
    if opts.jetstream_requested {
        warn!("JetStream is not supported by petrel: serving core NATS only");
    }

    let verifier = Arc::new(crate::auth::verify::Verifier::new(&opts.auth).map_err(ServerError::Auth)?);
    if opts
        .auth
        .has_plaintext_password(opts.tls.as_ref().is_some_and(|t| t.map))
    {
        warn!("Plaintext passwords detected, use nkeys or bcrypt");
    }
    for w in verifier.warnings() {
        warn!("{w}");
    }
    if let Some(url) = verifier.resolver_url() {
        // nats-server probes the bare URL and refuses to start without a 200.
        crate::auth::verify::fetch(url)
            .map_err(|e| ServerError::Auth(format!("account resolver {url} is not reachable: {e}")))?;
        info!("Managing accounts with the URL resolver {url}");
    }
    if let Some(op) = &opts.auth.operator {
        for w in verifier.operator_warnings(&op.jwts) {
            warn!("{w}");
        }
        info!("Trusted Operators");
        let sys = verifier.accounts().system();
        info!("System account is {}", sys.name);
    }
    let (client_listeners, bound) = listeners::bind(&opts.host, opts.port, nshards)?;
    // The WebSocket listeners and what the shards need to serve them.
    let (ws_listeners, ws) = match &opts.websocket {
        Some(w) => {
            let host = w.host.clone().unwrap_or_else(|| opts.host.clone());
            let (l, b) = listeners::bind(&host, w.port, nshards)?;
            (
                l,
                Some(websocket_runtime(w, &host, b.port()).map_err(ServerError::Auth)?),
            )
        }
        None => (Vec::new(), None),
    };
    // Route listeners (one per shard, like the client port) and the
    // cluster registry.
    let (route_listeners, route_bound) = match &opts.cluster {
        Some(c) if c.port != 0 => {
            let (l, b) = listeners::bind(&c.host, c.port, nshards)?;
            (l, Some(b))
        }
        _ => (Vec::new(), None),
    };
    let info = ServerInfo {
        cluster: opts.cluster.as_ref().and_then(|c| c.name.clone()).unwrap_or_default(),
        server_id: server_id.clone(),
        server_name,
        version: COMPAT_VERSION.to_string(),
        proto: 1,
        go: format!("petrel {PETREL_VERSION}"),
        host: opts.host.clone(),
        port: bound.port(),
        headers: !opts.no_header_support,
        auth_required: verifier.requires_connect(),
        tls_required: opts.tls.is_some() && !opts.allow_non_tls,
        tls_available: opts.tls.is_some() && opts.allow_non_tls,
        tls_verify: opts.tls.as_ref().is_some_and(|t| t.verify),
        max_payload: opts.max_payload,
        client_id: 0,
        client_ip: String::new(),
        nonce: String::new(),
        connect_urls: Vec::new(),
        ldm: false,
        connect_info: false,
        remote_account: String::new(),
        acc_is_sys: false,
    };
    let tls = match &opts.tls {
        Some(t) => Some(crate::tls::ClientTls::new(t).map_err(ServerError::Auth)?),
        None => None,
    };
    if let Some(t) = &tls {
        // handshake_first overrides allow_non_tls, as in nats-server.
        if opts.allow_non_tls && !t.handshake_first {
            info!("TLS available for client connections");
        } else {
            info!("TLS required for client connections");
        }
        if t.handshake_first {
            info!("Clients must start TLS before the server sends INFO (handshake_first)");
        }
        if t.pinned.is_some() && !t.verify {
            // As in nats-server: without verify no client certificate is
            // asked for, so no client can match a pin.
            warn!("tls: pinned_certs without verify: every TLS client will be refused");
        }
    }
    let shared = Shared::new(opts.clone(), info, nshards, verifier);
    shared.set_tls(tls);
    shared.set_websocket(ws.clone());
    if let Some(c) = &opts.cluster {
        let cluster = crate::cluster::Cluster::new(server_id.clone(), c.clone(), nshards);
        cluster.set_tls(route_tls(c).map_err(ServerError::Auth)?);
        if let Some(b) = route_bound {
            *cluster.listen.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(format!("{}:{}", url_host(&c.host), b.port()));
            info!(
                "Cluster name is {}",
                c.name
                    .clone()
                    .unwrap_or_else(|| "(learned from the first route)".into())
            );
            info!("Listening for route connections on {}:{}", c.host, b.port());
        }
        let _ = shared.cluster.set(Arc::new(cluster));
    }
    let (leaf_listeners, leaf_bound) = match &opts.leaf {
        Some(l) => {
            check_leaf_accounts(l, &shared.verifier()).map_err(ServerError::Auth)?;
            let bound = if l.port != 0 {
                let (ls, b) = listeners::bind(&l.host, l.port, nshards)?;
                Some((ls, b))
            } else {
                None
            };
            let registry = crate::leaf::LeafNodes::new(l.clone(), nshards).map_err(ServerError::Auth)?;
            if let Some((_, b)) = &bound {
                *registry.listen.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(format!("{}:{}", url_host(&l.host), b.port()));
                info!("Listening for leafnode connections on {}:{}", l.host, b.port());
            }
            let _ = shared.leaf.set(Arc::new(registry));
            match bound {
                Some((ls, b)) => (ls, Some(b)),
                None => (Vec::new(), None),
            }
        }
        None => (Vec::new(), None),
    };
    let shared = Arc::new(shared);
    shared.set_reloader(Arc::new(move |shared: &Shared| reload(shared, &source)));
    let mut stoppers = Stoppers::default();
    stoppers
        .keep(Facing::Clients, &client_listeners)
        .and_then(|_| stoppers.keep(Facing::Clients, &ws_listeners))
        .and_then(|_| stoppers.keep(Facing::Links, &route_listeners))
        .and_then(|_| stoppers.keep(Facing::Links, &leaf_listeners))
        .map_err(ServerError::KeepListener)?;
    let running = shard::start(
        shared.clone(),
        client_listeners,
        ws_listeners,
        route_listeners,
        leaf_listeners,
    )?;

    if let Some(p) = &opts.pid_file {
        std::fs::write(p, std::process::id().to_string()).map_err(|e| ServerError::WriteFile(p.clone(), e))?;
    }
    let monitoring = match opts.http_port {
        Some(port) => {
            let host = opts.http_host.clone().unwrap_or_else(|| opts.host.clone());
            let addr = crate::monitor::start(shared.clone(), &host, port).map_err(|err| BindError::Listen {
                addr: format!("{host}:{port}"),
                err,
            })?;
            *shared.http_addr.lock().unwrap_or_else(|e| e.into_inner()) = Some(addr);
            info!("Starting http monitor on {}:{}", host, addr.port());
            Some(format!("http://{}:{}", url_host(&host), addr.port()))
        }
        None => None,
    };
    if let Some(port) = opts.prof_port {
        let host = opts.host.clone();
        let addr = crate::profile::http::start(&host, port).map_err(|err| BindError::Listen {
            addr: format!("{host}:{port}"),
            err,
        })?;
        info!("Starting profiling on http://{}:{}", url_host(&host), addr.port());
    }
    let host_for_log = if opts.host.contains(':') {
        format!("[{}]", opts.host)
    } else {
        opts.host.clone()
    };
    let ws_url = ws.map(|rt| {
        let scheme = if rt.tls.is_some() { "wss" } else { "ws" };
        info!("Listening for websocket clients on {scheme}://{}:{}", rt.host, rt.port);
        if rt.tls.is_none() {
            warn!("Websocket not configured with TLS. DO NOT USE IN PRODUCTION!");
        }
        format!("{scheme}://{}:{}", url_host(&rt.host), rt.port)
    });
    info!("Listening for client connections on {host_for_log}:{}", bound.port());
    let ports_file = match &opts.ports_file_dir {
        Some(dir) => {
            let path = ports_file_path(dir);
            let mut body = serde_json::json!({ "nats": [format!("nats://{}:{}", url_host(&opts.host), bound.port())] });
            if let Some(m) = &monitoring {
                body["monitoring"] = serde_json::json!([m]);
            }
            if let Some(w) = &ws_url {
                body["websocket"] = serde_json::json!([w]);
            }
            if let (Some(c), Some(b)) = (&opts.cluster, route_bound) {
                body["cluster"] = serde_json::json!([format!("nats://{}:{}", url_host(&c.host), b.port())]);
            }
            if let (Some(l), Some(b)) = (&opts.leaf, leaf_bound) {
                body["leafnode"] = serde_json::json!([format!("nats://{}:{}", url_host(&l.host), b.port())]);
            }
            std::fs::write(&path, body.to_string()).map_err(|e| ServerError::WriteFile(path.clone(), e))?;
            Some(path)
        }
        None => None,
    };
    // Signals are caught from before the server says it is ready: a
    // reload (SIGHUP) sent right after must not be lost.
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
    let signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2]) {
        Ok(s) => s,
        Err(e) => {
            fatal!("Could not install signal handlers: {e}");
            return Ok(1);
        }
    };
    info!("Server is ready");

    let code = wait_for_exit(signals, running, &shared, &stoppers);
    // New connections are refused from here on; the shards' accept loops
    // see `shutting_down` and end quietly.
    shared.shutting_down.store(true, std::sync::atomic::Ordering::Relaxed);
    stoppers.stop_all();
    send_shutdown_event(&shared);
    if let Some(p) = ports_file {
        let _ = std::fs::remove_file(p);
    }
    Ok(code)
}

/// The WebSocket settings the shards use, from the `websocket` block.
pub fn websocket_runtime(
    w: &crate::options::WebsocketOptions,
    host: &str,
    port: u16,
) -> Result<crate::control::WsRuntime, String> {
    Ok(crate::control::WsRuntime {
        settings: crate::ws::WsSettings::new(w),
        tls: w.tls.as_ref().map(crate::tls::ClientTls::new).transpose()?,
        host: host.to_string(),
        port,
        ping_interval: w.ping_interval,
        auth_timeout: w.auth_timeout,
    })
}

/// Asks shard 0 to publish `$SYS.SERVER.<id>.SHUTDOWN` (`shutting_down`
/// is set already) and waits briefly for it to go out, as nats-server's
/// last system message.
fn send_shutdown_event(shared: &Shared) {
    use std::sync::atomic::Ordering::Relaxed;
    shared.ring_shard(0);
    let deadline = Instant::now() + Duration::from_millis(300);
    while !shared.shutdown_sent.load(Relaxed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Let the writers put the event on the wire, where it goes anywhere
    // (alone and unwatched, petrel exits at once, as nats-server does).
    if shared.shutdown_heard.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Re-reads the configuration from `source` and applies it when every
/// changed option may change at run time. Returns the structured outcome;
/// nothing is applied when any option is rejected. SIGHUP and the system
/// account's RELOAD request use it (through [`Shared::reload`]).
pub fn reload(shared: &Shared, source: &OptionsSource) -> Result<ReloadOutcome, String> {
    let (current, _) = shared.current();
    if current.config_file.is_none() {
        return Err("can only reload config when a file is provided using -c or --config".into());
    }
    let (new, notices) = source()?;
    let outcome = reload::diff(&current, &new);
    if !outcome.accepted() {
        return Ok(outcome);
    }
    for w in notices.warnings.iter().chain(&notices.without_effect) {
        warn!("{w}");
    }
    if new.log_config() != current.log_config() {
        crate::logging::init_with(&new.log_config()).map_err(|e| format!("could not set up logging: {e}"))?;
    }
    if let Some(p) = &new.pid_file {
        if new.pid_file != current.pid_file {
            std::fs::write(p, std::process::id().to_string())
                .map_err(|e| format!("could not write {}: {e}", p.display()))?;
        }
    }
    // Users, permissions and accounts are re-read into a new verifier over
    // the same account table (account ids stay what the shards know).
    let verifier = if new.auth != current.auth {
        let table = shared.verifier().accounts().clone();
        let v = crate::auth::verify::Verifier::with_table(&new.auth, Some(table))?;
        for w in v.warnings() {
            warn!("{w}");
        }
        Some(Arc::new(v))
    } else {
        None
    };
    // New certificates: loaded before anything is applied, so a bad file
    // fails the reload and changes nothing.
    let tls = if new.tls != current.tls {
        match &new.tls {
            Some(t) => Some(Some(crate::tls::ClientTls::new(t)?)),
            None => Some(None),
        }
    } else {
        None
    };
    // New route certificates, for new route connections.
    let new_route_tls = match &new.cluster {
        Some(c) if current.cluster.as_ref().map(|c| &c.tls) != Some(&c.tls) => Some(route_tls(c)?),
        _ => None,
    };
    // New wss certificates, for new WebSocket connections (the rest of the
    // block is fixed at start-up; reload::OPTIONS refuses changes to it).
    let ws = match (&new.websocket, shared.websocket()) {
        (Some(w), Some(rt)) if new.websocket != current.websocket => Some(websocket_runtime(w, &rt.host, rt.port)?),
        _ => None,
    };
    if let Some(t) = tls {
        shared.set_tls(t);
    }
    if ws.is_some() {
        shared.set_websocket(ws);
    }
    if let (Some(c), Some(cluster)) = (&new.cluster, shared.cluster.get()) {
        if let Some(t) = new_route_tls {
            cluster.set_tls(t);
        }
        cluster.set_opts(c.clone());
    }
    if !shared.install(new, verifier, std::time::Duration::from_secs(2)) {
        return Err("shards did not apply the new configuration in time".into());
    }
    Ok(outcome)
}

/// The accounts a `leafnodes` block names must exist, as nats-server
/// checks at start-up.
fn check_leaf_accounts(l: &crate::options::LeafOptions, v: &crate::auth::verify::Verifier) -> Result<(), String> {
    let exists = |name: &str| name == crate::auth::config::GLOBAL_ACCOUNT || v.accounts().get(name).is_some();
    let auth = l
        .account
        .iter()
        .chain(l.users.iter().filter_map(|u| u.account.as_ref()));
    for a in auth {
        if !exists(a) {
            return Err(format!(
                "cannot find local account {a:?} specified in leafnode authorization"
            ));
        }
    }
    for r in &l.remotes {
        if let Some(a) = r.account.as_ref().filter(|a| !exists(a)) {
            return Err(format!("cannot find local account {a:?} specified in leafnode remote"));
        }
    }
    if v.is_operator_mode() && !l.users.is_empty() {
        return Err("operator mode does not allow specifying users in leafnode config".into());
    }
    Ok(())
}

/// Route TLS from the cluster block (certificates loaded now, so a bad file
/// fails start-up or the reload), warning about `insecure` as nats-server.
fn route_tls(c: &crate::options::ClusterOptions) -> Result<Option<Arc<crate::route_tls::RouteTls>>, String> {
    let Some(t) = &c.tls else { return Ok(None) };
    let tls = crate::route_tls::RouteTls::new(t)?;
    if tls.insecure {
        warn!("{}", crate::route_tls::INSECURE_WARNING);
    }
    Ok(Some(Arc::new(tls)))
}

fn log_reload(shared: &Shared) {
    match shared.reload() {
        Ok(outcome) if outcome.accepted() => {
            for c in &outcome.changed {
                info!("Reloaded: {} = {}", c.option, c.new);
            }
            info!("Reloaded server configuration");
        }
        Ok(outcome) => error!(
            "Failed to reload server configuration: {}",
            outcome.error_text().unwrap_or_default()
        ),
        Err(e) => error!("Failed to reload server configuration: {e}"),
    }
}

/// What the main thread waits for once the server runs.
enum Awaited {
    /// A signal caught.
    Signal(i32),
    /// A shard's executor stopped, with why.
    ShardExit(usize, Result<(), String>),
}

/// One channel for caught signals and shard exits, each forwarded by a
/// thread of its own, so the main thread acts on either at once.
fn awaited(mut signals: signal_hook::iterator::Signals, running: shard::Running) -> mpsc::Receiver<Awaited> {
    let (tx, rx) = mpsc::channel();
    let signal_tx = tx.clone();
    std::thread::Builder::new()
        .name("petrel-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if signal_tx.send(Awaited::Signal(sig)).is_err() {
                    return;
                }
            }
        })
        .expect("spawn the signal thread");
    std::thread::Builder::new()
        .name("petrel-exits".into())
        .spawn(move || {
            while let Ok((shard, r)) = running.exits.recv() {
                if tx.send(Awaited::ShardExit(shard, r)).is_err() {
                    return;
                }
            }
        })
        .expect("spawn the shard exit thread");
    rx
}

/// Waits for a stopping signal (caught by `signals`) or a shard failure;
/// in lame duck mode, for the clients to be gone.
fn wait_for_exit(
    signals: signal_hook::iterator::Signals,
    running: shard::Running,
    shared: &Shared,
    stoppers: &Stoppers,
) -> i32 {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
    // How often lame duck mode looks for its clients to be gone.
    const LAME_DUCK_CHECK: Duration = Duration::from_millis(100);
    let events = awaited(signals, running);
    let mut lame_duck_since: Option<Instant> = None;
    loop {
        let event = match lame_duck_since {
            Some(_) => match events.recv_timeout(LAME_DUCK_CHECK) {
                Ok(e) => Some(e),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return 1,
            },
            None => match events.recv() {
                Ok(e) => Some(e),
                Err(_) => return 1,
            },
        };
        match event {
            Some(Awaited::ShardExit(shard, r)) => {
                fatal!("Shard {shard} stopped: {}", r.err().unwrap_or_else(|| "exited".into()));
                return 1;
            }
            Some(Awaited::Signal(sig)) => match sig {
                SIGTERM if lame_duck_since.is_some() => {
                    info!("Trapped \"terminated\" signal: ignored in lame duck mode")
                }
                SIGINT | SIGTERM => {
                    info!(
                        "Trapped \"{}\" signal",
                        if sig == SIGINT { "interrupt" } else { "terminated" }
                    );
                    info!("Initiating Shutdown...");
                    info!("Server Exiting..");
                    return 0;
                }
                SIGUSR1 => {
                    if let Err(e) = crate::logging::reopen() {
                        warn!("Could not reopen log file: {e}");
                    }
                }
                SIGHUP => log_reload(shared),
                SIGUSR2 if lame_duck_since.is_none() => {
                    let (opts, _) = shared.current();
                    info!("Entering lame duck mode, stop accepting new clients");
                    info!(
                        "Closing existing clients over {:?} after a grace period of {:?}",
                        opts.lame_duck_duration, opts.lame_duck_grace_period
                    );
                    shared.lame_duck.store(true, std::sync::atomic::Ordering::Relaxed);
                    stoppers.stop(Facing::Clients);
                    shared.ring();
                    lame_duck_since = Some(Instant::now());
                }
                _ => {}
            },
            None => {}
        }
        if let Some(since) = lame_duck_since {
            let (opts, _) = shared.current();
            let clients = shared.total_conns.load(std::sync::atomic::Ordering::Relaxed);
            // A short settle time lets every shard drop its accept loops.
            let settled = since.elapsed() > Duration::from_millis(100);
            if (settled && clients == 0) || since.elapsed() > opts.lame_duck_duration + Duration::from_secs(5) {
                info!("Lame duck mode complete: shutting down");
                info!("Server Exiting..");
                return 0;
            }
        }
    }
}
