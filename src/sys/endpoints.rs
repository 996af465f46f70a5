//! The monitoring documents (`varz`, `connz`, `subsz`, `statsz`, ...) built
//! once, from the shards' published counters and snapshots, and served both
//! over HTTP (`monitor.rs`) and as `$SYS` services (`services.rs`).
//! Everything here may wait for the shards' snapshots, so it runs on the
//! monitor thread or on a blocking thread, never on a shard's executor.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::account_detail;
use super::go_query;
use super::DataStats;
use crate::control::{ConnSnapshot, ShardSnapshot, Shared};
use crate::proto::info::COMPAT_VERSION;
use crate::stats;
use crate::timefmt::rfc3339;

/// How long a document waits for the shards' snapshots.
const SNAPSHOT_WAIT: Duration = Duration::from_millis(500);

/// Go's duration string for an uptime, e.g. `1h2m3s`.
pub fn uptime_text(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, sec) = (s / 86400, (s / 3600) % 24, (s / 60) % 60, s % 60);
    match (days, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m{sec}s"),
        (0, _, _) => format!("{h}h{m}m{sec}s"),
        _ => format!("{days}d{h}h{m}m{sec}s"),
    }
}

/// The process's resident set size.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no memory effects.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no memory effects.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn cpu_percent(shared: &Shared) -> f64 {
    let up = SystemTime::now().duration_since(shared.started).unwrap_or_default();
    if up.as_secs_f64() > 0.0 {
        (cpu_seconds() / up.as_secs_f64() * 100.0 * 100.0).round() / 100.0
    } else {
        0.0
    }
}

/// The cores this process may run on, as nats-server's `runtime.NumCPU()`
/// counts them at start: read once ([`prime_cores`] does it on the main
/// thread), because the threads that answer `$SYS` requests are pinned to
/// one core and would count one.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

/// Counts the cores now, from a thread that is not pinned (start-up).
pub fn prime_cores() {
    cores();
}

/// Accounts with at least one client connected.
fn active_accounts(shared: &Shared) -> usize {
    shared
        .verifier()
        .accounts()
        .all()
        .iter()
        .filter(|a| a.connections() > 0)
        .count()
}

/// `/varz`, `$SYS.REQ.SERVER.*.VARZ`.
pub fn varz(shared: &Shared) -> Value {
    let (o, info) = shared.current();
    let c = stats::sum(&shared.stats);
    let now = SystemTime::now();
    let up = now.duration_since(shared.started).unwrap_or_default();
    let http = *shared.http_addr.lock().unwrap_or_else(|e| e.into_inner());
    let mut v = json!({
        "server_id": info.server_id,
        "server_name": info.server_name,
        "version": COMPAT_VERSION,
        "proto": 1,
        "git_commit": "",
        "go": info.go,
        "host": o.host,
        "port": info.port,
        "auth_required": info.auth_required,
        "headers": info.headers,
        "max_connections": o.max_connections,
        "max_subscriptions": o.max_subscriptions,
        "ping_interval": o.ping_interval.as_nanos() as u64,
        "ping_max": o.ping_max,
        "http_host": http.map(|a| a.ip().to_string()).unwrap_or_default(),
        "http_port": http.map(|a| a.port()).unwrap_or(0),
        "http_base_path": o.http_base_path,
        "https_port": 0,
        "auth_timeout": o.client_auth_timeout().as_secs_f64(),
        "max_control_line": o.max_control_line,
        "max_payload": o.max_payload,
        "max_pending": o.max_pending,
        "cluster": cluster_varz(shared),
        "gateway": {},
        "leaf": leaf_varz(shared),
        "mqtt": {},
        "websocket": websocket_varz(shared, &o),
        "jetstream": {},
        "tls_timeout": 2.0,
        "write_deadline": o.write_deadline.as_nanos() as u64,
        "start": rfc3339(shared.started),
        "now": rfc3339(now),
        "uptime": uptime_text(up),
        "mem": rss_bytes(),
        "cores": cores(),
        "gomaxprocs": shared.nshards,
        "cpu": cpu_percent(shared),
        "connections": c.connections,
        "total_connections": c.total_connections,
        "routes": shared.cluster.get().map_or(0, |c| c.route_count()),
        "remotes": shared.cluster.get().map_or(0, |c| c.peers().len()),
        "leafnodes": shared.leaf.get().map_or(0, |l| l.connections().len()),
        "in_msgs": c.in_msgs,
        "in_bytes": c.in_bytes,
        "in_client_msgs": c.in_msgs,
        "in_client_bytes": c.in_bytes,
        "out_msgs": c.out_msgs,
        "out_bytes": c.out_bytes,
        "out_client_msgs": c.out_msgs,
        "out_client_bytes": c.out_bytes,
        "slow_consumers": c.slow_consumers,
        "stale_connections": c.stale_connections,
        "stalled_clients": 0,
        "subscriptions": c.subscriptions,
        "http_req_stats": *shared.http_req_stats.lock().unwrap_or_else(|e| e.into_inner()),
        "config_load_time": rfc3339(shared.started),
        "config_digest": o.config_digest,
    });
    // Left out when empty, where nats-server puts them.
    if let Some(m) = v.as_object_mut() {
        if !o.server_tags.is_empty() {
            m.insert("tags".into(), json!(o.server_tags));
        }
        if !o.server_metadata.is_empty() {
            m.insert("metadata".into(), json!(o.server_metadata));
        }
        m.insert(
            "system_account".into(),
            json!(shared.verifier().accounts().system().name),
        );
        m.insert(
            "slow_consumer_stats".into(),
            json!({ "clients": c.slow_consumers, "routes": 0, "gateways": 0, "leafs": 0 }),
        );
        m.insert(
            "stale_connection_stats".into(),
            json!({ "clients": c.stale_connections, "routes": 0, "gateways": 0, "leafs": 0 }),
        );
        m.insert("petrel_shards".into(), petrel_shards(shared));
    }
    v
}

