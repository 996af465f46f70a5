//! Logins cannot be starved: a flood of connections that need slow checks
//! (wrong passwords against a bcrypt user, user JWTs of accounts the URL
//! resolver has never heard of) must not make real users wait, nor `$SYS`
//! requests. The floods come from 127.0.0.2, real users from 127.0.0.1.
//!
//! Each scenario runs against petrel and against nats-server; petrel's
//! real logins and requests must succeed (no `Authentication Timeout`),
//! and both servers' times are printed for the comparison
//! (`cargo test --test auth_flood -- --nocapture`). Speed is measured in
//! perf/, not asserted here.

mod common;

use std::time::{Duration, Instant};

use common::jwt::*;
use common::raw::Raw;
use petrel::auth::jwt;
use serde_json::json;

/// Where the flood comes from.
const FLOOD_FROM: &str = "127.0.0.2";
/// How long a real login or request may take before it counts as starved:
/// nats-server's default authentication timeout.
const STARVED: Duration = Duration::from_secs(2);

/// Sends `connect` then PING on a fresh connection from `source`; returns
/// whether a PONG came back (the login succeeded) and how long it took.
fn login(addr: &str, source: &str, connect: &serde_json::Value, seed: Option<&str>) -> (Raw, bool, Duration) {
    let mut r = Raw::open_from(addr, source);
    let t = Instant::now();
    let mut connect = connect.clone();
    if let Some(seed) = seed {
        let nonce = r.info()["nonce"].as_str().unwrap_or_default().to_string();
        connect["sig"] = json!(jwt::sign_nonce(seed, nonce.as_bytes()).unwrap());
    }
    r.send(format!("CONNECT {connect}\r\nPING\r\n").as_bytes());
    let ok = loop {
        match r.read_line(Duration::from_secs(10)) {
            Some(l) if l == "PONG\r\n" => break true,
            Some(l) if l.starts_with("-ERR") => break false,
            Some(_) => continue,
            None => break false,
        }
    };
    (r, ok, t.elapsed())
}

/// A `$SYS` VARZ request on a connected system user; how long the answer took.
fn varz(sys: &mut Raw, n: usize) -> Duration {
    let t = Instant::now();
    sys.send(format!("SUB _INBOX.varz{n} {n}\r\nPUB $SYS.REQ.SERVER.PING.VARZ _INBOX.varz{n} 0\r\n\r\n").as_bytes());
    loop {
        let l = sys.read_line(Duration::from_secs(30)).expect("a VARZ answer");
        if l.starts_with(&format!("MSG _INBOX.varz{n} ")) {
            return t.elapsed();
        }
    }
}

/// Opens `n` connections from [`FLOOD_FROM`] that each send the CONNECT
/// `make(i)` gives, without waiting for answers.
fn flood(addr: &str, n: usize, make: impl Fn(usize, &str) -> serde_json::Value) -> Vec<Raw> {
    (0..n)
        .map(|i| {
            let mut r = Raw::open_from(addr, FLOOD_FROM);
            let nonce = r.info()["nonce"].as_str().unwrap_or_default().to_string();
            r.send(format!("CONNECT {}\r\nPING\r\n", make(i, &nonce)).as_bytes());
            r
        })
        .collect()
}

