//! JWT helpers shared by the auth, system and resolver tests: the
//! fixtures made by the official Go libraries, JWTs signed with their seeds,
//! temporary configuration files, and a raw CONNECT that signs the nonce.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use petrel::auth::jwt;
use serde_json::json;

use super::raw::Raw;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt/");

pub fn fixture(rel: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}{rel}")).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

pub fn seed(name: &str) -> String {
    fixture(&format!("keys/{name}.nk")).trim().to_string()
}

/// A fresh directory under the system temp dir.
pub fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "petrel-auth-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn write_conf(text: &str) -> PathBuf {
    let p = temp_dir().join("server.conf");
    std::fs::write(&p, text).unwrap();
    p
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

pub fn manifest() -> serde_json::Value {
    serde_json::from_str(&fixture("manifest.json")).unwrap()
}

/// The fixtures' account JWTs by public key.
pub fn fixture_accounts() -> Vec<(String, String)> {
    manifest()["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let key = a["pub"].as_str().unwrap().to_string();
            (key.clone(), fixture(a["jwt"].as_str().unwrap()).trim().to_string())
        })
        .collect()
}

/// An operator-mode configuration with a MEMORY resolver preloaded with `accounts`.
pub fn memory_conf(accounts: &[(String, String)]) -> PathBuf {
    let mut preload = String::new();
    for (k, j) in accounts {
        preload.push_str(&format!("  {k}: \"{j}\"\n"));
    }
    write_conf(&format!(
        "operator: \"{FIXTURES}operator.jwt\"\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n{preload}}}\n",
        manifest()["system_account"].as_str().unwrap()
    ))
}

/// Sends CONNECT with a user JWT signed over the nonce by `seed` (no
/// signature when `seed` is empty), then PING; returns the reply text and
/// whether the server closed.
pub fn raw_jwt_connect(addr: &str, user_jwt: &str, seed: &str) -> (Raw, String, bool) {
    let mut r = Raw::open(addr);
    let nonce = r.info()["nonce"].as_str().unwrap_or_default().to_string();
    let sig = if seed.is_empty() {
        String::new()
    } else {
        jwt::sign_nonce(seed, nonce.as_bytes()).unwrap()
    };
    let connect = json!({"verbose": false, "protocol": 1, "jwt": user_jwt, "sig": sig});
    let reply = r.exchange(format!("CONNECT {connect}\r\nPING\r\n").as_bytes());
    let text = reply.text();
    (r, text, reply.closed)
}

/// A new user key pair and a user JWT for it, signed by `issuer_seed`.
pub fn user(issuer_seed: &str, name: &str, nats: serde_json::Value, extra: serde_json::Value) -> (String, String) {
    let kp = nkeys::KeyPair::new_user();
    let mut claims = json!({
        "sub": kp.public_key(),
        "name": name,
        "iat": now() - 5,
        "nats": nats,
    });
    if let serde_json::Value::Object(m) = extra {
        for (k, v) in m {
            claims[k] = v;
        }
    }
    if claims["nats"].get("type").is_none() {
        claims["nats"]["type"] = json!("user");
        claims["nats"]["version"] = json!(2);
    }
    (jwt::encode_signed(&claims, issuer_seed).unwrap(), kp.seed().unwrap())
}

pub fn user_nats() -> serde_json::Value {
    json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2})
}

/// A new account signed by the operator's signing key.
pub fn account(name: &str, nats: serde_json::Value) -> (String, String, String) {
    let kp = nkeys::KeyPair::new_account();
    let claims = json!({"sub": kp.public_key(), "name": name, "iat": now() - 10, "nats": nats});
    let token = jwt::encode_signed(&claims, &seed("operator_sk")).unwrap();
    (kp.public_key(), token, kp.seed().unwrap())
}

/// A minimal account server: GET <base><key> answers the JWT, GET <base>
/// answers 200 empty (the start-up probe). Counts requests. It serves one
/// request at a time, as a slow resolver would.
pub struct AccountServer {
    pub port: u16,
    pub hits: Arc<AtomicUsize>,
}

/// An [`AccountServer`] for `jwts` that answers at once.
pub fn account_server(jwts: HashMap<String, String>) -> AccountServer {
    slow_account_server(jwts, Duration::ZERO)
}

/// An [`AccountServer`] that takes `unknown_delay` to answer 404 for an
/// account it does not have.
pub fn slow_account_server(jwts: HashMap<String, String>, unknown_delay: Duration) -> AccountServer {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let jwts = Arc::new(Mutex::new(jwts));
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            h.fetch_add(1, Ordering::Relaxed);
            let mut line = String::new();
            let mut rd = BufReader::new(s.try_clone().unwrap());
            if rd.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut hdr = String::new();
                if rd.read_line(&mut hdr).is_err() || hdr == "\r\n" || hdr.is_empty() {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let key = path.trim_start_matches("/jwt/v1/accounts/").to_string();
            let (status, body) = if key.is_empty() {
                ("200 OK", String::new())
            } else {
                match jwts.lock().unwrap().get(&key) {
                    Some(j) => ("200 OK", j.clone()),
                    None => {
                        std::thread::sleep(unknown_delay);
                        ("404 Not Found", String::new())
                    }
                }
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    AccountServer { port, hits }
}