/// Beyond nats-server (`petrel_shards` in varz and STATSZ): each shard's
/// counters and the memory its connections' buffers hold (read buffers
/// and outbound queues by capacity, and its pool of written chunks), as
/// it last published them (memory about once a second).
fn petrel_shards(shared: &Shared) -> Value {
    let shards: Vec<Value> = shared
        .stats
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let c = s.read();
            let m = s.read_memory();
            json!({
                "shard": i,
                "connections": c.connections,
                "subscriptions": c.subscriptions,
                "in_msgs": c.in_msgs,
                "in_bytes": c.in_bytes,
                "out_msgs": c.out_msgs,
                "out_bytes": c.out_bytes,
                "slow_consumers": c.slow_consumers,
                "buffer_bytes": m.buffers,
                "pool_bytes": m.pool,
            })
        })
        .collect();
    json!(shards)
}

/// `connz` options, from an HTTP query or a `$SYS` request body.
#[derive(Debug, Clone, Default)]
pub struct ConnzOpts {
    /// Skip this many.
    pub offset: usize,
    /// Return at most this many (1024).
    pub limit: usize,
    /// Include subscription subjects.
    pub subs: bool,
    /// Include subscription details.
    pub subs_detail: bool,
    /// Only this connection.
    pub cid: Option<u64>,
    /// Sort key.
    pub sort: String,
    /// Only this account's connections.
    pub account: Option<String>,
    /// Only this user's connections.
    pub user: Option<String>,
    /// Include `authorized_user` and `account`.
    pub auth: bool,
    /// `open` (default), `closed` or `any`.
    pub state: ConnState,
}

/// Which connections `connz` lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConnState {
    /// Open ones.
    #[default]
    Open,
    /// Recently closed ones.
    Closed,
    /// Both.
    Any,
}

impl ConnState {
    fn parse(v: &str) -> Result<ConnState, String> {
        match v.to_ascii_lowercase().as_str() {
            "open" | "" => Ok(ConnState::Open),
            "closed" => Ok(ConnState::Closed),
            "any" | "all" => Ok(ConnState::Any),
            _ => Err(format!("Error decoding state for {v}")),
        }
    }
}

/// An integer query parameter `k` as nats-server's `decodeInt` reads it
/// (absent or empty: 0).
fn int_param(k: &str, v: Option<std::borrow::Cow<'_, str>>) -> Result<i64, String> {
    match v {
        Some(v) if !v.is_empty() => go_query::int(k, &v),
        _ => Ok(0),
    }
}

impl ConnzOpts {
    /// From `/connz?...` query parameters, decoded in nats-server's order
    /// (the first bad one is the one reported).
    pub fn from_query(query: &str) -> Result<ConnzOpts, String> {
        let get = |k: &str| crate::http::query_param(query, k).filter(|v| !v.is_empty());
        let mut o = ConnzOpts {
            sort: get("sort").as_deref().unwrap_or("cid").to_string(),
            account: get("acc").map(std::borrow::Cow::into_owned),
            user: get("user").map(std::borrow::Cow::into_owned),
            ..Default::default()
        };
        if let Some(v) = get("auth") {
            o.auth = go_query::boolean("auth", &v)?;
        }
        match get("subs").as_deref() {
            None => {}
            Some(v) if v.eq_ignore_ascii_case("detail") => {
                o.subs = true;
                o.subs_detail = true;
            }
            Some(v) => o.subs = go_query::boolean("subs", v)?,
        }
        o.offset = go_query::offset(int_param("offset", get("offset"))?);
        o.limit = go_query::limit(int_param("limit", get("limit"))?, 1024);
        if let Some(cid) = get("cid") {
            o.cid = Some(go_query::uint64("cid", &cid)?).filter(|c| *c > 0);
        }
        if let Some(v) = get("state") {
            o.state = ConnState::parse(&v)?;
        }
        Ok(o)
    }

    /// From a `$SYS` CONNZ request body (nats-server's `ConnzOptions`).
    pub fn from_json(v: &Value) -> ConnzOpts {
        let n = |k: &str| v.get(k).and_then(Value::as_u64);
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let b = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
        ConnzOpts {
            offset: n("offset").unwrap_or(0) as usize,
            limit: n("limit").filter(|l| *l > 0).unwrap_or(1024) as usize,
            subs: b("subscriptions") || b("subscriptions_detail"),
            subs_detail: b("subscriptions_detail"),
            cid: n("cid").filter(|c| *c > 0),
            sort: s("sort").unwrap_or_else(|| "cid".into()),
            account: s("acc").filter(|a| !a.is_empty()),
            user: s("user").filter(|u| !u.is_empty()),
            auth: b("auth"),
            state: match v.get("state") {
                Some(Value::Number(n)) => match n.as_u64() {
                    Some(1) => ConnState::Closed,
                    Some(2) => ConnState::Any,
                    _ => ConnState::Open,
                },
                Some(Value::String(t)) => ConnState::parse(t).unwrap_or_default(),
                _ => ConnState::Open,
            },
        }
    }
}

