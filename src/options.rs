//! The server's typed options, with nats-server's defaults.

use std::path::PathBuf;
use std::time::Duration;

/// `connect_error_reports` unless set (nats-server's default).
pub const DEFAULT_CONNECT_ERROR_REPORTS: i64 = 3600;
/// `reconnect_error_reports` unless set (nats-server's default).
pub const DEFAULT_RECONNECT_ERROR_REPORTS: i64 = 1;

/// How many closed connections `connz` remembers unless
/// `max_closed_clients` says otherwise (nats-server's default).
pub const DEFAULT_MAX_CLOSED_CLIENTS: usize = 10_000;

/// Default client port.
pub const DEFAULT_PORT: u16 = 4222;
/// Default listen host.
pub const DEFAULT_HOST: &str = "0.0.0.0";
/// nats-server's default TLS handshake deadline (`tls_timeout`).
pub const TLS_DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything that configures a running server.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Listen host.
    pub host: String,
    /// Client port; `-1` picks a random free port.
    pub port: i32,
    /// `server_name`; the server id when absent.
    pub server_name: Option<String>,
    /// Largest payload a client may publish.
    pub max_payload: usize,
    /// Longest control-line argument part.
    pub max_control_line: usize,
    /// Outbound bytes queued for a client before it is a slow consumer.
    pub max_pending: usize,
    /// Most client connections; beyond it new ones are refused.
    pub max_connections: usize,
    /// Most subscriptions per connection (0 = unlimited).
    pub max_subscriptions: usize,
    /// Closed connections `connz?state=closed` remembers.
    pub max_closed_clients: usize,
    /// Interval between server PINGs.
    pub ping_interval: Duration,
    /// Unanswered PINGs before a connection is stale.
    pub ping_max: u32,
    /// How long one socket write may take before the client is a slow consumer.
    pub write_deadline: Duration,
    /// How long a client has to authenticate.
    pub auth_timeout: Duration,
    /// Turn message headers off.
    pub no_header_support: bool,
    /// Turn the index's match cache off.
    pub disable_sublist_cache: bool,
    /// Debug logging.
    pub debug: bool,
    /// Protocol tracing.
    pub trace: bool,
    /// Timestamps in log lines.
    pub logtime: bool,
    /// Never pace fast publishers (`no_fast_producer_stall`).
    pub no_fast_producer_stall: bool,
    /// Log files kept when rotating (`log_max_num`; 0: all).
    pub log_max_num: usize,
    /// Log timestamps in UTC (`logtime_utc`, `--logtime_utc`).
    pub logtime_utc: bool,
    /// A route or leaf connection never connected yet logs every this
    /// many failed attempts as an error (and the first), the others at
    /// debug level (`connect_error_reports`, default 3600).
    pub connect_error_reports: i64,
    /// The same once it has been connected (`reconnect_error_reports`,
    /// default 1).
    pub reconnect_error_reports: i64,
    /// Log to this file instead of stderr.
    pub log_file: Option<PathBuf>,
    /// Write the process id here.
    pub pid_file: Option<PathBuf>,
    /// Write `<exe>_<pid>.ports` into this directory.
    pub ports_file_dir: Option<PathBuf>,
    /// Number of shards (executors); every available core when absent.
    pub shards: Option<usize>,
    /// `sha256:...` of the configuration file as parsed (`conf::digest`);
    /// empty without one.
    pub config_digest: String,
    /// `http_base_path`: where the monitoring endpoints are served, as
    /// nats-server cleans it (`/` when unset).
    pub http_base_path: String,
    /// `server_tags`: labels in varz, system events and request filters.
    pub server_tags: Vec<String>,
    /// `server_metadata`: name/value pairs in varz and system events.
    pub server_metadata: std::collections::BTreeMap<String, String>,
    /// Microseconds an idle shard spins before it parks (`--idle_spin`,
    /// petrel's own; 0, the default, parks at once).
    pub idle_spin_us: u64,
    /// Pin shard `i` to core `i` (`--pin_shards`, petrel's own; off by
    /// default, so the kernel places shard threads as it does nats-server's).
    pub pin_shards: bool,
    /// Client URL advertised to the cluster (`client_advertise`).
    pub client_advertise: Option<String>,
    /// How long lame-duck mode takes to close every client.
    pub lame_duck_duration: Duration,
    /// How long lame-duck mode waits before it starts closing clients.
    pub lame_duck_grace_period: Duration,
    /// The configuration file, when one was given.
    pub config_file: Option<PathBuf>,
    /// Rotate the log file past this many bytes (0: never).
    pub log_size_limit: u64,
    /// Log to the local syslog.
    pub syslog: bool,
    /// Log to a remote syslog (`udp://host:port`).
    pub remote_syslog: Option<String>,
    /// HTTP monitoring port (`-m`, `http_port`); `-1` picks a free one.
    pub http_port: Option<i32>,
    /// HTTP monitoring host; the client host when absent.
    pub http_host: Option<String>,
    /// JetStream was asked for (`-js`, `--store_dir`, a `jetstream` block);
    /// petrel logs that it is not supported and serves core NATS.
    pub jetstream_requested: bool,
    /// Users, accounts, permissions and operator mode.
    pub auth: crate::auth::config::AuthConfig,
    /// `prof_port` / `--profile`: the `/debug/pprof` HTTP listener.
    pub prof_port: Option<i32>,
    /// Client TLS (`tls {}` block, `--tls*` flags).
    pub tls: Option<TlsOptions>,
    /// `allow_non_tls`: with TLS configured, clients may also stay plain
    /// (INFO says `tls_available`; the first byte a client sends decides).
    pub allow_non_tls: bool,
    /// WebSocket clients (`websocket {}` block).
    pub websocket: Option<WebsocketOptions>,
    /// Cluster routes (`cluster {}` block, `--cluster`/`--routes` flags).
    pub cluster: Option<ClusterOptions>,
    /// Leaf node connections (`leafnodes {}` block).
    pub leaf: Option<LeafOptions>,
}

