//! The authentication and account settings of a configuration file
//! (`authorization`, `accounts`, `no_auth_user`, `system_account`,
//! `operator`, `resolver`, ...) as typed values, read from the positioned
//! value tree so every error names its file, line and key.

use std::time::Duration;

use super::jwt;
use super::perms::{PatternList, Permissions, ResponsePermission, SubjectRule};
use crate::conf::parse::ConfError;
use crate::conf::units::seconds;
use crate::conf::value::{Item, Map, Pos, Value};
use crate::mapping::Mapping;
pub use crate::mapping::{MapDest, MappingConfig};

pub use super::accounts::{DEFAULT_SYSTEM_ACCOUNT, GLOBAL_ACCOUNT};

/// How a configured user proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `user` and `password` (plain, or a bcrypt hash starting `$2`).
    Password {
        /// User name.
        user: String,
        /// Password or bcrypt hash.
        password: String,
    },
    /// An nkey user: signs the server's nonce with the key's seed.
    Nkey(String),
}

/// A user from `authorization` or an account's `users`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserConfig {
    /// Its credential.
    pub credential: Credential,
    /// The account it belongs to (`$G` when none).
    pub account: String,
    /// Its permissions; `default_permissions` apply when absent.
    pub permissions: Option<Permissions>,
    /// `allowed_connection_types` (`STANDARD`, `WEBSOCKET`, ...): the
    /// listeners it may connect through; empty allows all.
    pub connection_types: Vec<String>,
}

/// The connection type names nats-server knows.
const CONNECTION_TYPES: &[&str] = &[
    "STANDARD",
    "WEBSOCKET",
    "LEAFNODE",
    "LEAFNODE_WS",
    "MQTT",
    "MQTT_WS",
    "IN_PROCESS",
];

impl UserConfig {
    /// The name the user is known by (user name or nkey).
    pub fn name(&self) -> &str {
        match &self.credential {
            Credential::Password { user, .. } => user,
            Credential::Nkey(k) => k,
        }
    }
}

/// Stream or service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Messages flow from the exporter to importers' subscribers.
    Stream,
    /// Requests flow from importers to the exporter's responders, and
    /// replies back.
    Service,
}

/// How many responses a service request may get (nats-server's response
/// types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseType {
    /// One: the first response ends the request.
    #[default]
    Singleton,
    /// Any number, until none has come for the threshold.
    Stream,
    /// Any number, until an empty message or the threshold.
    Chunked,
}

impl ResponseType {
    /// The name nats-server's monitoring gives it (a JWT says `Stream`).
    pub fn name(self) -> &'static str {
        match self {
            ResponseType::Singleton => "Singleton",
            ResponseType::Stream => "Streamed",
            ResponseType::Chunked => "Chunked",
        }
    }
}

/// Which requests through a service export are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencySampling {
    /// This percent of them (1-100).
    Percent(u8),
    /// Those whose headers ask for tracing (B3, Uber, W3C trace context).
    Headers,
}

/// A service export's latency tracking (`latency`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyConfig {
    /// Which requests are measured.
    pub sampling: LatencySampling,
    /// Where reports go, in the exporting account.
    pub subject: String,
}

/// nats-server's default time a request waits for its (next) response.
pub const DEFAULT_RESPONSE_THRESHOLD: std::time::Duration = std::time::Duration::from_secs(120);

/// The response rules of a service export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseRule {
    /// How many responses a request may get.
    pub kind: ResponseType,
    /// How long after the request (or, for streams and chunks, after the
    /// latest response) a response still gets through.
    pub threshold: std::time::Duration,
}

impl Default for ResponseRule {
    fn default() -> Self {
        ResponseRule {
            kind: ResponseType::Singleton,
            threshold: DEFAULT_RESPONSE_THRESHOLD,
        }
    }
}

/// An account's export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    /// Stream or service.
    pub kind: ExchangeKind,
    /// The exported subject (may hold wildcards).
    pub subject: String,
    /// Accounts allowed to import it; `None` is public.
    pub accounts: Option<Vec<String>>,
    /// A service's response rules (the default for streams).
    pub response: ResponseRule,
    /// A service lets traced requests stay traced beyond it.
    pub allow_trace: bool,
    /// A service's latency tracking: which requests are sampled and the
    /// subject reports go to (in the exporting account).
    pub latency: Option<LatencyConfig>,
}

/// An account's import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportConfig {
    /// Stream or service.
    pub kind: ExchangeKind,
    /// The exporting account.
    pub account: String,
    /// The subject in the exporter's space.
    pub subject: String,
    /// The subject in the importer's space (`to`, or `prefix.subject`);
    /// the exporter's subject when absent.
    pub local: Option<String>,
    /// A stream's importer lets traced messages stay traced.
    pub allow_trace: bool,
    /// A service's requests say more of the requester (`share`): all of
    /// `Nats-Request-Info`, and the requester in latency reports.
    pub share: bool,
}

/// An account from the `accounts` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountConfig {
    /// The account's name.
    pub name: String,
    /// What it offers.
    pub exports: Vec<ExportConfig>,
    /// What it takes from others.
    pub imports: Vec<ImportConfig>,
    /// Subject mappings, in the order given.
    pub mappings: Vec<MappingConfig>,
    /// Where messages asking for a trace with only a sampled
    /// `traceparent` are traced to (`msg_trace` / `trace_dest`).
    pub trace_dest: Option<TraceDest>,
    /// The `limits` block.
    pub limits: AccountLimits,
}

/// A configured account's `limits` (absent: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountLimits {
    /// Client connections in the account, cluster-wide.
    pub max_connections: Option<i64>,
    /// Subscriptions per client.
    pub max_subscriptions: Option<i64>,
    /// Payload size.
    pub max_payload: Option<i64>,
    /// Leaf node connections bound to the account.
    pub max_leafnodes: Option<i64>,
}

