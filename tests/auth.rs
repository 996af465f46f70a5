//! Authentication and authorization end to end: configuration users with
//! async-nats, the JWT fixtures made by the official Go libraries (MEMORY and
//! URL resolvers), and JWT cases signed here with the fixtures' seeds
//! (revocation, expiry, not-before, scoped and plain signing keys, bearer
//! tokens, source networks, account limits).

mod common;

use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::jwt::*;
use common::raw::Raw;
use futures::StreamExt;
use petrel::auth::jwt;
use serde_json::json;

// ---------------------------------------------------------------- fixtures

async fn check_manifest_users(url: &str) {
    for u in manifest()["users"].as_array().unwrap() {
        let name = u["name"].as_str().unwrap();
        let creds_path = format!("{FIXTURES}{}", u["creds"].as_str().unwrap());
        let res = async_nats::ConnectOptions::with_credentials_file(creds_path)
            .await
            .unwrap()
            .connection_timeout(Duration::from_secs(3))
            .connect(url)
            .await;
        match u["expect"].as_str().unwrap() {
            "ok" => {
                let c = res.unwrap_or_else(|e| panic!("{name} must connect: {e}"));
                c.flush().await.unwrap();
            }
            _ => {
                let e = res.err().unwrap_or_else(|| panic!("{name} must be refused"));
                assert!(
                    e.to_string().to_lowercase().contains("authorization violation"),
                    "{name}: {e}"
                );
            }
        }
    }
}

#[tokio::test]
async fn fixtures_memory_resolver_outcomes() {
    let conf = memory_conf(&fixture_accounts());
    let s = common::petrel(&["-c", conf.to_str().unwrap()]);
    check_manifest_users(&s.url()).await;
}

#[tokio::test]
async fn fixtures_restricted_user_and_account_isolation() {
    let conf = memory_conf(&fixture_accounts());
    let s = common::petrel(&["-c", conf.to_str().unwrap()]);
    let connect = |c: &str| {
        let path = format!("{FIXTURES}creds/{c}.creds");
        let url = s.url();
        async move {
            async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .unwrap()
                .connect(url)
                .await
                .unwrap()
        }
    };
    let sys = connect("sys").await;
    let mut sys_all = sys.subscribe(">").await.unwrap();
    let a = connect("a").await;
    let mut a_sub = a.subscribe("foo.>").await.unwrap();
    sys.flush().await.unwrap();
    a.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    // The restricted user: violations are reported, the connection stays.
    let mut raw = Raw::open(&s.addr());
    let restricted = fixture("creds/a_restricted.creds");
    let (ujwt, useed) = jwt::parse_creds(&restricted).unwrap();
    drop(raw);
    let (mut r, text, closed) = raw_jwt_connect(&s.addr(), &ujwt, &useed);
    assert!(!closed && text.contains("PONG"), "{text}");
    let text = r
        .exchange(b"PUB foo.secret 1\r\nx\r\nPUB bar.x 1\r\nx\r\nSUB bar.y 1\r\nPUB foo.ok 2\r\nok\r\nPING\r\n")
        .text();
    assert_eq!(
        text,
        "-ERR 'Permissions Violation for Publish to \"foo.secret\"'\r\n\
         -ERR 'Permissions Violation for Publish to \"bar.x\"'\r\n\
         -ERR 'Permissions Violation for Subscription to \"bar.y\"'\r\nPONG\r\n"
    );
    raw = r;
    let m = tokio::time::timeout(Duration::from_secs(5), a_sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&m.payload[..], b"ok", "only the allowed publish reached A's subscriber");
    drop(raw);

    // SYS does not see A's traffic (only the system's own events).
    a.publish("foo.seen", "x".into()).await.unwrap();
    a.flush().await.unwrap();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), sys_all.next()).await {
        assert!(m.subject.starts_with("$SYS."), "SYS saw {}", m.subject);
    }
}

