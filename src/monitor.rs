//! HTTP monitoring (`-m`, `http_port`, `http`): `/varz` and `/healthz` as
//! nats-server serves them, from the shards' published counters. Client
//! test harnesses (nats-py) poll `/varz` to know the server is up and read
//! `in_msgs`/`in_bytes` from it. It runs on its own thread, off the shards.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::proto::info::COMPAT_VERSION;
use crate::shard::Shared;
use crate::stats;
use crate::timefmt::rfc3339;

/// State the monitor reports beside the counters.
pub struct Monitor {
    shared: Arc<Shared>,
    started: SystemTime,
    http: SocketAddr,
}

/// Binds the monitoring listener and serves it on a thread.
pub fn start(shared: Arc<Shared>, host: &str, port: i32) -> std::io::Result<SocketAddr> {
    let port = if port < 0 { 0 } else { port as u16 };
    let listener = TcpListener::bind((host, port))?;
    let http = listener.local_addr()?;
    let m = Arc::new(Monitor {
        shared,
        started: SystemTime::now(),
        http,
    });
    std::thread::Builder::new()
        .name("petrel-monitor".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let m = m.clone();
                let _ = std::thread::Builder::new().name("petrel-http".into()).spawn(move || {
                    let _ = m.serve(conn);
                });
            }
        })?;
    Ok(http)
}

/// Go's duration string for an uptime, e.g. `1h2m3s`.
fn uptime_text(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, sec) = (s / 86400, (s / 3600) % 24, (s / 60) % 60, s % 60);
    match (days, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m{sec}s"),
        (0, _, _) => format!("{h}h{m}m{sec}s"),
        _ => format!("{days}d{h}h{m}m{sec}s"),
    }
}