/// `/connz`, `$SYS.REQ.SERVER.*.CONNZ`, `$SYS.REQ.ACCOUNT.<acc>.CONNZ`.
pub fn connz(shared: &Shared, o: &ConnzOpts) -> Result<Value, String> {
    let (_, info) = shared.current();
    // (connection, stop and reason when closed)
    let mut conns: Vec<(ConnSnapshot, Option<(SystemTime, &'static str)>)> = Vec::new();
    if o.state != ConnState::Closed {
        conns.extend(shared.connections(SNAPSHOT_WAIT).into_iter().map(|c| (c, None)));
    }
    if o.state != ConnState::Open {
        conns.extend(
            shared
                .closed_connections()
                .into_iter()
                .map(|c| (c.conn, Some((c.stop, c.reason)))),
        );
    }
    let mut limit = o.limit;
    if let Some(cid) = o.cid {
        conns.retain(|c| c.0.cid == cid);
        limit = 1;
    }
    if let Some(a) = &o.account {
        conns.retain(|c| c.0.account == *a);
    }
    if let Some(u) = &o.user {
        conns.retain(|c| c.0.user == *u);
    }
    match o.sort.as_str() {
        "cid" | "" => conns.sort_by_key(|c| c.0.cid),
        "start" => conns.sort_by_key(|c| c.0.start),
        "subs" => conns.sort_by_key(|c| std::cmp::Reverse(c.0.subs.len())),
        "pending" => conns.sort_by_key(|c| std::cmp::Reverse(c.0.pending_bytes)),
        "msgs_to" => conns.sort_by_key(|c| std::cmp::Reverse(c.0.out_msgs)),
        "msgs_from" => conns.sort_by_key(|c| std::cmp::Reverse(c.0.in_msgs)),
        "bytes_to" => conns.sort_by_key(|c| std::cmp::Reverse(c.0.out_bytes)),
        "bytes_from" => conns.sort_by_key(|c| std::cmp::Reverse(c.0.in_bytes)),
        "last" | "idle" | "uptime" => conns.sort_by_key(|c| c.0.start),
        "rtt" => conns.sort_by_key(|c| std::cmp::Reverse(c.0.rtt)),
        "stop" | "reason" if o.state == ConnState::Open => {
            return Err("sort by stop only valid on closed connections".into())
        }
        "stop" => conns.sort_by_key(|c| std::cmp::Reverse(c.1.map(|s| s.0))),
        "reason" => conns.sort_by_key(|c| c.1.map(|s| s.1)),
        other => return Err(format!("invalid sorting option: {other}")),
    }
    let now = SystemTime::now();
    if o.account
        .as_deref()
        .is_some_and(|a| shared.verifier().accounts().get(a).is_none())
    {
        // nats-server answers an unknown account with an empty document
        // (no server id, no list).
        return Ok(json!({
            "server_id": "",
            "now": rfc3339(now),
            "num_connections": 0,
            "total": 0,
            "offset": o.offset,
            "limit": limit,
            "connections": null,
        }));
    }
    let total = conns.len();
    let list: Vec<Value> = conns
        .into_iter()
        .skip(o.offset)
        .take(limit)
        .map(|(c, closed)| {
            let mut v = conn_json(&c, o, closed.map_or(now, |s| s.0));
            if let Some((stop, reason)) = closed {
                v["stop"] = json!(rfc3339(stop));
                v["reason"] = json!(reason);
            }
            v
        })
        .collect();
    Ok(json!({
        "server_id": info.server_id,
        "now": rfc3339(now),
        "num_connections": list.len(),
        "total": total,
        "offset": o.offset,
        "limit": limit,
        "connections": list,
    }))
}

/// varz `websocket`: the block as configured, with the bound port.
fn websocket_varz(shared: &Shared, o: &crate::options::Options) -> Value {
    let (Some(w), Some(rt)) = (&o.websocket, shared.websocket()) else {
        return json!({});
    };
    let mut v = json!({
        "host": rt.host,
        "port": rt.port,
        "no_tls": w.no_tls,
        "same_origin": w.same_origin,
        "compression": w.compression,
        "tls_map": w.tls.as_ref().is_some_and(|t| t.map),
        "handshake_timeout": w.handshake_timeout.map(|d| d.as_nanos() as u64).unwrap_or(0),
    });
    let optional = [
        ("advertise", &w.advertise),
        ("no_auth_user", &w.no_auth_user),
        ("jwt_cookie", &w.jwt_cookie),
    ];
    for (k, val) in optional {
        if let Some(val) = val {
            v[k] = json!(val);
        }
    }
    if !w.allowed_origins.is_empty() {
        v["allowed_origins"] = json!(w.allowed_origins);
    }
    if let Some(t) = w.auth_timeout {
        v["auth_timeout"] = json!(t.as_secs_f64());
    }
    v
}

fn conn_json(c: &ConnSnapshot, o: &ConnzOpts, now: SystemTime) -> Value {
    let mut v = json!({
        "cid": c.cid,
        "kind": "Client",
        "type": c.kind.client_type(),
        "ip": c.ip,
        "port": c.port,
        "start": rfc3339(c.start),
        "last_activity": rfc3339(now),
        "rtt": c.rtt.map(|r| format!("{r:?}")).unwrap_or_default(),
        "uptime": uptime_text(now.duration_since(c.start).unwrap_or_default()),
        "idle": "0s",
        "pending_bytes": c.pending_bytes,
        "petrel_buffer_bytes": c.buffer_bytes,
        "in_msgs": c.in_msgs,
        "out_msgs": c.out_msgs,
        "in_bytes": c.in_bytes,
        "out_bytes": c.out_bytes,
        "subscriptions": c.subs.len(),
        "lang": c.lang,
        "version": c.version,
    });
    if !c.name.is_empty() {
        v["name"] = json!(c.name);
    }
    if o.auth {
        if !c.user.is_empty() {
            v["authorized_user"] = json!(c.user);
        }
        if !c.account.is_empty() {
            v["account"] = json!(c.account);
        }
    }
    if o.subs && !c.subs.is_empty() {
        if o.subs_detail {
            v["subscriptions_list_detail"] = json!(c
                .subs
                .iter()
                .map(|(s, q, sid)| {
                    let mut d = json!({"account": c.account, "subject": s, "sid": sid, "msgs": 0, "cid": c.cid});
                    if let Some(q) = q {
                        d["qgroup"] = json!(q);
                    }
                    d
                })
                .collect::<Vec<_>>());
        } else {
            v["subscriptions_list"] = json!(c.subs.iter().map(|s| &s.0).collect::<Vec<_>>());
        }
    }
    v
}

/// Index statistics over the shards' replicas: every replica holds every
/// subscription, so counts come from one and match work is summed.
fn sublist_stats(snaps: &[ShardSnapshot]) -> Value {
    let first = snaps.first().cloned().unwrap_or_default();
    let matches: u64 = snaps.iter().map(|s| s.index.matches).sum();
    let hits: u64 = snaps.iter().map(|s| s.index.cache_hits).sum();
    let cache: u64 = snaps.iter().map(|s| s.cache).sum();
    let fanout_sum: u64 = snaps.iter().map(|s| s.fanout_sum).sum();
    let max_fanout = snaps.iter().map(|s| s.max_fanout).max().unwrap_or(0);
    let rate = if matches > 0 { hits as f64 / matches as f64 } else { 0.0 };
    let avg = if cache > 0 {
        fanout_sum as f64 / cache as f64
    } else {
        0.0
    };
    json!({
        "num_subscriptions": first.subscriptions,
        "num_cache": cache,
        "num_inserts": first.index.inserts,
        "num_removes": first.index.removes,
        "num_matches": matches,
        "cache_hit_rate": (rate * 100.0).round() / 100.0,
        "max_fanout": max_fanout,
        "avg_fanout": avg,
    })
}

/// `subsz` options.
#[derive(Debug, Clone, Default)]
pub struct SubszOpts {
    /// Skip this many.
    pub offset: usize,
    /// At most this many (1024).
    pub limit: usize,
    /// List subscriptions.
    pub subs: bool,
    /// Only this account.
    pub account: Option<String>,
    /// Only subscriptions that match this literal subject.
    pub test: Option<String>,
}

impl SubszOpts {
    /// From `/subsz?...`.
    pub fn from_query(query: &str) -> Result<SubszOpts, String> {
        let get = |k: &str| crate::http::query_param(query, k).filter(|v| !v.is_empty());
        // nats-server's order: subs, offset, limit, then the test subject.
        let subs = get("subs")
            .map(|v| go_query::boolean("subs", &v))
            .transpose()?
            .unwrap_or(false);
        let offset = go_query::offset(int_param("offset", get("offset"))?);
        let limit = go_query::limit(int_param("limit", get("limit"))?, 1024);
        let test = get("test").map(std::borrow::Cow::into_owned);
        if let Some(t) = &test {
            if !crate::subject::is_valid_literal_subject(t.as_bytes()) {
                return Err(format!("invalid test subject, must be valid publish subject: {t}"));
            }
        }
        Ok(SubszOpts {
            offset,
            limit,
            subs,
            account: get("acc").map(std::borrow::Cow::into_owned),
            test,
        })
    }

    /// From a `$SYS` SUBSZ request body.
    pub fn from_json(v: &Value) -> SubszOpts {
        SubszOpts {
            offset: v.get("offset").and_then(Value::as_u64).unwrap_or(0) as usize,
            limit: v
                .get("limit")
                .and_then(Value::as_u64)
                .filter(|l| *l > 0)
                .unwrap_or(1024) as usize,
            subs: v.get("subscriptions").and_then(Value::as_bool).unwrap_or(false),
            account: v
                .get("account")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            test: v
                .get("test")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        }
    }
}

/// `/subsz`, `$SYS.REQ.SERVER.*.SUBSZ`, `$SYS.REQ.ACCOUNT.<acc>.SUBSZ`.
pub fn subsz(shared: &Shared, o: &SubszOpts) -> Result<Value, String> {
    if let Some(t) = o
        .test
        .as_deref()
        .filter(|t| !crate::subject::is_valid_literal_subject(t.as_bytes()))
    {
        return Err(format!("invalid test subject, must be valid publish subject: {t}"));
    }
    let (_, info) = shared.current();
    let snaps = shared.snapshot(SNAPSHOT_WAIT);
    // nats-server's field order: the server and time first.
    let mut v = json!({"server_id": info.server_id, "now": rfc3339(SystemTime::now())});
    if let (Some(doc), Value::Object(stats)) = (v.as_object_mut(), sublist_stats(&snaps)) {
        doc.extend(stats);
    }
    let mut list: Vec<Value> = Vec::new();
    for s in &snaps {
        for c in &s.conns {
            if o.account.as_ref().is_some_and(|a| *a != c.account) {
                continue;
            }
            for (subj, q, sid) in &c.subs {
                if o.test
                    .as_ref()
                    .is_some_and(|t| !crate::subject::matches(subj.as_bytes(), t.as_bytes()))
                {
                    continue;
                }
                let mut d = json!({"account": c.account, "account_tag": c.account, "subject": subj, "sid": sid, "msgs": 0, "cid": c.cid});
                if let Some(q) = q {
                    d["qgroup"] = json!(q);
                }
                list.push(d);
            }
        }
    }
    let total = list.len();
    // nats-server lists an account's subscriptions whenever one is named.
    let listed = o.subs || o.test.is_some() || o.account.is_some();
    v["total"] = json!(if listed { total } else { 0 });
    v["offset"] = json!(o.offset);
    v["limit"] = json!(o.limit);
    if listed {
        let page: Vec<Value> = list.into_iter().skip(o.offset).take(o.limit).collect();
        // Go's omitempty: an empty page is left out.
        if !page.is_empty() {
            v["subscriptions_list"] = json!(page);
        }
    }
    Ok(v)
}

/// The STATSZ body: `{"server":..,"statsz":{..}}`, plus (beyond
/// nats-server) `petrel_shards` with each shard's counters.
pub fn statsz(shared: &Shared) -> Value {
    let c = stats::sum(&shared.stats);
    let shards = petrel_shards(shared);
    let sent = DataStats {
        msgs: c.out_msgs,
        bytes: c.out_bytes,
    };
    let received = DataStats {
        msgs: c.in_msgs,
        bytes: c.in_bytes,
    };
    let mut st = json!({
        "start": rfc3339(shared.started),
        "mem": rss_bytes(),
        "cores": cores(),
        "cpu": cpu_percent(shared),
        "connections": c.connections,
        "total_connections": c.total_connections,
        "active_accounts": active_accounts(shared),
        "subscriptions": c.subscriptions,
        "sent": sent,
        "sent_to_clients": sent,
        "received": received,
        "received_from_clients": received,
        "slow_consumers": c.slow_consumers,
        // This server and the others it hears through the system account.
        "active_servers": 1 + shared.remote_servers.load(std::sync::atomic::Ordering::Relaxed),
        "gomaxprocs": shared.nshards,
        "petrel_shards": shards,
    });
    if let Some(routes) = route_stats(shared) {
        st["routes"] = json!(routes);
    }
    if c.slow_consumers > 0 {
        st["slow_consumer_stats"] = json!({"clients": c.slow_consumers, "routes": 0, "gateways": 0, "leafs": 0});
    }
    if c.stale_connections > 0 {
        st["stale_connections"] = json!(c.stale_connections);
        st["stale_connection_stats"] = json!({"clients": c.stale_connections, "routes": 0, "gateways": 0, "leafs": 0});
    }
    json!({"server": super::server_block(shared), "statsz": st})
}

/// STATSZ `routes`: each route's `rid`, peer name, messages and bytes
/// both ways and bytes pending (absent outside a cluster, as nats-server
/// omits an empty list).
fn route_stats(shared: &Shared) -> Option<Vec<Value>> {
    let cluster = shared.cluster.get()?;
    let counters = cluster.route_counters();
    let mut out = Vec::new();
    for (_, peer) in cluster.peers() {
        for conn in peer.all_conns() {
            let c = counters.get(&conn.cid.0).cloned().unwrap_or_default();
            out.push(json!({
                "rid": conn.cid.0,
                "name": peer.name,
                "sent": {"msgs": c.out_msgs, "bytes": c.out_bytes},
                "received": {"msgs": c.in_msgs, "bytes": c.in_bytes},
                "pending": c.pending_bytes,
            }));
        }
    }
    (!out.is_empty()).then_some(out)
}

/// IDZ: `{"name","host","id"}`.
pub fn idz(shared: &Shared) -> Value {
    let (_, info) = shared.current();
    json!({"name": info.server_name, "host": info.host, "id": info.server_id})
}

/// `/healthz`: petrel has no JetStream, so a running server is healthy.
/// `healthz` options (nats-server's `HealthzOptions`; the JetStream ones
/// change nothing on a server without JetStream).
#[derive(Debug, Clone, Default)]
pub struct HealthzOpts {
    /// Errors as a list of typed entries.
    pub details: bool,
    /// The account whose stream to check.
    pub account: String,
    /// The stream to check (needs `account`).
    pub stream: String,
    /// The consumer to check (needs `stream`).
    pub consumer: String,
}

impl HealthzOpts {
    /// From a `$SYS` request body.
    pub fn from_json(body: &Value) -> HealthzOpts {
        let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        HealthzOpts {
            details: body.get("details").and_then(Value::as_bool).unwrap_or(false),
            account: text("account"),
            stream: text("stream"),
            consumer: text("consumer"),
        }
    }
}

/// The health status as nats-server without JetStream gives it: ok, or a
/// bad request when a stream is named without its account or a consumer
/// without its stream. `status_code` is in the document (the `$SYS`
/// form); HTTP takes it out and answers with it.
pub fn healthz(o: &HealthzOpts) -> Value {
    let missing = if !o.stream.is_empty() && o.account.is_empty() {
        Some("\"account\" must not be empty when checking stream health")
    } else if !o.consumer.is_empty() && o.stream.is_empty() {
        Some("\"stream\" must not be empty when checking consumer health")
    } else {
        None
    };
    match (missing, o.details) {
        (None, _) => json!({"status": "ok", "status_code": 200}),
        (Some(e), false) => json!({"status": "error", "status_code": 400, "error": e}),
        (Some(e), true) => json!({
            "status": "error",
            "status_code": 400,
            "errors": [{"type": "BAD_REQUEST", "error": e}],
        }),
    }
}

/// `/routez`: every route connection, with nats-server's fields; counters
/// come from the shards that own the routes.
pub fn routez(shared: &Shared) -> Value {
    let (_, info) = shared.current();
    let now = SystemTime::now();
    let Some(cluster) = shared.cluster.get() else {
        return json!({
            "server_id": info.server_id,
            "server_name": info.server_name,
            "now": rfc3339(now),
            "num_routes": 0,
            "routes": [],
        });
    };
    let counters = cluster.route_counters();
    let mut routes = Vec::new();
    for (id, peer) in cluster.peers() {
        for conn in peer.all_conns() {
            let c = counters.get(&conn.cid.0).cloned().unwrap_or_default();
            let up = now.duration_since(conn.start).unwrap_or_default();
            let mut r = json!({
                "rid": conn.cid.0,
                "remote_id": id,
                "remote_name": peer.name,
                "did_solicit": conn.did_solicit,
                "is_configured": conn.is_configured,
                "ip": conn.ip,
                "port": conn.port,
                "start": rfc3339(conn.start),
                "last_activity": rfc3339(now),
                "rtt": "0s",
                "uptime": uptime_text(up),
                "idle": "0s",
                "pending_size": c.pending_bytes,
                "in_msgs": c.in_msgs,
                "out_msgs": c.out_msgs,
                "in_bytes": c.in_bytes,
                "out_bytes": c.out_bytes,
                "subscriptions": c.subscriptions,
            });
            if !conn.compression.is_empty() {
                r["compression"] = json!(conn.compression);
            }
            // nats-server names the account of a dedicated route only.
            if let crate::cluster::RouteScope::Pinned(acc) = &conn.scope {
                r["account"] = json!(acc);
            }
            routes.push(r);
        }
    }
    json!({
        "server_id": info.server_id,
        "server_name": info.server_name,
        "now": rfc3339(now),
        "num_routes": routes.len(),
        "routes": routes,
    })
}

/// varz's `cluster` block (keys only when set, as nats-server).
fn cluster_varz(shared: &Shared) -> Value {
    let Some(c) = shared.cluster.get() else {
        return json!({});
    };
    let opts = c.opts();
    let mut v = json!({});
    if let Some(n) = c.name() {
        v["name"] = json!(n);
    }
    if let Some(l) = c.listen.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        if let Some((h, p)) = l.rsplit_once(':') {
            v["addr"] = json!(h);
            v["cluster_port"] = json!(p.parse::<u16>().unwrap_or(0));
        }
    }
    v["auth_timeout"] = json!(opts.auth_timeout.map_or(2.0, |d| d.as_secs_f64()));
    let urls: Vec<String> = opts
        .routes
        .iter()
        .filter_map(|r| crate::conf::cluster::route_url(r).ok())
        .map(|u| format!("{}:{}", u.host, u.port))
        .collect();
    if !urls.is_empty() {
        v["urls"] = json!(urls);
    }
    match &opts.tls {
        Some(t) => {
            v["tls_timeout"] = json!(t.timeout.unwrap_or(crate::options::TLS_DEFAULT_TIMEOUT).as_secs_f64());
            v["tls_required"] = json!(true);
            v["tls_verify"] = json!(true);
        }
        None => v["tls_timeout"] = json!(2.0),
    }
    v["pool_size"] = json!(opts.pool_size.unwrap_or(crate::options::DEFAULT_ROUTE_POOL_SIZE));
    v
}

/// `/leafz`: each leaf connection with nats-server's fields; `subs` adds
/// `subscriptions_list`, `acc` keeps one account's.
pub fn leafz(shared: &Shared, subs: bool, acc: Option<&str>) -> Value {
    let (_, info) = shared.current();
    let leafs: Vec<Value> = shared
        .leaf
        .get()
        .map(|l| l.connections())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| acc.is_none_or(|a| a == c.account))
        .map(|c| {
            let mut v = json!({
            "id": c.cid,
            "name": c.name,
            "is_spoke": c.is_spoke,
            "account": c.account,
            "ip": c.ip,
            "port": c.port,
            "in_msgs": c.in_msgs,
            "out_msgs": c.out_msgs,
            "in_bytes": c.in_bytes,
            "out_bytes": c.out_bytes,
            "subscriptions": c.subjects.len(),
                        });
            if !c.compression.is_empty() {
                v["compression"] = json!(c.compression);
            }
            if let Some(rtt) = c.rtt {
                v["rtt"] = json!(format!("{rtt:?}"));
            }
            if subs && !c.subjects.is_empty() {
                v["subscriptions_list"] = json!(c.subjects.as_slice());
            }
            v
        })
        .collect();
    json!({"server_id": info.server_id, "now": rfc3339(SystemTime::now()), "leafnodes": leafs.len(), "leafs": leafs})
}

