//! Message tracing (`Nats-Trace-Dest`), differentially: the same
//! configuration, connections and traced messages to petrel and
//! nats-server, the trace events compared field by field (times,
//! connection ids and the `server` block aside) along with what the
//! subscribers received.

mod common;

use std::time::Duration;

use common::jwt::write_conf;
use common::raw::Raw;
use common::Proc;
use serde_json::{json, Value};

/// A connection that sent CONNECT (with `connect` fields) and got PONG.
fn login(addr: &str, connect: Value) -> Raw {
    let mut r = Raw::open(addr);
    let mut c = json!({"verbose": false, "pedantic": false, "protocol": 1, "headers": true});
    if let (Value::Object(m), Value::Object(extra)) = (&mut c, connect) {
        m.extend(extra);
    }
    r.send(format!("CONNECT {c}\r\n").as_bytes());
    let before = r.ping() + &r.ping();
    assert!(before.lines().all(|l| l.starts_with("INFO ")), "{c}: {before}");
    r
}

/// `HPUB` of `payload` to `subject` with `headers` (name, value pairs).
fn hpub(subject: &str, headers: &[(&str, &str)], payload: &str) -> Vec<u8> {
    let mut h = String::from("NATS/1.0\r\n");
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    format!(
        "HPUB {subject} {} {}\r\n{h}{payload}\r\n",
        h.len(),
        h.len() + payload.len()
    )
    .into_bytes()
}

/// The JSON bodies of the messages `r` received, in order.
fn bodies(r: &mut Raw) -> Vec<Value> {
    let text = r
        .read_until_quiet(Duration::from_millis(400), Duration::from_secs(5))
        .text();
    let mut out = Vec::new();
    let mut lines = text.split("\r\n");
    while let Some(line) = lines.next() {
        if line.starts_with("MSG ") {
            if let Some(body) = lines.next() {
                out.push(serde_json::from_str(body).unwrap_or(Value::String(body.into())));
            }
        }
    }
    out
}

/// A trace event with what differs between servers taken out (times,
/// connection ids, the `server` block), its events sorted within runs of
/// egresses (servers record them in their own delivery order).
fn comparable(mut e: Value) -> Value {
    let obj = e.as_object_mut().expect("an object");
    obj.remove("server");
    if let Some(Value::Array(events)) = obj.get_mut("events") {
        for ev in events.iter_mut() {
            if let Some(m) = ev.as_object_mut() {
                m.remove("ts");
                m.remove("cid");
            }
        }
        events.sort_by_key(|ev| {
            let order = match ev["type"].as_str() {
                Some("in") => 0,
                Some("sm") => 1,
                _ => 2,
            };
            (order, ev.to_string())
        });
    }
    e
}

/// A subscriber's messages with what differs between servers taken out:
/// header and total sizes, round trip times in `Nats-Request-Info`, and
/// reply-space tokens.
fn comparable_text(text: &str) -> String {
    let mut out = String::new();
    for line in text.split_inclusive("\r\n") {
        if let Some(info) = line.strip_prefix("Nats-Request-Info: ") {
            let mut v: Value = serde_json::from_str(info.trim_end()).expect("JSON request info");
            v.as_object_mut().expect("an object").remove("rtt");
            out.push_str(&format!("Nats-Request-Info: {v}\r\n"));
            continue;
        }
        if let Some(rest) = line.strip_prefix("HMSG ") {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            out.push_str(&format!("HMSG {}\r\n", parts[..parts.len() - 2].join(" ")));
            continue;
        }
        match line.find("_R_.") {
            Some(i) => out.push_str(&format!("{}_R_\r\n", &line[..i])),
            None => out.push_str(line),
        }
    }
    out
}

/// What one scenario saw: the trace events and each subscriber's messages.
#[derive(Debug, PartialEq)]
struct Seen {
    events: Vec<Value>,
    deliveries: Vec<String>,
    publisher: String,
}

