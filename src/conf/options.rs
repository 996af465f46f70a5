//! Maps a parsed configuration file onto [`Options`], with nats-server's
//! key names, aliases and value forms, and its `unknown field` errors.

use std::path::PathBuf;
use std::time::Duration;

use super::parse::{ConfError, Parsed};
pub use super::read::Notices;
use super::read::{boolean, duration, int, listen_value, size, string, type_err};
use super::tls::loaded_tls;
pub use super::units::{parse_go_duration, seconds};
use super::value::{Item, Value};
use crate::auth::config as auth;
use crate::options::Options;

/// Blocks and keys of nats-server that petrel parses but does not implement
/// yet; setting them would change behaviour, so start-up refuses them.
const NOT_YET: &[(&str, &str)] = &[
    ("resolver_tls", "decentralized JWT auth"),
    ("resolver_pinned_accounts", "decentralized JWT auth"),
    ("default_sentinel", "decentralized JWT auth"),
    ("gateway", "gateways"),
    ("mqtt", "MQTT"),
    ("https", "HTTP monitoring"),
    ("https_port", "HTTP monitoring"),
    ("max_sub_tokens", "max_sub_tokens"),
];

/// Keys accepted without effect, each with why: logging detail or
/// features whose absence changes nothing for a client (each named in the
/// README). A file that sets one gets a warning naming it at start-up and
/// on reload (not an error under `-t`, where nats-server passes them).
const ACCEPTED_WITHOUT_EFFECT: &[(&str, &str)] = &[
    ("max_traced_msg_len", "petrel's trace lines do not show message bodies"),
    ("trace_verbose", "petrel's trace lines do not show message bodies"),
    ("trace_headers", "petrel's trace lines do not show message headers"),
    ("store_dir", "JetStream is not supported"),
    ("prof_block_rate", "petrel has no block profile"),
    (
        "write_timeout",
        "a write past write_deadline always closes the connection",
    ),
    ("feature_flags", "no nats-server feature flag applies to petrel"),
];

/// Applies the top-level keys of `parsed` to `opts`. Every problem is
/// collected, each naming its file, line, column and key.
pub fn apply(opts: &mut Options, parsed: &Parsed) -> Result<Notices, Vec<ConfError>> {
    let mut errors = Vec::new();
    let mut notices = Notices::default();
    for (key, key_pos, item) in &parsed.map.entries {
        let k = key.to_ascii_lowercase();
        // Variables defined inside a block (nats.js writes `PERM = {...}`
        // inside `authorization`) are not settings of that block.
        let stripped;
        let item = if matches!(item.value, Value::Map(_) | Value::Array(_)) && !parsed.used_vars.is_empty() {
            stripped = without_vars(item, &parsed.used_vars);
            &stripped
        } else {
            item
        };
        if let Err(e) = apply_one(opts, &k, item, &mut notices) {
            errors.push(e);
            continue;
        }
        if k == "unknown" {
            continue;
        }
        if let Some((_, why)) = ACCEPTED_WITHOUT_EFFECT.iter().find(|(n, _)| *n == k) {
            notices.without_effect.push(ConfError {
                pos: key_pos.clone(),
                msg: format!("\"{key}\" has no effect in petrel: {why}"),
            });
            continue;
        }
        let known = KNOWN.contains(&k.as_str()) || NOT_YET.iter().any(|(n, _)| *n == k);
        if !known && !parsed.used_vars.contains(key) {
            errors.push(ConfError {
                pos: key_pos.clone(),
                msg: format!("unknown field \"{key}\""),
            });
        }
    }
    for (key, key_pos, item) in &parsed.map.entries {
        let k = key.to_ascii_lowercase();
        if let Some((_, feature)) = NOT_YET.iter().find(|(n, _)| *n == k) {
            // `syslog: false` and friends ask for nothing.
            if matches!(item.value, Value::Bool(false)) {
                continue;
            }
            errors.push(ConfError {
                pos: key_pos.clone(),
                msg: format!("\"{key}\" is not supported by petrel yet ({feature})"),
            });
        }
    }
    if errors.is_empty() {
        let at = |key: &str| parsed.map.get(key).cloned();
        if let Some(op) = &opts.auth.operator {
            if op.jwts.is_empty() && opts.auth.trusted_keys.is_empty() {
                let e = ConfError {
                    pos: at("resolver").map(|i| i.pos).unwrap_or_else(|| parsed_pos(parsed)),
                    msg: "resolver: an account resolver needs an operator (operator or trusted_keys)".into(),
                };
                return Err(vec![e]);
            }
        }
        if let Err(e) = auth::validate(&opts.auth, &at) {
            return Err(vec![e]);
        }
        if let Some(cookie) = opts.websocket.as_ref().and_then(|w| w.jwt_cookie.as_ref()) {
            if opts.auth.operator.is_none() && opts.auth.trusted_keys.is_empty() {
                return Err(vec![ConfError {
                    pos: at("websocket").map(|i| i.pos).unwrap_or_else(|| parsed_pos(parsed)),
                    msg: format!("trusted operators or trusted keys configuration is required for JWT authentication via cookie {cookie:?}"),
                }]);
            }
        }
        Ok(notices)
    } else {
        errors.sort_by_key(|e| (e.pos.line, e.pos.col));
        Err(errors)
    }
}