/// varz's `leaf` block: the listener (hub) and the remotes (leaf).
fn leaf_varz(shared: &Shared) -> Value {
    let Some(l) = shared.leaf.get() else { return json!({}) };
    let opts = l.opts();
    let mut v = json!({});
    if let Some(listen) = l.listen.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        if let Some((h, p)) = listen.rsplit_once(':') {
            v["host"] = json!(h);
            v["port"] = json!(p.parse::<u16>().unwrap_or(0));
        }
        v["auth_timeout"] = json!(opts.auth_timeout.map_or(2.0, |d| d.as_secs_f64()));
        v["tls_timeout"] = json!(2.0);
    }
    if !opts.remotes.is_empty() {
        let remotes: Vec<Value> = opts
            .remotes
            .iter()
            .map(|r| {
                let urls: Vec<String> = r
                    .urls
                    .iter()
                    .filter_map(|u| crate::conf::leaf::leaf_url(u).ok())
                    .map(|u| format!("{}:{}", u.host, u.port))
                    .collect();
                json!({
                    "local_account": r.account.clone().unwrap_or_else(|| crate::auth::config::GLOBAL_ACCOUNT.into()),
                    "urls": urls,
                })
            })
            .collect();
        v["remotes"] = json!(remotes);
    }
    v
}

