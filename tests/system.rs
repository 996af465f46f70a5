//! The system account: events and services over `$SYS` with real clients,
//! their JSON shapes against nats-server's, exact STATSZ counts, and the
//! HTTP monitoring endpoints built from the same documents.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt/");

use common::jwt::write_conf as temp_conf;

const CONFIG: &str = r#"
accounts {
  SYS: { users: [{user: sys, password: sys}] }
  A: { users: [{user: a, password: a, permissions: {publish: {deny: "x.>"}}}] }
}
system_account: SYS
"#;

/// Petrel and nats-server, each with [`CONFIG`].
fn both_servers() -> (common::Proc, common::Proc) {
    let conf = temp_conf(CONFIG);
    let c = conf.to_str().unwrap();
    (common::petrel(&["-c", c]), common::nats_server(&["-c", c]))
}

async fn login(url: &str, user: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), user.into())
        .connect(url)
        .await
        .unwrap()
}

async fn request(c: &async_nats::Client, subject: &str, body: &str) -> Value {
    let m = tokio::time::timeout(
        Duration::from_secs(5),
        c.request(subject.to_string(), body.to_string().into()),
    )
    .await
    .unwrap_or_else(|_| panic!("{subject}: timed out"))
    .unwrap_or_else(|e| panic!("{subject}: {e}"));
    serde_json::from_slice(&m.payload).unwrap_or_else(|e| panic!("{subject}: {e}: {:?}", m.payload))
}