/// The `leafnodes` block: a listener for leaf nodes (this server a hub)
/// and the remotes this server connects to as a leaf.
#[derive(Debug, Clone, PartialEq)]
pub struct LeafOptions {
    /// Listen host.
    pub host: String,
    /// Listen port; `-1` picks a free one, 0 (absent) listens nowhere.
    pub port: i32,
    /// `host:port` leaf nodes should dial for this server.
    pub advertise: Option<String>,
    /// Do not tell leaf nodes of the cluster's other leaf URLs.
    pub no_advertise: bool,
    /// The single leaf user (`authorization { user, password }`).
    pub username: Option<String>,
    /// Its password.
    pub password: Option<String>,
    /// The account that user's (or any unauthenticated) leaf binds to.
    pub account: Option<String>,
    /// `authorization { users [...] }`: leaf users, each bound to an account.
    pub users: Vec<LeafUser>,
    /// How long a leaf has to send CONNECT.
    pub auth_timeout: Option<Duration>,
    /// The remote hubs this server connects to as a leaf.
    pub remotes: Vec<LeafRemote>,
    /// Delay between connection attempts to a remote (nats-server: 1 s).
    pub reconnect: Duration,
    /// Dial timeout for remotes.
    pub dial_timeout: Option<Duration>,
    /// `tls`: leaf connections to this hub are TLS (after the plain INFO,
    /// as nats-server runs them).
    pub tls: Option<TlsOptions>,
    /// `isolate_leafnode_interest`: leaf connections are not told other
    /// leaf connections' interest.
    pub isolate: bool,
    /// `min_version`: leaf nodes of older versions are refused.
    pub min_version: Option<String>,
    /// `compression`: S2 with leaf nodes (`s2_auto` when absent, as
    /// nats-server).
    pub compression: crate::compress::CompressionMode,
}