/// `/gatewayz`: no gateways.
pub fn gatewayz(shared: &Shared) -> Value {
    let (_, info) = shared.current();
    json!({
        "server_id": info.server_id,
        "now": rfc3339(SystemTime::now()),
        "outbound_gateways": {},
        "inbound_gateways": {},
    })
}

/// `/jsz`: JetStream is not enabled in petrel; the document says so with
/// nats-server's shape for a server without JetStream.
pub fn jsz(shared: &Shared) -> Value {
    let (_, info) = shared.current();
    json!({
        "memory": 0,
        "storage": 0,
        "reserved_memory": 0,
        "reserved_storage": 0,
        "accounts": 0,
        "ha_assets": 0,
        "api": {"level": 0, "total": 0, "errors": 0},
        "server_id": info.server_id,
        "now": rfc3339(SystemTime::now()),
        "disabled": true,
        "config": {"max_memory": 0, "max_storage": 0},
        "streams": 0,
        "consumers": 0,
        "messages": 0,
        "bytes": 0,
        "total": 0,
    })
}

/// `/accountz`: the account list, or one account's details.
pub fn accountz(shared: &Shared, account: Option<&str>) -> Result<Value, String> {
    let (_, info) = shared.current();
    let v = shared.verifier();
    let table = v.accounts();
    let sys = table.system().name.clone();
    match account {
        None | Some("") => Ok(json!({
            "server_id": info.server_id,
            "now": rfc3339(SystemTime::now()),
            "system_account": sys,
            "accounts": table.all().iter().map(|a| a.name.clone()).collect::<Vec<_>>(),
        })),
        Some(name) => {
            let Some(a) = table.get(name) else {
                return Err(format!("Account {name} does not exist"));
            };
            Ok(json!({
                "server_id": info.server_id,
                "now": rfc3339(SystemTime::now()),
                "system_account": sys,
                "account_detail": account_info(shared, &a),
            }))
        }
    }
}