/// The server's id, from `$SYS.REQ.SERVER.PING.IDZ`.
async fn server_id(sys: &async_nats::Client) -> String {
    request(sys, "$SYS.REQ.SERVER.PING.IDZ", "").await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The field paths of a document with their JSON types (numbers as one
/// type), leaving out what differs by version or is petrel's own.
fn shape(v: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, path: &str, out: &mut BTreeSet<String>) {
        let kind = match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        out.insert(format!("{path}:{kind}"));
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    // 2.15's server block has feature_flags (not in 2.12);
                    // petrel's STATSZ adds petrel_shards.
                    if k == "feature_flags" || k == "petrel_shards" {
                        continue;
                    }
                    walk(x, &format!("{path}.{k}"), out);
                }
            }
            Value::Array(a) => {
                if let Some(x) = a.first() {
                    walk(x, &format!("{path}[]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(v, "", &mut out);
    out
}

/// USER.INFO, PING, PING.IDZ, <id>.STATSZ and <id>.RELOAD from one server.
async fn service_replies(url: &str) -> Vec<(&'static str, Value)> {
    let sys = login(url, "sys").await;
    let a = login(url, "a").await;
    let idz = request(&sys, "$SYS.REQ.SERVER.PING.IDZ", "").await;
    let id = idz["id"].as_str().unwrap().to_string();
    vec![
        ("USER.INFO (a)", request(&a, "$SYS.REQ.USER.INFO", "").await),
        ("USER.INFO (sys)", request(&sys, "$SYS.REQ.USER.INFO", "").await),
        ("PING", request(&sys, "$SYS.REQ.SERVER.PING", "").await),
        ("PING.IDZ", idz),
        (
            "<id>.STATSZ",
            request(&sys, &format!("$SYS.REQ.SERVER.{id}.STATSZ"), "").await,
        ),
        (
            "<id>.RELOAD",
            request(&sys, &format!("$SYS.REQ.SERVER.{id}.RELOAD"), "").await,
        ),
        ("PING.HEALTHZ", request(&sys, "$SYS.REQ.SERVER.PING.HEALTHZ", "").await),
        ("PING.SUBSZ", request(&sys, "$SYS.REQ.SERVER.PING.SUBSZ", "").await),
        ("PING.ROUTEZ", request(&sys, "$SYS.REQ.SERVER.PING.ROUTEZ", "").await),
        (
            "PING.ACCOUNTZ",
            request(&sys, "$SYS.REQ.SERVER.PING.ACCOUNTZ", "").await,
        ),
        (
            "<id>.KICK unknown",
            request(&sys, &format!("$SYS.REQ.SERVER.{id}.KICK"), r#"{"cid":9999}"#).await,
        ),
    ]
}

#[tokio::test]
async fn service_shapes_match_nats_server() {
    let (ours, theirs) = both_servers();
    let a = service_replies(&ours.url()).await;
    let b = service_replies(&theirs.url()).await;
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        let (sx, sy) = (shape(x), shape(y));
        assert_eq!(
            sx,
            sy,
            "{name}: only petrel {:?}, only nats-server {:?}",
            sx.difference(&sy).collect::<Vec<_>>(),
            sy.difference(&sx).collect::<Vec<_>>()
        );
    }
    // Values that do not differ by nature.
    assert_eq!(a[0].1["data"]["user"], json!("a"));
    assert_eq!(a[0].1["data"]["account"], json!("A"));
    assert_eq!(
        a[0].1["data"]["permissions"],
        json!({"publish": {"deny": ["x.>"]}, "subscribe": {}})
    );
    assert_eq!(a[10].1["error"]["description"], json!("no such client or leafnode id"));
}

/// A body as its `Content-Encoding` says it was encoded.
fn decoded(encoding: Option<&str>, payload: &[u8]) -> Vec<u8> {
    use std::io::Read;
    match encoding {
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(payload)
                .read_to_end(&mut out)
                .expect("gzip");
            out
        }
        Some("snappy") => {
            assert!(payload.starts_with(b"\xff\x06\x00\x00sNaPpY"), "a Snappy stream");
            let mut d = petrel::compress::Deframer::default();
            d.push(payload);
            let mut out = Vec::new();
            while d.decode(&mut out, usize::MAX).expect("snappy") {}
            out
        }
        _ => payload.to_vec(),
    }
}

/// Requests that accept an encoding, from one server: for each, the
/// reply's `Content-Encoding` and its decoded document's outline.
async fn encoded_replies(url: &str) -> Vec<(String, Option<String>, BTreeSet<String>)> {
    let sys = login(url, "sys").await;
    let a = login(url, "a").await;
    let mut out = Vec::new();
    for (who, subject, body, accept) in [
        (&sys, "$SYS.REQ.SERVER.PING.VARZ", "", "gzip"),
        (&sys, "$SYS.REQ.SERVER.PING.VARZ", "", "snappy"),
        (&sys, "$SYS.REQ.SERVER.PING.HEALTHZ", "", "gzip, deflate"),
        (&sys, "$SYS.REQ.SERVER.PING.SUBSZ", "", "br"),
        (&sys, "$SYS.REQ.SERVER.PING.CONNZ", "{bad", "gzip"),
        (&sys, "$SYS.REQ.SERVER.PING", "", "gzip"),
        (&sys, "$SYS.REQ.SERVER.PING.IDZ", "", "s2"),
        (&sys, "$SYS.REQ.ACCOUNT.A.CONNZ", "", "gzip"),
        (&a, "$SYS.REQ.ACCOUNT.PING.CONNZ", "", "snappy"),
    ] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Accept-Encoding", accept);
        let m = tokio::time::timeout(
            Duration::from_secs(5),
            who.request_with_headers(subject.to_string(), headers, body.to_string().into()),
        )
        .await
        .unwrap_or_else(|_| panic!("{subject}: timed out"))
        .unwrap_or_else(|e| panic!("{subject}: {e}"));
        let encoding = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Content-Encoding"))
            .map(|v| v.as_str().to_string());
        let plain = decoded(encoding.as_deref(), &m.payload);
        let doc: Value = serde_json::from_slice(&plain).unwrap_or_else(|e| panic!("{subject} {accept}: {e}"));
        // The document's outline (VARZ's fields differ by version).
        let outline = shape(&doc).into_iter().filter(|p| p.matches('.').count() < 2).collect();
        out.push((format!("{subject} ({accept})"), encoding, outline));
    }
    out
}

/// Replies compressed as nats-server compresses them: the monitoring
/// replies when the request accepts `snappy`/`s2` (a Snappy-compatible
/// stream), `gzip`, or anything else (`identity`, as is); PING, IDZ and
/// error replies never; account requests too.
#[tokio::test]
async fn replies_are_compressed_as_the_request_accepts() {
    let (ours, theirs) = both_servers();
    let a = encoded_replies(&ours.url()).await;
    let b = encoded_replies(&theirs.url()).await;
    let encodings: Vec<Option<&str>> = b.iter().map(|r| r.1.as_deref()).collect();
    assert_eq!(
        encodings,
        [
            Some("gzip"),
            Some("snappy"),
            Some("gzip"),
            Some("identity"),
            None,
            None,
            None,
            Some("gzip"),
            Some("snappy")
        ],
        "nats-server"
    );
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.1, y.1, "{}", x.0);
        assert_eq!(
            x.2,
            y.2,
            "{}: only petrel {:?}, only nats-server {:?}",
            x.0,
            x.2.difference(&y.2).collect::<Vec<_>>(),
            y.2.difference(&x.2).collect::<Vec<_>>()
        );
    }
}