impl Default for LeafOptions {
    fn default() -> Self {
        LeafOptions {
            host: DEFAULT_HOST.into(),
            port: 0,
            advertise: None,
            no_advertise: false,
            username: None,
            password: None,
            account: None,
            users: Vec::new(),
            auth_timeout: None,
            remotes: Vec::new(),
            reconnect: Duration::from_secs(1),
            dial_timeout: None,
            tls: None,
            isolate: false,
            min_version: None,
            compression: crate::compress::CompressionMode::default_leaf(),
        }
    }
}

/// A leaf user of a hub: credentials and the account its leaf binds to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafUser {
    /// Name.
    pub user: String,
    /// Password (plain or bcrypt).
    pub password: String,
    /// Account the leaf is bound to (`$G` when absent).
    pub account: Option<String>,
}

/// A `remotes` entry: a hub this server connects to as a leaf.
#[derive(Debug, Clone, PartialEq)]
pub struct LeafRemote {
    /// The hub's URLs (`nats-leaf://`, `nats://` or `tls://`... with
    /// optional `user:pass@`), tried in order (shuffled unless
    /// `no_randomize`).
    pub urls: Vec<String>,
    /// The local account this leaf connection is bound to (`$G` when
    /// absent).
    pub account: Option<String>,
    /// A credentials file (user JWT and seed) for the hub.
    pub credentials: Option<std::path::PathBuf>,
    /// Try URLs in the order given.
    pub no_randomize: bool,
    /// Subjects this leaf does not take from the hub (no interest sent,
    /// no message accepted).
    pub deny_imports: Vec<String>,
    /// Subjects this leaf does not send to the hub.
    pub deny_exports: Vec<String>,
    /// How long to wait for the hub's INFO.
    pub first_info_timeout: Option<Duration>,
    /// Skip this remote.
    pub disabled: bool,
    /// `tls`: how to verify the hub (and the certificate to present); a
    /// `tls://` URL or a hub that requires TLS uses TLS without one, with
    /// the system's roots.
    pub tls: Option<TlsOptions>,
    /// `isolate_leafnode_interest`: the hub is not told the interest of
    /// leaf connections behind this server.
    pub isolate: bool,
    /// `request_isolation`: asks the hub not to tell this leaf other leaf
    /// connections' interest.
    pub request_isolation: bool,
    /// `compression`: S2 with the hub (`s2_auto` when absent, as
    /// nats-server).
    pub compression: crate::compress::CompressionMode,
    /// `hub`: this server takes the hub's role on the connection (tells
    /// the other side all of its interest), the other side the leaf's.
    pub hub: bool,
    /// `ws_no_masking`: over WebSocket, ask the hub to take unmasked
    /// frames.
    pub ws_no_masking: bool,
    /// `ws_compression`: over WebSocket, ask for permessage-deflate.
    pub ws_compression: bool,
}

impl Default for LeafRemote {
    fn default() -> Self {
        LeafRemote {
            urls: Vec::new(),
            account: None,
            credentials: None,
            no_randomize: false,
            deny_imports: Vec::new(),
            deny_exports: Vec::new(),
            first_info_timeout: None,
            disabled: false,
            tls: None,
            isolate: false,
            request_isolation: false,
            compression: crate::compress::CompressionMode::default_leaf(),
            hub: false,
            ws_no_masking: false,
            ws_compression: false,
        }
    }
}

/// nats-server's default route pool size (connections per server pair).
pub const DEFAULT_ROUTE_POOL_SIZE: i32 = 3;