/// What a scenario measured.
#[derive(Debug)]
struct Outcome {
    /// (what, succeeded, time)
    logins: Vec<(&'static str, bool, Duration)>,
    varz: Duration,
}

fn bcrypt_scenario(start: impl Fn(&str) -> common::Proc) -> Outcome {
    let hash = bcrypt::hash("alice-pw", 11).unwrap();
    let conf = write_conf(&format!(
        "accounts {{\n  SYS {{ users [ {{user: sys, password: sys}} ] }}\n  APP {{ users [ {{user: alice, password: \"{hash}\"}} ] }}\n}}\nsystem_account: SYS\n"
    ));
    let s = start(conf.to_str().unwrap());
    let addr = s.addr();
    let alice = json!({"verbose": false, "user": "alice", "pass": "alice-pw"});
    let (mut sys, ok, _) = login(
        &addr,
        "127.0.0.1",
        &json!({"verbose": false, "user": "sys", "pass": "sys"}),
        None,
    );
    assert!(ok, "system user logs in");

    let _flood = flood(
        &addr,
        200,
        |i, _| json!({"verbose": false, "user": "alice", "pass": format!("wrong-{i}")}),
    );
    std::thread::sleep(Duration::from_millis(100));
    let first = login(&addr, "127.0.0.1", &alice, None);
    let varz = varz(&mut sys, 1);
    let again = login(&addr, "127.0.0.1", &alice, None);
    let from_flood_address = login(&addr, FLOOD_FROM, &alice, None);
    Outcome {
        logins: vec![
            ("first login", first.1, first.2),
            ("second login", again.1, again.2),
            (
                "login from the flood's address",
                from_flood_address.1,
                from_flood_address.2,
            ),
        ],
        varz,
    }
}

fn resolver_scenario(start: impl Fn(&str) -> common::Proc) -> Outcome {
    // Each unknown account takes the resolver 20 ms to deny, one at a time.
    let srv = slow_account_server(fixture_accounts().into_iter().collect(), Duration::from_millis(20));
    let conf = write_conf(&format!(
        "operator: \"{FIXTURES}operator.jwt\"\nsystem_account: {}\nresolver: URL(http://127.0.0.1:{}/jwt/v1/accounts/)\n",
        manifest()["system_account"].as_str().unwrap(),
        srv.port
    ));
    let s = start(conf.to_str().unwrap());
    let addr = s.addr();
    let creds = |name: &str| jwt::parse_creds(&fixture(&format!("creds/{name}.creds"))).unwrap();
    let (sys_jwt, sys_seed) = creds("sys");
    let (a_jwt, a_seed) = creds("a");
    let sys_connect = json!({"verbose": false, "jwt": sys_jwt});
    let a_connect = json!({"verbose": false, "jwt": a_jwt});
    let (mut sys, ok, _) = login(&addr, "127.0.0.1", &sys_connect, Some(&sys_seed));
    assert!(ok, "system user logs in");
    let (_a, ok, _) = login(&addr, "127.0.0.1", &a_connect, Some(&a_seed));
    assert!(ok, "account A is fetched and cached");

    // 500 users of freshly made accounts the resolver does not know.
    let strangers: Vec<(String, String)> = (0..500)
        .map(|i| {
            let (_, _, acc_seed) = account(&format!("stranger{i}"), json!({"type": "account", "version": 2}));
            user(&acc_seed, "u", user_nats(), json!({}))
        })
        .collect();
    let _flood = flood(&addr, strangers.len(), |i, nonce| {
        let (ujwt, useed) = &strangers[i];
        json!({"verbose": false, "jwt": ujwt, "sig": jwt::sign_nonce(useed, nonce.as_bytes()).unwrap()})
    });
    std::thread::sleep(Duration::from_millis(100));
    let cached = login(&addr, "127.0.0.1", &a_connect, Some(&a_seed));
    let varz = varz(&mut sys, 1);
    let cached_from_flood_address = login(&addr, FLOOD_FROM, &a_connect, Some(&a_seed));
    Outcome {
        logins: vec![
            ("user of a cached account", cached.1, cached.2),
            (
                "user of a cached account, from the flood's address",
                cached_from_flood_address.1,
                cached_from_flood_address.2,
            ),
        ],
        varz,
    }
}

fn report(name: &str, petrel: &Outcome, nats: &Outcome) {
    for ((what, ok, t), (_, nok, nt)) in petrel.logins.iter().zip(&nats.logins) {
        println!("{name}: {what}: petrel {ok} in {t:?}, nats-server {nok} in {nt:?}");
    }
    println!(
        "{name}: $SYS VARZ: petrel {:?}, nats-server {:?}",
        petrel.varz, nats.varz
    );
    for (what, ok, t) in &petrel.logins {
        assert!(*ok && *t < STARVED, "{name}: {what}: petrel {ok} after {t:?}");
    }
    assert!(petrel.varz < STARVED, "{name}: VARZ after {:?}", petrel.varz);
}

#[test]
fn bcrypt_flood_does_not_starve_real_users_or_sys_requests() {
    let petrel = bcrypt_scenario(|c| common::petrel(&["-c", c]));
    let nats = bcrypt_scenario(|c| common::nats_server(&["-c", c]));
    report("bcrypt flood", &petrel, &nats);
}

#[test]
fn unknown_account_flood_does_not_starve_cached_accounts_or_sys_requests() {
    let petrel = resolver_scenario(|c| common::petrel(&["-c", c]));
    let nats = resolver_scenario(|c| common::nats_server(&["-c", c]));
    report("unknown-account flood", &petrel, &nats);
}