/// An account's own message trace destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceDest {
    /// The subject events go to.
    pub dest: String,
    /// Percent of a client's messages traced (1-100; 0: all).
    pub sampling: u8,
}

/// Where account JWTs come from in operator mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolverConfig {
    /// `resolver: MEMORY` with `resolver_preload`.
    Memory,
    /// `resolver: URL(<url>)`: HTTP GET `<url><account>`.
    Url(String),
    /// The NATS resolver (`resolver { type: full|cache, dir, ... }`).
    Nats(NatsResolver),
}

/// The NATS resolver's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsResolver {
    /// `full` keeps every account; `cache` only those in use.
    pub full: bool,
    /// Where the JWTs are stored.
    pub dir: std::path::PathBuf,
    /// Whether `$SYS.REQ.CLAIMS.DELETE` may delete (full only).
    pub allow_delete: bool,
    /// Delete files rather than renaming them to `.deleted`.
    pub hard_delete: bool,
    /// Most JWTs kept (0: unlimited; cache default 1000).
    pub limit: usize,
}

/// Decentralized (operator) mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorConfig {
    /// The operator JWTs (contents, not paths).
    pub jwts: Vec<String>,
    /// The account resolver.
    pub resolver: Option<ResolverConfig>,
    /// `resolver_preload`: account public key to account JWT.
    pub preload: Vec<(String, String)>,
}

/// Everything about who may connect and where they land.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthConfig {
    /// `authorization { token }` or `--auth`.
    pub token: Option<String>,
    /// Every configured user (single user, `users` lists, accounts' users).
    pub users: Vec<UserConfig>,
    /// Permissions for users that have none.
    pub default_permissions: Option<Permissions>,
    /// `authorization { timeout }`.
    pub timeout: Option<Duration>,
    /// The user a client without credentials becomes.
    pub no_auth_user: Option<String>,
    /// Configured accounts.
    pub accounts: Vec<AccountConfig>,
    /// The system account's name (or public key in operator mode).
    pub system_account: Option<String>,
    /// Operator mode.
    pub operator: Option<OperatorConfig>,
    /// `trusted_keys`: operator public keys trusted without an operator JWT.
    pub trusted_keys: Vec<String>,
    /// The `websocket` block's own authentication, when it has one.
    pub websocket: Option<WebsocketAuth>,
}

/// A `websocket { authorization {...} no_auth_user }` override: WebSocket
/// clients authenticate with these instead of the top-level single user,
/// token and `no_auth_user` (configured `users` still apply), as in nats-server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebsocketAuth {
    /// The single WebSocket user.
    pub username: Option<String>,
    /// Its password.
    pub password: Option<String>,
    /// The WebSocket token.
    pub token: Option<String>,
    /// The user a WebSocket client without credentials becomes.
    pub no_auth_user: Option<String>,
}

impl AuthConfig {
    /// True when any form of authentication is configured.
    pub fn is_enabled(&self) -> bool {
        self.token.is_some() || !self.users.is_empty() || self.operator.is_some() || !self.trusted_keys.is_empty()
    }

    /// Whether a configured user's password is not a bcrypt hash, as
    /// nats-server warns at start-up ("Plaintext passwords detected");
    /// users without a password are left out when client certificates
    /// name users (`tls_map`).
    pub fn has_plaintext_password(&self, tls_map: bool) -> bool {
        self.users.iter().any(|u| match &u.credential {
            Credential::Password { password, .. } if password.is_empty() && tls_map => false,
            Credential::Password { password, .. } => !crate::auth::password::is_bcrypt(password),
            Credential::Nkey(_) => false,
        })
    }
}

/// An error at `pos` (a key's position: nats-server points there).
fn err_at(pos: &Pos, msg: impl Into<String>) -> ConfError {
    ConfError {
        pos: pos.clone(),
        msg: msg.into(),
    }
}

fn err(item: &Item, msg: impl Into<String>) -> ConfError {
    ConfError {
        pos: item.pos.clone(),
        msg: msg.into(),
    }
}

fn string(key: &str, item: &Item) -> Result<String, ConfError> {
    match &item.value {
        Value::Str(s) => Ok(s.clone()),
        Value::Int(n) => Ok(n.to_string()),
        _ => Err(err(
            item,
            format!("{key}: expected a string, got {}", item.value.kind()),
        )),
    }
}

fn boolean(key: &str, item: &Item) -> Result<bool, ConfError> {
    match &item.value {
        Value::Bool(b) => Ok(*b),
        _ => Err(err(
            item,
            format!("{key}: expected a boolean, got {}", item.value.kind()),
        )),
    }
}

fn map<'a>(key: &str, item: &'a Item) -> Result<&'a Map, ConfError> {
    match &item.value {
        Value::Map(m) => Ok(m),
        _ => Err(err(item, format!("{key}: expected a map, got {}", item.value.kind()))),
    }
}

/// A string or an array of strings.
fn strings(key: &str, item: &Item) -> Result<Vec<String>, ConfError> {
    match &item.value {
        Value::Array(a) => a.iter().map(|i| string(key, i)).collect(),
        _ => Ok(vec![string(key, item)?]),
    }
}

/// Permission subjects: each a valid subject (wildcards allowed),
/// optionally followed by a queue group, as nats-server checks them.
fn subjects(key: &str, item: &Item) -> Result<Vec<String>, ConfError> {
    let list = strings(key, item)?;
    for s in &list {
        let mut parts = s.split_whitespace();
        let subject = parts.next().unwrap_or_default();
        let queue_ok = parts
            .next()
            .is_none_or(|q| crate::subject::is_valid_queue(q.as_bytes()));
        if !crate::subject::is_valid_subject(subject.as_bytes()) || !queue_ok || parts.next().is_some() {
            return Err(err(item, format!("subject {s:?} is not a valid subject")));
        }
    }
    Ok(list)
}