/// The `cluster` block.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterOptions {
    /// Cluster name; learned from the first peer when absent (dynamic).
    pub name: Option<String>,
    /// Route listen host.
    pub host: String,
    /// Route listen port; `-1` picks a free one, 0 listens nowhere.
    pub port: i32,
    /// `host:port` other servers should dial for this one.
    pub advertise: Option<String>,
    /// Do not advertise this server's client URLs to clients.
    pub no_advertise: bool,
    /// Routes to dial (`nats://[user:pass@]host:port`).
    pub routes: Vec<String>,
    /// Attempts for a configured route before giving up (0: forever);
    /// implicit routes are tried this many times, or once.
    pub connect_retries: u32,
    /// Back off between attempts (1 s doubling to 30 s) instead of a fixed 1 s.
    pub connect_backoff: bool,
    /// Username a peer must give (`authorization { user }`).
    pub username: Option<String>,
    /// Password a peer must give (`authorization { password }`).
    pub password: Option<String>,
    /// How long a peer has to send CONNECT.
    pub auth_timeout: Option<Duration>,
    /// Pooled route connections per server pair (`-1`: one connection,
    /// no pooling, nothing pinned; nats-server's default 3 when absent).
    pub pool_size: Option<i32>,
    /// `accounts`: accounts given a route connection of their own (the
    /// system account is too whenever routes are pooled).
    pub pinned_accounts: Vec<String>,
    /// PING interval on routes (capped at 30 s as in nats-server).
    pub ping_interval: Option<Duration>,
    /// Unanswered PINGs before a route is stale.
    pub ping_max: Option<u32>,
    /// `tls`: mutual TLS on every route connection.
    pub tls: Option<TlsOptions>,
    /// `permissions { import, export }`: which interest this server sends
    /// to and accepts from its peers.
    pub permissions: Option<RoutePermissions>,
    /// `write_deadline` for routes (the server's when absent).
    pub write_deadline: Option<Duration>,
    /// `write_timeout`: what a passed write deadline does to a route
    /// (`retry` when absent or `default`, as nats-server).
    pub write_timeout: Option<WriteTimeoutPolicy>,
    /// `compression`: S2 on routes (`accept` when absent, as nats-server).
    pub compression: crate::compress::CompressionMode,
}

/// What a passed write deadline does to a link (nats-server's
/// `write_timeout` policies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteTimeoutPolicy {
    /// Close the link (clients always).
    Close,
    /// Keep writing while the peer takes some bytes; close only when none
    /// went out (routes' default).
    Retry,
}

/// Route permissions, as nats-server reads them: `import` (the subjects
/// this server asks its peers for, by sending its interest in them) and
/// `export` (the subjects peers may ask this server for: their interest in
/// anything else is ignored). Both only filter interest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoutePermissions {
    /// `import` (nats-server parses it as a publish rule).
    pub import: crate::auth::perms::SubjectRule,
    /// `export` (parsed as a subscribe rule).
    pub export: crate::auth::perms::SubjectRule,
}

impl RoutePermissions {
    /// Whether this server sends its interest in `subject` to peers.
    pub fn may_import(&self, subject: &[u8]) -> bool {
        self.import.admits(subject)
    }

    /// Whether a peer's interest in `subject` is taken.
    pub fn may_export(&self, subject: &[u8]) -> bool {
        self.export.admits(subject)
    }
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            name: None,
            host: DEFAULT_HOST.into(),
            port: 0,
            advertise: None,
            no_advertise: false,
            routes: Vec::new(),
            connect_retries: 0,
            connect_backoff: false,
            username: None,
            password: None,
            auth_timeout: None,
            pool_size: None,
            pinned_accounts: Vec::new(),
            ping_interval: None,
            ping_max: None,
            tls: None,
            permissions: None,
            write_deadline: None,
            write_timeout: None,
            compression: crate::compress::CompressionMode::Accept,
        }
    }
}

