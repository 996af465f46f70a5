//! Differential tests for authentication and authorization: petrel and the
//! official nats-server start with the same configuration file (or flags),
//! the same bytes go to both, and the replies must match byte for byte
//! (INFO normalized as in `tests/differential.rs`, plus: both or neither
//! send a `nonce`), including whether the server closed the connection.
//!
//! Cases whose bytes depend on the server (a signature over the INFO
//! `nonce`) are built per connection from that connection's INFO.
//! `AUTH_DIFF_TRACE=1` prints every case's replies.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::raw::{Raw, Reply};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt/");

/// bcrypt (cost 10) of `bcrypt-pass`, made with libxcrypt, not with petrel.
const BCRYPT_HASH: &str = "$2b$10$yuwNv/fngyl/1gkNH3EbX.FEPwdwUvkX7PZWPeawogPZYhc9bwiOW";

// ------------------------------------------------------------ normalizing

use common::normalize_info;

/// The comparable form of what one connection received: INFO lines
/// normalized, server-initiated PINGs left out (their timing is not part of
/// any case), `<closed>` when the server closed.
fn normalize(bytes: &[u8], closed: bool) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        if line.starts_with("INFO ") {
            out.push_str(&normalize_info(line));
        } else if line != "PING\r\n" {
            out.push_str(line);
        }
    }
    if closed {
        out.push_str("<closed>");
    }
    out
}

// ------------------------------------------------------------ cases

/// Bytes to send, made from the connection's INFO nonce ("" when none).
type Chunk = Box<dyn Fn(&str) -> Vec<u8> + Send + Sync>;

/// A step of a case.
enum Step {
    /// Bytes sent on one of the case's connections (opened up front,
    /// numbered from 0), then its replies read.
    Send(usize, Chunk),
    /// Time passes.
    Pause(Duration),
}

/// Sends `b` on connection `conn`.
fn on(conn: usize, b: impl AsRef<[u8]>) -> Step {
    Step::Send(conn, bytes(b))
}

/// One byte stream case.
struct Case {
    name: &'static str,
    steps: Vec<Step>,
    /// How long a connection must be quiet before a step counts as answered
    /// (longer for the authentication timeout cases).
    quiet: Duration,
}

fn bytes(b: impl AsRef<[u8]>) -> Chunk {
    let b = b.as_ref().to_vec();
    Box::new(move |_| b.clone())
}

/// A one-connection case.
fn one(name: &'static str, b: impl AsRef<[u8]>) -> Case {
    Case {
        name,
        steps: vec![on(0, b)],
        quiet: Duration::from_millis(300),
    }
}

/// A one-connection case whose bytes depend on the nonce.
fn signed(name: &'static str, f: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> Case {
    Case {
        name,
        steps: vec![Step::Send(0, Box::new(f))],
        quiet: Duration::from_millis(300),
    }
}

/// A case over several connections.
fn multi(name: &'static str, steps: Vec<Step>) -> Case {
    Case {
        name,
        steps,
        quiet: Duration::from_millis(300),
    }
}

/// `CONNECT <json>\r\n`
fn connect(v: serde_json::Value) -> Vec<u8> {
    format!("CONNECT {v}\r\n").into_bytes()
}

/// `CONNECT` as given (verbose unless it says otherwise), then `rest`.
fn verbose_connect(v: serde_json::Value, rest: &str) -> Vec<u8> {
    let mut b = connect(v);
    b.extend_from_slice(rest.as_bytes());
    b
}

/// `CONNECT` without verbose, then `rest`.
fn quiet_connect(mut v: serde_json::Value, rest: &str) -> Vec<u8> {
    v["verbose"] = false.into();
    let mut b = connect(v);
    b.extend_from_slice(rest.as_bytes());
    b
}

fn sign_b64(seed: &str, data: &[u8]) -> String {
    petrel::auth::jwt::sign_nonce(seed, data).expect("seed")
}

// ------------------------------------------------------------ running

use common::jwt::temp_dir;

/// Writes `text` as a configuration file; returns `["-c", path]`.
fn conf(text: &str) -> Vec<String> {
    let p = temp_dir().join("server.conf");
    std::fs::write(&p, text).unwrap();
    vec!["-c".into(), p.to_str().unwrap().into()]
}

/// Runs one case against one server: per connection, its INFO (when
/// `with_info`) and everything it received.
fn run_case(addr: &str, case: &Case, with_info: bool) -> String {
    let n = case
        .steps
        .iter()
        .map(|s| if let Step::Send(i, _) = s { i + 1 } else { 1 })
        .max()
        .unwrap_or(1);
    let mut conns: Vec<Raw> = (0..n).map(|_| Raw::open(addr)).collect();
    let mut got: Vec<(Vec<u8>, bool)> = vec![(Vec::new(), false); n];
    let read = |c: &mut Raw, quiet: Duration, until_pongs: usize, acc: &mut (Vec<u8>, bool)| {
        let start = acc.0.len();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let Reply { bytes, closed } = c.read_until_quiet(quiet, Duration::from_secs(5));
            acc.0.extend_from_slice(&bytes);
            acc.1 |= closed;
            let pongs = String::from_utf8_lossy(&acc.0[start..]).matches("PONG\r\n").count();
            if acc.1 || pongs >= until_pongs || Instant::now() > deadline {
                return;
            }
        }
    };
    for step in &case.steps {
        let (i, chunk) = match step {
            Step::Send(i, chunk) => (i, chunk),
            Step::Pause(d) => {
                std::thread::sleep(*d);
                continue;
            }
        };
        let nonce = conns[*i].info()["nonce"].as_str().unwrap_or("").to_string();
        let b = chunk(&nonce);
        let pings = String::from_utf8_lossy(&b).matches("PING\r\n").count();
        if !got[*i].1 {
            conns[*i].send(&b);
            read(&mut conns[*i], case.quiet, pings, &mut got[*i]);
        }
    }
    // Whatever reached the other connections meanwhile.
    for (c, acc) in conns.iter_mut().zip(got.iter_mut()) {
        if !acc.1 {
            read(c, Duration::from_millis(150), 0, acc);
        }
    }
    let mut out = String::new();
    for (i, (c, (b, closed))) in conns.iter().zip(&got).enumerate() {
        if n > 1 {
            out.push_str(&format!("[conn {i}] "));
        }
        if with_info {
            out.push_str(&normalize_info(&c.info_line));
        }
        out.push_str(&normalize(b, *closed));
        if n > 1 {
            out.push('\n');
        }
    }
    out
}