/// Requests nats-server cannot answer with its document, from one
/// server: each reply without its `server` block and times.
async fn failed_replies(url: &str) -> Vec<(String, Value)> {
    let sys = login(url, "sys").await;
    let mut out = Vec::new();
    for (subject, body) in [
        ("$SYS.REQ.SERVER.PING.CONNZ", r#"{"sort":"stop"}"#),
        ("$SYS.REQ.SERVER.PING.CONNZ", r#"{"sort":"nope"}"#),
        ("$SYS.REQ.SERVER.PING.ACCOUNTZ", r#"{"account":"NOPE"}"#),
        ("$SYS.REQ.SERVER.PING.SUBSZ", r#"{"test":"a.*"}"#),
        ("$SYS.REQ.ACCOUNT.NOPE.INFO", ""),
        ("$SYS.REQ.ACCOUNT.PING.INFO", ""),
        ("$SYS.REQ.ACCOUNT.APP.JSZ", ""),
        ("$SYS.REQ.ACCOUNT.NOPE.CONNZ", ""),
        ("$SYS.REQ.ACCOUNT.PING.CONNZ", ""),
        ("$SYS.REQ.SERVER.PING.RAFTZ", ""),
    ] {
        let mut v = request(&sys, subject, body).await;
        let m = v.as_object_mut().unwrap();
        m.remove("server");
        if let Some(Value::Object(d)) = m.get_mut("data") {
            d.remove("now");
        }
        out.push((format!("{subject} {body}"), v));
    }
    out
}

/// Requests nats-server fails get its replies: 500 with `data` null for
/// a monitoring document it could not build (bad sort, unknown account,
/// a test subject with wildcards, an account's JetStream), an unknown
/// account's CONNZ as an empty document without a server id, `PING`
/// taken for an account's name, RAFTZ with no Raft groups.
#[tokio::test]
async fn failed_requests_get_nats_server_replies() {
    let (ours, theirs) = both_servers();
    let a = failed_replies(&ours.url()).await;
    let b = failed_replies(&theirs.url()).await;
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "petrel (left), nats-server (right)");
    }
    assert_eq!(
        b[0].1,
        json!({"data": null, "error": {"code": 500, "description": "sort by stop only valid on closed connections"}})
    );
}

#[tokio::test]
async fn non_system_users_cannot_reach_server_services() {
    let conf = temp_conf(CONFIG);
    let s = common::petrel(&["-c", conf.to_str().unwrap()]);
    let a = login(&s.url(), "a").await;
    let r = a.request("$SYS.REQ.SERVER.PING", "".into()).await;
    assert!(
        matches!(r, Err(ref e) if e.kind() == async_nats::RequestErrorKind::NoResponders),
        "{r:?}"
    );
}

#[tokio::test]
async fn statsz_counts_are_exact_across_shards() {
    let conf = temp_conf(CONFIG);
    let s = common::petrel(&["-c", conf.to_str().unwrap(), "--shards", "2"]);
    let url = s.url();
    // Four subscribers and two publishers, spread by the balancer over both shards.
    let mut subs = Vec::new();
    for _ in 0..4 {
        let c = login(&url, "a").await;
        let sub = c.subscribe("work").await.unwrap();
        c.flush().await.unwrap();
        subs.push((c, sub));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (k, size) = (250u64, 10u64);
    let mut publishers = Vec::new();
    for _ in 0..2 {
        let p = login(&url, "a").await;
        for _ in 0..k / 2 {
            p.publish("work", vec![b'x'; size as usize].into()).await.unwrap();
        }
        p.flush().await.unwrap();
        publishers.push(p);
    }
    for (_, sub) in subs.iter_mut() {
        for _ in 0..k {
            tokio::time::timeout(Duration::from_secs(5), sub.next())
                .await
                .unwrap()
                .unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sys = login(&url, "sys").await;
    let st = request(&sys, "$SYS.REQ.SERVER.PING.STATSZ", "").await["statsz"].clone();
    // Clients: 4 subscribers, 2 publishers and sys.
    assert_eq!(st["connections"], json!(7), "{st}");
    assert_eq!(st["total_connections"], json!(7));
    assert_eq!(
        st["received"]["msgs"],
        json!(k + 1),
        "the workload and this request: {st}"
    );
    assert_eq!(st["received"]["bytes"], json!(k * size));
    assert_eq!(st["sent"]["msgs"], json!(4 * k), "{st}");
    assert_eq!(st["sent"]["bytes"], json!(4 * k * size));
    assert_eq!(
        st["subscriptions"],
        json!(4 + 1),
        "4 subscribers and the requester's inbox: {st}"
    );
    assert_eq!(st["active_accounts"], json!(2));
    let shards = st["petrel_shards"].as_array().unwrap();
    assert_eq!(shards.len(), 2);
    let per_shard: u64 = shards.iter().map(|s| s["in_msgs"].as_u64().unwrap()).sum();
    assert_eq!(per_shard, k + 1);
    assert!(
        shards.iter().all(|s| s["connections"].as_u64().unwrap() > 0),
        "both shards serve clients: {st}"
    );
}

#[tokio::test]
async fn kick_and_ldm_and_statsz_heartbeat() {
    let conf = temp_conf(CONFIG);
    let s = common::petrel(&["-c", conf.to_str().unwrap()]);
    let sys = login(&s.url(), "sys").await;
    let id = server_id(&sys).await;
    let mut heartbeat = sys.subscribe(format!("$SYS.SERVER.{id}.STATSZ")).await.unwrap();
    let mut disconnects = sys.subscribe("$SYS.ACCOUNT.A.DISCONNECT").await.unwrap();
    sys.flush().await.unwrap();
    let hb = tokio::time::timeout(Duration::from_secs(3), heartbeat.next())
        .await
        .expect("a STATSZ heartbeat while someone listens")
        .unwrap();
    let hb: Value = serde_json::from_slice(&hb.payload).unwrap();
    assert!(hb["statsz"]["connections"].as_u64().is_some());

    let mut raw = common::raw::Raw::open(&s.addr());
    let cid = raw.info()["client_id"].as_u64().unwrap();
    raw.exchange(b"CONNECT {\"user\":\"a\",\"pass\":\"a\",\"verbose\":false,\"protocol\":1}\r\nPING\r\n");
    let r = request(
        &sys,
        &format!("$SYS.REQ.SERVER.{id}.LDM"),
        &format!("{{\"cid\":{cid}}}"),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    let got = raw
        .read_until_quiet(Duration::from_millis(300), Duration::from_secs(2))
        .text();
    assert!(got.contains("\"ldm\":true"), "{got}");
    let r = request(
        &sys,
        &format!("$SYS.REQ.SERVER.{id}.KICK"),
        &format!("{{\"cid\":{cid}}}"),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    let reply = raw.read_until_quiet(Duration::from_secs(2), Duration::from_secs(3));
    assert!(reply.closed, "kicked");
    let ev = tokio::time::timeout(Duration::from_secs(3), disconnects.next())
        .await
        .unwrap()
        .unwrap();
    let ev: Value = serde_json::from_slice(&ev.payload).unwrap();
    assert_eq!(ev["reason"], json!("Kicked"));
    assert_eq!(ev["client"]["id"], json!(cid));
}

/// What `<id>.LDM` answers for a client before and after the PONG to its
/// first PING (the error's code and text, or none).
async fn ldm_answers(p: &common::Proc) -> Vec<(Value, Value)> {
    let sys = login(&p.url(), "sys").await;
    let id = server_id(&sys).await;
    let mut raw = common::raw::Raw::open(&p.addr());
    let cid = raw.info()["client_id"].as_u64().unwrap();
    raw.exchange(b"CONNECT {\"user\":\"a\",\"pass\":\"a\",\"verbose\":false,\"protocol\":1}\r\n");
    let mut answers = Vec::new();
    for first in [true, false] {
        let r = request(
            &sys,
            &format!("$SYS.REQ.SERVER.{id}.LDM"),
            &format!("{{\"cid\":{cid}}}"),
        )
        .await;
        answers.push((r["error"]["code"].clone(), r["error"]["description"].clone()));
        // What came before the PONG: nothing the first time; then the INFO
        // that follows the first PONG, and the notice.
        let before = raw.ping();
        assert_eq!(!first, before.contains("\"ldm\":true"), "{before}");
    }
    answers
}

/// A lame-duck notice for one client is refused, with nats-server's text,
/// until the client has had the PONG to its first PING (nothing may come
/// before that PONG), and sent after.
#[tokio::test]
async fn ldm_for_a_client_waits_for_its_first_pong_as_nats_server() {
    let (ours, theirs) = both_servers();
    let a = ldm_answers(&ours).await;
    let b = ldm_answers(&theirs).await;
    assert_eq!(a, b);
    assert_eq!(b[1], (Value::Null, Value::Null), "accepted after the PONG: {b:?}");
}

/// The seed tutorial in operator mode: a system user subscribed to `>` sees
/// a user of account A connect and leave.
#[tokio::test]
async fn operator_mode_connect_and_disconnect_events() {
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURES}manifest.json")).unwrap()).unwrap();
    let mut preload = String::new();
    for a in manifest["accounts"].as_array().unwrap() {
        let jwt = std::fs::read_to_string(format!("{FIXTURES}{}", a["jwt"].as_str().unwrap())).unwrap();
        preload.push_str(&format!("  {}: \"{}\"\n", a["pub"].as_str().unwrap(), jwt.trim()));
    }
    let conf = temp_conf(&format!(
        "operator: \"{FIXTURES}operator.jwt\"\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n{preload}}}\n",
        manifest["system_account"].as_str().unwrap()
    ));
    let s = common::petrel(&["-c", conf.to_str().unwrap()]);
    let creds = |n: &str| format!("{FIXTURES}creds/{n}.creds");
    let sys = async_nats::ConnectOptions::with_credentials_file(creds("sys"))
        .await
        .unwrap()
        .connect(s.url())
        .await
        .unwrap();
    let mut all = sys.subscribe(">").await.unwrap();
    sys.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let a_key = manifest["accounts"][1]["pub"].as_str().unwrap();
    let user_pub = manifest["users"][1]["pub"].as_str().unwrap();
    let a = async_nats::ConnectOptions::with_credentials_file(creds("a"))
        .await
        .unwrap()
        .name("tutorial")
        .connect(s.url())
        .await
        .unwrap();
    a.publish("hello", "12345".into()).await.unwrap();
    a.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(a);
    let mut connect = None;
    let mut disconnect = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while disconnect.is_none() && tokio::time::Instant::now() < deadline {
        let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), all.next()).await else {
            continue;
        };
        if m.subject.as_str() == format!("$SYS.ACCOUNT.{a_key}.CONNECT") {
            connect = Some(serde_json::from_slice::<Value>(&m.payload).unwrap());
        } else if m.subject.as_str() == format!("$SYS.ACCOUNT.{a_key}.DISCONNECT") {
            disconnect = Some(serde_json::from_slice::<Value>(&m.payload).unwrap());
        }
        assert_ne!(m.subject.as_str(), "hello", "SYS does not see A's traffic");
    }
    let c = connect.expect("CONNECT event");
    assert_eq!(c["type"], json!("io.nats.server.advisory.v1.client_connect"));
    assert_eq!(c["client"]["acc"], json!(a_key));
    assert_eq!(c["client"]["user"], json!(user_pub));
    assert_eq!(c["client"]["name"], json!("tutorial"));
    assert_eq!(c["client"]["kind"], json!("Client"));
    assert!(c["server"]["id"].as_str().is_some());
    let d = disconnect.expect("DISCONNECT event");
    assert_eq!(d["type"], json!("io.nats.server.advisory.v1.client_disconnect"));
    assert_eq!(d["reason"], json!("Client Closed"));
    assert_eq!(d["sent"]["msgs"], json!(1), "what the client sent: {d}");
    assert_eq!(d["sent"]["bytes"], json!(5));
    assert!(d["client"]["stop"].as_str().is_some());
}

#[tokio::test]
async fn auth_errors_and_shutdown_are_announced() {
    let conf = temp_conf(CONFIG);
    let mut s = common::petrel(&["-c", conf.to_str().unwrap()]);
    let sys = login(&s.url(), "sys").await;
    let mut events = sys.subscribe("$SYS.SERVER.*.>").await.unwrap();
    sys.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut bad = common::raw::Raw::open(&s.addr());
    bad.exchange(b"CONNECT {\"user\":\"a\",\"pass\":\"wrong\"}\r\n");
    let mut saw = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !saw.contains("AUTH.ERR") && tokio::time::Instant::now() < deadline {
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), events.next()).await {
            if m.subject.ends_with(".CLIENT.AUTH.ERR") {
                let v: Value = serde_json::from_slice(&m.payload).unwrap();
                assert_eq!(v["reason"], json!("Authentication Failure"));
                saw.insert("AUTH.ERR");
            }
        }
    }
    assert!(saw.contains("AUTH.ERR"));
    unsafe { libc::kill(s.pid() as i32, libc::SIGTERM) };
    let mut shutdown = false;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), events.next()).await {
        if m.subject.ends_with(".SHUTDOWN") {
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            assert!(v["id"].as_str().is_some(), "a server block: {v}");
            shutdown = true;
            break;
        }
    }
    assert!(shutdown, "SHUTDOWN event before exit");
    s.wait_exit(Duration::from_secs(5));
}