/// The `websocket` block.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WebsocketOptions {
    /// Listen host; the client `host` when absent (nats-server listens on
    /// every interface then: petrel follows the host it was given).
    pub host: Option<String>,
    /// Port; `-1` picks a free one.
    pub port: i32,
    /// `host:port` advertised to clients.
    pub advertise: Option<String>,
    /// TLS for WebSocket clients (wss).
    pub tls: Option<TlsOptions>,
    /// Plain ws allowed without TLS (nats-server refuses to start otherwise).
    pub no_tls: bool,
    /// The Origin header must match the request's host.
    pub same_origin: bool,
    /// Origins allowed (`scheme://host[:port]`).
    pub allowed_origins: Vec<String>,
    /// permessage-deflate offered.
    pub compression: bool,
    /// Deadline for the TLS and HTTP upgrade handshake.
    pub handshake_timeout: Option<std::time::Duration>,
    /// `authorization { user }`: the only user WebSocket clients may be.
    pub username: Option<String>,
    /// `authorization { password }`.
    pub password: Option<String>,
    /// `authorization { token }`.
    pub token: Option<String>,
    /// `authorization { timeout }`: auth timeout for WebSocket clients.
    pub auth_timeout: Option<std::time::Duration>,
    /// The user a WebSocket client without credentials becomes.
    pub no_auth_user: Option<String>,
    /// Cookie carrying a user JWT.
    pub jwt_cookie: Option<String>,
    /// Cookie carrying a user name.
    pub user_cookie: Option<String>,
    /// Cookie carrying a password.
    pub pass_cookie: Option<String>,
    /// Cookie carrying a token.
    pub token_cookie: Option<String>,
    /// Extra headers in the upgrade answer.
    pub headers: Vec<(String, String)>,
    /// Server PING interval for WebSocket clients.
    pub ping_interval: Option<std::time::Duration>,
}

impl WebsocketOptions {
    /// Whether the block changes how WebSocket clients authenticate.
    pub fn auth_override(&self) -> bool {
        self.username.is_some() || self.token.is_some() || self.no_auth_user.is_some()
    }
}

/// The client `tls` block.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsOptions {
    /// Server certificate chain (PEM).
    pub cert_file: Option<PathBuf>,
    /// Server private key (PEM).
    pub key_file: Option<PathBuf>,
    /// CA certificates that client certificates must chain to (PEM).
    pub ca_file: Option<PathBuf>,
    /// Require and verify client certificates.
    pub verify: bool,
    /// Handshake deadline (nats-server's default: 2 s).
    pub timeout: Option<Duration>,
    /// TLS before INFO (`handshake_first`).
    pub handshake_first: bool,
    /// `handshake_first: "300ms"` or `"auto"`: how long to wait for a TLS
    /// client before sending INFO in the clear after all.
    pub handshake_first_fallback: Option<Duration>,
    /// The client certificate names the user (`verify_and_map`).
    pub map: bool,
    /// `cipher_suites`: nats-server (Go) suite names, already checked to be
    /// ones rustls offers; empty means rustls' defaults.
    pub cipher_suites: Vec<String>,
    /// `curve_preferences`: nats-server (Go) curve names, already checked;
    /// empty means rustls' defaults.
    pub curve_preferences: Vec<String>,
    /// `min_version`; TLS 1.2 when absent.
    pub min_version: Option<TlsVersion>,
    /// `pinned_certs`: lower-case hex SHA-256 of the SubjectPublicKeyInfo
    /// a client certificate must have; empty means no pinning.
    pub pinned_certs: Vec<String>,
    /// `insecure`: accepted as nats-server does; it only skips verification
    /// on connections the server dials, so it changes nothing here.
    pub insecure: bool,
}

/// The TLS versions `min_version` may name (nats-server refuses lower ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl Options {
    /// How long a client has to authenticate: `authorization { timeout }`,
    /// else with client TLS the TLS timeout plus one second (the handshake
    /// comes out of the same budget), else 2 s, as nats-server defaults it.
    pub fn client_auth_timeout(&self) -> Duration {
        self.auth.timeout.unwrap_or_else(|| match &self.tls {
            Some(t) => t.timeout.unwrap_or(TLS_DEFAULT_TIMEOUT) + Duration::from_secs(1),
            None => self.auth_timeout,
        })
    }

    /// The logger settings these options ask for.
    pub fn log_config(&self) -> crate::logging::LogConfig {
        crate::logging::LogConfig {
            file: self.log_file.clone(),
            size_limit: self.log_size_limit,
            max_files: self.log_max_num,
            logtime: self.logtime,
            logtime_utc: self.logtime_utc,
            debug: self.debug,
            trace: self.trace,
            syslog: self.syslog,
            remote_syslog: self.remote_syslog.clone(),
        }
    }
}

/// nats-server's `normalizeBasePath`: a leading `/`, then Go's
/// `path.Clean` (no empty or `.` segments, `..` taken back, no trailing
/// `/`); empty is `/`.
pub fn clean_base_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