#[tokio::test]
async fn fixtures_url_resolver_outcomes_and_fast_failure() {
    let srv = account_server(fixture_accounts().into_iter().collect());
    let conf = write_conf(&format!(
        "operator: \"{FIXTURES}operator.jwt\"\nsystem_account: {}\nresolver: URL(http://127.0.0.1:{}/jwt/v1/accounts/)\n",
        manifest()["system_account"].as_str().unwrap(),
        srv.port
    ));
    let s = common::petrel(&["-c", conf.to_str().unwrap()]);
    assert!(srv.hits.load(Ordering::Relaxed) >= 1, "start-up probe");
    check_manifest_users(&s.url()).await;
    // An account the server does not have fails at once, not after a timeout.
    let (ajwt, _, aseed) = account("Unknown", json!({"type": "account", "version": 2}));
    let _ = ajwt;
    let (ujwt, useed) = user(&aseed, "u", user_nats(), json!({}));
    let t = Instant::now();
    let (_, text, closed) = raw_jwt_connect(&s.addr(), &ujwt, &useed);
    assert!(closed && text.contains("Authorization Violation"), "{text}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn url_resolver_must_answer_at_start() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let conf = write_conf(&format!(
        "operator: \"{FIXTURES}operator.jwt\"\nresolver: URL(http://127.0.0.1:{port}/jwt/v1/accounts/)\n"
    ));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(["-p", "-1", "-a", "127.0.0.1", "-c", conf.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not reachable"));
}

// ------------------------------------------------------- signed JWT cases

struct Signed {
    _server: common::Proc,
    addr: String,
    b_seed: String,
    b_plain_sk: String,
    b_scoped_sk: String,
    revoked: (String, String),
    e_seed: String,
    c_seed: String,
}

/// Accounts signed here: B (plain and scoped signing keys, a revoked user,
/// limits conn 3 / subs 2 / payload 64), C (no bearer tokens), E (every
/// user issued before now revoked).
fn signed_setup() -> Signed {
    let plain_sk = nkeys::KeyPair::new_account();
    let scoped_sk = nkeys::KeyPair::new_account();
    let b_kp = nkeys::KeyPair::new_account();
    let b_seed = b_kp.seed().unwrap();
    let revoked_user = user(&b_seed, "revoked", user_nats(), json!({}));
    let revoked_pub = jwt::decode_user(&revoked_user.0).unwrap().sub;
    let b_claims = json!({
        "sub": b_kp.public_key(), "name": "B", "iat": now() - 10,
        "nats": {
            "type": "account", "version": 2,
            "limits": {"conn": 3, "subs": 2, "payload": 64, "data": -1, "imports": -1, "exports": -1, "wildcards": true, "leaf": -1},
            "signing_keys": [
                plain_sk.public_key(),
                {"kind": "user_scope", "key": scoped_sk.public_key(), "role": "r",
                 "template": {"pub": {"allow": ["scoped.{{name()}}.>"]}, "sub": {"allow": ["scoped.>"]}, "subs": -1, "data": -1, "payload": -1}}
            ],
            "revocations": {revoked_pub: now()},
        }
    });
    let b_jwt = jwt::encode_signed(&b_claims, &seed("operator_sk")).unwrap();
    let (c_pub, c_jwt, c_seed) = account(
        "C",
        json!({"type": "account", "version": 2, "limits": {"disallow_bearer": true, "conn": -1, "subs": -1, "payload": -1}}),
    );
    let e_kp = nkeys::KeyPair::new_account();
    let e_claims = json!({"sub": e_kp.public_key(), "name": "E", "iat": now() - 10,
        "nats": {"type": "account", "version": 2, "limits": {"conn": -1, "subs": -1, "payload": -1}, "revocations": {"*": now()}}});
    let e_jwt = jwt::encode_signed(&e_claims, &seed("operator_sk")).unwrap();
    let mut accounts = fixture_accounts();
    accounts.push((b_kp.public_key(), b_jwt));
    accounts.push((c_pub, c_jwt));
    accounts.push((e_kp.public_key(), e_jwt));
    let conf = memory_conf(&accounts);
    let server = common::petrel(&["-c", conf.to_str().unwrap()]);
    Signed {
        addr: server.addr(),
        _server: server,
        b_seed,
        b_plain_sk: plain_sk.seed().unwrap(),
        b_scoped_sk: scoped_sk.seed().unwrap(),
        revoked: revoked_user,
        e_seed: e_kp.seed().unwrap(),
        c_seed,
    }
}

fn accepted(text: &str, closed: bool) -> bool {
    !closed && text.starts_with("PONG\r\n") && !text.contains("-ERR")
}

fn refused(text: &str, closed: bool) -> bool {
    closed && text.contains("-ERR 'Authorization Violation'")
}

#[test]
fn signed_issuers_revocations_and_times() {
    let s = signed_setup();
    let b_pub = nkeys::KeyPair::from_seed(&s.b_seed).unwrap().public_key();

    let (j, k) = user(&s.b_seed, "plain", user_nats(), json!({}));
    let (_, t, c) = raw_jwt_connect(&s.addr, &j, &k);
    assert!(accepted(&t, c), "issued by the account: {t}");

    let (j, k) = user(&s.b_plain_sk, "sk", user_nats(), json!({}));
    let (_, t, c) = raw_jwt_connect(&s.addr, &j, &k);
    assert!(refused(&t, c), "signing key without issuer_account: {t}");
    let mut n = user_nats();
    n["issuer_account"] = json!(b_pub);
    let (j, k) = user(&s.b_plain_sk, "sk", n.clone(), json!({}));
    let (_, t, c) = raw_jwt_connect(&s.addr, &j, &k);
    assert!(accepted(&t, c), "plain signing key: {t}");

    let (j, _) = user(&s.b_seed, "nosig", user_nats(), json!({}));
    let (_, t, c) = raw_jwt_connect(&s.addr, &j, "");
    assert!(refused(&t, c), "missing signature: {t}");
    let other = nkeys::KeyPair::new_user().seed().unwrap();
    let (_, t, c) = raw_jwt_connect(&s.addr, &j, &other);
    assert!(refused(&t, c), "signature by another key: {t}");

    let (_, t, c) = raw_jwt_connect(&s.addr, &s.revoked.0, &s.revoked.1);
    assert!(refused(&t, c), "revoked user: {t}");
    let (j, k) = user(&s.e_seed, "old", user_nats(), json!({}));
    let (_, t, c) = raw_jwt_connect(&s.addr, &j, &k);
    assert!(refused(&t, c), "all users revoked in the account: {t}");

    let (j, k) = user(&s.b_seed, "later", user_nats(), json!({"nbf": now() + 3600}));
    let (_, t, c) = raw_jwt_connect(&s.addr, &j, &k);
    assert!(refused(&t, c), "not yet valid: {t}");

    let mut n = user_nats();
    n["src"] = json!(["10.0.0.0/8"]);
    let (j, k) = user(&s.b_seed, "src", n, json!({}));
    let (_, t, c) = raw_jwt_connect(&s.addr, &j, &k);
    assert!(refused(&t, c), "outside src networks: {t}");
    let mut n = user_nats();
    n["src"] = json!(["192.168.0.0/16", "127.0.0.0/8"]);
    let (j, k) = user(&s.b_seed, "src", n, json!({}));
    let (_, t, c) = raw_jwt_connect(&s.addr, &j, &k);
    assert!(accepted(&t, c), "inside src networks: {t}");
}

#[test]
fn signed_bearer_tokens() {
    let s = signed_setup();
    let mut n = user_nats();
    n["bearer_token"] = json!(true);
    let (j, _) = user(&s.b_seed, "bearer", n.clone(), json!({}));
    let (_, t, c) = raw_jwt_connect(&s.addr, &j, "");
    assert!(accepted(&t, c), "bearer needs no signature: {t}");
    let (j, _) = user(&s.c_seed, "bearer", n, json!({}));
    let (_, t, c) = raw_jwt_connect(&s.addr, &j, "");
    assert!(refused(&t, c), "account disallows bearer tokens: {t}");
}

#[test]
fn signed_scoped_key_template_applies() {
    let s = signed_setup();
    let b_pub = nkeys::KeyPair::from_seed(&s.b_seed).unwrap().public_key();
    let mut n = user_nats();
    n["issuer_account"] = json!(b_pub);
    let (j, k) = user(&s.b_scoped_sk, "alice", n.clone(), json!({}));
    let (mut r, t, c) = raw_jwt_connect(&s.addr, &j, &k);
    assert!(accepted(&t, c), "{t}");
    let t = r
        .exchange(b"PUB scoped.alice.x 0\r\n\r\nPUB scoped.bob.x 0\r\n\r\nSUB other 1\r\nPING\r\n")
        .text();
    assert_eq!(
        t,
        "-ERR 'Permissions Violation for Publish to \"scoped.bob.x\"'\r\n\
         -ERR 'Permissions Violation for Subscription to \"other\"'\r\nPONG\r\n"
    );
    // A user of a scoped key may not carry permissions of its own.
    n["pub"] = json!({"allow": [">"]});
    let (j, k) = user(&s.b_scoped_sk, "mallory", n, json!({}));
    let (_, t, c) = raw_jwt_connect(&s.addr, &j, &k);
    assert!(refused(&t, c), "{t}");
}

#[test]
fn signed_account_limits() {
    let s = signed_setup();
    let (j, k) = user(&s.b_seed, "lim", user_nats(), json!({}));
    let (mut r, t, c) = raw_jwt_connect(&s.addr, &j, &k);
    assert!(accepted(&t, c), "{t}");
    let t = r.exchange(b"SUB a 1\r\nSUB b 2\r\nSUB c 3\r\nPING\r\n").text();
    assert_eq!(t, "-ERR 'maximum subscriptions exceeded'\r\nPONG\r\n");
    let body = vec![b'x'; 100];
    let mut publish = b"PUB a 100\r\n".to_vec();
    publish.extend_from_slice(&body);
    publish.extend_from_slice(b"\r\n");
    let reply = r.exchange(&publish);
    assert!(reply.closed);
    assert_eq!(reply.text(), "-ERR 'Maximum Payload Violation'\r\n");

    // conn: 3 in the account.
    let mut open = Vec::new();
    for _ in 0..3 {
        let (r, t, c) = raw_jwt_connect(&s.addr, &j, &k);
        assert!(accepted(&t, c), "{t}");
        open.push(r);
    }
    let (_, t, c) = raw_jwt_connect(&s.addr, &j, &k);
    assert!(c, "fourth connection closed");
    assert!(t.contains("-ERR 'maximum account active connections exceeded'"), "{t}");
    open.pop();
    std::thread::sleep(Duration::from_millis(200));
    let (_, t, c) = raw_jwt_connect(&s.addr, &j, &k);
    assert!(accepted(&t, c), "a slot was freed: {t}");
}

#[test]
fn user_jwt_expiring_while_connected_is_disconnected() {
    let s = signed_setup();
    let (j, k) = user(&s.b_seed, "short", user_nats(), json!({"exp": now() + 2}));
    let (mut r, t, c) = raw_jwt_connect(&s.addr, &j, &k);
    assert!(accepted(&t, c), "{t}");
    let reply = r.read_until_quiet(Duration::from_secs(5), Duration::from_secs(5));
    assert!(reply.closed, "closed at expiry");
    assert!(
        reply.text().contains("-ERR 'User Authentication Expired'"),
        "{}",
        reply.text()
    );
}

// -------------------------------------------------- configuration users

#[tokio::test]
async fn config_users_with_async_nats() {
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let nkey = nkeys::KeyPair::new_user();
    let conf = write_conf(&format!(
        r#"
authorization {{
  users = [
    {{user: plain, password: pw}}
    {{user: hashed, password: "{hash}"}}
    {{nkey: {}}}
    {{user: limited, password: pw, permissions: {{publish: {{deny: "secret.>"}}, subscribe: "open.>"}}}}
  ]
}}
"#,
        nkey.public_key()
    ));
    let s = common::petrel(&["-c", conf.to_str().unwrap()]);
    let ok = |o: async_nats::ConnectOptions| {
        let url = s.url();
        async move { o.connection_timeout(Duration::from_secs(3)).connect(url).await }
    };
    ok(async_nats::ConnectOptions::with_user_and_password(
        "plain".into(),
        "pw".into(),
    ))
    .await
    .unwrap();
    ok(async_nats::ConnectOptions::with_user_and_password(
        "hashed".into(),
        "s3cret".into(),
    ))
    .await
    .unwrap();
    assert!(ok(async_nats::ConnectOptions::with_user_and_password(
        "hashed".into(),
        "bad".into()
    ))
    .await
    .is_err());
    ok(async_nats::ConnectOptions::with_nkey(nkey.seed().unwrap()))
        .await
        .unwrap();
    assert!(ok(async_nats::ConnectOptions::with_nkey(
        nkeys::KeyPair::new_user().seed().unwrap()
    ))
    .await
    .is_err());
    assert!(
        ok(async_nats::ConnectOptions::new()).await.is_err(),
        "credentials required"
    );

    let limited = ok(async_nats::ConnectOptions::with_user_and_password(
        "limited".into(),
        "pw".into(),
    ))
    .await
    .unwrap();
    let mut sub = limited.subscribe("open.x").await.unwrap();
    limited.flush().await.unwrap();
    limited.publish("secret.x", "no".into()).await.unwrap();
    limited.publish("open.x", "yes".into()).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&m.payload[..], b"yes");
    assert_eq!(limited.connection_state(), async_nats::connection::State::Connected);
}