/// A publish or subscribe rule: a subject, a list, or `{allow, deny}`.
fn subject_rule(key: &str, item: &Item) -> Result<SubjectRule, ConfError> {
    match &item.value {
        Value::Map(m) => {
            let mut r = SubjectRule::default();
            for (k, key_at, v) in &m.entries {
                match k.to_ascii_lowercase().as_str() {
                    "allow" => r.allow = Some(PatternList::new(&subjects(k, v)?)),
                    "deny" => r.deny = Some(PatternList::new(&subjects(k, v)?)),
                    other => return Err(err_at(key_at, format!("Unknown field \"{other}\" parsing permissions"))),
                }
            }
            Ok(r)
        }
        _ => Ok(SubjectRule {
            allow: Some(PatternList::new(&subjects(key, item)?)),
            deny: None,
        }),
    }
}

fn response_permission(item: &Item) -> Result<Option<ResponsePermission>, ConfError> {
    match &item.value {
        Value::Bool(false) => Ok(None),
        Value::Bool(true) => Ok(Some(ResponsePermission::default())),
        Value::Map(m) => {
            let mut rp = ResponsePermission::default();
            for (k, key_at, v) in &m.entries {
                match k.to_ascii_lowercase().as_str() {
                    "max" | "max_msgs" | "max_messages" | "max_responses" => match v.value {
                        Value::Int(n) if n >= 0 => rp.max = n as u64,
                        _ => return Err(err(v, "allow_responses: max must be a non-negative integer")),
                    },
                    "expires" | "expiration" | "ttl" => rp.expires = seconds(k, v)?,
                    other => return Err(err_at(key_at, format!("Unknown field \"{other}\" parsing permissions"))),
                }
            }
            Ok(Some(rp))
        }
        _ => Err(err(item, "allow_responses: expected a boolean or a map")),
    }
}

/// A `permissions` block.
pub fn permissions(item: &Item) -> Result<Permissions, ConfError> {
    let m = map("permissions", item)?;
    let mut p = Permissions::default();
    for (k, key_at, v) in &m.entries {
        match k.to_ascii_lowercase().as_str() {
            // `import` and `export` are the route forms (cluster permissions).
            "publish" | "pub" | "import" => p.publish = subject_rule(k, v)?,
            "subscribe" | "sub" | "export" => p.subscribe = subject_rule(k, v)?,
            "allow_responses" | "allow_response" | "publish_allow_responses" => p.response = response_permission(v)?,
            other => return Err(err_at(key_at, format!("Unknown field \"{other}\" parsing permissions"))),
        }
    }
    Ok(p.normalized())
}

/// One entry of a `users` list.
fn user(item: &Item, account: &str) -> Result<UserConfig, ConfError> {
    let m = map("users", item)?;
    let mut name = None;
    let mut password = None;
    let mut nkey = None;
    let mut perms = None;
    let mut connection_types = Vec::new();
    for (k, key_at, v) in &m.entries {
        match k.to_ascii_lowercase().as_str() {
            "user" | "username" => name = Some(string(k, v)?),
            "pass" | "password" => password = Some(string(k, v)?),
            "nkey" => {
                let key = string(k, v)?;
                if !key.starts_with('U') || nkeys::KeyPair::from_public_key(&key).is_err() {
                    return Err(err(v, format!("Not a valid public nkey for a user: {key:?}")));
                }
                nkey = Some(key);
            }
            "permission" | "permissions" => perms = Some(permissions(v)?),
            "allowed_connection_types" | "connection_types" | "clients" => {
                let list = match &v.value {
                    Value::Array(a) => a.iter().map(|i| string(k, i)).collect::<Result<Vec<_>, _>>()?,
                    _ => vec![string(k, v)?],
                };
                for t in &list {
                    if !CONNECTION_TYPES.iter().any(|c| c.eq_ignore_ascii_case(t)) {
                        return Err(err(v, format!("unknown connection type {t:?}")));
                    }
                }
                connection_types = list;
            }
            // Accepted as nats-server does; proxies are not distinguished by petrel.
            "proxy_required" | "account" => {}
            other => return Err(unknown_field(key_at, other)),
        }
    }
    let credential = match (nkey, name) {
        (Some(k), None) => {
            if password.is_some() {
                return Err(err(item, "Nkey users do not take usernames or passwords"));
            }
            Credential::Nkey(k)
        }
        (Some(_), Some(_)) => return Err(err(item, "Nkey users do not take usernames or passwords")),
        (None, Some(user)) => Credential::Password {
            user,
            password: password.unwrap_or_default(),
        },
        (None, None) => return Err(err(item, "User entry requires a user")),
    };
    Ok(UserConfig {
        credential,
        account: account.to_string(),
        permissions: perms,
        connection_types,
    })
}

fn users(item: &Item, account: &str) -> Result<Vec<UserConfig>, ConfError> {
    match &item.value {
        Value::Array(a) => a.iter().map(|u| user(u, account)).collect(),
        _ => Err(err(
            item,
            format!("users: expected an array, got {}", item.value.kind()),
        )),
    }
}