/// One account's AccountInfo (`$SYS.REQ.ACCOUNT.<acc>.INFO`, `accountz?acc=`).
pub fn account_info(shared: &Shared, a: &crate::auth::accounts::Account) -> Value {
    let snaps = shared.snapshot(SNAPSHOT_WAIT);
    let subs: usize = snaps
        .iter()
        .flat_map(|s| &s.conns)
        .filter(|c| c.account == a.name)
        .map(|c| c.subs.len())
        .sum();
    let (o, _) = shared.current();
    let v = shared.verifier();
    let jwt_configs = v.jwt_account_configs();
    let configs = jwt_configs.as_deref().unwrap_or(&o.auth.accounts);
    let cfg = configs.iter().find(|c| c.name == a.name);
    let system = v.accounts().system().name.clone();
    let imports = v.imports();
    let mut m = serde_json::Map::new();
    m.insert("account_name".into(), json!(a.name));
    m.insert("update_time".into(), json!(rfc3339(shared.started)));
    if a.is_system {
        m.insert("is_system".into(), json!(true));
    }
    m.insert("expired".into(), json!(false));
    m.insert("complete".into(), json!(true));
    m.insert("jetstream_enabled".into(), json!(false));
    m.insert("leafnode_connections".into(), json!(0));
    m.insert("client_connections".into(), json!(a.connections()));
    m.insert("subscriptions".into(), json!(subs));
    if let Some(maps) = imports.mappings_of(a.id) {
        m.insert("mappings".into(), account_detail::mappings(maps));
    }
    let exports = account_detail::exports(cfg, a.is_system, jwt_configs.is_some());
    if !exports.is_empty() {
        m.insert("exports".into(), json!(exports));
    }
    m.insert(
        "imports".into(),
        json!(account_detail::imports(cfg, &a.name, a.is_system, &system)),
    );
    m.insert("name_tag".into(), json!(a.name));
    m.insert("sublist_stats".into(), sublist_stats(&snaps));
    Value::Object(m)
}