/// Starts petrel and nats-server with `args`, runs every case against both
/// (cases one after another, both servers at once) and fails with every
/// difference.
fn check(args: &[String], with_info: bool, cases: Vec<Case>) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut pargs = vec!["--shards", "2"];
    pargs.extend_from_slice(&args);
    let petrel = common::petrel(&pargs);
    let nats = common::nats_server(&args);
    let (pa, na) = (petrel.addr(), nats.addr());
    let mut failures = Vec::new();
    for case in &cases {
        let (ours, theirs) = std::thread::scope(|s| {
            let t = s.spawn(|| run_case(&na, case, with_info));
            let ours = run_case(&pa, case, with_info);
            (ours, t.join().unwrap())
        });
        if std::env::var_os("AUTH_DIFF_TRACE").is_some() {
            eprintln!("{}:\n  petrel:      {ours:?}\n  nats-server: {theirs:?}", case.name);
        }
        if ours != theirs {
            failures.push(format!(
                "{}:\n  petrel:      {ours:?}\n  nats-server: {theirs:?}",
                case.name
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

// ------------------------------------------------------------ configurations

/// Users of every kind; the nkey user is `nkey_pub`; `dflt` (and the nkey
/// user) get `default_permissions`, alice may do anything.
fn users_conf(nkey_pub: &str) -> Vec<String> {
    conf(&format!(
        r#"
authorization {{
  timeout: 1
  users = [
    {{user: alice, password: secret, permissions: {{publish: ">", subscribe: ">"}}}}
    {{user: bob, password: "{BCRYPT_HASH}"}}
    {{nkey: {nkey_pub}}}
    {{user: limited, password: p, permissions: {{
        publish: {{allow: ["ok.>", "s.>"], deny: ["ok.no"]}}
        subscribe: {{allow: ["s.>", "ok.>", "t.x tq"], deny: ["s.secret", "s.hidden.>", "s.q q"]}}
    }}}}
    {{user: resp, password: p, permissions: {{subscribe: "svc", allow_responses: true}}}}
    {{user: dflt, password: d}}
    {{user: resp2, password: p, permissions: {{subscribe: "svc", allow_responses: {{max: 2, expires: "1s"}}}}}}
    {{user: queue, password: p, permissions: {{subscribe: {{allow: [">"], deny: ["foo.* q.*", "bar >"]}}}}}}
  ]
  default_permissions: {{publish: {{deny: "nope.>"}}, subscribe: {{allow: ["a.>"]}}}}
}}
"#
    ))
}

fn accounts_conf(no_auth_user: bool) -> Vec<String> {
    let mut text = String::from(
        r#"
accounts {
  A { users: [{user: a, password: a}], exports: [{stream: "news.>"}, {service: "help"}] }
  B {
    users: [{user: b, password: b}]
    imports: [
      {stream: {account: A, subject: "news.>"}, prefix: imp}
      {service: {account: A, subject: "help"}, to: "ask"}
    ]
  }
}
"#,
    );
    if no_auth_user {
        text.push_str("no_auth_user: b\n");
    }
    conf(&text)
}

/// The fixtures' operator with their MEMORY resolver preload, with the
/// operator JWT's path made absolute (the fixture's is relative).
fn operator_conf() -> Vec<String> {
    let text = std::fs::read_to_string(format!("{FIXTURES}resolver_memory.conf")).expect("fixtures");
    let abs = format!("\"{FIXTURES}operator.jwt\"");
    assert!(text.contains("\"operator.jwt\""), "fixture changed: {text}");
    conf(&text.replace("\"operator.jwt\"", &abs))
}

/// A fixture user's JWT and seed, from its creds file.
fn creds(name: &str) -> (String, String) {
    let text = std::fs::read_to_string(format!("{FIXTURES}creds/{name}.creds")).expect("fixtures");
    let after = |marker: &str| {
        let mut lines = text.lines().skip_while(|l| !l.contains(marker));
        lines.next();
        lines.next().expect(marker).trim().to_string()
    };
    (after("BEGIN NATS USER JWT"), after("BEGIN USER NKEY SEED"))
}

fn limited(rest: &str) -> Vec<u8> {
    quiet_connect(serde_json::json!({"user": "limited", "pass": "p"}), rest)
}

// ------------------------------------------------------------ tests

#[test]
fn password_refusals_match() {
    let kp = nkeys::KeyPair::new_user();
    let j = |v| quiet_connect(v, "PING\r\n");
    use serde_json::json;
    check(
        &users_conf(&kp.public_key()),
        true,
        vec![
            one("good password", j(json!({"user": "alice", "pass": "secret"}))),
            one("bad password", j(json!({"user": "alice", "pass": "nope"}))),
            one(
                "bad password verbose",
                connect(json!({"user": "alice", "pass": "nope"})),
            ),
            one("bcrypt good password", j(json!({"user": "bob", "pass": "bcrypt-pass"}))),
            one("bcrypt bad password", j(json!({"user": "bob", "pass": "secret"}))),
            one(
                "bcrypt hash as password",
                j(json!({"user": "bob", "pass": BCRYPT_HASH})),
            ),
            one("unknown user", j(json!({"user": "zed", "pass": "secret"}))),
            one("password without user", j(json!({"pass": "secret"}))),
            one("empty user and password", j(json!({"user": "", "pass": ""}))),
            one("missing credentials", j(json!({}))),
            one("missing credentials verbose", b"CONNECT {}\r\nPING\r\n"),
            one("token instead of user", j(json!({"auth_token": "secret"}))),
            one(
                "user, password and a token",
                j(json!({"user": "alice", "pass": "secret", "auth_token": "x"})),
            ),
            one("ping before connect", b"PING\r\n"),
            one("pub before connect", b"PUB foo 1\r\nx\r\n"),
            one("sub before connect", b"SUB foo 1\r\n"),
            one("info before connect", b"INFO {}\r\n"),
            one("+OK before connect", b"+OK\r\n"),
            one("-ERR before connect", b"-ERR 'x'\r\n"),
            one(
                "lower case connect",
                b"connect {\"verbose\":false,\"user\":\"alice\",\"pass\":\"secret\"}\r\nPING\r\n",
            ),
            one("partial connect waits", b"CONNEC"),
            one("bad connect json", b"CONNECT {bad\r\n"),
            one(
                "bad protocol with good password",
                connect(json!({"protocol": 2, "user": "alice", "pass": "secret"})),
            ),
            one(
                "no responders without headers, bad password",
                connect(json!({"no_responders": true, "user": "alice", "pass": "x"})),
            ),
            one(
                "second connect with a bad password",
                [
                    j(json!({"user": "alice", "pass": "secret"})),
                    j(json!({"user": "alice", "pass": "bad"})),
                ]
                .concat(),
            ),
            one(
                "second connect as another user",
                [
                    j(json!({"user": "alice", "pass": "secret"})),
                    quiet_connect(
                        json!({"user": "dflt", "pass": "d"}),
                        "PUB nope.x 0\r\n\r\nPUB zz 0\r\n\r\nPING\r\n",
                    ),
                ]
                .concat(),
            ),
            one(
                "account field with good password",
                j(json!({"user": "alice", "pass": "secret", "account": "foo"})),
            ),
            one("account field without credentials", j(json!({"account": "$G"}))),
            Case {
                name: "authentication timeout",
                steps: vec![on(0, b"")],
                quiet: Duration::from_millis(1600),
            },
            Case {
                name: "authentication timeout after a partial connect",
                steps: vec![on(0, b"CONNECT {\"user\"")],
                quiet: Duration::from_millis(1600),
            },
        ],
    );
}

#[test]
fn nkey_refusals_match() {
    let kp = nkeys::KeyPair::new_user();
    let other = nkeys::KeyPair::new_user();
    let (pk, seed, other_seed) = (kp.public_key(), kp.seed().unwrap(), other.seed().unwrap());
    use serde_json::json;
    let with_sig = |name, sig: fn(&str, &str, &str) -> Option<String>| {
        let (pk, seed, other_seed) = (pk.clone(), seed.clone(), other_seed.clone());
        signed(name, move |nonce| {
            let mut v = json!({"nkey": pk});
            if let Some(s) = sig(nonce, &seed, &other_seed) {
                v["sig"] = s.into();
            }
            quiet_connect(v, "PING\r\n")
        })
    };
    check(
        &users_conf(&pk),
        true,
        vec![
            with_sig("good signature", |n, s, _| Some(sign_b64(s, n.as_bytes()))),
            with_sig("good signature, padded standard base64", |n, s, _| {
                let kp = nkeys::KeyPair::from_seed(s).unwrap();
                Some(base64::engine::general_purpose::STANDARD.encode(kp.sign(n.as_bytes()).unwrap()))
            }),
            with_sig("missing signature", |_, _, _| None),
            with_sig("empty signature", |_, _, _| Some(String::new())),
            with_sig("garbage signature", |_, _, _| Some("AAAA".into())),
            with_sig("signature not base64", |_, _, _| Some("!!!not base64!!!".into())),
            with_sig("signature by another key", |n, _, o| Some(sign_b64(o, n.as_bytes()))),
            with_sig("signature over another nonce", |n, s, _| {
                Some(sign_b64(s, format!("{n}x").as_bytes()))
            }),
            with_sig("signature over nothing", |_, s, _| Some(sign_b64(s, b""))),
            signed("unknown nkey", move |nonce| {
                let kp = nkeys::KeyPair::new_user();
                let sig = sign_b64(&kp.seed().unwrap(), nonce.as_bytes());
                quiet_connect(json!({"nkey": kp.public_key(), "sig": sig}), "PING\r\n")
            }),
            signed("malformed nkey", |_| {
                quiet_connect(json!({"nkey": "UABC", "sig": "AAAA"}), "PING\r\n")
            }),
            one(
                "nkey as a user name",
                quiet_connect(json!({"user": pk, "pass": "x"}), "PING\r\n"),
            ),
        ],
    );
}

#[test]
fn token_refusals_match() {
    use serde_json::json;
    let j = |v| quiet_connect(v, "PING\r\n");
    let cases = || {
        vec![
            one("good token", j(json!({"auth_token": "s3cr3t"}))),
            one("bad token", j(json!({"auth_token": "nope"}))),
            one("bad token verbose", connect(json!({"auth_token": "nope"}))),
            one("empty token", j(json!({"auth_token": ""}))),
            one("token as user", j(json!({"user": "s3cr3t"}))),
            one("token as password", j(json!({"user": "x", "pass": "s3cr3t"}))),
            one("missing token", j(json!({}))),
            // nats-server checks only the token when one is configured.
            one(
                "token with user and password",
                j(json!({"auth_token": "s3cr3t", "user": "u", "pass": "p"})),
            ),
            one(
                "token with an nkey",
                j(json!({"auth_token": "s3cr3t", "nkey": "UABC", "sig": "x"})),
            ),
            one(
                "bad token with user and password",
                j(json!({"auth_token": "no", "user": "u", "pass": "p"})),
            ),
            one("pub before connect", b"PUB foo 1\r\nx\r\n"),
            one("ping before connect", b"PING\r\n"),
        ]
    };
    check(&conf("authorization { token: \"s3cr3t\" }\n"), true, cases());
    check(&["--auth".to_string(), "s3cr3t".to_string()], true, cases());
}

#[test]
fn user_flags_refusals_match() {
    use serde_json::json;
    let j = |v| quiet_connect(v, "PING\r\n");
    check(
        &[
            "--user".to_string(),
            "u".to_string(),
            "--pass".to_string(),
            "pw".to_string(),
        ],
        true,
        vec![
            one("good user", j(json!({"user": "u", "pass": "pw"}))),
            one("bad password", j(json!({"user": "u", "pass": "x"}))),
            one("unknown user", j(json!({"user": "v", "pass": "pw"}))),
            one("token instead", j(json!({"auth_token": "pw"}))),
            one("missing credentials", j(json!({}))),
            one("sub before connect", b"SUB a 1\r\n"),
        ],
    );
}

#[test]
fn permission_violations_match() {
    let kp = nkeys::KeyPair::new_user();
    use serde_json::json;
    let resp = |rest: &str| quiet_connect(json!({"user": "resp", "pass": "p"}), rest);
    let resp2 = |rest: &str| quiet_connect(json!({"user": "resp2", "pass": "p"}), rest);
    let queue = |rest: &str| quiet_connect(json!({"user": "queue", "pass": "p"}), rest);
    check(
        &users_conf(&kp.public_key()),
        true,
        vec![
            one(
                "publish deny",
                limited("PUB ok.no 1\r\nx\r\nPUB ok.yes 1\r\ny\r\nPING\r\n"),
            ),
            one("publish outside allow", limited("PUB nope 1\r\nx\r\nPING\r\n")),
            one("publish deny with reply", limited("PUB ok.no r 1\r\nx\r\nPING\r\n")),
            one(
                "hpub deny",
                quiet_connect(
                    json!({"user": "limited", "pass": "p", "headers": true}),
                    "HPUB ok.no 12 13\r\nNATS/1.0\r\n\r\nx\r\nPING\r\n",
                ),
            ),
            one(
                "pedantic wildcard publish is an invalid subject first",
                quiet_connect(
                    json!({"user": "limited", "pass": "p", "pedantic": true}),
                    "PUB ok.* 1\r\nx\r\nPING\r\n",
                ),
            ),
            one(
                "connection stays usable after a violation",
                limited("PUB ok.no 0\r\n\r\nSUB ok.x 1\r\nPUB ok.x 1\r\nz\r\nPING\r\n"),
            ),
            one(
                "subscribe deny",
                limited("SUB s.secret 1\r\nSUB s.ok 2\r\nPUB s.ok 1\r\nx\r\nPING\r\n"),
            ),
            one("subscribe outside allow", limited("SUB nope 1\r\nPING\r\n")),
            one(
                "subscribe deny then unsub",
                limited("SUB s.secret 1\r\nUNSUB 1\r\nPING\r\n"),
            ),
            one(
                "subscribe deny verbose",
                verbose_connect(
                    json!({"user": "limited", "pass": "p"}),
                    "SUB s.secret 1\r\nSUB s.ok 2\r\nPING\r\n",
                ),
            ),
            one(
                "queue subscribe deny",
                limited("SUB s.q q 1\r\nSUB s.q other 2\r\nSUB s.q 3\r\nPING\r\n"),
            ),
            one(
                "queue subscribe allow list",
                limited("SUB t.x tq 1\r\nSUB t.x 2\r\nSUB t.x zz 3\r\nPING\r\n"),
            ),
            one(
                "deny covering a wildcard subscribe",
                limited("SUB s.hidden.* 1\r\nSUB s.hidden.> 2\r\nSUB s.hidden.a.> 3\r\nPING\r\n"),
            ),
            one(
                "allow_responses user publishing elsewhere",
                resp("PUB x 1\r\nx\r\nPUB svc 0\r\n\r\nPING\r\n"),
            ),
            one(
                "queue deny with a wildcard queue name and a bare > queue",
                queue(
                    "SUB foo.a q.x 1\r\nSUB foo.a q 2\r\nSUB foo.a.b q.x 3\r\nSUB bar anyq 4\r\nSUB bar 5\r\nPING\r\n",
                ),
            ),
            one(
                "allow_responses user subscribing",
                resp("SUB svc 1\r\nSUB other 2\r\nPING\r\n"),
            ),
            one(
                "default permissions",
                quiet_connect(
                    json!({"user": "dflt", "pass": "d"}),
                    "PUB nope.x 0\r\n\r\nPUB ok 0\r\n\r\nSUB b 1\r\nSUB a.b 2\r\nPING\r\n",
                ),
            ),
            multi(
                "allow_responses replies once to the request's reply subject",
                vec![
                    on(0, resp("SUB svc 1\r\nPING\r\n")),
                    on(
                        1,
                        quiet_connect(
                            json!({"user": "alice", "pass": "secret"}),
                            "SUB _INBOX.1 1\r\nPUB svc _INBOX.1 1\r\nq\r\nPING\r\n",
                        ),
                    ),
                    on(
                        0,
                        "PUB _INBOX.1 1\r\n1\r\nPUB _INBOX.1 1\r\n2\r\nPUB _INBOX.2 1\r\n3\r\nPING\r\n",
                    ),
                    on(1, "PING\r\n"),
                ],
            ),
            multi(
                "allow_responses with max and expires",
                vec![
                    on(0, resp2("SUB svc 1\r\nPING\r\n")),
                    on(
                        1,
                        quiet_connect(
                            json!({"user": "alice", "pass": "secret"}),
                            "SUB _INBOX.> 1\r\nPUB svc _INBOX.1 1\r\nq\r\nPUB svc _INBOX.2 1\r\nq\r\nPING\r\n",
                        ),
                    ),
                    on(
                        0,
                        "PUB _INBOX.1 1\r\n1\r\nPUB _INBOX.1 1\r\n2\r\nPUB _INBOX.1 1\r\n3\r\nPING\r\n",
                    ),
                    Step::Pause(Duration::from_millis(1300)),
                    on(0, "PUB _INBOX.2 1\r\n4\r\nPING\r\n"),
                    on(1, "PING\r\n"),
                ],
            ),
        ],
    );
}

#[test]
fn accounts_and_account_field_match() {
    use serde_json::json;
    let j = |v| quiet_connect(v, "PING\r\n");
    check(
        &accounts_conf(false),
        true,
        vec![
            one("account user", j(json!({"user": "a", "pass": "a"}))),
            one("account user, bad password", j(json!({"user": "a", "pass": "x"}))),
            one(
                "account field naming its own account",
                j(json!({"user": "a", "pass": "a", "account": "A"})),
            ),
            one(
                "account field naming another account",
                j(json!({"user": "a", "pass": "a", "account": "B"})),
            ),
            one("account field without credentials", j(json!({"account": "A"}))),
            one("account name as user", j(json!({"user": "A", "pass": "a"}))),
            one("ping before connect", b"PING\r\n"),
            multi(
                "accounts are isolated, stream import with prefix",
                vec![
                    on(
                        0,
                        quiet_connect(json!({"user": "b", "pass": "b"}), "SUB > 1\r\nPING\r\n"),
                    ),
                    on(
                        1,
                        quiet_connect(
                            json!({"user": "a", "pass": "a"}),
                            "PUB other 1\r\nx\r\nPUB news.1 1\r\ny\r\nPING\r\n",
                        ),
                    ),
                    on(0, "PING\r\n"),
                ],
            ),
        ],
    );
}

#[test]
fn no_auth_user_connects_match() {
    use serde_json::json;
    let j = |v| quiet_connect(v, "PING\r\n");
    // INFO left out: see no_auth_user_info_has_no_auth_required.
    check(
        &accounts_conf(true),
        false,
        vec![
            one("no credentials become the no_auth_user", j(json!({}))),
            one("no credentials verbose", b"CONNECT {}\r\nPING\r\n"),
            one("credentials still checked", j(json!({"user": "a", "pass": "x"}))),
            one("another user", j(json!({"user": "a", "pass": "a"}))),
            one("account field without credentials", j(json!({"account": "A"}))),
        ],
    );
}

#[test]
fn operator_refusals_match() {
    use serde_json::json;
    let (ajwt, aseed) = creds("a");
    let (expired, _) = creds("expired");
    let j = |v| quiet_connect(v, "PING\r\n");
    // Fixture users signing the nonce properly: manifest outcomes.
    let good = |name: &'static str, user: &str, rest: &'static str| {
        let (jwt, seed) = creds(user);
        signed(name, move |nonce| {
            quiet_connect(json!({"jwt": jwt, "sig": sign_b64(&seed, nonce.as_bytes())}), rest)
        })
    };
    let (a2, s2) = (ajwt.clone(), aseed.clone());
    let (a3, s3) = (ajwt.clone(), creds("sys").1);
    check(
        &operator_conf(),
        true,
        vec![
            one("no jwt", j(json!({}))),
            one("no jwt verbose", b"CONNECT {}\r\nPING\r\n"),
            one("garbage jwt", j(json!({"jwt": "garbage", "sig": "AAAA"}))),
            one("garbage three-part jwt", j(json!({"jwt": "a.b.c", "sig": "AAAA"}))),
            one("expired user jwt", j(json!({"jwt": expired, "sig": "AAAA"}))),
            one("valid jwt, bad sig", j(json!({"jwt": ajwt, "sig": "AAAA"}))),
            one("valid jwt, no sig", j(json!({"jwt": ajwt}))),
            signed("valid jwt, sig over another nonce", move |n| {
                j(json!({"jwt": a2, "sig": sign_b64(&s2, format!("{n}x").as_bytes())}))
            }),
            signed("valid jwt, sig by another user's seed", move |n| {
                j(json!({"jwt": a3, "sig": sign_b64(&s3, n.as_bytes())}))
            }),
            one("user and password", j(json!({"user": "a", "pass": "a"}))),
            one("ping before connect", b"PING\r\n"),
            good("sys", "sys", "PING\r\n"),
            good("a", "a", "PING\r\n"),
            good("a_sk", "a_sk", "PING\r\n"),
            good("expired", "expired", "PING\r\n"),
            good("forged", "forged", "PING\r\n"),
            good("forged_issuer", "forged_issuer", "PING\r\n"),
            good(
                "restricted",
                "a_restricted",
                concat!(
                    "PUB foo.secret 1\r\nx\r\nPUB bar.x 1\r\nx\r\nPUB foo.ok 0\r\n\r\n",
                    "SUB bar.> 1\r\nSUB foo.x 2\r\nPUB foo.x 0\r\n\r\nPING\r\n"
                ),
            ),
        ],
    );
}

// ------------------------------------- differences these tests found (fixed)

// Was: petrel delivers s.secret to `SUB s.*`:
//   petrel (before):  "MSG s.secret 1 1\r\na\r\nMSG s.ok 1 1\r\nb\r\nPONG\r\n"
//   nats-server:      "MSG s.ok 1 1\r\nb\r\nPONG\r\n"
#[test]
fn subscribe_deny_filters_wildcard_deliveries() {
    let kp = nkeys::KeyPair::new_user();
    use serde_json::json;
    check(
        &users_conf(&kp.public_key()),
        true,
        vec![
            one(
                "own publish",
                limited("SUB s.* 1\r\nPUB s.secret 1\r\na\r\nPUB s.ok 1\r\nb\r\nPING\r\n"),
            ),
            multi(
                "another connection's publish",
                vec![
                    on(0, limited("SUB s.> 1\r\nPING\r\n")),
                    on(
                        1,
                        quiet_connect(
                            json!({"user": "alice", "pass": "secret"}),
                            "PUB s.secret 1\r\na\r\nPUB s.ok 1\r\nb\r\nPING\r\n",
                        ),
                    ),
                    on(0, "PING\r\n"),
                ],
            ),
        ],
    );
}

// Was: petrel acknowledges a refused PUB with +OK before the -ERR:
//   petrel (before):  "+OK\r\n+OK\r\n-ERR 'Permissions Violation for Publish to \"ok.no\"'\r\nPONG\r\n"
//   nats-server:      "+OK\r\n-ERR 'Permissions Violation for Publish to \"ok.no\"'\r\nPONG\r\n"
#[test]
fn verbose_publish_violation_has_no_ok() {
    let kp = nkeys::KeyPair::new_user();
    use serde_json::json;
    check(
        &users_conf(&kp.public_key()),
        true,
        vec![
            one(
                "deny",
                verbose_connect(
                    json!({"user": "limited", "pass": "p"}),
                    "PUB ok.no 1\r\nx\r\nPUB ok.yes 1\r\nx\r\nPING\r\n",
                ),
            ),
            one(
                "allow_responses only",
                verbose_connect(json!({"user": "resp", "pass": "p"}), "PUB x 1\r\nx\r\nPING\r\n"),
            ),
        ],
    );
}

// Was: with no_auth_user, petrel's INFO said "auth_required":true;
// nats-server's leaves it out.
#[test]
fn no_auth_user_info_has_no_auth_required() {
    check(
        &accounts_conf(true),
        true,
        vec![one("info", quiet_connect(serde_json::json!({}), "PING\r\n"))],
    );
}

// Was: with no_auth_user, nats-server takes a first op other than CONNECT
// as the no_auth_user; petrel refused it:
//   petrel (before): "-ERR 'Authorization Violation'\r\n<closed>"
//   nats-server: "PONG\r\n"            (for PING)
//   nats-server: "+OK\r\n+OK\r\nMSG x 1 1\r\na\r\nPONG\r\n"   (SUB, PUB, PING)
#[test]
fn no_auth_user_allows_ops_before_connect() {
    use serde_json::json;
    check(
        &accounts_conf(true),
        false,
        vec![
            one("ping before connect", b"PING\r\n"),
            one("sub and pub before connect", b"SUB x 1\r\nPUB x 1\r\na\r\nPING\r\n"),
            one(
                "connect with a bad password after a ping",
                [
                    &b"PING\r\n"[..],
                    &quiet_connect(json!({"user": "a", "pass": "x"}), "PING\r\n"),
                ]
                .concat(),
            ),
        ],
    );
}

// Was: under auth, nats-server refuses on the first byte of an op that
// cannot be CONNECT; petrel waited for the whole line and then could give
// another error:
//   "P" (no line end yet):
//     petrel:      "" (until the Authentication Timeout)
//     nats-server: "-ERR 'Authorization Violation'\r\n<closed>" at once
//   "FOO\r\n" and "\r\n":
//     petrel:      "-ERR 'Unknown Protocol Operation'\r\n<closed>"
//     nats-server: "-ERR 'Authorization Violation'\r\n<closed>"
#[test]
fn first_byte_before_connect_is_an_authorization_violation() {
    let kp = nkeys::KeyPair::new_user();
    check(
        &users_conf(&kp.public_key()),
        true,
        vec![
            one("partial op", b"P"),
            one("partial pub line", b"PUB foo 1"),
            one("unknown op", b"FOO\r\n"),
            one("empty line", b"\r\n"),
        ],
    );
}

// ------------------------------------------------ odd but valid user JWTs

/// A user JWT with exactly `claims_json` as its claims (duplicate keys,
/// key order and all), signed by `issuer_seed` under `header`.
fn raw_user_jwt(header: &str, claims_json: &str, issuer_seed: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut token = b64.encode(header);
    token.push('.');
    let payload = b64.encode(claims_json);
    token.push_str(&payload);
    let kp = nkeys::KeyPair::from_seed(issuer_seed).unwrap();
    // v2 signs `header.payload`; v1 (alg `ed25519`) signed the payload alone.
    let signed: &str = if header == HEADER_V1 { &payload } else { &token };
    let sig = kp.sign(signed.as_bytes()).unwrap();
    token.push('.');
    token.push_str(&b64.encode(sig));
    token
}

const HEADER_V2: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;
const HEADER_V1: &str = r#"{"typ":"jwt","alg":"ed25519"}"#;

/// A case connecting as a new user whose claims `claims(user_pub, iss)`
/// writes, signed by `signer` (a fixture key), then sending `rest`.
fn odd_user(
    name: &'static str,
    header: &'static str,
    signer: &str,
    claims: impl Fn(&str, &str) -> String,
    sign_nonce: bool,
    rest: &'static str,
) -> Case {
    let user = nkeys::KeyPair::new_user();
    let signer_seed = common::jwt::seed(signer);
    let iss = nkeys::KeyPair::from_seed(&signer_seed).unwrap().public_key();
    let jwt = raw_user_jwt(header, &claims(&user.public_key(), &iss), &signer_seed);
    let seed = user.seed().unwrap();
    static CASES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CASES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let rest = rest.replace("{n}", &n.to_string());
    signed(name, move |nonce| {
        let mut c = serde_json::json!({ "jwt": jwt });
        if sign_nonce {
            c["sig"] = sign_b64(&seed, nonce.as_bytes()).into();
        }
        quiet_connect(c, &rest)
    })
}

/// What each case sends once connected: a subscription, a publish it
/// receives, a larger one, a request-style publish, and a PING.
/// `{n}` becomes a number of the case's own: a queue member of the case
/// before, whose close is still under way, must not take its message.
const USE_IT: &str =
    "SUB foo 1\r\nSUB bar.{n} q 2\r\nPUB foo 2\r\nhi\r\nPUB bar.{n} 10\r\n0123456789\r\nPUB foo.x 0\r\n\r\nPING\r\n";

/// User JWTs as other tools and older libraries write them, judged by both
/// servers from the same bytes: JWT v1 (2019) claims without limits,
/// missing or extra fields, duplicate keys (the last wins in Go), time
/// bounds, bearer tokens, connection types and source networks in every
/// accepted spelling, time-of-day windows, queue permissions.
#[test]
fn odd_user_jwts_match() {
    let now = common::jwt::now();
    let a_pub = nkeys::KeyPair::from_seed(&common::jwt::seed("A")).unwrap().public_key();
    let hour = |h: i64| (chrono_like_utc_hour(now) + h).rem_euclid(24);
    // A window that is closed for the next hour or so, in UTC.
    let (closed_start, closed_end) = (format!("{:02}:00:00", hour(2)), format!("{:02}:00:00", hour(3)));
    let v2 = move |extra_top: &str, nats: &str| {
        let extra_top = extra_top.to_string();
        let nats = nats.to_string();
        move |sub: &str, iss: &str| {
            format!(
                r#"{{"jti":"J{now}","iat":{now},"iss":"{iss}","name":"odd","sub":"{sub}"{extra_top},"nats":{{{nats}"type":"user","version":2}}}}"#
            )
        }
    };
    let limits = r#""pub":{},"sub":{},"subs":-1,"data":-1,"payload":-1,"#;
    let a_pub2 = a_pub.clone();
    let window =
        format!(r#"{limits}"times":[{{"start":"{closed_start}","end":"{closed_end}"}}],"times_location":"UTC","#);
    let cases = vec![
        odd_user("v2 as nsc writes it", HEADER_V2, "A", v2("", limits), true, USE_IT),
        // No limits in a v2 JWT read as 0: nats-server tells the client
        // its subscription limit is reached and closes it (after what it
        // sent with its CONNECT, on its own goroutine: hence CONNECT alone).
        odd_user(
            "v2 without limits",
            HEADER_V2,
            "A",
            v2("", r#""pub":{},"sub":{},"#),
            true,
            "",
        ),
        odd_user("v2 with no nats fields but type", HEADER_V2, "A", v2("", ""), true, ""),
        odd_user(
            "subs 0, payload unlimited",
            HEADER_V2,
            "A",
            v2("", r#""subs":0,"payload":-1,"#),
            true,
            "",
        ),
        odd_user(
            "v1 (2019): type at the top, no version, no limits",
            HEADER_V1,
            "A",
            move |sub, iss| {
                format!(
                    r#"{{"jti":"J{now}","iat":{now},"iss":"{iss}","name":"old","sub":"{sub}","type":"user","nats":{{"pub":{{}},"sub":{{}}}}}}"#
                )
            },
            true,
            USE_IT,
        ),
        odd_user(
            "unknown claims at both levels",
            HEADER_V2,
            "A",
            v2(
                r#","x_custom":{"a":[1,2]},"aud":"someone""#,
                &format!(r#"{limits}"x_unknown":true,"tags":["t1"],"#),
            ),
            true,
            USE_IT,
        ),
        odd_user(
            "duplicate nats: merged as Go merges",
            HEADER_V2,
            "A",
            move |sub, iss| {
                format!(
                    r#"{{"jti":"J{now}","iat":{now},"iss":"{iss}","name":"dup","sub":"{sub}","nats":{{"pub":{{"deny":["foo"]}},"sub":{{}},"subs":-1,"data":-1,"payload":-1,"type":"user","version":2}},"nats":{{"pub":{{}},"sub":{{}},"subs":-1,"data":-1,"payload":-1,"type":"user","version":2}}}}"#
                )
            },
            true,
            USE_IT,
        ),
        odd_user(
            "nbf in the past",
            HEADER_V2,
            "A",
            v2(&format!(r#","nbf":{}"#, now - 60), limits),
            true,
            USE_IT,
        ),
        odd_user(
            "nbf in the future",
            HEADER_V2,
            "A",
            v2(&format!(r#","nbf":{}"#, now + 3600), limits),
            true,
            USE_IT,
        ),
        odd_user(
            "exp far ahead",
            HEADER_V2,
            "A",
            v2(&format!(r#","exp":{}"#, now + 86400 * 365), limits),
            true,
            USE_IT,
        ),
        odd_user("exp zero", HEADER_V2, "A", v2(r#","exp":0"#, limits), true, USE_IT),
        odd_user(
            "iat in the future",
            HEADER_V2,
            "A",
            move |sub, iss| {
                let later = now + 3600;
                format!(
                    r#"{{"jti":"J{later}","iat":{later},"iss":"{iss}","name":"later","sub":"{sub}","nats":{{"pub":{{}},"sub":{{}},"subs":-1,"data":-1,"payload":-1,"type":"user","version":2}}}}"#
                )
            },
            true,
            USE_IT,
        ),
        odd_user(
            "bearer token, nonce unsigned",
            HEADER_V2,
            "A",
            v2("", &format!(r#"{limits}"bearer_token":true,"#)),
            false,
            USE_IT,
        ),
        odd_user(
            "not bearer, nonce unsigned",
            HEADER_V2,
            "A",
            v2("", limits),
            false,
            USE_IT,
        ),
        odd_user(
            "connection types: STANDARD",
            HEADER_V2,
            "A",
            v2("", &format!(r#"{limits}"allowed_connection_types":["STANDARD"],"#)),
            true,
            USE_IT,
        ),
        odd_user(
            "connection types: WEBSOCKET only",
            HEADER_V2,
            "A",
            v2("", &format!(r#"{limits}"allowed_connection_types":["WEBSOCKET"],"#)),
            true,
            USE_IT,
        ),
        odd_user(
            "connection types: unknown only",
            HEADER_V2,
            "A",
            v2(
                "",
                &format!(r#"{limits}"allowed_connection_types":["CARRIER_PIGEON"],"#),
            ),
            true,
            USE_IT,
        ),
        odd_user(
            "connection types: STANDARD and unknown",
            HEADER_V2,
            "A",
            v2(
                "",
                &format!(r#"{limits}"allowed_connection_types":["STANDARD","CARRIER_PIGEON"],"#),
            ),
            true,
            USE_IT,
        ),
        odd_user(
            "src: loopback",
            HEADER_V2,
            "A",
            v2("", &format!(r#"{limits}"src":["127.0.0.1/32"],"#)),
            true,
            USE_IT,
        ),
        odd_user(
            "src: elsewhere",
            HEADER_V2,
            "A",
            v2("", &format!(r#"{limits}"src":["10.0.0.0/8"],"#)),
            true,
            USE_IT,
        ),
        odd_user(
            "src: one comma-separated string",
            HEADER_V2,
            "A",
            v2("", &format!(r#"{limits}"src":"10.0.0.0/8, 127.0.0.1/32","#)),
            true,
            USE_IT,
        ),
        odd_user(
            "times: the whole day",
            HEADER_V2,
            "A",
            v2(
                "",
                &format!(r#"{limits}"times":[{{"start":"00:00:00","end":"23:59:59"}}],"#),
            ),
            true,
            USE_IT,
        ),
        odd_user(
            "times: a window not open now",
            HEADER_V2,
            "A",
            v2("", &window),
            true,
            USE_IT,
        ),
        odd_user(
            "queue permission only",
            HEADER_V2,
            "A",
            v2(
                "",
                r#""pub":{},"sub":{"allow":["bar q","foo"]},"subs":-1,"data":-1,"payload":-1,"#,
            ),
            true,
            "SUB bar 1\r\nSUB bar q 2\r\nSUB bar other 3\r\nSUB foo 4\r\nPING\r\n",
        ),
        odd_user(
            "allow and empty deny, response permission",
            HEADER_V2,
            "A",
            v2(
                "",
                r#""pub":{"allow":["foo"],"deny":[]},"sub":{"allow":["foo"],"deny":[]},"resp":{"max":1,"ttl":0},"subs":-1,"data":-1,"payload":-1,"#,
            ),
            true,
            USE_IT,
        ),
        odd_user(
            "subs 1",
            HEADER_V2,
            "A",
            v2("", r#""pub":{},"sub":{},"subs":1,"data":-1,"payload":-1,"#),
            true,
            USE_IT,
        ),
        odd_user(
            "payload 4",
            HEADER_V2,
            "A",
            v2("", r#""pub":{},"sub":{},"subs":-1,"data":-1,"payload":4,"#),
            true,
            USE_IT,
        ),
        odd_user(
            "issuer_account naming the signer itself",
            HEADER_V2,
            "A",
            v2(&format!(r#","issuer_account":"{a_pub2}""#), limits),
            true,
            USE_IT,
        ),
        odd_user(
            "signing key without issuer_account",
            HEADER_V2,
            "A_sk",
            v2("", limits),
            true,
            USE_IT,
        ),
        odd_user(
            "signing key with issuer_account",
            HEADER_V2,
            "A_sk",
            v2(&format!(r#","issuer_account":"{a_pub}""#), limits),
            true,
            USE_IT,
        ),
        odd_user("empty name", HEADER_V2, "A", v2("", limits), true, USE_IT),
    ];
    check(&operator_conf(), true, cases);
}

/// The hour of the day (UTC) at `unix` seconds.
fn chrono_like_utc_hour(unix: i64) -> i64 {
    unix.rem_euclid(86400) / 3600
}