/// The `authorization` block.
pub fn authorization(a: &mut AuthConfig, item: &Item) -> Result<(), ConfError> {
    let m = map("authorization", item)?;
    let mut single_user = None;
    let mut single_pass = None;
    let mut single_perms = None;
    let mut list = None;
    for (k, key_at, v) in &m.entries {
        match k.to_ascii_lowercase().as_str() {
            "user" | "username" => single_user = Some(string(k, v)?),
            "pass" | "password" => single_pass = Some(string(k, v)?),
            "token" => a.token = Some(string(k, v)?),
            "timeout" => a.timeout = Some(seconds(k, v)?),
            "users" => list = Some((users(v, GLOBAL_ACCOUNT)?, v)),
            "permission" | "permissions" => single_perms = Some(permissions(v)?),
            "default_permission" | "default_permissions" => a.default_permissions = Some(permissions(v)?),
            "auth_callout" | "callout" => {
                return Err(err(v, "authorization: auth callout is not supported by petrel"));
            }
            other => return Err(unknown_field(key_at, other)),
        }
    }
    if let Some((list, at)) = list {
        if single_user.is_some() {
            return Err(err(at, "Can not have a single user/pass and a users array"));
        }
        if a.token.is_some() {
            return Err(err(at, "Can not have a token and a users array"));
        }
        a.users.extend(list);
    }
    if let Some(user) = single_user {
        a.users.push(UserConfig {
            credential: Credential::Password {
                user,
                password: single_pass.unwrap_or_default(),
            },
            account: GLOBAL_ACCOUNT.to_string(),
            permissions: single_perms,
            connection_types: Vec::new(),
        });
    }
    Ok(())
}

/// An account's `limits` block, checked as nats-server checks it.
fn account_limits(key_at: &Pos, item: &Item) -> Result<AccountLimits, ConfError> {
    let Value::Map(m) = &item.value else {
        // Go's `%+v` of the value, at the key.
        let shown = match &item.value {
            Value::Str(s) => s.clone(),
            Value::Int(n) => n.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Bool(b) => b.to_string(),
            other => other.kind().to_string(),
        };
        return Err(err_at(
            key_at,
            format!("Expected account limits to be a map/struct, got {shown}"),
        ));
    };
    let mut l = AccountLimits::default();
    for (k, at, v) in &m.entries {
        let slot = match k.to_ascii_lowercase().as_str() {
            "max_connections" | "max_conn" => &mut l.max_connections,
            "max_subscriptions" | "max_subs" => &mut l.max_subscriptions,
            "max_payload" | "max_pay" => &mut l.max_payload,
            "max_leafnodes" | "max_leafs" => &mut l.max_leafnodes,
            other => return Err(err_at(at, format!("Unknown field {other:?} parsing account limits"))),
        };
        let Value::Int(n) = v.value else {
            return Err(err(v, format!("{k}: expected an integer, got {}", v.value.kind())));
        };
        *slot = Some(n);
    }
    Ok(l)
}

/// A service export's `latency`: a subject (every request measured) or
/// `{sampling, subject}`, sampling a percentage (`50`, `"50%"`) or
/// `headers`; nats-server's texts.
fn latency_config(key_at: &Pos, item: &Item) -> Result<LatencyConfig, ConfError> {
    let m = match &item.value {
        Value::Str(subject) => {
            return Ok(LatencyConfig {
                sampling: LatencySampling::Percent(100),
                subject: subject.clone(),
            })
        }
        Value::Map(m) => m,
        other => {
            return Err(err_at(
                key_at,
                format!(
                    "Expected latency entry to be a map/struct or string, got {}",
                    go_type(other)
                ),
            ))
        }
    };
    let mut sampling = LatencySampling::Percent(100);
    if let Some((_, pos, v)) = m.entries.iter().rev().find(|(k, _, _)| k == "sampling") {
        let n = match &v.value {
            Value::Int(n) => *n,
            Value::Str(text) if text.trim().eq_ignore_ascii_case("headers") => -1,
            Value::Str(text) => {
                let digits = text.strip_suffix('%').unwrap_or(text);
                digits.parse::<i64>().map_err(|_| {
                    err_at(
                        pos,
                        format!("Failed to parse latency sample: strconv.Atoi: parsing {digits:?}: invalid syntax"),
                    )
                })?
            }
            other => {
                return Err(err_at(
                    pos,
                    format!(
                        "Expected latency sample to be a string or map/struct, got {}",
                        go_type(other)
                    ),
                ))
            }
        };
        sampling = match n {
            -1 => LatencySampling::Headers,
            1..=100 => LatencySampling::Percent(n as u8),
            _ => return Err(err_at(pos, "bad sampling percentage, should be 1-100")),
        };
    }
    let Some((_, pos, v)) = m.entries.iter().rev().find(|(k, _, _)| k == "subject") else {
        return Err(err_at(key_at, "Latency subject required, but missing"));
    };
    let Value::Str(subject) = &v.value else {
        // (sic) nats-server names the type of the string it meant to fill.
        return Err(err_at(pos, "Expected latency subject to be a string, got string"));
    };
    Ok(LatencyConfig {
        sampling,
        subject: subject.clone(),
    })
}

/// nats-server's error for a key it does not know, at the key.
fn unknown_field(at: &Pos, key: &str) -> ConfError {
    err_at(at, format!("unknown field \"{key}\""))
}

/// The Go type nats-server's `%T` names for a value of the file.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Str(_) => "string",
        Value::Int(_) => "int64",
        Value::Float(_) => "float64",
        Value::Bool(_) => "bool",
        Value::Map(_) => "map[string]interface {}",
        Value::Array(_) => "[]interface {}",
    }
}