#[tokio::test]
async fn config_token_no_auth_user_and_flags() {
    let conf = write_conf("authorization { token: t0k3n }\n");
    let s = common::petrel(&["-c", conf.to_str().unwrap()]);
    async_nats::ConnectOptions::with_token("t0k3n".into())
        .connect(s.url())
        .await
        .unwrap();
    assert!(async_nats::ConnectOptions::with_token("nope".into())
        .connection_timeout(Duration::from_secs(3))
        .connect(s.url())
        .await
        .is_err());

    let conf = write_conf(
        "accounts {\n A { users: [{user: a, password: a}] }\n B { users: [{user: b, password: b}] }\n}\nno_auth_user: b\n",
    );
    let s = common::petrel(&["-c", conf.to_str().unwrap()]);
    let anon = async_nats::connect(s.url()).await.unwrap();
    let b = async_nats::ConnectOptions::with_user_and_password("b".into(), "b".into())
        .connect(s.url())
        .await
        .unwrap();
    let a = async_nats::ConnectOptions::with_user_and_password("a".into(), "a".into())
        .connect(s.url())
        .await
        .unwrap();
    let mut b_sub = b.subscribe("x").await.unwrap();
    let mut a_sub = a.subscribe("x").await.unwrap();
    b.flush().await.unwrap();
    a.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    anon.publish("x", "from anon".into()).await.unwrap();
    anon.flush().await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), b_sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&m.payload[..], b"from anon", "no_auth_user lands in B");
    assert!(tokio::time::timeout(Duration::from_millis(300), a_sub.next())
        .await
        .is_err());

    let s = common::petrel(&["--user", "u", "--pass", "p"]);
    async_nats::ConnectOptions::with_user_and_password("u".into(), "p".into())
        .connect(s.url())
        .await
        .unwrap();
    assert!(
        async_nats::ConnectOptions::with_user_and_password("u".into(), "x".into())
            .connection_timeout(Duration::from_secs(3))
            .connect(s.url())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn accounts_stream_and_service_imports() {
    let conf = write_conf(
        r#"
accounts {
  A: { users: [{user: a, password: a}], exports: [{stream: "events.>"}, {service: "svc.>"}] }
  B: { users: [{user: b, password: b}], imports: [
        {stream: {account: A, subject: "events.>"}, prefix: "a"}
        {service: {account: A, subject: "svc.echo"}, to: "echo"}
     ] }
}
"#,
    );
    let s = common::petrel(&["-c", conf.to_str().unwrap()]);
    let a = async_nats::ConnectOptions::with_user_and_password("a".into(), "a".into())
        .connect(s.url())
        .await
        .unwrap();
    let b = async_nats::ConnectOptions::with_user_and_password("b".into(), "b".into())
        .connect(s.url())
        .await
        .unwrap();
    let mut events = b.subscribe("a.events.>").await.unwrap();
    let mut svc = a.subscribe("svc.>").await.unwrap();
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let responder = a.clone();
    tokio::spawn(async move {
        while let Some(m) = svc.next().await {
            if let Some(r) = m.reply {
                let mut body = b"echo:".to_vec();
                body.extend_from_slice(&m.payload);
                responder.publish(r, body.into()).await.unwrap();
            }
        }
    });
    a.publish("events.one", "e1".into()).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.subject.as_str(), "a.events.one");
    let resp = tokio::time::timeout(Duration::from_secs(5), b.request("echo", "hi".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&resp.payload[..], b"echo:hi");
}

/// What a requester in `B` receives through service imports of each
/// response type: responses published in `A` to one request's reply
/// subject (a pause of `ms` before the second).
fn response_rules_scenario(start: impl Fn(&str) -> common::Proc) -> Vec<String> {
    let conf = write_conf(
        r#"
accounts {
  A: { users: [{user: a, password: a}], exports: [
        {service: "single"}
        {service: "stream", response: stream}
        {service: "chunks", response_type: chunked}
        {service: "slow", response: stream, threshold: "300ms"}
     ] }
  B: { users: [{user: b, password: b}], imports: [
        {service: {account: A, subject: single}}
        {service: {account: A, subject: stream}}
        {service: {account: A, subject: chunks}}
        {service: {account: A, subject: slow}}
     ] }
}
"#,
    );
    let server = start(conf.to_str().unwrap());
    let mut a = Raw::open(&server.addr());
    a.send(b"CONNECT {\"user\":\"a\",\"pass\":\"a\",\"verbose\":false}\r\nSUB single 1\r\nSUB stream 2\r\nSUB chunks 3\r\nSUB slow 4\r\n");
    assert_eq!(a.ping(), "");
    let mut b = Raw::open(&server.addr());
    b.send(b"CONNECT {\"user\":\"b\",\"pass\":\"b\",\"verbose\":false}\r\nSUB _INBOX.> 1\r\n");
    assert_eq!(b.ping(), "");
    let mut seen = Vec::new();
    for (subject, responses, pause_ms) in [
        ("single", &["r1", "r2"][..], 0),
        ("stream", &["r1", "r2", "r3"][..], 0),
        ("chunks", &["c1", "", "c2"][..], 0),
        ("slow", &["s1", "s2"][..], 100),
        ("slow", &["s1", "s2"][..], 900),
    ] {
        b.send(format!("PUB {subject} _INBOX.{subject} 3\r\nreq\r\n").as_bytes());
        assert_eq!(b.ping(), "");
        let line = a.read_line(Duration::from_secs(5)).expect("the request");
        let reply = line.split_whitespace().nth(3).expect("a reply subject").to_string();
        assert!(reply.starts_with("_R_."), "{line}");
        assert_eq!(a.read_line(Duration::from_secs(5)).as_deref(), Some("req\r\n"));
        for (i, r) in responses.iter().enumerate() {
            if i == 1 {
                std::thread::sleep(Duration::from_millis(pause_ms));
            }
            a.send(format!("PUB {reply} {}\r\n{r}\r\n", r.len()).as_bytes());
            assert_eq!(a.ping(), "");
        }
        let got = b.read_until_quiet(Duration::from_millis(300), Duration::from_secs(3));
        seen.push(format!("{subject} after {pause_ms} ms: {}", got.text()));
    }
    seen
}

/// Response types and thresholds as nats-server applies them: a singleton
/// request takes one response, a stream any number, a chunked one up to
/// an empty message, and a stream whose threshold has passed none (the
/// 900 ms pause is past twice the threshold: nats-server checks on a
/// timer of the threshold's period).
#[test]
fn service_response_types_and_thresholds_match_nats_server() {
    let ours = response_rules_scenario(|c| common::petrel(&["-c", c]));
    let theirs = response_rules_scenario(|c| common::nats_server(&["-c", c]));
    assert_eq!(ours, theirs);
    assert_eq!(ours[0], "single after 0 ms: MSG _INBOX.single 1 2\r\nr1\r\n");
    assert_eq!(
        ours[2],
        "chunks after 0 ms: MSG _INBOX.chunks 1 2\r\nc1\r\nMSG _INBOX.chunks 1 0\r\n\r\n"
    );
    assert!(ours[3].ends_with("s2\r\n"), "{}", ours[3]);
    assert!(!ours[4].contains("s2"), "{}", ours[4]);
}

/// The `Nats-Request-Info` a responder reads on a request through an
/// import (`share` or not), as JSON.
fn request_info_scenario(start: impl Fn(&str) -> common::Proc) -> Vec<serde_json::Value> {
    let conf = write_conf(
        r#"
server_name: "srv"
accounts {
  A: { users: [{user: a, password: a}], exports: [{service: "plain"}, {service: "shared"}] }
  B: { users: [{user: b, password: b}], imports: [
        {service: {account: A, subject: plain}}
        {service: {account: A, subject: shared}, share: true}
     ] }
}
"#,
    );
    let server = start(conf.to_str().unwrap());
    let mut a = Raw::open(&server.addr());
    a.send(b"CONNECT {\"user\":\"a\",\"pass\":\"a\",\"verbose\":false,\"headers\":true}\r\nSUB plain 1\r\nSUB shared 2\r\n");
    a.ping();
    let mut b = Raw::open(&server.addr());
    b.send(b"CONNECT {\"user\":\"b\",\"pass\":\"b\",\"verbose\":false,\"headers\":true,\"name\":\"req\",\"lang\":\"rust\",\"version\":\"9.9\"}\r\n");
    b.ping();
    b.send(b"PUB plain _INBOX.1 2\r\nhi\r\nHPUB shared _INBOX.2 12 14\r\nNATS/1.0\r\n\r\nhi\r\n");
    b.ping();
    let text = a
        .read_until_quiet(Duration::from_millis(300), Duration::from_secs(3))
        .text();
    text.lines()
        .filter_map(|l| l.strip_prefix("Nats-Request-Info: "))
        .map(|j| {
            let mut v: serde_json::Value = serde_json::from_str(j).unwrap();
            // What differs between two servers and two runs.
            for k in ["rtt", "start", "host", "id"] {
                if let Some(x) = v.as_object_mut().unwrap().get_mut(k) {
                    *x = json!("*");
                }
            }
            v
        })
        .collect()
}

/// A request through a service import carries `Nats-Request-Info`: the
/// requester's account (and RTT), everything with `share`, as nats-server
/// stamps it.
#[test]
fn service_requests_say_who_asked_as_nats_server() {
    let ours = request_info_scenario(|c| common::petrel(&["-c", c]));
    let theirs = request_info_scenario(|c| common::nats_server(&["-c", c]));
    assert_eq!(ours.len(), 2, "{ours:?}");
    assert_eq!(ours, theirs);
}

/// The latency reports a listener in `A` gets for requests from `B`
/// through imports of measured services, one step at a time.
fn latency_scenario(start: impl Fn(&str) -> common::Proc) -> Vec<serde_json::Value> {
    let conf = write_conf(
        r#"
server_name: "srv"
accounts {
  A: { users: [{user: a, password: a}], exports: [
        {service: "svc.timed", latency: {sampling: "100%", subject: "lat.timed"}}
        {service: "svc.shared", latency: "lat.shared"}
        {service: "svc.headers", latency: {sampling: headers, subject: "lat.headers"}}
        {service: "svc.none", latency: "lat.none"}
        {service: "svc.slow", latency: "lat.slow", threshold: "300ms"}
     ] }
  B: { users: [{user: b, password: b}], imports: [
        {service: {account: A, subject: "svc.timed"}}
        {service: {account: A, subject: "svc.shared"}, share: true}
        {service: {account: A, subject: "svc.headers"}}
        {service: {account: A, subject: "svc.none"}}
        {service: {account: A, subject: "svc.slow"}}
     ] }
}
"#,
    );
    let server = start(conf.to_str().unwrap());
    let connect = |user: &str, name: &str| {
        let mut r = Raw::open(&server.addr());
        r.send(
            format!("CONNECT {{\"user\":\"{user}\",\"pass\":\"{user}\",\"verbose\":false,\"headers\":true,\"name\":\"{name}\",\"lang\":\"rust\",\"version\":\"1.0\"}}\r\n")
                .as_bytes(),
        );
        r.ping();
        r
    };
    let mut listener = connect("a", "listener");
    listener.send(b"SUB lat.> 1\r\n");
    listener.ping();
    let mut responder = connect("a", "responder");
    responder.send(b"SUB svc.timed 1\r\nSUB svc.shared 2\r\nSUB svc.headers 3\r\nSUB svc.slow 4\r\n");
    responder.ping();
    let mut requester = connect("b", "requester");
    let mut reports = Vec::new();
    let steps: [(&[u8], bool, u64); 7] = [
        (b"PUB svc.timed _INBOX.1 1\r\na\r\n", true, 0),
        (b"PUB svc.shared _INBOX.2 1\r\nb\r\n", true, 0),
        (b"PUB svc.timed 1\r\nc\r\n", false, 0),
        (
            b"HPUB svc.headers _INBOX.3 82 83\r\nNATS/1.0\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\nd\r\n",
            true,
            0,
        ),
        (b"PUB svc.headers _INBOX.4 1\r\ne\r\n", true, 0),
        (b"PUB svc.none _INBOX.5 1\r\nf\r\n", false, 0),
        (b"PUB svc.slow _INBOX.6 1\r\ng\r\n", false, 1200),
    ];
    for (request, answer, wait_ms) in steps {
        requester.send(request);
        requester.ping();
        if answer {
            let text = responder
                .read_until_quiet(Duration::from_millis(200), Duration::from_secs(3))
                .text();
            let line = text
                .lines()
                .find(|l| l.starts_with("MSG ") || l.starts_with("HMSG "))
                .expect("a request");
            let reply = line.split_whitespace().nth(3).expect("a reply subject").to_string();
            responder.send(format!("PUB {reply} 2\r\nok\r\n").as_bytes());
            responder.ping();
        } else {
            responder.read_until_quiet(Duration::from_millis(100), Duration::from_secs(1));
        }
        std::thread::sleep(Duration::from_millis(wait_ms));
        let text = listener
            .read_until_quiet(Duration::from_millis(300), Duration::from_secs(3))
            .text();
        for body in text.lines().filter(|l| l.starts_with('{')) {
            let mut v: serde_json::Value = serde_json::from_str(body).unwrap();
            common::latency_comparable(&mut v);
            reports.push(v);
        }
    }
    reports
}

/// Service latency tracking as nats-server reports it: 200 with both
/// ends described (the requester in full with `share`), 400 for a request
/// without a reply, sampling by trace headers, 503 without a responder and
/// 504 past the threshold.
#[test]
fn service_latency_reports_match_nats_server() {
    let ours = latency_scenario(|c| common::petrel(&["-c", c]));
    let theirs = latency_scenario(|c| common::nats_server(&["-c", c]));
    assert_eq!(ours.len(), 6, "{ours:#?}");
    assert_eq!(ours, theirs);
}

/// An account's configured `limits`: what a client at each limit gets.
fn account_limits_scenario(start: impl Fn(&str) -> common::Proc) -> Vec<String> {
    let conf = write_conf(
        r#"
accounts {
  A: {
    users: [{user: a, password: a}]
    limits: {max_connections: 1, max_subscriptions: 1, max_payload: 10}
  }
  B: {
    users: [{user: b, password: b}]
    limits: {max_conn: 2}
  }
}
"#,
    );
    let server = start(conf.to_str().unwrap());
    let login = "CONNECT {\"user\":\"a\",\"pass\":\"a\",\"verbose\":false}\r\n";
    let mut first = Raw::open(&server.addr());
    let mut seen = vec![first
        .exchange(format!("{login}SUB x 1\r\nSUB y 2\r\nPING\r\n").as_bytes())
        .text()];
    let mut second = Raw::open(&server.addr());
    let r = second.exchange(format!("{login}PING\r\n").as_bytes());
    seen.push(r.text_and_close());
    let r = first.exchange(b"PUB x 11\r\n01234567890\r\nPING\r\n");
    seen.push(r.text_and_close());
    // B allows two.
    let b = "CONNECT {\"user\":\"b\",\"pass\":\"b\",\"verbose\":false}\r\nPING\r\n";
    let mut keep = Vec::new();
    for _ in 0..3 {
        let mut c = Raw::open(&server.addr());
        let r = c.exchange(b.as_bytes());
        seen.push(r.text_and_close());
        keep.push(c);
    }
    seen
}

/// Configured account limits apply as nats-server applies them: the
/// connection, subscription and payload limits, texts and closes alike.
#[test]
fn configured_account_limits_match_nats_server() {
    let ours = account_limits_scenario(|c| common::petrel(&["-c", c]));
    let theirs = account_limits_scenario(|c| common::nats_server(&["-c", c]));
    assert_eq!(ours, theirs);
    assert!(
        ours[1].contains("maximum account active connections exceeded"),
        "{ours:?}"
    );
    assert!(ours[0].contains("maximum subscriptions exceeded"), "{ours:?}");
}

#[test]
fn auth_timeout_from_authorization_block() {
    let conf = write_conf("authorization { user: u, password: p, timeout: 0.5 }\n");
    let s = common::petrel(&["-c", conf.to_str().unwrap()]);
    let mut r = Raw::open(&s.addr());
    assert_eq!(r.info()["auth_required"], json!(true));
    let t = Instant::now();
    let reply = r.read_until_quiet(Duration::from_secs(3), Duration::from_secs(3));
    assert!(reply.closed);
    assert_eq!(reply.text(), "-ERR 'Authentication Timeout'\r\n");
    assert!(t.elapsed() < Duration::from_secs(2));
}

// ------------------------------------------------- live account updates

/// Runs a claims update against `start`'s server: a connected user revoked
/// by the update is closed with `User Authentication Revoked`, another gets
/// the account's new default permissions, and the reply has nats-server's
/// shape. Returns the reply documents (good update, stale update, forged).
fn claims_update_scenario(start: impl Fn(&str) -> common::Proc) -> Vec<serde_json::Value> {
    let r_kp = nkeys::KeyPair::new_account();
    let r_seed = r_kp.seed().unwrap();
    let base = |iat: i64, nats: serde_json::Value| {
        let claims = json!({"sub": r_kp.public_key(), "name": "R", "iat": iat, "nats": nats});
        jwt::encode_signed(&claims, &seed("operator_sk")).unwrap()
    };
    let limits = json!({"conn": -1, "subs": -1, "payload": -1, "data": -1});
    let v1 = base(now() - 100, json!({"type": "account", "version": 2, "limits": limits}));
    let mut accounts = fixture_accounts();
    accounts.push((r_kp.public_key(), v1));
    let conf = memory_conf(&accounts);
    let server = start(conf.to_str().unwrap());
    let addr = server.addr();

    let victim = user(&r_seed, "victim", user_nats(), json!({"iat": now() - 50}));
    let victim_pub = jwt::decode_user(&victim.0).unwrap().sub;
    let (mut v, t, c) = raw_jwt_connect(&addr, &victim.0, &victim.1);
    assert!(accepted(&t, c), "{t}");
    let other = user(&r_seed, "other", user_nats(), json!({}));
    let (mut o, t, c) = raw_jwt_connect(&addr, &other.0, &other.1);
    assert!(accepted(&t, c), "{t}");
    o.exchange(b"SUB locked.x 7\r\nSUB open.x 8\r\nPING\r\n");

    let (sys_jwt, sys_seed) = jwt::parse_creds(&fixture("creds/sys.creds")).unwrap();
    let (mut sys, t, c) = raw_jwt_connect(&addr, &sys_jwt, &sys_seed);
    assert!(accepted(&t, c), "{t}");
    sys.exchange(b"SUB _INBOX.claims 1\r\nPING\r\n");

    let mut docs = Vec::new();
    let mut push = |sys: &mut Raw, token: &str| {
        let subject = format!("$SYS.REQ.ACCOUNT.{}.CLAIMS.UPDATE", r_kp.public_key());
        let text = sys
            .exchange(format!("PUB {subject} _INBOX.claims {}\r\n{token}\r\n", token.len()).as_bytes())
            .text();
        let body = text.lines().nth(1).unwrap_or_else(|| panic!("a reply: {text:?}"));
        docs.push(serde_json::from_str::<serde_json::Value>(body).unwrap());
    };
    let v2 = base(
        now(),
        json!({"type": "account", "version": 2, "limits": limits,
               "revocations": {victim_pub: now() - 10},
               "default_permissions": {"pub": {"deny": ["locked.>"]}, "sub": {"deny": ["locked.>"]}}}),
    );
    push(&mut sys, &v2);
    let reply = v.read_until_quiet(Duration::from_secs(2), Duration::from_secs(3));
    assert!(reply.closed, "the revoked user is disconnected");
    assert!(
        reply.text().contains("-ERR 'User Authentication Revoked'"),
        "{}",
        reply.text()
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        o.exchange(b"PUB locked.x 0\r\n\r\nPUB open.x 0\r\n\r\nPING\r\n")
            .text()
            .replace("PING\r\n", ""),
        "-ERR 'Permissions Violation for Subscription to \"locked.x\" (sid \"7\")'\r\n\
         -ERR 'Permissions Violation for Publish to \"locked.x\"'\r\nMSG open.x 8 0\r\n\r\nPONG\r\n",
        "the account's new default permissions apply to a connected user and its subscriptions"
    );
    let stale = base(now() - 1000, json!({"type": "account", "version": 2, "limits": limits}));
    push(&mut sys, &stale);
    let forged_claims = json!({"sub": r_kp.public_key(), "name": "R", "iat": now() + 5,
        "nats": {"type": "account", "version": 2, "limits": limits}});
    let forged = jwt::encode_signed(&forged_claims, &nkeys::KeyPair::new_operator().seed().unwrap()).unwrap();
    push(&mut sys, &forged);
    // The forged update changed nothing: a new user still connects.
    let again = user(&r_seed, "again", user_nats(), json!({}));
    let (_, t, c) = raw_jwt_connect(&addr, &again.0, &again.1);
    assert!(accepted(&t, c), "{t}");
    docs
}

#[test]
fn claims_update_applies_to_connected_clients() {
    let docs = claims_update_scenario(|conf| common::petrel(&["-c", conf]));
    assert_eq!(docs[0]["data"]["code"], json!(200), "{}", docs[0]);
    assert_eq!(docs[0]["data"]["message"], json!("jwt updated"));
    for k in ["name", "host", "id", "ver", "seq", "time", "jetstream"] {
        assert!(docs[0]["server"].get(k).is_some(), "server.{k} in {}", docs[0]);
    }
    assert_eq!(
        docs[1]["error"]["code"],
        json!(500),
        "a stale update is refused: {}",
        docs[1]
    );
    assert_eq!(
        docs[2]["error"]["code"],
        json!(500),
        "a forged update is refused: {}",
        docs[2]
    );
}

/// The same scenario against nats-server: the connected-client outcomes
/// (asserted inside) and the accepted reply's shape match.
#[test]
fn claims_update_matches_nats_server() {
    let docs = claims_update_scenario(|conf| common::nats_server(&["-c", conf]));
    assert_eq!(docs[0]["data"]["code"], json!(200), "{}", docs[0]);
    assert_eq!(docs[0]["data"]["message"], json!("jwt updated"));
}

// ------------------------------------------- imports from account JWTs

/// No account limits (the account JWT's `limits`).
fn unlimited() -> serde_json::Value {
    json!({"conn": -1, "subs": -1, "payload": -1, "data": -1, "imports": -1, "exports": -1, "wildcards": true})
}

/// An account JWT for `kp` named `name`, signed by the operator's signing key.
fn operator_signed(kp: &nkeys::KeyPair, name: &str, nats: serde_json::Value) -> String {
    let claims = json!({"sub": kp.public_key(), "name": name, "iat": now() - 10, "nats": nats});
    jwt::encode_signed(&claims, &seed("operator_sk")).unwrap()
}

/// Account JWTs for X, exporting a public stream, a public service and a
/// private stream (with `mappings` when given), and Y, importing all three
/// (the private one with an activation token X signed).
fn exporter_and_importer(
    x: &nkeys::KeyPair,
    y: &nkeys::KeyPair,
    mappings: Option<serde_json::Value>,
) -> (String, String) {
    let mut x_nats = json!({"type": "account", "version": 2, "limits": unlimited(), "exports": [
        {"subject": "x.events.>", "type": "stream"},
        {"subject": "x.svc", "type": "service"},
        {"subject": "x.private.>", "type": "stream", "token_req": true}
    ]});
    if let Some(m) = mappings {
        x_nats["mappings"] = m;
    }
    let activation = jwt::encode_signed(
        &json!({"sub": y.public_key(), "iat": now() - 5,
                "nats": {"type": "activation", "version": 2, "subject": "x.private.>", "kind": "stream"}}),
        &x.seed().unwrap(),
    )
    .unwrap();
    let y_jwt = operator_signed(
        y,
        "Y",
        json!({"type": "account", "version": 2, "limits": unlimited(), "imports": [
            {"account": x.public_key(), "subject": "x.events.>", "type": "stream", "local_subject": "from_x.>"},
            {"account": x.public_key(), "subject": "x.svc", "type": "service", "local_subject": "svc"},
            {"account": x.public_key(), "subject": "x.private.>", "type": "stream", "token": activation}
        ]}),
    );
    (operator_signed(x, "X", x_nats), y_jwt)
}

/// Account X exports a public stream, a public service and a private
/// stream; Y imports all three (the private one with an activation token),
/// Z imports the private stream without a token. Returns what Y and Z saw.
fn jwt_imports_scenario(start: impl Fn(&str) -> common::Proc) -> (String, String, String) {
    let x = nkeys::KeyPair::new_account();
    let y = nkeys::KeyPair::new_account();
    let z = nkeys::KeyPair::new_account();
    let limits = unlimited();
    let sign = operator_signed;
    let (x_jwt, y_jwt) = exporter_and_importer(&x, &y, None);
    let z_jwt = sign(
        &z,
        "Z",
        json!({"type": "account", "version": 2, "limits": limits, "imports": [
            {"account": x.public_key(), "subject": "x.private.>", "type": "stream"}
        ]}),
    );
    let mut accounts = fixture_accounts();
    accounts.push((x.public_key(), x_jwt));
    accounts.push((y.public_key(), y_jwt));
    accounts.push((z.public_key(), z_jwt));
    let conf = memory_conf(&accounts);
    let server = start(conf.to_str().unwrap());
    let addr = server.addr();
    let conn = |kp: &nkeys::KeyPair| {
        let (j, k) = user(&kp.seed().unwrap(), "u", user_nats(), json!({}));
        let (r, t, c) = raw_jwt_connect(&addr, &j, &k);
        assert!(accepted(&t, c), "{t}");
        r
    };
    let mut xr = conn(&x);
    let mut yr = conn(&y);
    let mut zr = conn(&z);
    yr.exchange(b"SUB from_x.> 1\r\nSUB x.private.> 2\r\nSUB _INBOX.y 3\r\nPING\r\n");
    zr.exchange(b"SUB > 1\r\nPING\r\n");
    xr.exchange(b"SUB x.svc 1\r\nPING\r\n");
    std::thread::sleep(Duration::from_millis(100));
    xr.exchange(b"PUB x.events.a 1\r\na\r\nPUB x.private.b 1\r\nb\r\nPING\r\n");
    let request = yr.exchange(b"PUB svc _INBOX.y 3\r\nreq\r\n");
    let got = xr
        .read_until_quiet(Duration::from_millis(300), Duration::from_secs(3))
        .text();
    let line = got.lines().next().unwrap_or_default().to_string();
    assert!(
        line.starts_with("MSG x.svc 1 "),
        "the service request reached X: {got:?}"
    );
    let reply_to = line.split(' ').nth(3).unwrap().to_string();
    xr.exchange(format!("PUB {reply_to} 4\r\nresp\r\nPING\r\n").as_bytes());
    // Server PINGs depend on timing, not on routing.
    let y_saw = (request.text()
        + &yr
            .read_until_quiet(Duration::from_millis(300), Duration::from_secs(3))
            .text())
        .replace("PING\r\n", "");
    let z_saw = zr
        .read_until_quiet(Duration::from_millis(300), Duration::from_secs(3))
        .text()
        .replace("PING\r\n", "");
    (y_saw, z_saw, line)
}

/// What Y receives, as nats-server 2.15.1 delivers it: `x.events.>` mapped
/// onto `from_x.>` keeps the wildcard's tokens only.
const Y_SAW: &str = "MSG from_x.a 1 1\r\na\r\nMSG x.private.b 2 1\r\nb\r\nMSG _INBOX.y 3 4\r\nresp\r\n";

#[test]
fn jwt_account_imports_and_exports() {
    let (y, z, _) = jwt_imports_scenario(|conf| common::petrel(&["-c", conf]));
    assert_eq!(
        y, Y_SAW,
        "stream (mapped), private stream (activated) and the service response"
    );
    assert_eq!(z, "", "no activation token, no private stream");
}

#[test]
fn jwt_account_imports_match_nats_server() {
    let (y, z, _) = jwt_imports_scenario(|conf| common::nats_server(&["-c", conf]));
    assert_eq!(y, Y_SAW);
    assert_eq!(z, "");
}

/// An account JWT expiring while its user is connected closes the client
/// with `Account Authentication Expired`; returns what the client read.
fn account_expiry_scenario(start: impl Fn(&str) -> common::Proc) -> (String, bool) {
    let kp = nkeys::KeyPair::new_account();
    let claims = json!({"sub": kp.public_key(), "name": "Short", "iat": now() - 10, "exp": now() + 2,
        "nats": {"type": "account", "version": 2, "limits": {"conn": -1, "subs": -1, "payload": -1, "data": -1}}});
    let token = jwt::encode_signed(&claims, &seed("operator_sk")).unwrap();
    let mut accounts = fixture_accounts();
    accounts.push((kp.public_key(), token));
    let conf = memory_conf(&accounts);
    let server = start(conf.to_str().unwrap());
    let (j, k) = user(&kp.seed().unwrap(), "u", user_nats(), json!({}));
    let (mut r, t, c) = raw_jwt_connect(&server.addr(), &j, &k);
    assert!(accepted(&t, c), "{t}");
    let reply = r.read_until_quiet(Duration::from_secs(6), Duration::from_secs(6));
    (reply.text().replace("PING\r\n", ""), reply.closed)
}

#[test]
fn account_jwt_expiring_while_connected() {
    let (text, closed) = account_expiry_scenario(|conf| common::petrel(&["-c", conf]));
    assert!(closed, "closed at the account's expiry");
    assert_eq!(text, "-ERR 'Account Authentication Expired'\r\n");
}

#[test]
fn account_jwt_expiry_matches_nats_server() {
    let (text, closed) = account_expiry_scenario(|conf| common::nats_server(&["-c", conf]));
    assert!(closed);
    assert_eq!(text, "-ERR 'Account Authentication Expired'\r\n");
}

// ------------------------------------------------ reloading authorization

/// Starts a server on a users file, connects three clients, rewrites the
/// file (one user removed, one user's permissions narrowed, one user
/// added), sends SIGHUP and returns what each client then saw.
fn reload_scenario(start: impl Fn(&str) -> common::Proc) -> Vec<(String, bool)> {
    let conf = write_conf(
        "authorization { users = [\n {user: a, password: a}\n {user: b, password: b}\n {user: d, password: d, permissions: {subscribe: \">\"}}\n] }\n",
    );
    let server = start(conf.to_str().unwrap());
    let addr = server.addr();
    let login = |u: &str| {
        let mut r = Raw::open(&addr);
        let reply = r.exchange(
            format!("CONNECT {{\"verbose\":false,\"user\":\"{u}\",\"pass\":\"{u}\"}}\r\nPING\r\n").as_bytes(),
        );
        (r, reply)
    };
    let (mut a, _) = login("a");
    let (mut b, _) = login("b");
    let (mut d, _) = login("d");
    a.exchange(b"SUB secret.x 1\r\nSUB open.x 2\r\nPING\r\n");
    d.exchange(b"SUB > 1\r\nPING\r\n");
    std::fs::write(
        &conf,
        "authorization { users = [\n {user: a, password: a, permissions: {publish: {deny: \"secret.>\"}, subscribe: {deny: \"secret.>\"}}}\n {user: c, password: c}\n {user: d, password: d, permissions: {subscribe: \">\"}}\n] }\n",
    )
    .unwrap();
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(500));
    let mut out = Vec::new();
    let r = b.read_until_quiet(Duration::from_millis(300), Duration::from_secs(3));
    out.push((r.text().replace("PING\r\n", ""), r.closed));
    let r = a.exchange(b"PUB secret.x 1\r\nx\r\nPUB open.x 1\r\ny\r\nPING\r\n");
    out.push((r.text().replace("PING\r\n", ""), r.closed));
    let (_, r) = login("c");
    out.push((r.text().replace("PING\r\n", ""), r.closed));
    let r = d.read_until_quiet(Duration::from_millis(300), Duration::from_secs(3));
    out.push((r.text().replace("PING\r\n", ""), r.closed));
    out
}