/// An account's `{msgs, bytes}` with nats-server 2.12's per-link-kind
/// breakdown (all client traffic here: petrel has no routes, gateways or
/// leaf nodes).
fn account_data(msgs: u64, bytes: u64) -> Value {
    let zero = json!({"msgs": 0, "bytes": 0});
    json!({"msgs": msgs, "bytes": bytes, "gateways": zero, "routes": zero, "leafs": zero})
}

/// One account's statistics (`AccountStat`): connections, subscriptions,
/// and what its clients sent and received.
pub fn account_stat(shared: &Shared, name: &str, snaps: &[ShardSnapshot]) -> Value {
    let conns: Vec<&ConnSnapshot> = snaps
        .iter()
        .flat_map(|s| &s.conns)
        .filter(|c| c.account == name)
        .collect();
    let sent = account_data(
        conns.iter().map(|c| c.out_msgs).sum(),
        conns.iter().map(|c| c.out_bytes).sum(),
    );
    let received = account_data(
        conns.iter().map(|c| c.in_msgs).sum(),
        conns.iter().map(|c| c.in_bytes).sum(),
    );
    let _ = shared;
    let leafnodes = shared
        .leaf
        .get()
        .map_or(0, |l| l.connections().iter().filter(|c| c.account == name).count());
    json!({
        "acc": name,
        "name": name,
        "conns": conns.len(),
        "leafnodes": leafnodes,
        "total_conns": conns.len() + leafnodes,
        "num_subscriptions": conns.iter().map(|c| c.subs.len()).sum::<usize>(),
        "sent": sent,
        "received": received,
        "slow_consumers": 0,
    })
}

/// `/accstatz` and `$SYS.REQ.ACCOUNT.PING.STATZ`: accounts with clients
/// (or all, with `include_unused`), optionally only those named.
pub fn accstatz(shared: &Shared, accounts: &[String], include_unused: bool) -> Value {
    let (_, info) = shared.current();
    let snaps = shared.snapshot(SNAPSHOT_WAIT);
    let v = shared.verifier();
    let list: Vec<Value> = v
        .accounts()
        .all()
        .iter()
        .filter(|a| accounts.is_empty() || accounts.contains(&a.name))
        .filter(|a| include_unused || a.connections() > 0)
        .map(|a| account_stat(shared, &a.name, &snaps))
        .collect();
    json!({"server_id": info.server_id, "now": rfc3339(SystemTime::now()), "account_statz": list})
}