fn export(item: &Item) -> Result<ExportConfig, ConfError> {
    let m = map("exports", item)?;
    let mut kind_subject = None;
    let mut accounts = None;
    let mut response = ResponseRule::default();
    // nats-server refuses response rules and `allow_trace` on a stream
    // whichever comes first.
    let mut response_at: Option<&Pos> = None;
    let mut allow_trace: Option<(bool, &Pos)> = None;
    let mut latency: Option<(LatencyConfig, &Pos)> = None;
    let mut type_seen = false;
    let mut threshold_seen = false;
    for (k, at, v) in &m.entries {
        // nats-server points response errors at the key.
        match k.to_ascii_lowercase().as_str() {
            "stream" => {
                if let Some(at) = response_at {
                    return Err(err_at(at, "Detected response directive on non-service"));
                }
                if let Some((_, at)) = allow_trace {
                    return Err(err_at(at, "Detected allow_trace directive on non-service"));
                }
                kind_subject = Some((ExchangeKind::Stream, string(k, v)?))
            }
            "service" => kind_subject = Some((ExchangeKind::Service, string(k, v)?)),
            "accounts" => accounts = Some(strings(k, v)?),
            "response" | "response_type" => {
                if type_seen {
                    return Err(err_at(at, "Duplicate response type definition"));
                }
                type_seen = true;
                let Value::Str(name) = &v.value else {
                    return Err(err_at(
                        at,
                        format!("Expected response type to be string, got {}", go_type(&v.value)),
                    ));
                };
                response.kind = match name.to_ascii_lowercase().as_str() {
                    "single" | "singleton" => ResponseType::Singleton,
                    "stream" => ResponseType::Stream,
                    "chunk" | "chunked" => ResponseType::Chunked,
                    _ => return Err(err_at(at, format!("Unknown response type: {name:?}"))),
                };
                response_at = Some(at);
            }
            "threshold" | "response_threshold" | "response_max_time" | "response_time" => {
                if threshold_seen {
                    return Err(err_at(at, "Duplicate response threshold detected"));
                }
                threshold_seen = true;
                let Value::Str(text) = &v.value else {
                    return Err(err_at(
                        at,
                        format!(
                            "Expected response threshold to be a parseable time duration, got {}",
                            go_type(&v.value)
                        ),
                    ));
                };
                response.threshold = crate::conf::units::parse_go_duration(text).ok_or_else(|| {
                    err_at(
                        at,
                        format!("Expected response threshold to be a parseable time duration, got {text:?}"),
                    )
                })?;
                response_at = Some(at);
            }
            "allow_trace" => {
                if matches!(kind_subject, Some((ExchangeKind::Stream, _))) {
                    return Err(err_at(at, "Detected allow_trace directive on non-service"));
                }
                allow_trace = Some((boolean(k, v)?, at));
            }
            "latency" => latency = Some((latency_config(at, v)?, at)),
            "account_token_position" | "advertise" | "name" | "description" | "info_url" => {}
            other => return Err(err_at(at, format!("unknown field \"{other}\""))),
        }
    }
    let (kind, subject) = kind_subject.ok_or_else(|| err(item, "export requires a stream or service subject"))?;
    if let (ExchangeKind::Stream, Some(at)) = (kind, response_at) {
        return Err(err_at(at, "Detected response directive on non-service"));
    }
    if let (ExchangeKind::Stream, Some((_, at))) = (kind, &latency) {
        return Err(err_at(at, "Detected latency directive on non-service"));
    }
    if let Some((l, _)) = &latency {
        // What nats-server's account refuses when it takes the export.
        let why = if response.kind != ResponseType::Singleton {
            Some("bad service response type")
        } else if !crate::subject::is_valid_literal_subject(l.subject.as_bytes()) {
            Some("invalid publish subject")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(err(
                item,
                format!(
                    "Error adding service latency sampling for {subject:?} on subject {:?}: {why}",
                    l.subject
                ),
            ));
        }
    }
    if !crate::subject::is_valid_subject(subject.as_bytes()) {
        return Err(err(item, format!("export: invalid subject {subject:?}")));
    }
    Ok(ExportConfig {
        kind,
        subject,
        accounts,
        response,
        allow_trace: allow_trace.is_some_and(|(b, _)| b),
        latency: latency.map(|(l, _)| l),
    })
}

fn import(item: &Item) -> Result<ImportConfig, ConfError> {
    let m = map("imports", item)?;
    let mut src = None;
    let mut to = None;
    let mut prefix = None;
    let mut allow_trace: Option<(bool, &Pos)> = None;
    let mut share = false;
    for (k, at, v) in &m.entries {
        match k.to_ascii_lowercase().as_str() {
            kind @ ("stream" | "service") => {
                let sm = map(k, v)?;
                let account = sm
                    .get("account")
                    .map(|a| string("account", a))
                    .transpose()?
                    .ok_or_else(|| err(v, "import requires an account"))?;
                let subject = sm
                    .get("subject")
                    .map(|a| string("subject", a))
                    .transpose()?
                    .ok_or_else(|| err(v, "import requires a subject"))?;
                let kind = if kind == "stream" {
                    ExchangeKind::Stream
                } else {
                    ExchangeKind::Service
                };
                if let (ExchangeKind::Service, Some((_, at))) = (kind, allow_trace) {
                    return Err(err_at(at, "Detected allow_trace directive on a non-stream"));
                }
                src = Some((kind, account, subject));
            }
            "to" | "local_subject" => to = Some(string(k, v)?),
            "prefix" => prefix = Some(string(k, v)?),
            "allow_trace" => {
                if matches!(src, Some((ExchangeKind::Service, _, _))) {
                    return Err(err_at(at, "Detected allow_trace directive on a non-stream"));
                }
                allow_trace = Some((boolean(k, v)?, at));
            }
            "share" => share = boolean(k, v)?,
            "name" => {}
            other => return Err(err_at(at, format!("unknown field \"{other}\""))),
        }
    }
    let (kind, account, subject) = src.ok_or_else(|| err(item, "import requires a stream or service"))?;
    let local = match (to, prefix) {
        (Some(t), _) => Some(t),
        (None, Some(p)) => Some(format!("{p}.{subject}")),
        (None, None) => None,
    };
    if let Some(l) = &local {
        if !crate::subject::is_valid_subject(l.as_bytes()) {
            return Err(err(item, format!("import: invalid local subject {l:?}")));
        }
    }
    Ok(ImportConfig {
        kind,
        account,
        subject,
        local,
        allow_trace: allow_trace.is_some_and(|(b, _)| b),
        share,
    })
}

