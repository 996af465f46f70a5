//! Starts petrel (and the official nats-server) as child processes on
//! loopback with a random port, waits for their readiness lines, and stops
//! them by PID on drop.

#![allow(dead_code)]

pub mod jwt;
pub mod links;
pub mod pki;
pub mod raw;
pub mod ws;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running server process.
pub struct Proc {
    child: Child,
    /// The client port it listens on.
    pub port: u16,
    /// Every log line so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// `nats://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            // Short: tests look at what a stopped server leaves right after.
            std::thread::sleep(Duration::from_millis(1));
        }
        None
    }

    /// The port of the HTTP monitor it logged starting (`-m`, `http`).
    pub fn monitor_port(&self) -> u16 {
        let line = self
            .log_lines("Starting http monitor on ")
            .pop()
            .expect("monitor log line");
        line.rsplit(':').next().unwrap().trim().parse().expect("monitor port")
    }

    /// The route port it logged listening on (`--cluster`).
    /// nats-server logs it after "Server is ready": waits up to 5 s.
    pub fn route_port(&self) -> u16 {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(line) = self.log_lines("Listening for route connections on ").pop() {
                return line.rsplit(':').next().unwrap().trim().parse().expect("route port");
            }
            assert!(std::time::Instant::now() < deadline, "no route listener log line");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The leaf node port it logged listening on (`leafnodes { listen }`).
    pub fn leaf_port(&self) -> u16 {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(line) = self.log_lines("Listening for leafnode connections on ").pop() {
                return line.rsplit(':').next().unwrap().trim().parse().expect("leaf port");
            }
            assert!(std::time::Instant::now() < deadline, "no leaf listener log line");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The WebSocket port it logged listening on (`websocket { listen }`).
    pub fn ws_port(&self) -> u16 {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(line) = self.log_lines("Listening for websocket clients on ").pop() {
                return line.rsplit(':').next().unwrap().trim().parse().expect("websocket port");
            }
            assert!(std::time::Instant::now() < deadline, "no websocket listener log line");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for l in self.log.lock().unwrap().iter() {
                eprintln!("server log: {l}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.wait_for_listeners_gone();
    }
}

impl Proc {
    /// Waits (up to 1 s) until each port it logged listening on refuses
    /// connections, so a test restarting a server on the same port never
    /// meets the old one (nats-server's, or a petrel still exiting).
    fn wait_for_listeners_gone(&self) {
        let addrs: Vec<std::net::SocketAddr> = self
            .log_lines("Listening for ")
            .iter()
            .filter_map(|l| {
                let at = l.rsplit(" on ").next()?;
                let at = at.trim().rsplit("://").next()?;
                at.parse().ok()
            })
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        for addr in addrs {
            while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

fn spawn(bin: &str, args: &[&str]) -> Proc {
    spawn_env(bin, args, &[])
}

fn spawn_env(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut child = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut port = None;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
                port = rest.rsplit(':').next().and_then(|p| p.trim().parse::<u16>().ok());
            }
            let ready = line.contains("Server is ready");
            sink.lock().unwrap().push(line);
            if ready {
                let _ = tx.send(port);
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Some(port)) => Proc { child, port, log },
        other => {
            let _ = child.kill();
            panic!("{bin} did not become ready ({other:?}): {:?}", log.lock().unwrap());
        }
    }
}

/// A free loopback port, for a server that must come back on the same one
/// (taken from the kernel, then let go).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts petrel on a random loopback port with `extra` flags.
pub fn petrel(extra: &[&str]) -> Proc {
    let mut args = vec!["-p", "-1", "-a", "127.0.0.1"];
    args.extend_from_slice(extra);
    spawn(env!("CARGO_BIN_EXE_petrel"), &args)
}

/// Starts petrel like [`petrel`] with extra environment variables.
pub fn petrel_env(extra: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut args = vec!["-p", "-1", "-a", "127.0.0.1"];
    args.extend_from_slice(extra);
    spawn_env(env!("CARGO_BIN_EXE_petrel"), &args, env)
}

/// Path of the official nats-server, from `NATS_SERVER_BIN` or `PATH`.
pub fn nats_server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NATS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let cand = dir.join("nats-server");
        if cand.is_file() {
            return cand;
        }
    }
    panic!("nats-server not found: run scripts/test.sh (it installs nats-server-bin) or set NATS_SERVER_BIN");
}

/// Starts the official nats-server on a random loopback port.
pub fn nats_server(extra: &[&str]) -> Proc {
    let mut args = vec!["-p", "-1", "-a", "127.0.0.1"];
    args.extend_from_slice(extra);
    spawn(nats_server_bin().to_str().unwrap(), &args)
}

/// INFO keys whose values differ by nature, or that describe features
/// petrel does not offer (JetStream `api_lvl`, auth-callout `xkey`, the Go
/// build's `git_commit`); `nonce` is compared by presence only.
const IGNORED_INFO_KEYS: &[&str] = &[
    "server_id",
    "server_name",
    "version",
    "go",
    "port",
    "client_id",
    "git_commit",
    "api_lvl",
    "xkey",
];

/// An INFO line in a form comparable between petrel and nats-server.
pub fn normalize_info(line: &str) -> String {
    let json = line.trim_start_matches("INFO ").trim_end_matches(" \r\n");
    let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).expect("INFO is JSON");
    for k in IGNORED_INFO_KEYS {
        v.remove(*k);
    }
    // Nonces are random: only their presence (and being non-empty) counts.
    if let Some(n) = v.get_mut("nonce") {
        let present = n.as_str().is_some_and(|s| !s.is_empty());
        *n = serde_json::Value::String(if present { "<nonce>" } else { "<empty nonce>" }.into());
    }
    let sorted: std::collections::BTreeMap<_, _> = v.into_iter().collect();
    format!("INFO {} \r\n", serde_json::to_string(&sorted).unwrap())
}

/// An account's detail from `/accountz?acc=<acc>` reduced to what two
/// servers can be compared on: `mappings`, and `exports` and `imports` as
/// sorted sets (nats-server's order comes from Go maps) without
/// `response_type` (petrel keeps no per-export response state).
pub fn account_exchanges(port: u16, acc: &str) -> serde_json::Value {
    let (_, body) = http_get(port, &format!("/accountz?acc={acc}"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let d = &v["account_detail"];
    let set = |k: &str| {
        let mut items: Vec<String> = d[k]
            .as_array()
            .map(|l| l.iter().map(|e| e.to_string()).collect())
            .unwrap_or_default();
        items.sort();
        items
    };
    serde_json::json!({
        "mappings": d["mappings"].clone(),
        "exports": set("exports"),
        "imports": set("imports"),
        "is_system": d["is_system"].clone(),
    })
}

/// GETs `path` from the HTTP server on loopback `port`: status and body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    match ureq::get(&format!("http://127.0.0.1:{port}{path}")).call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("{path}: {e}"),
    }
}

/// A service latency report with what differs between servers and runs
/// taken out, for comparing: its id and times (which must be strings) and
/// each `ClientInfo`'s round trip, start, host and id; returns its
/// service, system and total nanoseconds (which must be numbers).
pub fn latency_comparable(report: &mut serde_json::Value) -> (u64, u64, u64) {
    let text = report.to_string();
    let m = report.as_object_mut().expect("a report object");
    let mut nanos = |k: &str| {
        m.remove(k)
            .and_then(|n| n.as_u64())
            .unwrap_or_else(|| panic!("{k} in {text}"))
    };
    let times = (nanos("service"), nanos("system"), nanos("total"));
    for k in ["id", "timestamp", "start"] {
        assert!(m.remove(k).is_some_and(|s| s.is_string()), "{k} in {text}");
    }
    for who in ["requestor", "responder"] {
        if let Some(serde_json::Value::Object(ci)) = m.get_mut(who) {
            for k in ["rtt", "start", "host", "id"] {
                if let Some(x) = ci.get_mut(k) {
                    *x = serde_json::json!("*");
                }
            }
        }
    }
    times
}