#[test]
fn reload_applies_users_and_permissions_like_nats_server() {
    let ours = reload_scenario(|conf| common::petrel(&["-c", conf]));
    let theirs = reload_scenario(|conf| common::nats_server(&["-c", conf]));
    assert_eq!(ours, theirs);
    assert!(ours[0].1, "the removed user is disconnected: {:?}", ours[0]);
    assert_eq!(ours[2].0, "PONG\r\n", "the added user connects");
}

/// Lowering an account's connection limit below its connected clients
/// closes the newest ones; returns what each of three clients read.
fn conn_limit_scenario(start: impl Fn(&str) -> common::Proc) -> Vec<(String, bool)> {
    let r_kp = nkeys::KeyPair::new_account();
    let sign = |iat: i64, conn: i64| {
        let claims = json!({"sub": r_kp.public_key(), "name": "L", "iat": iat,
            "nats": {"type": "account", "version": 2, "limits": {"conn": conn, "subs": -1, "payload": -1, "data": -1}}});
        jwt::encode_signed(&claims, &seed("operator_sk")).unwrap()
    };
    let mut accounts = fixture_accounts();
    accounts.push((r_kp.public_key(), sign(now() - 100, -1)));
    let conf = memory_conf(&accounts);
    let server = start(conf.to_str().unwrap());
    let addr = server.addr();
    let mut clients = Vec::new();
    for i in 0..3 {
        let (j, k) = user(&r_kp.seed().unwrap(), &format!("u{i}"), user_nats(), json!({}));
        let (c, t, closed) = raw_jwt_connect(&addr, &j, &k);
        assert!(accepted(&t, closed), "{t}");
        clients.push(c);
        std::thread::sleep(Duration::from_millis(20));
    }
    let (sys_jwt, sys_seed) = jwt::parse_creds(&fixture("creds/sys.creds")).unwrap();
    let (mut sys, _, _) = raw_jwt_connect(&addr, &sys_jwt, &sys_seed);
    sys.exchange(b"SUB _INBOX.c 1\r\nPING\r\n");
    let update = sign(now(), 1);
    let subject = format!("$SYS.REQ.ACCOUNT.{}.CLAIMS.UPDATE", r_kp.public_key());
    sys.exchange(format!("PUB {subject} _INBOX.c {}\r\n{update}\r\n", update.len()).as_bytes());
    std::thread::sleep(Duration::from_millis(300));
    clients
        .iter_mut()
        .map(|c| {
            let r = c.read_until_quiet(Duration::from_millis(500), Duration::from_secs(2));
            (r.text().replace("PING\r\n", ""), r.closed)
        })
        .collect()
}