fn rss_bytes() -> u64 {
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

impl Monitor {
    fn varz(&self) -> serde_json::Value {
        let (o, info) = self.shared.current();
        let c = stats::sum(&self.shared.stats);
        let now = SystemTime::now();
        let up = now.duration_since(self.started).unwrap_or_default();
        json!({
            "server_id": info.server_id,
            "server_name": info.server_name,
            "version": COMPAT_VERSION,
            "proto": 1,
            "go": info.go,
            "host": o.host,
            "port": info.port,
            "headers": info.headers,
            "max_connections": o.max_connections,
            "max_subscriptions": o.max_subscriptions,
            "ping_interval": o.ping_interval.as_nanos() as u64,
            "ping_max": o.ping_max,
            "http_host": self.http.ip().to_string(),
            "http_port": self.http.port(),
            "http_base_path": "",
            "https_port": 0,
            "auth_timeout": o.auth_timeout.as_secs_f64(),
            "max_control_line": o.max_control_line,
            "max_payload": o.max_payload,
            "max_pending": o.max_pending,
            "tls_timeout": 2.0,
            "write_deadline": o.write_deadline.as_nanos() as u64,
            "start": rfc3339(self.started),
            "now": rfc3339(now),
            "uptime": uptime_text(up),
            "mem": rss_bytes(),
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "gomaxprocs": self.shared.nshards,
            "cpu": if up.as_secs_f64() > 0.0 { (cpu_seconds() / up.as_secs_f64() * 100.0 * 100.0).round() / 100.0 } else { 0.0 },
            "connections": c.connections,
            "total_connections": c.total_connections,
            "routes": 0,
            "remotes": 0,
            "leafnodes": 0,
            "in_msgs": c.in_msgs,
            "out_msgs": c.out_msgs,
            "in_bytes": c.in_bytes,
            "out_bytes": c.out_bytes,
            "slow_consumers": c.slow_consumers,
            "stale_connections": c.stale_connections,
            "subscriptions": c.subscriptions,
            "slow_consumer_stats": { "clients": c.slow_consumers, "routes": 0, "gateways": 0, "leafs": 0 },
            "config_load_time": rfc3339(self.started),
            "system_account": "",
        })
    }

    /// `/connz` with `offset`, `limit` (1024), `cid`, `subs` and `sort`.
    fn connz(&self, query: &str) -> Result<serde_json::Value, String> {
        let (_, info) = self.shared.current();
        let q: Vec<(&str, &str)> = query.split('&').filter_map(|kv| kv.split_once('=')).collect();
        let get = |k: &str| q.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        let num = |k: &str, d: usize| -> Result<usize, String> {
            get(k).map_or(Ok(d), |v| {
                v.parse().map_err(|_| format!("Error decoding integer for '{k}': {v}"))
            })
        };
        let offset = num("offset", 0)?;
        let mut limit = num("limit", 1024)?;
        let subs = match get("subs") {
            None => false,
            Some("1" | "t" | "T" | "true" | "TRUE" | "True" | "detail") => true,
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => false,
            Some(v) => return Err(format!("Error decoding boolean for 'subs': {v}")),
        };
        let mut conns = self.shared.connections(Duration::from_millis(500));
        if let Some(cid) = get("cid") {
            let cid: u64 = cid
                .parse()
                .map_err(|_| format!("Error decoding integer for 'cid': {cid}"))?;
            conns.retain(|c| c.cid == cid);
            limit = 1;
        }
        match get("sort").unwrap_or("cid") {
            "cid" | "" => {}
            "start" => conns.sort_by_key(|c| c.start),
            "subs" => conns.sort_by_key(|c| std::cmp::Reverse(c.subjects.len())),
            "pending" => conns.sort_by_key(|c| std::cmp::Reverse(c.pending_bytes)),
            "msgs_to" => conns.sort_by_key(|c| std::cmp::Reverse(c.out_msgs)),
            "msgs_from" => conns.sort_by_key(|c| std::cmp::Reverse(c.in_msgs)),
            "bytes_to" => conns.sort_by_key(|c| std::cmp::Reverse(c.out_bytes)),
            "bytes_from" => conns.sort_by_key(|c| std::cmp::Reverse(c.in_bytes)),
            "stop" | "reason" => return Err("sort by stop only valid on closed connections".into()),
            other => return Err(format!("invalid sorting option: {other}")),
        }
        let total = conns.len();
        let now = SystemTime::now();
        let list: Vec<serde_json::Value> = conns
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|c| {
                let mut v = json!({
                    "cid": c.cid,
                    "kind": "Client",
                    "type": "nats",
                    "ip": c.ip,
                    "port": c.port,
                    "start": rfc3339(c.start),
                    "rtt": c.rtt.map(|r| format!("{:?}", r)).unwrap_or_default(),
                    "uptime": uptime_text(now.duration_since(c.start).unwrap_or_default()),
                    "pending_bytes": c.pending_bytes,
                    "in_msgs": c.in_msgs,
                    "out_msgs": c.out_msgs,
                    "in_bytes": c.in_bytes,
                    "out_bytes": c.out_bytes,
                    "subscriptions": c.subjects.len(),
                    "name": c.name,
                    "lang": c.lang,
                    "version": c.version,
                });
                if subs && !c.subjects.is_empty() {
                    v["subscriptions_list"] = json!(c.subjects);
                }
                v
            })
            .collect();
        Ok(json!({
            "server_id": info.server_id,
            "now": rfc3339(now),
            "num_connections": list.len(),
            "total": total,
            "offset": offset,
            "limit": limit,
            "connections": list,
        }))
    }

    fn serve(&self, mut s: TcpStream) -> std::io::Result<()> {
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut req = Vec::new();
        let mut buf = [0u8; 2048];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf)?;
            if n == 0 || req.len() > 16 * 1024 {
                return Ok(());
            }
            req.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&req);
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let (status, ctype, body) = match (method, path) {
            ("GET" | "HEAD", "/connz") => match self.connz(query) {
                Ok(v) => ("200 OK", "application/json", pretty(&v)),
                Err(e) => ("400 Bad Request", "text/plain; charset=utf-8", e),
            },
            ("GET" | "HEAD", "/varz") => ("200 OK", "application/json", pretty(&self.varz())),
            ("GET" | "HEAD", "/healthz") => ("200 OK", "application/json", pretty(&json!({"status": "ok"}))),
            ("GET" | "HEAD", "/") => ("200 OK", "text/html; charset=utf-8", INDEX.to_string()),
            ("GET" | "HEAD", _) => (
                "404 Not Found",
                "text/plain; charset=utf-8",
                "404 page not found\n".to_string(),
            ),
            _ => (
                "405 Method Not Allowed",
                "text/plain; charset=utf-8",
                "method not allowed\n".to_string(),
            ),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nAccess-Control-Allow-Origin: *\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes())?;
        if method != "HEAD" {
            s.write_all(body.as_bytes())?;
        }
        Ok(())
    }
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

const INDEX: &str = "<html><body><h1>petrel monitoring</h1><a href=\"/varz\">/varz</a><br/><a href=\"/connz\">/connz</a><br/><a href=\"/healthz\">/healthz</a></body></html>\n";

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
}