#[test]
fn http_endpoints_serve_the_same_documents() {
    let conf = temp_conf(CONFIG);
    let s = common::petrel(&["-c", conf.to_str().unwrap(), "-m", "-1"]);
    let port = s.monitor_port();
    let mut raw = common::raw::Raw::open(&s.addr());
    raw.exchange(b"CONNECT {\"user\":\"a\",\"pass\":\"a\",\"verbose\":false}\r\nSUB orders.* q 7\r\nPING\r\n");
    let get = |path: &str| common::http_get(port, path);
    let json = |path: &str| -> Value {
        let (code, body) = get(path);
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    };
    let subsz = json("/subsz?subs=1");
    assert_eq!(subsz["num_subscriptions"], json!(1));
    assert_eq!(subsz["subscriptions_list"][0]["subject"], json!("orders.*"));
    assert_eq!(subsz["subscriptions_list"][0]["qgroup"], json!("q"));
    assert_eq!(json("/subscriptionsz?test=orders.new")["total"], json!(1));
    assert_eq!(json("/subsz?test=other")["total"], json!(0));
    assert_eq!(get("/subsz?test=orders.*").0, 400, "a test subject must be literal");
    let accountz = json("/accountz");
    assert_eq!(accountz["system_account"], json!("SYS"));
    assert!(accountz["accounts"].as_array().unwrap().contains(&json!("A")));
    assert_eq!(
        json("/accountz?acc=A")["account_detail"]["client_connections"],
        json!(1)
    );
    assert_eq!(json("/accstatz")["account_statz"][0]["acc"], json!("A"));
    assert_eq!(json("/routez")["num_routes"], json!(0));
    assert_eq!(json("/leafz")["leafnodes"], json!(0));
    assert!(json("/gatewayz")["outbound_gateways"].is_object());
    assert_eq!(json("/jsz")["disabled"], json!(true));
    assert_eq!(json("/healthz")["status"], json!("ok"));
    let connz = json("/connz?auth=true&subs=detail");
    assert_eq!(connz["connections"][0]["account"], json!("A"));
    assert_eq!(connz["connections"][0]["authorized_user"], json!("a"));
    assert_eq!(
        connz["connections"][0]["subscriptions_list_detail"][0]["sid"],
        json!("7")
    );
    // A closed connection is remembered for `state=closed`.
    let mut gone = common::raw::Raw::open(&s.addr());
    let gone_cid = gone.info()["client_id"].as_u64().unwrap();
    gone.exchange(b"CONNECT {\"user\":\"a\",\"pass\":\"a\",\"verbose\":false,\"name\":\"leaver\"}\r\nPING\r\n");
    drop(gone);
    std::thread::sleep(Duration::from_millis(200));
    let closed = json("/connz?state=closed");
    let entry = closed["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cid"] == json!(gone_cid))
        .cloned()
        .expect("the closed connection is listed");
    assert_eq!(entry["reason"], json!("Client Closed"));
    assert_eq!(entry["name"], json!("leaver"));
    assert!(entry["stop"].as_str().is_some());
    assert_eq!(
        json("/connz?state=closed&sort=stop")["connections"][0]["cid"],
        json!(gone_cid)
    );
    assert_eq!(get("/connz?sort=stop").0, 400);
    assert_eq!(json("/connz?state=any")["total"], json!(2));
    let (code, metrics) = get("/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("# TYPE petrel_connections gauge\npetrel_connections 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("petrel_shard_in_msgs_total{shard=\"0\"}"));
}