impl Options {
    /// The monitoring path under `http_base_path` a request path names:
    /// the path itself without a base, `None` outside the base.
    pub fn monitor_path<'a>(&self, path: &'a str) -> Option<&'a str> {
        let base = clean_base_path(&self.http_base_path);
        if base == "/" {
            return Some(path);
        }
        match path.strip_prefix(base.as_str()) {
            Some("") => Some("/"),
            Some(rest) if rest.starts_with('/') && rest != "/" => Some(rest),
            _ => None,
        }
    }

    /// Whether failed dial number `attempt` (from 1) of a route or leaf
    /// connection is logged as an error (else at debug level), as
    /// nats-server decides: the first, then every `connect_error_reports`
    /// while it never connected, every `reconnect_error_reports` after.
    pub fn report_connect_error(&self, connected_before: bool, attempt: u64) -> bool {
        let every = if connected_before {
            self.reconnect_error_reports
        } else {
            self.connect_error_reports
        };
        attempt == 1 || (every != 0 && (attempt as i64) % every == 0)
    }

    /// Limits given as 0 mean the default, as in nats-server (its
    /// baseline options): `max_payload` is refused at 0 when read, the
    /// rest fall back here.
    pub fn apply_baseline(&mut self) {
        let d = Options::default();
        if self.max_control_line == 0 {
            self.max_control_line = d.max_control_line;
        }
        if self.max_pending == 0 {
            self.max_pending = d.max_pending;
        }
        if self.write_deadline.is_zero() {
            self.write_deadline = d.write_deadline;
        }
        if self.max_closed_clients == 0 {
            self.max_closed_clients = d.max_closed_clients;
        }
        if self.connect_error_reports == 0 {
            self.connect_error_reports = d.connect_error_reports;
        }
        if self.reconnect_error_reports == 0 {
            self.reconnect_error_reports = d.reconnect_error_reports;
        }
    }

    /// Rules between options nats-server checks before it starts (and
    /// `-t`): the message as nats-server words it, and the key it is about.
    pub fn cross_check(&self) -> Result<(), (&'static str, String)> {
        if self.max_payload > self.max_pending {
            return Err((
                "max_pending",
                format!(
                    "max_payload ({}) cannot be higher than max_pending ({})",
                    self.max_payload, self.max_pending
                ),
            ));
        }
        Ok(())
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            host: DEFAULT_HOST.to_string(),
            port: DEFAULT_PORT as i32,
            server_name: None,
            max_payload: 1024 * 1024,
            max_control_line: 4096,
            max_pending: 64 * 1024 * 1024,
            max_connections: 64 * 1024,
            max_subscriptions: 0,
            max_closed_clients: DEFAULT_MAX_CLOSED_CLIENTS,
            ping_interval: Duration::from_secs(120),
            ping_max: 2,
            write_deadline: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(2),
            no_header_support: false,
            disable_sublist_cache: false,
            debug: false,
            trace: false,
            logtime: true,
            logtime_utc: false,
            log_max_num: 0,
            no_fast_producer_stall: false,
            connect_error_reports: DEFAULT_CONNECT_ERROR_REPORTS,
            reconnect_error_reports: DEFAULT_RECONNECT_ERROR_REPORTS,
            log_file: None,
            pid_file: None,
            ports_file_dir: None,
            shards: None,
            config_digest: String::new(),
            http_base_path: String::new(),
            server_tags: Vec::new(),
            server_metadata: Default::default(),
            idle_spin_us: 0,
            pin_shards: false,
            client_advertise: None,
            lame_duck_duration: Duration::from_secs(120),
            lame_duck_grace_period: Duration::from_secs(10),
            config_file: None,
            jetstream_requested: false,
            http_port: None,
            http_host: None,
            log_size_limit: 0,
            syslog: false,
            remote_syslog: None,
            auth: Default::default(),
            prof_port: None,
            tls: None,
            allow_non_tls: false,
            websocket: None,
            cluster: None,
            leaf: None,
        }
    }
}