/// Runs `scenario` on a server: the tracer subscribes to `trace.dest`
/// (as user `tracer_user`, when given), subscribers are made by `setup`,
/// then `publish` is sent by the publisher (logged in with `pub_connect`).
fn run(
    server: &Proc,
    tracer_connect: Value,
    pub_connect: Value,
    subscribers: &[(Value, &str)],
    publish: &[u8],
) -> Seen {
    let addr = server.addr();
    let mut tracer = login(&addr, tracer_connect);
    tracer.send(b"SUB trace.dest 1\r\n");
    assert_eq!(tracer.ping(), "");
    let mut subs: Vec<Raw> = subscribers
        .iter()
        .map(|(connect, protos)| {
            let mut s = login(&addr, connect.clone());
            s.send(protos.as_bytes());
            assert_eq!(s.ping(), "", "{protos}");
            s
        })
        .collect();
    let mut publisher = login(&addr, pub_connect);
    // Its own subscriptions, when the scenario has any.
    publisher.send(publish);
    let publisher_text = publisher.ping();
    let mut events: Vec<Value> = bodies(&mut tracer).into_iter().map(comparable).collect();
    // Traces of different messages may come in either order.
    events.sort_by_key(|e| (e["events"][0]["subj"].to_string(), e["request"].to_string()));
    let deliveries = subs
        .iter_mut()
        .map(|s| {
            comparable_text(
                &s.read_until_quiet(Duration::from_millis(200), Duration::from_secs(3))
                    .text(),
            )
        })
        .collect();
    Seen {
        events,
        deliveries,
        publisher: publisher_text,
    }
}

fn both(conf: &str, petrel_args: &[&str]) -> (Proc, Proc) {
    let path = write_conf(conf);
    let c = path.to_str().unwrap();
    let mut args = vec!["-c", c];
    args.extend_from_slice(petrel_args);
    (common::petrel(&args), common::nats_server(&["-c", c]))
}

const ACCOUNTS: &str = r#"
accounts {
  A: {
    users: [
      {user: a, password: a}
      {user: nofoo, password: x, permissions: {publish: {deny: "foo"}}}
      {user: nodest, password: x, permissions: {publish: {deny: "trace.>"}}}
      {user: subdeny, password: x, permissions: {subscribe: {allow: ">", deny: "foo.bar"}}}
    ]
    exports: [
      {stream: "feed.>"}
      {stream: "quiet.>"}
      {service: "svc.traced", allow_trace: true}
      {service: "svc.plain"}
    ]
    mappings: { "old.*": "new.$1" }
  }
  C: {
    users: [{user: c, password: c}]
    msg_trace: {dest: "trace.dest", sampling: "100%"}
  }
  B: {
    users: [{user: b, password: b}]
    imports: [
      {stream: {account: A, subject: "feed.>"}, prefix: "in", allow_trace: true}
      {stream: {account: A, subject: "quiet.>"}, prefix: "in"}
      {service: {account: A, subject: "svc.traced"}}
      {service: {account: A, subject: "svc.plain"}}
    ]
  }
}
"#;

fn user(u: &str, p: &str, name: &str) -> Value {
    json!({"user": u, "pass": p, "name": name})
}