/// `/metrics`: Prometheus text exposition of the server's counters (beyond
/// nats-server, which needs an exporter for this).
pub fn metrics(shared: &Shared) -> String {
    let c = stats::sum(&shared.stats);
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
    };
    metric(
        "petrel_connections",
        "gauge",
        "Open client connections.",
        c.connections.to_string(),
    );
    metric(
        "petrel_total_connections",
        "counter",
        "Client connections accepted since start.",
        c.total_connections.to_string(),
    );
    metric(
        "petrel_subscriptions",
        "gauge",
        "Subscriptions.",
        c.subscriptions.to_string(),
    );
    metric(
        "petrel_in_msgs_total",
        "counter",
        "Messages received from clients.",
        c.in_msgs.to_string(),
    );
    metric(
        "petrel_in_bytes_total",
        "counter",
        "Payload bytes received from clients.",
        c.in_bytes.to_string(),
    );
    metric(
        "petrel_out_msgs_total",
        "counter",
        "Messages delivered to clients.",
        c.out_msgs.to_string(),
    );
    metric(
        "petrel_out_bytes_total",
        "counter",
        "Payload bytes delivered to clients.",
        c.out_bytes.to_string(),
    );
    metric(
        "petrel_slow_consumers_total",
        "counter",
        "Clients closed as slow consumers.",
        c.slow_consumers.to_string(),
    );
    metric(
        "petrel_stale_connections_total",
        "counter",
        "Connections closed as stale.",
        c.stale_connections.to_string(),
    );
    let memory = shared.stats.iter().map(stats::ShardStats::read_memory);
    let (buffers, pool) = memory.fold((0, 0), |(b, p), m| (b + m.buffers, p + m.pool));
    metric(
        "petrel_buffer_bytes",
        "gauge",
        "Memory of connections' read buffers and outbound queues (capacity).",
        buffers.to_string(),
    );
    metric(
        "petrel_pool_bytes",
        "gauge",
        "Written outbound chunks kept for reuse.",
        pool.to_string(),
    );
    metric(
        "petrel_mem_bytes",
        "gauge",
        "Resident set size.",
        rss_bytes().to_string(),
    );
    metric(
        "petrel_cpu_percent",
        "gauge",
        "CPU use since start, percent of one core.",
        cpu_percent(shared).to_string(),
    );
    let up = SystemTime::now().duration_since(shared.started).unwrap_or_default();
    metric(
        "petrel_uptime_seconds",
        "gauge",
        "Seconds since start.",
        up.as_secs().to_string(),
    );
    out.push_str("# HELP petrel_shard_in_msgs_total Messages received from clients, per shard.\n# TYPE petrel_shard_in_msgs_total counter\n");
    for (i, s) in shared.stats.iter().enumerate() {
        out.push_str(&format!(
            "petrel_shard_in_msgs_total{{shard=\"{i}\"}} {}\n",
            s.read().in_msgs
        ));
    }
    out.push_str(
        "# HELP petrel_shard_connections Open client connections, per shard.\n# TYPE petrel_shard_connections gauge\n",
    );
    for (i, s) in shared.stats.iter().enumerate() {
        out.push_str(&format!(
            "petrel_shard_connections{{shard=\"{i}\"}} {}\n",
            s.read().connections
        ));
    }
    // prometheus-nats-exporter's names (`-varz -subz -routez`), so its
    // users' dashboards read petrel's /metrics unchanged.
    let subsz_opts = SubszOpts {
        limit: 1024,
        ..Default::default()
    };
    out.push_str(&exporter_metrics("varz", &varz(shared)));
    out.push_str(&exporter_metrics(
        "subsz",
        &subsz(shared, &subsz_opts).unwrap_or_default(),
    ));
    out.push_str(&exporter_metrics("routez", &routez(shared)));
    out
}

/// One monitoring document the way prometheus-nats-exporter's generic
/// collector maps it: each top-level number `k` of `/<endpoint>` as the
/// gauge `gnatsd_<endpoint>_<k>{server_id="..."}`, and `server_id`,
/// `server_name` and `version` as gauges of value 1 labelled
/// `{server_id="...",value="..."}`; nested documents are left out, as it
/// leaves them.
fn exporter_metrics(endpoint: &str, doc: &Value) -> String {
    let Some(map) = doc.as_object() else {
        return String::new();
    };
    let label = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let id = label(doc["server_id"].as_str().unwrap_or_default());
    let mut out = String::new();
    for (k, v) in map {
        let name = format!("gnatsd_{endpoint}_{k}");
        let sample = match (v.as_f64(), v.as_str()) {
            (Some(n), _) => format!("{name}{{server_id=\"{id}\"}} {n}"),
            (None, Some(text)) if matches!(k.as_str(), "server_id" | "server_name" | "version") => {
                format!("{name}{{server_id=\"{id}\",value=\"{}\"}} 1", label(text))
            }
            _ => continue,
        };
        out.push_str(&format!("# HELP {name} {k}\n# TYPE {name} gauge\n{sample}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_like_go() {
        assert_eq!(uptime_text(Duration::from_secs(5)), "5s");
        assert_eq!(uptime_text(Duration::from_secs(65)), "1m5s");
        assert_eq!(uptime_text(Duration::from_secs(3723)), "1h2m3s");
        assert_eq!(uptime_text(Duration::from_secs(90061)), "1d1h1m1s");
        assert!(rfc3339(SystemTime::UNIX_EPOCH).starts_with("1970-01-01T00:00:00"));
    }

    #[test]
    fn connz_query_parsing() {
        let o = ConnzOpts::from_query("subs=detail&offset=2&limit=5&cid=7&acc=A&auth=true").unwrap();
        assert!(o.subs && o.subs_detail && o.auth);
        assert_eq!((o.offset, o.limit, o.cid), (2, 5, Some(7)));
        assert_eq!(o.account.as_deref(), Some("A"));
        assert!(ConnzOpts::from_query("subs=maybe").is_err());
        assert!(ConnzOpts::from_query("limit=x").is_err());
        let j = ConnzOpts::from_json(&json!({"subscriptions": true, "limit": 3}));
        assert!(j.subs && !j.subs_detail);
        assert_eq!(j.limit, 3);
    }
}