/// The `accounts` block.
pub fn accounts(a: &mut AuthConfig, item: &Item) -> Result<(), ConfError> {
    let m = match &item.value {
        Value::Map(m) => m,
        Value::Array(list) => {
            for i in list {
                a.accounts.push(AccountConfig {
                    name: string("accounts", i)?,
                    exports: Vec::new(),
                    imports: Vec::new(),
                    mappings: Vec::new(),
                    trace_dest: None,
                    limits: AccountLimits::default(),
                });
            }
            return Ok(());
        }
        _ => return Err(err(item, "accounts: expected a map")),
    };
    for (name, _, v) in &m.entries {
        let mut acc = AccountConfig {
            name: name.clone(),
            exports: Vec::new(),
            imports: Vec::new(),
            mappings: Vec::new(),
            trace_dest: None,
            limits: AccountLimits::default(),
        };
        let mut defaults = None;
        if let Value::Map(am) = &v.value {
            for (k, key_at, av) in &am.entries {
                match k.to_ascii_lowercase().as_str() {
                    "users" => a.users.extend(users(av, name)?),
                    "exports" => match &av.value {
                        Value::Array(l) => acc.exports = l.iter().map(export).collect::<Result<_, _>>()?,
                        _ => return Err(err(av, "exports: expected an array")),
                    },
                    "imports" => match &av.value {
                        Value::Array(l) => acc.imports = l.iter().map(import).collect::<Result<_, _>>()?,
                        _ => return Err(err(av, "imports: expected an array")),
                    },
                    "default_permissions" | "default_permission" => defaults = Some(permissions(av)?),
                    "mappings" | "maps" => acc.mappings.extend(mappings(av)?),
                    "msg_trace" | "trace_dest" => acc.trace_dest = Some(trace_dest(k, key_at, av)?),
                    "limits" => acc.limits = account_limits(key_at, av)?,
                    // JetStream settings have nothing to act on here.
                    "jetstream" | "js" | "nkey" => {}
                    other => return Err(unknown_field(key_at, other)),
                }
            }
        }
        if let Some(p) = defaults {
            account_defaults(a, name, p);
        }
        a.accounts.push(acc);
    }
    Ok(())
}

/// An account's `msg_trace` (or `trace_dest`): a subject, or `{dest,
/// sampling}` with sampling a percentage (`50` or `"50%"`), checked with
/// nats-server's texts.
fn trace_dest(key: &str, key_at: &Pos, item: &Item) -> Result<TraceDest, ConfError> {
    // Errors point at the value of a plain subject, at the key in a map.
    let dest_of = |k: &str, pos: &Pos, v: &Item| -> Result<String, ConfError> {
        let Value::Str(d) = &v.value else {
            return Err(err_at(
                pos,
                format!("Field {k:?} should be a string, got {}", go_type(&v.value)),
            ));
        };
        if !crate::subject::is_valid_literal_subject(d.as_bytes()) {
            return Err(err_at(pos, format!("Trace destination {d:?} is not valid")));
        }
        Ok(d.clone())
    };
    let sampling_of = |pos: &Pos, n: i64| -> Result<u8, ConfError> {
        if n <= 0 || n > 100 {
            // (sic) nats-server's text.
            return Err(err_at(
                pos,
                format!("Ttrace destination sampling value {n} is invalid, needs to be [1..100]"),
            ));
        }
        Ok(n as u8)
    };
    match &item.value {
        Value::Str(_) => Ok(TraceDest {
            dest: dest_of(key, &item.pos, item)?,
            sampling: 0,
        }),
        Value::Map(m) => {
            let mut t = TraceDest {
                dest: String::new(),
                sampling: 0,
            };
            for (k, pos, v) in &m.entries {
                match k.to_ascii_lowercase().as_str() {
                    "dest" => t.dest = dest_of(k, pos, v)?,
                    "sampling" => {
                        t.sampling = match &v.value {
                            Value::Int(n) => sampling_of(pos, *n)?,
                            Value::Str(text) => {
                                let n = text.trim_end_matches('%').parse::<i64>().map_err(|_| {
                                    err_at(pos, format!("Invalid trace destination sampling value {text:?}"))
                                })?;
                                sampling_of(pos, n)?
                            }
                            other => {
                                return Err(err_at(
                                    pos,
                                    format!(
                                "Trace destination sampling field {k:?} should be an integer or a percentage, got {}",
                                go_type(other)
                            ),
                                ))
                            }
                        }
                    }
                    other => {
                        return Err(err_at(
                            pos,
                            format!("Unknown field {other:?} parsing account message trace map/struct {key:?}"),
                        ))
                    }
                }
            }
            Ok(t)
        }
        other => Err(err_at(
            key_at,
            format!(
                "Expected account message trace {key:?} to be a string or a map/struct, got {}",
                go_type(other)
            ),
        )),
    }
}

/// The top-level `mappings` block: mappings of the global account `$G`.
pub fn global_mappings(a: &mut AuthConfig, item: &Item) -> Result<(), ConfError> {
    let list = mappings(item)?;
    match a.accounts.iter_mut().find(|x| x.name == GLOBAL_ACCOUNT) {
        Some(g) => g.mappings.extend(list),
        None => a.accounts.push(AccountConfig {
            name: GLOBAL_ACCOUNT.to_string(),
            exports: Vec::new(),
            imports: Vec::new(),
            mappings: list,
            trace_dest: None,
            limits: AccountLimits::default(),
        }),
    }
    Ok(())
}