#[test]
fn lowered_conn_limit_closes_the_newest_like_nats_server() {
    let ours = conn_limit_scenario(|c| common::petrel(&["-c", c, "--shards", "1"]));
    let theirs = conn_limit_scenario(|c| common::nats_server(&["-c", c]));
    assert_eq!(ours, theirs);
    assert_eq!(ours[0], (String::new(), false), "the oldest stays");
    assert_eq!(ours[2].0, "-ERR 'maximum account active connections exceeded'\r\n");
    assert!(ours[2].1);
}

/// A user JWT with `exp: -1`: what the CONNECT gets and what follows.
fn negative_expiry_scenario(start: impl Fn(&str) -> common::Proc) -> String {
    let conf = memory_conf(&fixture_accounts());
    let server = start(conf.to_str().unwrap());
    let (j, k) = user(&seed("A"), "neg", user_nats(), json!({"exp": -1}));
    let (mut r, t, c) = raw_jwt_connect(&server.addr(), &j, &k);
    let rest = r.read_until_quiet(Duration::from_millis(500), Duration::from_secs(3));
    format!("{t}{}{}", rest.text(), if c || rest.closed { "<closed>" } else { "" })
}

/// nats-server lets a negative `exp` through Go's validation, then its
/// expiry timer fires at once: the client gets `User Authentication
/// Expired` and is closed, before or after its PONG (the timer races it).
/// petrel refuses it at CONNECT with the same error (it used to stay
/// connected).
#[test]
fn negative_user_jwt_expiry_matches_nats_server() {
    let end = "-ERR 'User Authentication Expired'\r\n<closed>";
    let ours = negative_expiry_scenario(|conf| common::petrel(&["-c", conf]));
    assert_eq!(ours, end);
    let theirs = negative_expiry_scenario(|conf| common::nats_server(&["-c", conf]));
    // The timer may fire before or after the PONG: take the PONG out.
    let theirs_without_pong = theirs.replacen("PONG\r\n", "", 1);
    assert!(theirs_without_pong.ends_with(end), "{theirs}");
}