#[tokio::test]
async fn account_requests_filters_and_reload_over_sys() {
    let conf = temp_conf(CONFIG);
    let s = common::petrel(&["-c", conf.to_str().unwrap(), "-n", "alpha"]);
    let url = s.url();
    let sys = login(&url, "sys").await;
    let a = login(&url, "a").await;
    let _a2 = async_nats::ConnectOptions::with_user_and_password("a".into(), "a".into())
        .name("second")
        .connect(&url)
        .await
        .unwrap();
    // A user asks about its own account (nats-server's automatic imports).
    for subject in ["$SYS.REQ.ACCOUNT.PING.CONNZ", "$SYS.REQ.SERVER.PING.CONNZ"] {
        let v = request(&a, subject, "").await;
        assert_eq!(
            v["data"]["num_connections"],
            json!(2),
            "{subject}: only A's clients: {v}"
        );
    }
    let v = request(&a, "$SYS.REQ.ACCOUNT.PING.STATZ", "").await;
    let statz = v["data"]["account_statz"].as_array().unwrap();
    assert_eq!(statz.len(), 1);
    assert_eq!(statz[0]["acc"], json!("A"));
    assert_eq!(statz[0]["conns"], json!(2));
    // The system user sees every client.
    let v = request(&sys, "$SYS.REQ.SERVER.PING.CONNZ", "").await;
    assert_eq!(v["data"]["num_connections"], json!(3));
    // Filters: a request for another server name goes unanswered.
    let r = tokio::time::timeout(
        Duration::from_millis(500),
        sys.request("$SYS.REQ.SERVER.PING.VARZ", r#"{"server_name":"beta"}"#.into()),
    )
    .await;
    assert!(!matches!(r, Ok(Ok(_))), "filtered out: {r:?}");
    let v = request(&sys, "$SYS.REQ.SERVER.PING.VARZ", r#"{"server_name":"alp"}"#).await;
    assert_eq!(v["data"]["server_name"], json!("alpha"));
    // RELOAD applies a changed file and lists what changed; a change that
    // cannot be reloaded is refused with nats-server's error text.
    let id = server_id(&sys).await;
    std::fs::write(&conf, format!("{CONFIG}\nmax_payload: 2048\n")).unwrap();
    let v = request(&sys, &format!("$SYS.REQ.SERVER.{id}.RELOAD"), "").await;
    assert!(v.get("error").is_none(), "{v}");
    assert_eq!(v["data"]["changed"][0]["option"], json!("max_payload"), "{v}");
    std::fs::write(
        &conf,
        format!("{CONFIG}\nmax_payload: 2048\ndisable_sublist_cache: true\n"),
    )
    .unwrap();
    let v = request(&sys, &format!("$SYS.REQ.SERVER.{id}.RELOAD"), "").await;
    assert_eq!(v["error"]["code"], json!(500), "{v}");
    let text = v["error"]["description"].as_str().unwrap();
    assert!(
        text.starts_with("config reload not supported for disable_sublist_cache"),
        "{text}"
    );
    assert_eq!(v["data"]["rejected"][0]["option"], json!("disable_sublist_cache"));
}

#[tokio::test]
async fn lame_duck_event() {
    let conf = temp_conf(CONFIG);
    let s = common::petrel(&["-c", conf.to_str().unwrap()]);
    let sys = login(&s.url(), "sys").await;
    let mut ev = sys.subscribe("$SYS.SERVER.*.LAMEDUCK").await.unwrap();
    sys.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    unsafe { libc::kill(s.pid() as i32, libc::SIGUSR2) };
    let m = tokio::time::timeout(Duration::from_secs(3), ev.next())
        .await
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_slice(&m.payload).unwrap();
    assert!(v["id"].as_str().is_some(), "{v}");
}

/// Beyond nats-server: a slow consumer is announced with its connection,
/// account and the bytes that were pending.
#[tokio::test]
async fn slow_consumer_advisory() {
    let conf = temp_conf(&format!("{CONFIG}\nmax_pending: 262144\nmax_payload: 65536\n"));
    let s = common::petrel(&["-c", conf.to_str().unwrap()]);
    let sys = login(&s.url(), "sys").await;
    let mut adv = sys.subscribe("$SYS.SERVER.*.CLIENT.SLOW_CONSUMER").await.unwrap();
    sys.flush().await.unwrap();
    // A subscriber that never reads.
    let mut stuck = common::raw::Raw::open(&s.addr());
    let stuck_cid = stuck.info()["client_id"].as_u64().unwrap();
    stuck.exchange(
        b"CONNECT {\"user\":\"a\",\"pass\":\"a\",\"verbose\":false,\"name\":\"stuck\"}\r\nSUB flood 1\r\nPING\r\n",
    );
    let publisher = login(&s.url(), "a").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let body = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    let feeder = tokio::spawn(async move {
        for _ in 0..2000 {
            if publisher.publish("flood", body.clone()).await.is_err() {
                break;
            }
        }
        let _ = publisher.flush().await;
    });
    let m = tokio::time::timeout(Duration::from_secs(20), adv.next())
        .await
        .expect("a slow consumer advisory")
        .unwrap();
    let v: Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(v["type"], json!("io.petrel.advisory.v1.slow_consumer"));
    assert_eq!(v["client"]["id"], json!(stuck_cid));
    assert_eq!(v["client"]["name"], json!("stuck"));
    assert_eq!(v["client"]["acc"], json!("A"));
    assert!(v["pending_bytes"].as_u64().unwrap() > 0, "{v}");
    feeder.abort();
    drop(stuck);
}

/// A configuration nested 20,000 deep (issue: it used to overflow the
/// stack): refused with file and line at start-up and by `-t`, and refused
/// by a running server on SIGHUP and `$SYS` RELOAD, which goes on serving.
#[tokio::test]
async fn deeply_nested_config_is_refused_everywhere_without_a_crash() {
    let conf = temp_conf(CONFIG);
    let s = common::petrel(&["-c", conf.to_str().unwrap()]);
    let sys = login(&s.url(), "sys").await;
    let id = server_id(&sys).await;
    let deep = format!("{CONFIG}\ndeep = {}1{}\n", "[".repeat(20_000), "]".repeat(20_000));
    std::fs::write(&conf, &deep).unwrap();
    let line = CONFIG.lines().count() + 2;
    let where_ = format!("{}:{line}:", conf.display());

    let v = request(&sys, &format!("$SYS.REQ.SERVER.{id}.RELOAD"), "").await;
    let text = v["error"]["description"].as_str().unwrap_or_default();
    assert!(text.contains("nested more than 128 deep"), "{v}");
    assert!(text.contains(&where_), "{v}");

    unsafe { libc::kill(s.pid() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.log_lines("nested more than 128 deep").is_empty() {
        assert!(std::time::Instant::now() < deadline, "no reload error logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let v = request(&sys, "$SYS.REQ.SERVER.PING.VARZ", "").await;
    assert!(v["data"]["server_id"].is_string(), "still serving: {v}");

    for args in [vec!["-t", "-c"], vec!["-p", "-1", "-c"]] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_petrel"));
        let out = cmd.args(&args).arg(&conf).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&where_) && err.contains("nested more than"),
            "{args:?}: {err}"
        );
    }
}