/// Each scenario to both servers (petrel on two shards, so copies cross
/// between shards): the events and deliveries must agree.
#[test]
fn trace_events_match_nats_server() {
    let dest = ("Nats-Trace-Dest", "trace.dest");
    let only = ("Nats-Trace-Only", "true");
    type Scenario<'a> = (&'a str, Value, Value, Vec<(Value, &'a str)>, Vec<u8>);
    let scenarios: Vec<Scenario> = vec![
        (
            "two subscribers and a queue group",
            user("a", "a", "tracer"),
            user("a", "a", "pub"),
            vec![
                (user("a", "a", "s1"), "SUB foo 1\r\n"),
                (user("a", "a", "s2"), "SUB foo q 1\r\nSUB * 2\r\n"),
            ],
            hpub("foo", &[dest, ("X-Other", "1")], "hello"),
        ),
        (
            "trace only: nobody gets it",
            user("a", "a", "tracer"),
            user("a", "a", "pub"),
            vec![(user("a", "a", "s1"), "SUB foo 1\r\n")],
            hpub("foo", &[dest, only], "hello"),
        ),
        (
            "no echo",
            user("a", "a", "tracer"),
            json!({"user": "a", "pass": "a", "name": "pub", "echo": false}),
            vec![(user("a", "a", "s1"), "SUB foo 1\r\n")],
            [b"SUB foo 9\r\nPING\r\n".to_vec(), hpub("foo", &[dest], "x")].concat(),
        ),
        (
            "subject mapping",
            user("a", "a", "tracer"),
            user("a", "a", "pub"),
            vec![(user("a", "a", "s1"), "SUB new.* 1\r\n")],
            hpub("old.x", &[dest], "m"),
        ),
        (
            "publish violation",
            user("a", "a", "tracer"),
            user("nofoo", "x", "pub"),
            vec![(user("a", "a", "s1"), "SUB foo 1\r\n")],
            hpub("foo", &[dest], "v"),
        ),
        (
            "destination not allowed",
            user("a", "a", "tracer"),
            user("nodest", "x", "pub"),
            vec![(user("a", "a", "s1"), "SUB foo 1\r\n")],
            hpub("foo", &[dest], "d"),
        ),
        (
            "destination not a subject, trace only",
            user("a", "a", "tracer"),
            user("a", "a", "pub"),
            vec![(user("a", "a", "s1"), "SUB foo 1\r\n")],
            hpub("foo", &[("Nats-Trace-Dest", "bad.*"), only], "i"),
        ),
        (
            "subscription deny list",
            user("a", "a", "tracer"),
            user("a", "a", "pub"),
            vec![(user("subdeny", "x", "s1"), "SUB foo.* 1\r\n")],
            hpub("foo.bar", &[dest], "s"),
        ),
        (
            "stream exports, traced and not",
            user("a", "a", "tracer"),
            user("a", "a", "pub"),
            vec![(user("b", "b", "importer"), "SUB in.> 1\r\nSUB in.*.x 2\r\n")],
            [hpub("feed.x", &[dest], "f"), hpub("quiet.x", &[dest], "q")].concat(),
        ),
        (
            "a sampled traceparent to the account's destination",
            user("c", "c", "tracer"),
            user("c", "c", "pub"),
            vec![(user("c", "c", "s1"), "SUB foo 1\r\n")],
            [
                hpub(
                    "foo",
                    &[("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")],
                    "w3c",
                ),
                hpub(
                    "foo",
                    &[("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")],
                    "unsampled",
                ),
                hpub(
                    "foo",
                    &[("TraceParent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")],
                    "any case",
                ),
            ]
            .concat(),
        ),
        (
            "traceparent without an account destination",
            user("a", "a", "tracer"),
            user("a", "a", "pub"),
            vec![(user("a", "a", "s1"), "SUB foo 1\r\n")],
            hpub(
                "foo",
                &[("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")],
                "w3c",
            ),
        ),
        (
            "service imports, traced and not",
            user("b", "b", "tracer"),
            user("b", "b", "requester"),
            vec![(user("a", "a", "service"), "SUB svc.* 1\r\n")],
            [hpub("svc.traced", &[dest], "t"), hpub("svc.plain", &[dest], "p")].concat(),
        ),
    ];
    // Traces each scenario makes (so that agreeing on none cannot pass
    // for agreeing on events).
    let traces = [1, 1, 1, 1, 1, 0, 0, 1, 2, 2, 0, 2];
    assert_eq!(traces.len(), scenarios.len());
    let (petrel, nats) = both(ACCOUNTS, &["--shards", "2"]);
    let mut wrong = Vec::new();
    for ((what, tracer, publisher, subs, publish), n) in scenarios.into_iter().zip(traces) {
        let ours = run(&petrel, tracer.clone(), publisher.clone(), &subs, &publish);
        let theirs = run(&nats, tracer, publisher, &subs, &publish);
        if ours.events.len() != n {
            wrong.push(format!(
                "{what}: {} traces, not {n}: {:?}",
                ours.events.len(),
                ours.events
            ));
        }
        if ours != theirs {
            wrong.push(format!("{what}:\n  petrel:      {ours:?}\n  nats-server: {theirs:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Petrel,
    Nats,
}

/// Node `name` of cluster `c1` (seeded with `seed`'s route port).
fn node(kind: Kind, name: &str, seed: Option<&Proc>) -> Proc {
    node_with(kind, name, seed, None)
}

/// [`node`] with configuration `conf`, when given.
fn node_with(kind: Kind, name: &str, seed: Option<&Proc>, conf: Option<&str>) -> Proc {
    let conf = conf.map(write_conf);
    let routes = seed.map(|s| format!("nats://127.0.0.1:{}", s.route_port()));
    let mut args = vec!["--cluster", "nats://127.0.0.1:-1", "--cluster_name", "c1", "-n", name];
    if let Some(c) = &conf {
        args.extend(["-c", c.to_str().unwrap()]);
    }
    if let Some(r) = &routes {
        args.extend(["--routes", r.as_str()]);
    }
    match kind {
        Kind::Petrel => common::petrel(&args),
        Kind::Nats => common::nats_server(&args),
    }
}

/// Publishes `pub_line` from `publisher` until `listener` gets it: the
/// link between their servers carries the listener's interest.
fn until_heard(publisher: &mut Raw, listener: &mut Raw, pub_line: &[u8]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        publisher.send(pub_line);
        quiet_ping(publisher);
        if listener
            .read_until_quiet(Duration::from_millis(100), Duration::from_millis(300))
            .text()
            .contains("probe")
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no link between the servers");
    }
}

/// `run` for petrel beside nats-server, nats-server beside petrel and two
/// petrels: each must give what two nats-servers gave (`reference`).
fn every_mix_as<T: PartialEq + std::fmt::Debug>(reference: &T, run: impl Fn((Kind, Kind)) -> T) {
    for kinds in [
        (Kind::Petrel, Kind::Nats),
        (Kind::Nats, Kind::Petrel),
        (Kind::Petrel, Kind::Petrel),
    ] {
        let ours = run(kinds);
        assert_eq!(&ours, reference, "{kinds:?}");
    }
}

/// PING and PONG with nothing between but INFO updates (a cluster's
/// servers tell clients of each other).
fn quiet_ping(r: &mut Raw) {
    let before = r.ping();
    assert!(before.lines().all(|l| l.starts_with("INFO ")), "{before}");
}

/// A traced message (and a traced-only one) published on `A` to a
/// subscriber on `B`: the events both servers send back to the tracer on
/// `A`, and what the subscriber got.
fn cluster_trace(kinds: (Kind, Kind)) -> (Vec<Value>, String) {
    let a = node(kinds.0, "A", None);
    let b = node(kinds.1, "B", Some(&a));
    trace_across(
        &a,
        &b,
        json!({"name": "tracer"}),
        json!({"name": "sub"}),
        json!({"name": "pub"}),
    )
}

/// On two connected servers: a tracer and a publisher on `a`, a
/// subscriber to `foo` on `b` (each logged in with its CONNECT fields);
/// once the link carries the interest, a traced message and a traced-only
/// one to `foo`: the events both servers send the tracer, and what the
/// subscriber got.
fn trace_across(a: &Proc, b: &Proc, tracer_login: Value, sub_login: Value, pub_login: Value) -> (Vec<Value>, String) {
    let mut tracer = login(&a.addr(), tracer_login);
    tracer.send(b"SUB trace.dest 1\r\n");
    quiet_ping(&mut tracer);
    let mut sub = login(&b.addr(), sub_login);
    sub.send(b"SUB foo 1\r\n");
    quiet_ping(&mut sub);
    let mut publisher = login(&a.addr(), pub_login);
    until_heard(&mut publisher, &mut sub, b"PUB foo 5\r\nprobe\r\n");
    // Its own trace events would go back over the link too: the tracer's
    // interest must have reached `b` (it was made before the subscriber).
    let dest = ("Nats-Trace-Dest", "trace.dest");
    publisher.send(&hpub("foo", &[dest], "one"));
    publisher.send(&hpub("foo", &[dest, ("Nats-Trace-Only", "true")], "two"));
    quiet_ping(&mut publisher);
    let mut events: Vec<Value> = bodies(&mut tracer).into_iter().map(comparable).collect();
    events.sort_by_key(|e| e.to_string());
    let got = comparable_text(
        &sub.read_until_quiet(Duration::from_millis(300), Duration::from_secs(3))
            .text(),
    );
    (events, got)
}

/// Across a route: each server sends its own event, the route's copy
/// carries its hop id (`Nats-Trace-Hop`), a traced-only message is
/// forwarded but not delivered; petrel on either side of a nats-server,
/// and two petrels, send what two nats-servers send.
#[test]
fn traces_cross_routes_as_between_nats_servers() {
    let reference = cluster_trace((Kind::Nats, Kind::Nats));
    assert_eq!(reference.0.len(), 4, "{:?}", reference.0);
    every_mix_as(&reference, cluster_trace);
}

/// Hub `HUB` (account A, leaf user `lu` bound to A) or leaf `LEAF`
/// (account L, dialing the hub as `lu`).
fn leaf_node(kind: Kind, hub: Option<&Proc>) -> Proc {
    let text = match hub {
        None => "server_name: HUB\nleafnodes {\n  listen: 127.0.0.1:-1\n  authorization { user: lu, password: lp, account: A }\n}\n\
                 accounts {\n  A { users [{user: a, password: a}] }\n}\n"
            .to_string(),
        Some(h) => format!(
            "server_name: LEAF\nleafnodes {{\n  reconnect: \"200ms\"\n  remotes [ {{ url: \"nats://lu:lp@127.0.0.1:{}\", account: L }} ]\n}}\n\
             accounts {{\n  L {{ users [{{user: l, password: l}}] }}\n}}\n",
            h.leaf_port()
        ),
    };
    let conf = write_conf(&text);
    let args = ["-c", conf.to_str().unwrap()];
    match kind {
        Kind::Petrel => common::petrel(&args),
        Kind::Nats => common::nats_server(&args),
    }
}

/// A traced message (and a traced-only one) published on the hub to a
/// subscriber on the leaf: the events both servers send to the tracer on
/// the hub, and what the subscriber got.
fn leaf_trace(kinds: (Kind, Kind)) -> (Vec<Value>, String) {
    let hub = leaf_node(kinds.0, None);
    let leaf = leaf_node(kinds.1, Some(&hub));
    trace_across(
        &hub,
        &leaf,
        user("a", "a", "tracer"),
        user("l", "l", "sub"),
        user("a", "a", "pub"),
    )
}

/// Across a leaf connection as across a route: each server's event, the
/// leaf copy's hop id, trace-only forwarded but not delivered; petrel as
/// hub, as leaf and as both, against two nats-servers.
#[test]
fn traces_cross_leaf_connections_as_between_nats_servers() {
    let reference = leaf_trace((Kind::Nats, Kind::Nats));
    assert_eq!(reference.0.len(), 4, "{:?}", reference.0);
    every_mix_as(&reference, leaf_trace);
}

/// Accounts for a traced request through a service import whose
/// responder is on the other server of a cluster.
const SERVICE_CLUSTER: &str = r#"
accounts {
  A: { users: [{user: a, password: a}], exports: [{service: "svc", allow_trace: true}] }
  B: { users: [{user: b, password: b}], imports: [{service: {account: A, subject: "svc"}}] }
}
"#;

/// A traced request from B on server A to the service of A answered on
/// server B: the events the tracer (in B, on A) gets from both servers
/// (B's come back through the reply space, as nats-server routes them).
fn service_trace(kinds: (Kind, Kind)) -> Vec<Value> {
    let a = node_with(kinds.0, "A", None, Some(SERVICE_CLUSTER));
    let b = node_with(kinds.1, "B", Some(&a), Some(SERVICE_CLUSTER));
    let mut tracer = login(&a.addr(), user("b", "b", "tracer"));
    tracer.send(b"SUB trace.dest 1\r\nSUB _INBOX.> 2\r\n");
    quiet_ping(&mut tracer);
    let mut responder = login(&b.addr(), user("a", "a", "responder"));
    responder.send(b"SUB svc 1\r\n");
    quiet_ping(&mut responder);
    // Until the service's interest has crossed.
    until_heard(&mut tracer, &mut responder, b"PUB svc 5\r\nprobe\r\n");
    // The events come in as they are sent: read them without a PING.
    tracer.send(&hpub("svc", &[("Nats-Trace-Dest", "trace.dest")], "req"));
    let mut events: Vec<Value> = bodies(&mut tracer)
        .into_iter()
        .filter(|v| v.get("events").is_some())
        .map(comparable)
        .collect();
    for e in events.iter_mut() {
        // The reply-space subject differs between servers and runs.
        if let Some(Value::Array(d)) = e["request"]["header"].get_mut("Nats-Trace-Dest") {
            for v in d.iter_mut() {
                if v.as_str().is_some_and(|s| s.starts_with("_R_.")) {
                    *v = json!("_R_");
                }
            }
        }
        if let Some(Value::Array(d)) = e["request"]["header"].get_mut("Nats-Request-Info") {
            d.clear();
            // Its size follows the reply subject and the round trip time.
            e["request"]["msgsize"] = json!("*");
        }
    }
    events.sort_by_key(|e| e.to_string());
    events
}

/// A request traced through a service import that allows it, answered on
/// another server: that server's events reach the tracer through the
/// importer's reply space, in every mix as between two nats-servers.
#[test]
fn a_traced_request_through_an_import_crosses_routes_as_between_nats_servers() {
    let reference = service_trace((Kind::Nats, Kind::Nats));
    assert_eq!(reference.len(), 2, "{reference:?}");
    every_mix_as(&reference, service_trace);
}

/// A measured service (`latency`) whose responder is on another server.
const LATENCY_CLUSTER: &str = r#"
accounts {
  A: { users: [{user: a, password: a}],
       exports: [{service: "svc", latency: {sampling: "100%", subject: "lat.svc"}}] }
  B: { users: [{user: b, password: b}], imports: [{service: {account: A, subject: "svc"}}] }
}
"#;

/// A request from B on server A to the measured service of A answered
/// on server B: the reply subject's last two tokens (the hash of the
/// requester's server name and `T`) and the latency report a listener on
/// A gets, times, ids and round trips taken out.
fn latency_across(kinds: (Kind, Kind)) -> (String, Value) {
    let a = node_with(kinds.0, "A", None, Some(LATENCY_CLUSTER));
    let b = node_with(kinds.1, "B", Some(&a), Some(LATENCY_CLUSTER));
    let mut listener = login(&a.addr(), user("a", "a", "listener"));
    listener.send(b"SUB lat.svc 1\r\n");
    quiet_ping(&mut listener);
    let mut responder = login(&b.addr(), user("a", "a", "responder"));
    responder.send(b"SUB svc 1\r\n");
    quiet_ping(&mut responder);
    // Until the service's interest has crossed (published in A, so no
    // request is measured).
    until_heard(&mut listener, &mut responder, b"PUB svc 5\r\nprobe\r\n");
    let mut requester = login(&a.addr(), user("b", "b", "requester"));
    requester.send(b"SUB _INBOX.1 1\r\nPUB svc _INBOX.1 3\r\nreq\r\n");
    quiet_ping(&mut requester);
    let text = responder
        .read_until_quiet(Duration::from_millis(200), Duration::from_secs(3))
        .text();
    let reply = text
        .lines()
        .find(|l| l.starts_with("MSG svc") || l.starts_with("HMSG svc"))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or_else(|| panic!("{kinds:?}: a request with a reply: {text:?}"))
        .to_string();
    std::thread::sleep(Duration::from_millis(20));
    responder.send(format!("PUB {reply} 2\r\nok\r\n").as_bytes());
    quiet_ping(&mut responder);
    let answered = requester
        .read_until_quiet(Duration::from_millis(200), Duration::from_secs(3))
        .text();
    assert!(answered.contains("\r\nok\r\n"), "{kinds:?}: {answered:?}");
    let mut reports = bodies(&mut listener);
    assert_eq!(reports.len(), 1, "{kinds:?}: {reports:?}");
    let mut report = reports.remove(0);
    let (service, _, total) = common::latency_comparable(&mut report);
    // The responder took at least the 20 ms slept above; the requester's
    // server saw all of it.
    assert!(
        service >= 20_000_000 && total >= service,
        "{kinds:?}: {service} {total}"
    );
    let tail: Vec<&str> = reply.rsplitn(3, '.').take(2).collect();
    (format!("{}.{}", tail[1], tail[0]), report)
}

/// Service latency with the responder on another server: the
/// requester's server merges the responder's server's measurement
/// (`$SYS.LATENCY.M2.<hash>`) into its report, so the responder is
/// described and its service time measured where it ran; in every mix as
/// between two nats-servers (a petrel responder's server must send the
/// measurement, a petrel requester's server must wait for it).
#[test]
fn service_latency_across_routes_as_between_nats_servers() {
    let reference = latency_across((Kind::Nats, Kind::Nats));
    assert_eq!(reference.1["status"], json!(200), "{reference:?}");
    assert_eq!(reference.1["responder"]["server"], json!("B"), "{reference:?}");
    every_mix_as(&reference, latency_across);
}

/// The trace events for messages to `foo` that accept `encodings`, one
/// message each: per message the `Content-Encoding` its event came with
/// and the event decoded (comparable).
fn encoded_events(server: &Proc, encodings: &[&str]) -> Vec<(Option<String>, Value)> {
    use std::io::Read;
    let addr = server.addr();
    let mut tracer = login(&addr, json!({}));
    tracer.send(b"SUB trace.dest 1\r\n");
    quiet_ping(&mut tracer);
    let mut sub = login(&addr, json!({}));
    sub.send(b"SUB foo 1\r\n");
    quiet_ping(&mut sub);
    let mut publisher = login(&addr, json!({}));
    let mut out = Vec::new();
    for enc in encodings {
        publisher.send(&hpub(
            "foo",
            &[("Nats-Trace-Dest", "trace.dest"), ("Accept-Encoding", enc)],
            "x",
        ));
        quiet_ping(&mut publisher);
        let raw = tracer.read_until_quiet(Duration::from_millis(300), Duration::from_secs(3));
        let bytes = &raw.bytes;
        // `HMSG trace.dest 1 <hdr> <total>` or `MSG trace.dest 1 <total>`.
        let line_end = bytes.windows(2).position(|w| w == b"\r\n").expect("a message");
        let line = String::from_utf8_lossy(&bytes[..line_end]).into_owned();
        let sizes: Vec<usize> = line.split_whitespace().skip(3).map(|n| n.parse().unwrap()).collect();
        let (hdr_len, total) = match sizes[..] {
            [h, t] => (h, t),
            [t] => (0, t),
            _ => panic!("{line}"),
        };
        let msg = &bytes[line_end + 2..line_end + 2 + total];
        let (hdr, body) = msg.split_at(hdr_len);
        let hdr = String::from_utf8_lossy(hdr);
        let encoding = hdr
            .lines()
            .find_map(|l| l.strip_prefix("Content-Encoding: "))
            .map(str::to_string);
        let plain = match encoding.as_deref() {
            Some("gzip") => {
                let mut v = Vec::new();
                flate2::read::GzDecoder::new(body).read_to_end(&mut v).expect("gzip");
                v
            }
            Some("snappy") => {
                let mut d = petrel::compress::Deframer::default();
                d.push(body);
                let mut v = Vec::new();
                while d.decode(&mut v, usize::MAX).expect("snappy") {}
                v
            }
            _ => body.to_vec(),
        };
        let event: Value = serde_json::from_slice(&plain).unwrap_or_else(|e| panic!("{enc}: {e}"));
        out.push((encoding, comparable(event)));
    }
    out
}

/// Trace events are compressed as the traced message's `Accept-Encoding`
/// asks, as nats-server compresses them: `snappy`/`s2`, `gzip`, else
/// `identity`.
#[test]
fn trace_events_are_compressed_as_the_message_accepts() {
    let (ours, theirs) = both("server_name: srv\n", &["--shards", "2"]);
    let encodings = ["gzip", "snappy", "S2", "br"];
    let a = encoded_events(&ours, &encodings);
    let b = encoded_events(&theirs, &encodings);
    let names: Vec<Option<&str>> = b.iter().map(|(e, _)| e.as_deref()).collect();
    assert_eq!(names, [Some("gzip"), Some("snappy"), Some("snappy"), Some("identity")]);
    assert_eq!(a, b);
}