/// `item` without the map entries that define variables used elsewhere.
fn without_vars(item: &Item, used: &std::collections::HashSet<String>) -> Item {
    let value = match &item.value {
        Value::Map(m) => Value::Map(super::value::Map {
            entries: m
                .entries
                .iter()
                .filter(|(k, _, _)| !used.contains(k))
                .map(|(k, p, v)| (k.clone(), p.clone(), without_vars(v, used)))
                .collect(),
        }),
        Value::Array(a) => Value::Array(a.iter().map(|v| without_vars(v, used)).collect()),
        v => v.clone(),
    };
    Item {
        value,
        pos: item.pos.clone(),
    }
}

fn parsed_pos(parsed: &Parsed) -> super::value::Pos {
    parsed
        .map
        .entries
        .first()
        .map(|(_, p, _)| p.clone())
        .unwrap_or_else(|| super::value::Pos {
            file: std::rc::Rc::new(PathBuf::new()),
            line: 0,
            col: 0,
        })
}

const KNOWN: &[&str] = &[
    "cluster",
    "leafnodes",
    "leaf",
    "port",
    "host",
    "net",
    "listen",
    "server_name",
    "http_base_path",
    "server_tags",
    "server_metadata",
    "client_advertise",
    "max_payload",
    "max_pending",
    "max_control_line",
    "max_connections",
    "max_conn",
    "max_subscriptions",
    "max_closed_clients",
    "max_subs",
    "ping_interval",
    "ping_max",
    "write_deadline",
    "no_header_support",
    "disable_sublist_cache",
    "debug",
    "trace",
    "logtime",
    "logtime_utc",
    "no_fast_producer_stall",
    "log_max_num",
    "logfile_max_num",
    "connect_error_reports",
    "reconnect_error_reports",
    "log_file",
    "logfile",
    "log_size_limit",
    "http",
    "http_port",
    "monitor_port",
    "syslog",
    "remote_syslog",
    "pid_file",
    "pidfile",
    "ports_file_dir",
    "lame_duck_duration",
    "lame_duck_grace_period",
    "jetstream",
    "authorization",
    "accounts",
    "mappings",
    "maps",
    "no_auth_user",
    "system_account",
    "system",
    "operator",
    "operators",
    "root",
    "roots",
    "root_operator",
    "root_operators",
    "trusted",
    "trusted_keys",
    "resolver",
    "account_resolver",
    "accounts_resolver",
    "resolver_preload",
    "prof_port",
    "tls",
    "websocket",
    "ws",
    "allow_non_tls",
];