/// A `mappings` block: source subject to a destination string, one
/// weighted destination, or a list of them; each checked as nats-server
/// checks it when the account takes it, with its texts.
pub fn mappings(item: &Item) -> Result<Vec<MappingConfig>, ConfError> {
    let Value::Map(m) = &item.value else {
        return Err(err(
            item,
            format!("mappings: expected a map, got {}", item.value.kind()),
        ));
    };
    let mut out = Vec::new();
    for (source, key_pos, v) in &m.entries {
        let at = |msg: String| err_at(key_pos, msg);
        if !crate::subject::is_valid_subject(source.as_bytes()) {
            return Err(err(item, format!("Subject {source:?} is not a valid subject")));
        }
        let dests = match &v.value {
            Value::Str(d) => {
                let dests = vec![MapDest::all(d)];
                Mapping::new(source, &dests)
                    .map_err(|e| at(format!("Error adding mapping for {source:?} to {d:?} : {e}")))?;
                dests
            }
            Value::Array(l) => {
                let dests = l.iter().map(map_dest).collect::<Result<Vec<_>, _>>()?;
                Mapping::new(source, &dests).map_err(|e| at(format!("Error adding mapping for {source:?} : {e}")))?;
                dests
            }
            Value::Map(_) => {
                let dests = vec![map_dest(v)?];
                Mapping::new(source, &dests).map_err(|e| at(format!("Error adding mapping for {source:?} : {e}")))?;
                dests
            }
            _ => return Err(at("Expected an entry for the mapping destination".into())),
        };
        out.push(MappingConfig {
            source: source.clone(),
            dests,
        });
    }
    Ok(out)
}

/// One weighted destination: `{ dest, weight, cluster }`.
fn map_dest(item: &Item) -> Result<MapDest, ConfError> {
    let Value::Map(m) = &item.value else {
        return Err(err(item, "Expected an entry for the mapping destination"));
    };
    let mut d = MapDest {
        subject: String::new(),
        weight: 0,
        cluster: String::new(),
    };
    let mut weighted = false;
    for (k, kpos, v) in &m.entries {
        let at = |msg: String| err_at(kpos, msg);
        match k.to_ascii_lowercase().as_str() {
            "dest" | "destination" => d.subject = string(k, v)?,
            "cluster" => d.cluster = string(k, v)?,
            "weight" => {
                let w = match &v.value {
                    Value::Str(s) => {
                        let s = s.strip_suffix('%').unwrap_or(s);
                        s.parse::<i64>()
                            .map_err(|_| at(format!("Invalid weight {s:?} for mapping destination")))?
                    }
                    Value::Int(n) => *n,
                    other => return Err(at(format!("Unknown entry type for weight of {}", other.kind()))),
                };
                if !(0..=100).contains(&w) {
                    return Err(at(format!("Invalid weight {w} for mapping destination")));
                }
                d.weight = w as u8;
                weighted = true;
            }
            _ => return Err(at(format!("Unknown field {k:?} for mapping destination"))),
        }
    }
    if !weighted {
        return Err(err(
            item,
            format!("Missing weight for mapping destination {:?}", d.subject),
        ));
    }
    Ok(d)
}

/// Gives an account's users without permissions the account's defaults.
fn account_defaults(a: &mut AuthConfig, account: &str, p: Permissions) {
    for u in a.users.iter_mut().filter(|u| u.account == account) {
        if u.permissions.is_none() {
            u.permissions = Some(p.clone());
        }
    }
}

/// `resolver: MEMORY` or `resolver: URL(...)`.
pub fn resolver(item: &Item) -> Result<ResolverConfig, ConfError> {
    let s = match &item.value {
        Value::Str(s) => s.trim().to_string(),
        Value::Map(m) => return nats_resolver(m, item),
        _ => return Err(err(item, "resolver: expected MEMORY or URL(...)")),
    };
    let upper = s.to_ascii_uppercase();
    if upper == "MEMORY" || upper == "MEM" {
        return Ok(ResolverConfig::Memory);
    }
    if upper.starts_with("URL(") && s.ends_with(')') {
        let inner = s[4..s.len() - 1].trim().trim_matches(|c| c == '"' || c == '\'').trim();
        let mut url = inner.to_string();
        if !url.ends_with('/') {
            url.push('/');
        }
        return Ok(ResolverConfig::Url(url));
    }
    Err(err(item, format!("resolver: unsupported resolver {s:?}")))
}

fn nats_resolver(m: &Map, item: &Item) -> Result<ResolverConfig, ConfError> {
    let mut full = true;
    let mut dir = None;
    let mut allow_delete = false;
    let mut hard_delete = false;
    let mut limit = None;
    for (k, key_at, v) in &m.entries {
        match k.to_ascii_lowercase().as_str() {
            "type" => {
                full = match string(k, v)?.to_ascii_lowercase().as_str() {
                    "full" => true,
                    "cache" | "mem" | "memory" => false,
                    other => return Err(err(v, format!("resolver: unsupported type {other:?} (full or cache)"))),
                }
            }
            "dir" => dir = Some(std::path::PathBuf::from(string(k, v)?)),
            "allow_delete" => allow_delete = matches!(v.value, Value::Bool(true)),
            "hard_delete" => hard_delete = matches!(v.value, Value::Bool(true)),
            "limit" => match v.value {
                Value::Int(n) if n >= 0 => limit = Some(n as usize),
                _ => return Err(err(v, "resolver: limit must be a non-negative integer")),
            },
            // Sync and fetch timing matter between clustered servers; a
            // standalone petrel has no peers to sync with.
            "interval" | "ttl" | "timeout" => {}
            other => return Err(unknown_field(key_at, other)),
        }
    }
    let dir = dir.ok_or_else(|| err(item, "resolver: dir is required"))?;
    Ok(ResolverConfig::Nats(NatsResolver {
        full,
        dir,
        allow_delete: allow_delete && full,
        hard_delete,
        limit: limit.unwrap_or(if full { 0 } else { 1000 }),
    }))
}