/// A version-1 (2019) user JWT as the old Go library made them: type at the
/// top level, no `nats.version`, no limits, signed over the claims segment.
fn v1_user(account_seed: &str) -> (String, String) {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let kp = nkeys::KeyPair::new_user();
    let acc = nkeys::KeyPair::from_seed(account_seed).unwrap();
    let claims = json!({"jti": "V1TEST", "iat": now() - 5, "iss": acc.public_key(), "name": "old",
        "sub": kp.public_key(), "type": "user", "nats": {"pub": {}, "sub": {}}});
    let header = b64(br#"{"typ":"jwt","alg":"ed25519"}"#);
    let body = b64(claims.to_string().as_bytes());
    let sig = b64(&acc.sign(body.as_bytes()).unwrap());
    (format!("{header}.{body}.{sig}"), kp.seed().unwrap())
}

/// Missing limits in a v1 user JWT are no limits, as nats-server reads them
/// (petrel read them as 0: the first SUB and PUB were refused).
#[test]
fn v1_user_jwt_limits_match_nats_server() {
    let scenario = |start: &dyn Fn(&str) -> common::Proc| {
        let conf = memory_conf(&fixture_accounts());
        let server = start(conf.to_str().unwrap());
        let (j, k) = v1_user(&seed("A"));
        let (mut r, t, closed) = raw_jwt_connect(&server.addr(), &j, &k);
        assert!(accepted(&t, closed), "{t}");
        let reply = r.exchange(b"SUB foo 1\r\nPUB foo 5\r\nhello\r\nPING\r\n");
        reply.text()
    };
    let ours = scenario(&|c| common::petrel(&["-c", c]));
    let theirs = scenario(&|c| common::nats_server(&["-c", c]));
    assert_eq!(ours, theirs);
    assert_eq!(ours, "MSG foo 1 5\r\nhello\r\nPONG\r\n");
}

/// The log lines nats-server writes about credentials, side by side: the
/// start-up warning for plaintext passwords (none for bcrypt hashes), and
/// a refused login named by what it claimed (`ip:port - cid:N -
/// authentication error - User "app"`).
#[test]
fn credential_log_lines_match_nats_server() {
    let dir = temp_dir();
    let plain = dir.join("plain.conf");
    std::fs::write(&plain, "authorization { users = [ {user: app, password: secret} ] }\n").unwrap();
    let hashed = dir.join("hashed.conf");
    std::fs::write(
        &hashed,
        "authorization { users = [ {user: app, password: \"$2a$11$CmC1RNHtZpzT0NzKJ.JJyO3Vlo0FPyxXKENPC2.lEGnnc1eb2YHaa\"} ] }\n",
    )
    .unwrap();
    for (conf, warns) in [(&plain, true), (&hashed, false)] {
        let c = conf.to_str().unwrap();
        for server in [common::petrel(&["-c", c]), common::nats_server(&["-c", c])] {
            let said = !server
                .log_lines("Plaintext passwords detected, use nkeys or bcrypt")
                .is_empty();
            assert_eq!(said, warns, "{c} on port {}", server.port);
            if !warns {
                continue;
            }
            let mut raw = Raw::open(&server.addr());
            raw.send(b"CONNECT {\"verbose\":false,\"user\":\"app\",\"pass\":\"wrong\"}\r\nPING\r\n");
            assert!(raw
                .read_line(Duration::from_secs(5))
                .unwrap()
                .contains("Authorization Violation"));
            let deadline = Instant::now() + Duration::from_secs(5);
            let line = loop {
                if let Some(l) = server.log_lines("authentication error").pop() {
                    break l;
                }
                assert!(Instant::now() < deadline, "no authentication error line");
                std::thread::sleep(Duration::from_millis(20));
            };
            let tail = line.split("[ERR] ").nth(1).unwrap();
            let (addr, rest) = tail.split_once(" - cid:").unwrap();
            assert!(
                addr.starts_with("127.0.0.1:") && addr[10..].parse::<u16>().is_ok(),
                "{line}"
            );
            assert!(rest.ends_with(" - authentication error - User \"app\""), "{line}");
        }
    }
}

/// Permission violations are logged as nats-server logs them, with its
/// client tag (` - "v<version>:<lang>:<name>" - "<account>/user:<name>"`):
/// the text after `cid:N` is the same on both servers.
#[test]
fn permission_violation_log_lines_match_nats_server() {
    let dir = temp_dir();
    let conf = dir.join("perms.conf");
    std::fs::write(
        &conf,
        "authorization { users = [ {user: app, password: app, permissions: {publish: \"ok.>\", subscribe: \"ok.>\"}} ] }\n",
    )
    .unwrap();
    let c = conf.to_str().unwrap();
    let mut lines = Vec::new();
    for server in [common::petrel(&["-c", c]), common::nats_server(&["-c", c])] {
        for connect in [
            r#"{"verbose":false,"user":"app","pass":"app"}"#,
            r#"{"verbose":false,"user":"app","pass":"app","name":"svc","lang":"rust","version":"1.2.3"}"#,
        ] {
            let mut raw = Raw::open(&server.addr());
            raw.send(format!("CONNECT {connect}\r\nPUB nope 1\r\nx\r\nSUB bad 7\r\nSUB bad q 8\r\n").as_bytes());
            assert_eq!(raw.ping().matches("Permissions Violation").count(), 3);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let found = loop {
            let found = server.log_lines("Violation - ");
            if found.len() >= 6 || Instant::now() > deadline {
                break found;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let tails: Vec<String> = found
            .iter()
            .map(|l| {
                l.split(" - cid:")
                    .nth(1)
                    .unwrap()
                    .split_once(' ')
                    .unwrap()
                    .1
                    .to_string()
            })
            .collect();
        lines.push(tails);
    }
    assert_eq!(lines[0].len(), 6, "{:?}", lines[0]);
    assert_eq!(lines[0], lines[1]);
    assert!(
        lines[0].contains(&r#"- "v1.2.3:rust:svc" - "$G/user:app" - Publish Violation - Subject "nope""#.to_string())
    );
}

/// In operator mode `/accountz?acc=` lists an account JWT's mappings,
/// exports (a token-required one with `token_req`) and imports as
/// nats-server does (compared as sets: nats-server's order comes from Go
/// maps; `response_type` left out, see the README).
#[test]
fn jwt_accountz_lists_exchanges_as_nats_server_does() {
    let x = nkeys::KeyPair::new_account();
    let y = nkeys::KeyPair::new_account();
    let mappings = json!({"m.in": [{"subject": "m.out", "weight": 100}]});
    let (x_jwt, y_jwt) = exporter_and_importer(&x, &y, Some(mappings));
    let mut accounts = fixture_accounts();
    accounts.push((x.public_key(), x_jwt));
    accounts.push((y.public_key(), y_jwt));
    let conf = memory_conf(&accounts);
    let c = conf.to_str().unwrap();
    let detail = common::account_exchanges;
    let mut seen = Vec::new();
    for p in [
        common::petrel(&["-c", c, "-m", "-1"]),
        common::nats_server(&["-c", c, "-m", "-1"]),
    ] {
        // Accounts load as their users connect.
        let mut conns = Vec::new();
        for kp in [&x, &y] {
            let (j, k) = user(&kp.seed().unwrap(), "u", user_nats(), json!({}));
            let (r, t, closed) = raw_jwt_connect(&p.addr(), &j, &k);
            assert!(accepted(&t, closed), "{t}");
            conns.push(r);
        }
        seen.push([
            detail(p.monitor_port(), &x.public_key()),
            detail(p.monitor_port(), &y.public_key()),
        ]);
    }
    assert!(!seen[0][1]["imports"].as_array().unwrap().is_empty(), "{}", seen[0][1]);
    assert_eq!(seen[0][0], seen[1][0], "X: petrel, then nats-server");
    assert_eq!(seen[0][1], seen[1][1], "Y: petrel, then nats-server");
}