fn apply_one(o: &mut Options, k: &str, item: &Item, notices: &mut Notices) -> Result<(), ConfError> {
    match k {
        "port" => {
            let p = int(k, item)?;
            if !(-1..=65535).contains(&p) {
                return Err(ConfError {
                    pos: item.pos.clone(),
                    msg: format!("port: {p} is not a valid port"),
                });
            }
            o.port = p as i32;
        }
        "host" | "net" => o.host = string(k, item)?,
        "listen" => match &item.value {
            Value::Int(p) => o.port = *p as i32,
            Value::Str(s) => {
                let (h, p) = s.rsplit_once(':').ok_or_else(|| ConfError {
                    pos: item.pos.clone(),
                    msg: format!("listen: could not parse address string {s:?}"),
                })?;
                o.host = h.trim_start_matches('[').trim_end_matches(']').to_string();
                o.port = p.parse().map_err(|_| ConfError {
                    pos: item.pos.clone(),
                    msg: format!("listen: could not parse port {p:?}"),
                })?;
            }
            _ => return Err(type_err(k, item, "\"host:port\" or a port")),
        },
        // nats-server's tag list: a string or a list of strings, trimmed
        // and lower-cased, empty ones and repeats left out.
        "server_tags" => {
            let list = match &item.value {
                Value::Array(a) => a.iter().map(|i| string(k, i)).collect::<Result<Vec<_>, _>>()?,
                Value::Str(s) => vec![s.clone()],
                other => {
                    return Err(ConfError {
                        pos: item.pos.clone(),
                        msg: format!("error parsing tags: unsupported type {}", other.kind()),
                    })
                }
            };
            for t in list {
                let t = t.trim().to_lowercase();
                if !t.is_empty() && !o.server_tags.contains(&t) {
                    o.server_tags.push(t);
                }
            }
        }
        "server_metadata" => {
            let Value::Map(m) = &item.value else {
                return Err(ConfError {
                    pos: item.pos.clone(),
                    msg: format!("error parsing metadata: unsupported type {}", item.value.kind()),
                });
            };
            for (mk, _, mv) in &m.entries {
                o.server_metadata.insert(mk.clone(), string(mk, mv)?);
            }
        }
        "http_base_path" => o.http_base_path = string(k, item)?,
        "server_name" => {
            let n = string(k, item)?;
            if n.contains(' ') {
                return Err(ConfError {
                    pos: item.pos.clone(),
                    msg: "server_name: server name cannot contain spaces".into(),
                });
            }
            o.server_name = Some(n);
        }
        "client_advertise" => o.client_advertise = Some(string(k, item)?),
        "max_payload" => {
            let n = size(k, item)?;
            if n == 0 {
                return Err(ConfError {
                    pos: item.pos.clone(),
                    msg: "max_payload: must be greater than 0".into(),
                });
            }
            if n > 64 << 20 {
                return Err(ConfError {
                    pos: item.pos.clone(),
                    msg: "max_payload: cannot be higher than 64MB".into(),
                });
            }
            if n > 8 << 20 {
                notices.warnings.push(ConfError {
                    pos: item.pos.clone(),
                    msg: format!("Maximum payloads over 8.00 MB are generally discouraged ({n} bytes)"),
                });
            }
            o.max_payload = n;
        }
        "max_pending" => o.max_pending = size(k, item)?,
        "max_control_line" => {
            let n = size(k, item)?;
            if n > i32::MAX as usize {
                return Err(ConfError {
                    pos: item.pos.clone(),
                    msg: "max_control_line value is too big".into(),
                });
            }
            o.max_control_line = n;
        }
        "max_connections" | "max_conn" => o.max_connections = size(k, item)?,
        "max_subscriptions" | "max_subs" => o.max_subscriptions = size(k, item)?,
        // 0 is the default (`Options::apply_baseline`); nats-server would
        // not start with a negative.
        "max_closed_clients" => o.max_closed_clients = size(k, item)?,
        "ping_interval" => o.ping_interval = duration(k, item, notices)?,
        "ping_max" => o.ping_max = int(k, item)?.clamp(0, u32::MAX as i64) as u32,
        "write_deadline" => o.write_deadline = duration(k, item, notices)?,
        "no_header_support" => o.no_header_support = boolean(k, item)?,
        "disable_sublist_cache" => o.disable_sublist_cache = boolean(k, item)?,
        "debug" => o.debug = boolean(k, item)?,
        "trace" => o.trace = boolean(k, item)?,
        "logtime" => o.logtime = boolean(k, item)?,
        "logtime_utc" => o.logtime_utc = boolean(k, item)?,
        "no_fast_producer_stall" => o.no_fast_producer_stall = boolean(k, item)?,
        // 0 is the default (`Options::apply_baseline`).
        "connect_error_reports" => o.connect_error_reports = int(k, item)?,
        "reconnect_error_reports" => o.reconnect_error_reports = int(k, item)?,
        "log_file" | "logfile" => o.log_file = Some(PathBuf::from(string(k, item)?)),
        "log_size_limit" => o.log_size_limit = size(k, item)? as u64,
        // nats-server keeps every file for 0 or less.
        "log_max_num" | "logfile_max_num" => o.log_max_num = int(k, item)?.max(0) as usize,
        "syslog" => o.syslog = boolean(k, item)?,
        "http_port" | "monitor_port" => o.http_port = Some(int(k, item)? as i32),
        "http" => match &item.value {
            Value::Int(p) => o.http_port = Some(*p as i32),
            Value::Str(s) => {
                let (h, p) = s.rsplit_once(':').ok_or_else(|| ConfError {
                    pos: item.pos.clone(),
                    msg: format!("http: could not parse address string {s:?}"),
                })?;
                o.http_host = Some(h.to_string());
                o.http_port = Some(p.parse().map_err(|_| ConfError {
                    pos: item.pos.clone(),
                    msg: format!("http: could not parse port {p:?}"),
                })?);
            }
            _ => return Err(type_err(k, item, "\"host:port\" or a port")),
        },
        "remote_syslog" => o.remote_syslog = Some(string(k, item)?),
        "pid_file" | "pidfile" => o.pid_file = Some(PathBuf::from(string(k, item)?)),
        "ports_file_dir" => o.ports_file_dir = Some(PathBuf::from(string(k, item)?)),
        "lame_duck_duration" => {
            let d = duration(k, item, notices)?;
            if d < Duration::from_secs(30) {
                return Err(ConfError {
                    pos: item.pos.clone(),
                    msg: format!("lame_duck_duration: invalid lame duck duration: {d:?}, minimum is 30s"),
                });
            }
            o.lame_duck_duration = d;
        }
        "lame_duck_grace_period" => o.lame_duck_grace_period = duration(k, item, notices)?,
        "jetstream" => {
            let enabled = match &item.value {
                Value::Bool(b) => *b,
                Value::Str(s) => !matches!(s.to_ascii_lowercase().as_str(), "disabled" | "false"),
                Value::Map(m) => !m.get("enabled").is_some_and(|e| e.value == Value::Bool(false)),
                _ => true,
            };
            if enabled {
                notices
                    .info
                    .push("JetStream is not supported by petrel: the jetstream block is ignored".into());
            }
        }
        "authorization" => auth::authorization(&mut o.auth, item)?,
        "accounts" => auth::accounts(&mut o.auth, item)?,
        "mappings" | "maps" => auth::global_mappings(&mut o.auth, item)?,
        "no_auth_user" => o.auth.no_auth_user = Some(string(k, item)?),
        "system_account" | "system" => o.auth.system_account = Some(string(k, item)?),
        "operator" | "operators" | "root" | "roots" | "root_operator" | "root_operators" => {
            o.auth.operator.get_or_insert_with(operator_default).jwts = auth::operator_jwts(item)?;
        }
        "trusted" | "trusted_keys" => {
            let keys = match &item.value {
                Value::Array(a) => a.iter().map(|i| string(k, i)).collect::<Result<Vec<_>, _>>()?,
                _ => string(k, item)?.split_whitespace().map(str::to_string).collect(),
            };
            for key in &keys {
                if !key.starts_with('O') || nkeys::KeyPair::from_public_key(key).is_err() {
                    return Err(ConfError {
                        pos: item.pos.clone(),
                        msg: format!("trusted Keys: {key:?} is not a valid public operator nkey"),
                    });
                }
            }
            o.auth.trusted_keys = keys;
        }
        "resolver" | "account_resolver" | "accounts_resolver" => {
            o.auth.operator.get_or_insert_with(operator_default).resolver = Some(auth::resolver(item)?);
        }
        "prof_port" => o.prof_port = Some(int(k, item)? as i32),
        "tls" => o.tls = Some(loaded_tls(item)?),
        "websocket" | "ws" => {
            let ws = websocket_block(item, notices)?;
            o.auth.websocket = ws.auth_override().then(|| auth::WebsocketAuth {
                username: ws.username.clone(),
                password: ws.password.clone(),
                token: ws.token.clone(),
                no_auth_user: ws.no_auth_user.clone(),
            });
            o.websocket = Some(ws);
        }
        "allow_non_tls" => o.allow_non_tls = boolean(k, item)?,
        "cluster" => o.cluster = Some(super::cluster::cluster_block(item, notices)?),
        "leafnodes" | "leaf" => o.leaf = Some(super::leaf::leaf_block(item, notices)?),
        "resolver_preload" => {
            o.auth.operator.get_or_insert_with(operator_default).preload = auth::preload(item)?;
        }
        _ => {}
    }
    Ok(())
}