/// `operator`: file paths or inline JWTs.
pub fn operator_jwts(item: &Item) -> Result<Vec<String>, ConfError> {
    let mut out = Vec::new();
    for entry in strings("operator", item)? {
        let text = match std::fs::read_to_string(&entry) {
            Ok(t) => t,
            Err(e) if entry.starts_with("eyJ") => {
                let _ = e;
                entry.clone()
            }
            Err(e) => return Err(err(item, format!("operator: error reading {entry:?}: {e}"))),
        };
        let jwt = super::jwt::extract_jwt(&text)
            .ok_or_else(|| err(item, format!("operator: no JWT found in {entry:?}")))?
            .to_string();
        super::jwt::decode_operator(&jwt).map_err(|e| err(item, format!("operator: invalid operator JWT: {e}")))?;
        out.push(jwt);
    }
    Ok(out)
}

/// `resolver_preload`: account public key to JWT.
pub fn preload(item: &Item) -> Result<Vec<(String, String)>, ConfError> {
    let m = map("resolver_preload", item)?;
    let mut out = Vec::new();
    for (k, _, v) in &m.entries {
        let jwt = string(k, v)?;
        let claims = super::jwt::decode_account(&jwt).map_err(|e| err(v, format!("invalid account JWT: {e}")))?;
        if claims.sub != *k {
            return Err(err(
                v,
                format!("invalid account JWT: subject {} does not match key {k}", claims.sub),
            ));
        }
        out.push((k.clone(), jwt));
    }
    Ok(out)
}

/// Checks that the settings fit together, as nats-server does after
/// reading a file. `at` locates a key for the error message.
pub fn validate(a: &AuthConfig, at: &dyn Fn(&str) -> Option<Item>) -> Result<(), ConfError> {
    let pos_err = |key: &str, msg: String| match at(key) {
        Some(i) => err(&i, msg),
        None => ConfError {
            pos: crate::conf::value::Pos {
                file: std::rc::Rc::new(Default::default()),
                line: 0,
                col: 0,
            },
            msg,
        },
    };
    if let Some(op) = &a.operator {
        if !a.users.is_empty() || !a.accounts.is_empty() {
            return Err(pos_err(
                "operator",
                "operators do not allow Accounts/users to be configured directly".into(),
            ));
        }
        if a.no_auth_user.is_some() {
            return Err(pos_err(
                "no_auth_user",
                "no_auth_user not compatible with Trusted Operator".into(),
            ));
        }
        if op.resolver.is_none() && implicit_resolver(&op.jwts).is_none() {
            return Err(pos_err("operator", "operators require an account resolver".into()));
        }
    }
    // One name, one user, across `authorization` and every account.
    let mut seen = std::collections::HashSet::new();
    for u in &a.users {
        if !seen.insert(u.name()) {
            let what = match u.credential {
                Credential::Password { .. } => "user",
                Credential::Nkey(_) => "nkey",
            };
            let block = if u.account == GLOBAL_ACCOUNT {
                "authorization"
            } else {
                "accounts"
            };
            return Err(pos_err(block, format!("Duplicate {what} {:?} detected", u.name())));
        }
    }
    let known_account = |n: &str| n == GLOBAL_ACCOUNT || a.accounts.iter().any(|x| x.name == n);
    for acc in &a.accounts {
        for imp in &acc.imports {
            if !known_account(&imp.account) {
                return Err(pos_err(
                    "accounts",
                    format!("import of {:?} from unknown account {:?}", imp.subject, imp.account),
                ));
            }
        }
    }
    if let Some(u) = &a.no_auth_user {
        if !a.users.iter().any(|x| x.name() == u) {
            return Err(pos_err(
                "no_auth_user",
                format!(
                    "no_auth_user: {u:?} not present as user or nkey in authorization block or account configuration"
                ),
            ));
        }
    }
    if let Some(ws) = &a.websocket {
        if let Some(u) = &ws.no_auth_user {
            if !a.users.iter().any(|x| x.name() == u) {
                return Err(pos_err(
                    "websocket",
                    format!("websocket no_auth_user: {u:?} not present as user or nkey in authorization block or account configuration"),
                ));
            }
        }
        // (A top-level single user is one entry; the block's user replaces it.)
        if ws.username.is_some() && a.users.len() > 1 {
            return Err(pos_err(
                "websocket",
                "websocket authentication username not compatible with presence of users/nkeys".into(),
            ));
        }
    }
    if let (Some(sys), None) = (&a.system_account, &a.operator) {
        if sys != DEFAULT_SYSTEM_ACCOUNT && !a.accounts.iter().any(|x| x.name == *sys) {
            return Err(pos_err(
                "system_account",
                format!("system_account: account {sys:?} is not defined"),
            ));
        }
    }
    Ok(())
}

/// nats-server's implicit resolver: one operator whose JWT names an
/// `http(s)` account server, and no resolver configured, means
/// `URL(<account_server_url>/accounts/)`.
pub fn implicit_resolver(jwts: &[String]) -> Option<ResolverConfig> {
    let [one] = jwts else { return None };
    let c = jwt::decode_operator(one).ok()?;
    let url = c.nats.account_server_url.trim_end_matches('/');
    (url.starts_with("http://") || url.starts_with("https://")).then(|| ResolverConfig::Url(format!("{url}/accounts/")))
}