/// The `websocket` block, checked as nats-server checks it at start-up:
/// TLS unless `no_tls`, origins that parse, headers it may not override.
fn websocket_block(item: &Item, notices: &mut Notices) -> Result<crate::options::WebsocketOptions, ConfError> {
    let Value::Map(m) = &item.value else {
        return Err(type_err("websocket", item, "a map"));
    };
    let mut w = crate::options::WebsocketOptions::default();
    let at = |v: &Item, msg: String| ConfError {
        pos: v.pos.clone(),
        msg,
    };
    for (k, _, v) in &m.entries {
        match k.to_ascii_lowercase().as_str() {
            "listen" => (w.host, w.port) = listen_value(k, v).map(|(h, p)| (h.or(w.host.clone()), p))?,
            "port" => w.port = int(k, v)? as i32,
            "host" | "net" => w.host = Some(string(k, v)?),
            "advertise" => w.advertise = Some(string(k, v)?),
            "no_tls" => w.no_tls = boolean(k, v)?,
            "tls" => w.tls = Some(loaded_tls(v)?),
            "same_origin" => w.same_origin = boolean(k, v)?,
            "allowed_origins" | "allowed_origin" | "allow_origins" | "allow_origin" | "origins" | "origin" => {
                w.allowed_origins = match &v.value {
                    Value::Array(a) => a.iter().map(|i| string(k, i)).collect::<Result<_, _>>()?,
                    _ => vec![string(k, v)?],
                };
                for o in &w.allowed_origins {
                    match crate::ws::handshake::parse_origin(o) {
                        Some((scheme, _, _)) if scheme == "http" || scheme == "https" => {}
                        Some(_) => {
                            return Err(at(v, format!("unable to parse allowed origin {o:?}: allowed origins must be absolute URLs with http or https scheme")))
                        }
                        None => return Err(at(v, format!("unable to parse allowed origin {o:?}: host is required"))),
                    }
                }
            }
            "handshake_timeout" => {
                w.handshake_timeout = Some(match &v.value {
                    Value::Int(n) if *n >= 0 => Duration::from_secs(*n as u64),
                    Value::Str(s) => {
                        parse_go_duration(s).ok_or_else(|| at(v, format!("{k}: invalid duration {s:?}")))?
                    }
                    _ => return Err(type_err(k, v, "a duration")),
                })
            }
            "compress" | "compression" => w.compression = boolean(k, v)?,
            "authorization" | "authentication" => {
                let Value::Map(am) = &v.value else {
                    return Err(type_err(k, v, "a map"));
                };
                for (ak, _, av) in &am.entries {
                    match ak.to_ascii_lowercase().as_str() {
                        "user" | "username" => w.username = Some(string(ak, av)?),
                        "pass" | "password" => w.password = Some(string(ak, av)?),
                        "token" => w.token = Some(string(ak, av)?),
                        "timeout" => w.auth_timeout = Some(seconds(ak, av)?),
                        other => return Err(at(av, format!("Unknown field \"{other}\" parsing authorization"))),
                    }
                }
            }
            "jwt_cookie" => w.jwt_cookie = Some(string(k, v)?),
            "user_cookie" => w.user_cookie = Some(string(k, v)?),
            "pass_cookie" => w.pass_cookie = Some(string(k, v)?),
            "token_cookie" => w.token_cookie = Some(string(k, v)?),
            "no_auth_user" => w.no_auth_user = Some(string(k, v)?),
            "headers" => {
                let Value::Map(hm) = &v.value else {
                    return Err(type_err(k, v, "a map"));
                };
                for (hk, _, hv) in &hm.entries {
                    let lower = hk.to_ascii_lowercase();
                    if matches!(
                        lower.as_str(),
                        "host" | "content-length" | "connection" | "upgrade" | "nats-no-masking"
                    ) {
                        return Err(at(hv, format!("websocket: invalid header {hk:?} not allowed")));
                    }
                    if lower.starts_with("sec-websocket-") {
                        return Err(at(
                            hv,
                            format!("websocket: invalid header {hk:?}, \"Sec-WebSocket-\" prefix not allowed"),
                        ));
                    }
                    w.headers.push((hk.clone(), string(hk, hv)?));
                }
            }
            "ping_interval" => w.ping_interval = Some(duration(k, v, notices)?),
            other => return Err(at(v, format!("unknown field \"{other}\""))),
        }
    }
    if w.port != 0 && w.tls.is_none() && !w.no_tls {
        return Err(at(item, "websocket requires TLS configuration".into()));
    }
    Ok(w)
}

fn operator_default() -> auth::OperatorConfig {
    auth::OperatorConfig {
        jwts: Vec::new(),
        resolver: None,
        preload: Vec::new(),
    }
}
