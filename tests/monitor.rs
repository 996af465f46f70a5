//! HTTP monitoring as client harnesses use it: `-m` on a random port,
//! `/varz` polled for readiness and read for message counts, `/healthz`,
//! and the ports file's monitoring entry.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::raw::Raw;

fn get(addr: &str, path: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

#[test]
fn varz_counts_and_healthz() {
    let p = common::petrel(&["--shards", "2", "-m", "-1"]);
    let http = format!("127.0.0.1:{}", p.monitor_port());
    let (status, head, body) = get(&http, "/healthz");
    assert_eq!(status, 200);
    assert!(head.contains("Content-Type: application/json") && head.contains("Access-Control-Allow-Origin: *"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["status"],
        "ok"
    );

    let mut sub = Raw::open(&p.addr());
    sub.send(b"CONNECT {\"verbose\":false}\r\nSUB v 1\r\n");
    assert_eq!(sub.ping(), "");
    let mut publisher = Raw::open(&p.addr());
    publisher.send(b"CONNECT {\"verbose\":false}\r\n");
    for _ in 0..10 {
        publisher.send(b"PUB v 5\r\nhello\r\n");
    }
    assert_eq!(publisher.ping(), "");
    // Another shard's deliveries may land after the subscriber's own PONG
    // (only a client's own subscriptions are ordered by its PING).
    let mut got = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while got < 10 && std::time::Instant::now() < deadline {
        got += sub.ping().matches("MSG v 1 5").count();
    }
    assert_eq!(got, 10);
    let (status, _, body) = get(&http, "/varz");
    assert_eq!(status, 200);
    assert!(body.contains("\n  \"server_id\""), "pretty-printed with two spaces");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["in_msgs"], 10);
    assert_eq!(v["in_bytes"], 50);
    assert_eq!(v["out_msgs"], 10);
    assert_eq!(v["connections"], 2);
    assert_eq!(v["subscriptions"], 1);
    assert_eq!(v["max_payload"], 1048576);
    assert_eq!(v["port"], p.port);
    assert!(v["server_id"].as_str().unwrap().starts_with('N'));
    assert!(v["mem"].as_u64().unwrap() > 0);
    assert_eq!(get(&http, "/nope").0, 404);

    // /connz: both connections, from both shards, with their counts.
    let (status, _, body) = get(&http, "/connz?subs=1");
    assert_eq!(status, 200);
    let c: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(c["num_connections"], 2);
    assert_eq!(c["total"], 2);
    assert_eq!(c["limit"], 1024);
    let conns = c["connections"].as_array().unwrap();
    let s = conns.iter().find(|x| x["subscriptions"] == 1).expect("the subscriber");
    assert_eq!(s["subscriptions_list"], serde_json::json!(["v"]));
    assert_eq!(s["out_msgs"], 10);
    assert_eq!(s["out_bytes"], 50);
    let p2 = conns.iter().find(|x| x["subscriptions"] == 0).expect("the publisher");
    assert_eq!(p2["in_msgs"], 10);
    assert_eq!(p2["in_bytes"], 50);
    assert_eq!(p2["ip"], "127.0.0.1");
    assert!(conns[0]["cid"].as_u64() < conns[1]["cid"].as_u64(), "sorted by cid");
    let (_, _, body) = get(&http, &format!("/connz?cid={}", p2["cid"]));
    let one: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(one["connections"].as_array().unwrap().len(), 1);
    let (status, _, body) = get(&http, "/connz?sort=bogus");
    assert_eq!((status, body.as_str()), (400, "invalid sorting option: bogus"));
    let (status, _, body) = get(&http, "/connz?subs=maybe");
    assert_eq!(status, 400);
    assert!(body.starts_with("Error decoding boolean for 'subs'"), "{body}");
}

/// What the monitor answers to a request it cannot read, and when, on
/// both servers: an HTTP/0.9 or garbage request line gets `400 Bad
/// Request` at once; a head trickled a byte at a time is cut off 5 s after
/// the connection opened, without an answer.
#[test]
fn unreadable_requests_match_nats_server() {
    fn answer(port: u16, parts: &[&[u8]], gap: Duration) -> (String, Duration) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let t = std::time::Instant::now();
        for p in parts {
            let _ = s.write_all(p);
            std::thread::sleep(gap);
        }
        s.set_read_timeout(Some(Duration::from_secs(12))).unwrap();
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        (String::from_utf8_lossy(&resp).into_owned(), t.elapsed())
    }
    let petrel = common::petrel(&["-m", "-1"]);
    let nats = common::nats_server(&["-m", "-1"]);
    let ports = [petrel.monitor_port(), nats.monitor_port()];
    for req in [&b"GET /varz\r\n"[..], b"GET /varz\r\n\r\n", b"HELLO\r\n"] {
        let [(ours, t), (theirs, _)] = ports.map(|p| answer(p, &[req], Duration::ZERO));
        assert_eq!(ours, theirs, "{req:?}");
        assert!(ours.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{ours}");
        assert!(t < Duration::from_secs(2), "{req:?} answered at once: {t:?}");
    }
    // Slowloris: a head trickled a byte a second is cut off 5 s after the
    // connection opened: answered 400 while the request line is unfinished,
    // closed without a word after it; a silent connection is closed too.
    let line: Vec<&[u8]> = b"GET /var".chunks(1).collect();
    let headers: [&[u8]; 2] = [b"GET /varz HTTP/1.1\r\n", b"Host: x\r\n"];
    let cases: [(&[&[u8]], Duration); 3] = [
        (&line, Duration::from_millis(1000)),
        (&headers, Duration::from_millis(3000)),
        (&[], Duration::ZERO),
    ];
    for (parts, gap) in cases {
        let [(ours, t), (theirs, _)] = ports.map(|p| answer(p, parts, gap));
        assert_eq!(ours, theirs, "{parts:?}");
        assert!(
            t >= Duration::from_millis(4900) && t < Duration::from_secs(10),
            "{parts:?}: {t:?}"
        );
    }
}

/// Query strings are percent-decoded as nats-server's Go handlers read
/// them: `acc=%24G` names the global account `$G`, `+` is a space.
#[test]
fn query_strings_are_percent_decoded_as_nats_server_decodes_them() {
    let petrel = common::petrel(&["--shards", "2", "-m", "-1"]);
    let nats = common::nats_server(&["-m", "-1"]);
    let mut clients = Vec::new();
    for p in [&petrel, &nats] {
        let mut c = Raw::open(&p.addr());
        c.send(b"CONNECT {\"verbose\":false,\"name\":\"a b\"}\r\nSUB x 1\r\n");
        assert_eq!(c.ping(), "");
        clients.push(c);
    }
    for (path, key, want) in [
        ("/connz?acc=%24G", "num_connections", 1),
        ("/connz?acc=$G", "num_connections", 1),
        ("/connz?acc=%24X", "num_connections", 0),
        ("/subsz?subs=1&test=x", "num_matches", 1),
        ("/subsz?subs=1&test=%78", "num_matches", 1),
    ] {
        for p in [&petrel, &nats] {
            let (status, body) = common::http_get(p.monitor_port(), path);
            assert_eq!(status, 200, "{path}: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let got = if key == "num_matches" {
                v["subscriptions_list"].as_array().map_or(0, Vec::len) as u64
            } else {
                v[key].as_u64().unwrap()
            };
            assert_eq!(got, want, "{path} on port {}: {body}", p.port);
        }
    }
}

/// Bad and edge query values get nats-server's answers: Go's `strconv`
/// errors word for word (first bad parameter in nats-server's order),
/// negative offsets and non-positive limits as their defaults, an unknown
/// account's empty CONNZ, `/ipqueuesz` and `/raftz` as nats-server answers
/// them without JetStream.
#[test]
fn bad_query_values_get_nats_server_answers() {
    let petrel = common::petrel(&["-m", "-1"]);
    let nats = common::nats_server(&["-m", "-1"]);
    let mut wrong = Vec::new();
    for path in [
        "/connz?limit=abc",
        "/connz?limit=99999999999999999999",
        "/connz?offset=-3&limit=0",
        "/connz?cid=abc",
        "/connz?cid=+1",
        "/connz?state=bogus",
        "/connz?state=CLOSED",
        "/connz?subs=x",
        "/connz?auth=2&subs=x",
        "/connz?acc=NOPE",
        "/subsz?limit=x",
        "/subsz?subs=yes",
        "/subsz?test=a.*",
        "/ipqueuesz",
        "/raftz",
    ] {
        let comparable = |p: &common::Proc| {
            let (status, body) = common::http_get(p.monitor_port(), path);
            match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(serde_json::Value::Object(mut m)) => {
                    m.remove("now");
                    if m.get("server_id").is_some_and(|v| v != "") {
                        m.insert("server_id".into(), "ID".into());
                    }
                    (status, serde_json::Value::Object(m).to_string())
                }
                _ => (status, body),
            }
        };
        let (ours, theirs) = (comparable(&petrel), comparable(&nats));
        if ours != theirs {
            wrong.push(format!("{path}\n  petrel:      {ours:?}\n  nats-server: {theirs:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// `/metrics` offers prometheus-nats-exporter's names (`gnatsd_varz_*`,
/// `gnatsd_subsz_*`, `gnatsd_routez_*`: every top-level number of the
/// document, labelled with the server id), so dashboards built on the
/// exporter read petrel directly: each number nats-server's `/varz` has
/// and petrel's has too is there, with petrel's value.
#[test]
fn metrics_offer_the_exporters_gnatsd_names() {
    let petrel = common::petrel(&["--shards", "2", "-m", "-1", "-n", "P1"]);
    let nats = common::nats_server(&["-m", "-1"]);
    let mut c = Raw::open(&petrel.addr());
    c.send(b"CONNECT {\"verbose\":false}\r\nSUB a 1\r\n");
    assert_eq!(c.ping(), "");
    let (_, theirs) = common::http_get(nats.monitor_port(), "/varz");
    let theirs: serde_json::Value = serde_json::from_str(&theirs).unwrap();
    let (_, ours) = common::http_get(petrel.monitor_port(), "/varz");
    let ours: serde_json::Value = serde_json::from_str(&ours).unwrap();
    let (status, metrics) = common::http_get(petrel.monitor_port(), "/metrics");
    assert_eq!(status, 200);
    let id = ours["server_id"].as_str().unwrap();
    let mut checked = 0;
    for (k, v) in theirs.as_object().unwrap() {
        if !v.is_number() || !ours[k].is_number() {
            continue;
        }
        let line = format!("gnatsd_varz_{k}{{server_id=\"{id}\"}} ");
        assert!(metrics.contains(&format!("# TYPE gnatsd_varz_{k} gauge\n")), "{k}");
        assert!(metrics.contains(&line), "no {line} in /metrics");
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} numbers in common");
    assert!(metrics.contains(&format!("gnatsd_varz_connections{{server_id=\"{id}\"}} 1\n")));
    assert!(metrics.contains(&format!(
        "gnatsd_varz_server_name{{server_id=\"{id}\",value=\"P1\"}} 1\n"
    )));
    assert!(metrics.contains(&format!("gnatsd_subsz_num_subscriptions{{server_id=\"{id}\"}} 1\n")));
    assert!(metrics.contains(&format!("gnatsd_routez_num_routes{{server_id=\"{id}\"}} 0\n")));
}

/// `config_digest` in `/varz`: SHA-256 of the parsed file as nats-server
/// computes it (Go's JSON of the parsed map), the same on both servers
/// for the same file, with includes, variables, sizes and escaped text.
#[test]
fn config_digest_is_nats_servers() {
    let dir = common::jwt::temp_dir();
    std::fs::write(
        dir.join("inc.conf"),
        "max_pending: 10MB\nlame_duck_grace_period: \"5s\"\n",
    )
    .unwrap();
    let files = [
        "server_name: \"srv<1>&x\"\n",
        "# a comment\nLIMIT = 42\nmax_connections: $LIMIT\nmax_payload: 2MB\nping_interval: \"2m\"\ndebug: false\n\
         authorization {\n  users = [\n    {user: a, password: \"p w\"}\n    {user: b, password: \"x&y<z>\"}\n  ]\n}\n\
         include 'inc.conf'\nlame_duck_duration: \"30s\"\n",
    ];
    for (i, text) in files.iter().enumerate() {
        let conf = dir.join(format!("digest{i}.conf"));
        std::fs::write(&conf, text).unwrap();
        let c = conf.to_str().unwrap();
        let digests: Vec<String> = [
            common::petrel(&["-c", c, "-m", "-1"]),
            common::nats_server(&["-c", c, "-m", "-1"]),
        ]
        .iter()
        .map(|p| {
            let (_, body) = common::http_get(p.monitor_port(), "/varz");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            v["config_digest"].as_str().unwrap().to_string()
        })
        .collect();
        assert!(digests[1].starts_with("sha256:"), "{digests:?}");
        assert_eq!(digests[0], digests[1], "file {i}");
    }
}

/// Monitoring documents list their fields in nats-server's order (the
/// fields both have), as a tool reading the raw text sees them.
#[test]
fn documents_keep_nats_servers_field_order() {
    let petrel = common::petrel(&["--shards", "2", "-m", "-1"]);
    let nats = common::nats_server(&["-m", "-1"]);
    for path in [
        "/varz",
        "/connz",
        "/subsz",
        "/routez",
        "/leafz",
        "/accountz",
        "/gatewayz",
        "/jsz",
    ] {
        let keys = |port: u16| -> Vec<String> {
            let (_, body) = common::http_get(port, path);
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            v.as_object().unwrap().keys().cloned().collect()
        };
        let (ours, theirs) = (keys(petrel.monitor_port()), keys(nats.monitor_port()));
        let common_theirs: Vec<&String> = theirs.iter().filter(|k| ours.contains(k)).collect();
        let common_ours: Vec<&String> = ours.iter().filter(|k| theirs.contains(k)).collect();
        assert!(common_ours.len() >= 4, "{path}");
        assert_eq!(common_ours, common_theirs, "{path}");
    }
}

/// `max_closed_clients` bounds what `connz?state=closed` remembers, on
/// both servers.
#[test]
fn max_closed_clients_bounds_the_closed_list() {
    let dir = common::jwt::temp_dir();
    let conf = dir.join("closed.conf");
    std::fs::write(&conf, "max_closed_clients: 2\n").unwrap();
    let c = conf.to_str().unwrap();
    for (name, p) in [
        ("petrel", common::petrel(&["-c", c, "-m", "-1"])),
        ("nats-server", common::nats_server(&["-c", c, "-m", "-1"])),
    ] {
        for _ in 0..4 {
            let mut r = common::raw::Raw::open(&p.addr());
            r.send(b"CONNECT {\"verbose\":false}\r\n");
            assert_eq!(r.ping(), "");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let closed = loop {
            let (_, body) = common::http_get(p.monitor_port(), "/connz?state=closed");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let n = v["connections"].as_array().map_or(0, Vec::len);
            if n >= 2 || std::time::Instant::now() > deadline {
                break v;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        // Let the other two closes land, then count again.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let (_, body) = common::http_get(p.monitor_port(), "/connz?state=closed");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["connections"].as_array().map_or(0, Vec::len),
            2,
            "{name}: {v} (first look {closed})"
        );
        assert_eq!(v["total"], 2, "{name}: {v}");
    }
}

/// Replies to a `$SYS` request sent by a system user, parsed.
fn sys_replies(addr: &str, subject: &str, body: &str) -> Vec<serde_json::Value> {
    let mut r = common::raw::Raw::open(addr);
    r.send(b"CONNECT {\"verbose\":false,\"user\":\"sys\",\"pass\":\"sys\"}\r\nSUB _INBOX.t 1\r\n");
    assert_eq!(r.ping(), "");
    let text = r
        .exchange(format!("PUB {subject} _INBOX.t {}\r\n{body}\r\n", body.len()).as_bytes())
        .text();
    let mut out = Vec::new();
    let mut lines = text.split("\r\n");
    while let Some(l) = lines.next() {
        if l.starts_with("MSG _INBOX.t") {
            out.push(serde_json::from_str(lines.next().unwrap_or_default()).unwrap());
        }
    }
    out
}

/// `server_tags` and `server_metadata` show in varz and in the `server`
/// block of system replies, and request filters select by tag, as on
/// nats-server.
#[test]
fn server_tags_and_metadata_match_nats_server() {
    let dir = common::jwt::temp_dir();
    let conf = dir.join("tags.conf");
    std::fs::write(
        &conf,
        "server_tags: [\"Region:EU\", \" x \", \"x\", \"\"]\nserver_metadata: { b: \"two\", a: \"1\" }\n\
         accounts { SYS { users [{user: sys, password: sys}] } }\nsystem_account: SYS\n",
    )
    .unwrap();
    let c = conf.to_str().unwrap();
    let mut seen = Vec::new();
    for (name, p) in [
        ("petrel", common::petrel(&["-c", c, "-m", "-1"])),
        ("nats-server", common::nats_server(&["-c", c, "-m", "-1"])),
    ] {
        let (_, body) = common::http_get(p.monitor_port(), "/varz");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let ping = sys_replies(&p.addr(), "$SYS.REQ.SERVER.PING.VARZ", "{}");
        assert_eq!(ping.len(), 1, "{name}: {ping:?}");
        let block = &ping[0]["server"];
        let hits: Vec<usize> = [
            r#"{"tags":["x"]}"#,
            r#"{"tags":["x","Region:EU"]}"#,
            r#"{"tags":["nope"]}"#,
        ]
        .iter()
        .map(|f| sys_replies(&p.addr(), "$SYS.REQ.SERVER.PING.VARZ", f).len())
        .collect();
        seen.push((
            v["tags"].clone(),
            v["metadata"].clone(),
            block["tags"].clone(),
            block["metadata"].clone(),
            hits,
        ));
    }
    eprintln!("petrel, nats-server: {seen:?}");
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0].4, [1, 1, 0]);
}

/// `http_base_path` moves every endpoint under it; the status of each
/// path, and varz's `http_base_path`, as nats-server gives them.
#[test]
fn http_base_path_matches_nats_server() {
    let dir = common::jwt::temp_dir();
    let conf = dir.join("base.conf");
    std::fs::write(&conf, "http_base_path: \"nats//x/../\"\n").unwrap();
    let c = conf.to_str().unwrap();
    let paths = [
        "/nats/varz",
        "/varz",
        "/nats",
        "/nats/",
        "/nats/connz?limit=1",
        "/natsvarz",
        "/nats/nope",
        "/",
    ];
    let mut seen = Vec::new();
    for p in [
        common::petrel(&["-c", c, "-m", "-1"]),
        common::nats_server(&["-c", c, "-m", "-1"]),
    ] {
        let codes: Vec<u16> = paths
            .iter()
            .map(|path| common::http_get(p.monitor_port(), path).0)
            .collect();
        let (_, body) = common::http_get(p.monitor_port(), "/nats/varz");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        seen.push((codes, v["http_base_path"].clone()));
    }
    eprintln!("{seen:?}");
    assert_eq!(seen[0], seen[1], "petrel, then nats-server, for {paths:?}");
    assert_eq!(seen[0].0[0], 200);
}

/// Polls `path` until `ok` holds for its JSON (or 10 s pass); returns the last.
fn poll_json(port: u16, path: &str, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = common::http_get(port, path);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if ok(&v) || std::time::Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The buffer memory of the connection named `name` in a connz document.
fn conn_buffers(connz: &serde_json::Value, name: &str) -> u64 {
    connz["connections"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == name))
        .and_then(|c| c["petrel_buffer_bytes"].as_u64())
        .unwrap_or(0)
}

/// Beyond nats-server: connz shows what each connection's buffers hold,
/// varz (and STATSZ, and /metrics) each shard's, and both follow the load:
/// a half-sent 600 KB PUB holds its read buffer until it is finished; a
/// subscriber that stopped reading holds its queue until it goes.
#[test]
fn buffer_memory_is_visible_and_follows_the_load() {
    let p = common::petrel(&["--shards", "1", "-m", "-1"]);
    let port = p.monitor_port();
    let shard_buffers = |v: &serde_json::Value| v["petrel_shards"][0]["buffer_bytes"].as_u64().unwrap_or(0);
    let idle = poll_json(port, "/varz", |v| v["petrel_shards"][0]["buffer_bytes"].is_u64());
    let baseline = shard_buffers(&idle);
    assert!(baseline < 256 * 1024, "{idle}");

    // A PUB whose payload is still arriving.
    let mut half = Raw::open(&p.addr());
    half.send(b"CONNECT {\"verbose\":false,\"name\":\"half\"}\r\n");
    assert_eq!(half.ping(), "");
    half.send(b"PUB big 1000000\r\n");
    half.send(&vec![b'x'; 600_000]);
    let connz = poll_json(port, "/connz", |v| conn_buffers(v, "half") >= 600_000);
    assert!(conn_buffers(&connz, "half") >= 600_000, "{connz}");
    half.send(&vec![b'x'; 400_000]);
    half.send(b"\r\n");
    assert_eq!(half.ping(), "");
    let connz = poll_json(port, "/connz", |v| conn_buffers(v, "half") < 100_000);
    assert!(
        conn_buffers(&connz, "half") < 100_000,
        "given back once consumed: {connz}"
    );

    // A subscriber that does not read: its queue is what it holds.
    let mut stuck = Raw::open(&p.addr());
    stuck.send(b"CONNECT {\"verbose\":false,\"name\":\"stuck\"}\r\nSUB q 1\r\n");
    assert_eq!(stuck.ping(), "");
    let mut publisher = Raw::open(&p.addr());
    publisher.send(b"CONNECT {\"verbose\":false}\r\n");
    let msg = [b"PUB q 65536\r\n".as_slice(), &[b'y'; 65536], b"\r\n"].concat();
    for _ in 0..400 {
        publisher.send(&msg);
    }
    assert_eq!(publisher.ping(), "");
    let connz = poll_json(port, "/connz", |v| conn_buffers(v, "stuck") > 8 << 20);
    let held = conn_buffers(&connz, "stuck");
    let stuck_conn = connz["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "stuck")
        .unwrap();
    assert!(held > 8 << 20, "{connz}");
    assert!(held >= stuck_conn["pending_bytes"].as_u64().unwrap(), "{stuck_conn}");
    let varz = poll_json(port, "/varz", |v| shard_buffers(v) >= held);
    assert!(shard_buffers(&varz) >= held, "{varz}");
    let (_, metrics) = common::http_get(port, "/metrics");
    let gauge: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("petrel_buffer_bytes "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(gauge > 8 << 20, "{metrics}");

    drop(stuck);
    let varz = poll_json(port, "/varz", |v| shard_buffers(v) < baseline + (1 << 20));
    assert!(
        shard_buffers(&varz) < baseline + (1 << 20),
        "given back when it closed: {varz}"
    );
    // The pool keeps at most 64 chunks of up to 256 KiB.
    assert!(
        varz["petrel_shards"][0]["pool_bytes"].as_u64().unwrap() <= 64 * 256 * 1024,
        "{varz}"
    );
}

/// varz `http_req_stats` counts what nats-server counts: each endpoint
/// served (an unknown path is not), `/varz` its own request included.
#[test]
fn http_req_stats_match_nats_server() {
    let mut seen = Vec::new();
    for p in [common::petrel(&["-m", "-1"]), common::nats_server(&["-m", "-1"])] {
        for path in [
            "/",
            "/connz",
            "/routez",
            "/subsz",
            "/subscriptionsz",
            "/accountz",
            "/connz?subs=1",
            "/healthz",
            "/leafz",
            "/gatewayz",
            "/accstatz",
            "/nonexistent",
            "/varz",
        ] {
            common::http_get(p.monitor_port(), path);
        }
        let (_, body) = common::http_get(p.monitor_port(), "/varz");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        seen.push(v["http_req_stats"].clone());
    }
    assert_eq!(seen[0], seen[1], "petrel, then nats-server");
    assert_eq!(seen[0]["/varz"], 2, "{}", seen[0]);
}

/// `/accountz?acc=` lists mappings, exports and imports as nats-server
/// does (as sets: nats-server's come from Go maps, in no fixed order;
/// services with their response types).
#[test]
fn accountz_lists_exchanges_as_nats_server_does() {
    let dir = common::jwt::temp_dir();
    let conf = dir.join("exchanges.conf");
    std::fs::write(
        &conf,
        r#"
accounts {
  A: {
    users: [{user: a, password: a}]
    exports: [{stream: "s.>"}, {service: "svc.*"}, {service: "chunks.*", response: chunked}, {stream: "priv.>", accounts: [B]}]
    mappings: { "m.in": "m.out", "w.*": [{dest: "w.a.$1", weight: 40%}, {dest: "w.b.$1", weight: 60%}], "half": {dest: "other", weight: 50%} }
  }
  B: {
    users: [{user: b, password: b}]
    imports: [
      {stream: {account: A, subject: "s.>"}, prefix: "fromA"}
      {stream: {account: A, subject: "priv.>"}}
      {service: {account: A, subject: "svc.x"}, to: "local.x"}
      {service: {account: A, subject: "svc.y"}}
    ]
  }
}
mappings { "g.in": "g.out" }
"#,
    )
    .unwrap();
    let c = conf.to_str().unwrap();
    let detail = common::account_exchanges;
    let p = common::petrel(&["-c", c, "-m", "-1"]);
    let n = common::nats_server(&["-c", c, "-m", "-1"]);
    for acc in ["A", "B", "%24G", "%24SYS"] {
        let (ours, theirs) = (detail(p.monitor_port(), acc), detail(n.monitor_port(), acc));
        assert!(ours["imports"].as_array().is_some_and(|l| !l.is_empty()), "{ours}");
        if acc == "%24SYS" {
            // nats-server also exports $SYS.DEBUG.SUBSCRIBERS, which petrel
            // does not serve.
            let mut theirs = theirs.clone();
            theirs["exports"]
                .as_array_mut()
                .unwrap()
                .retain(|e| !e.as_str().unwrap().contains("DEBUG.SUBSCRIBERS"));
            assert_eq!(ours, theirs, "{acc}");
        } else {
            assert_eq!(ours, theirs, "{acc}");
        }
    }
}

/// `/healthz` answers as nats-server without JetStream does: ok for the
/// JetStream options, a bad request for a stream without its account or
/// a consumer without its stream (with `details`, as a typed list), Go's
/// text for a boolean it cannot read; the status code and body byte for
/// byte, and warnings for failed checks.
#[test]
fn healthz_options_match_nats_server() {
    let queries = [
        "",
        "?js-enabled-only=true",
        "?js-server-only=T",
        "?js-meta-only=1",
        "?js-enabled=true",
        "?details=true",
        "?stream=x",
        "?stream=x&details=true",
        "?consumer=c",
        "?consumer=c&details=1",
        "?stream=x&account=a",
        "?account=a&stream=s&consumer=c",
        "?details=abc",
        "?js-enabled-only=yes",
    ];
    let mut seen = Vec::new();
    for p in [common::petrel(&["-m", "-1"]), common::nats_server(&["-m", "-1"])] {
        let answers: Vec<(u16, String)> = queries
            .iter()
            .map(|q| common::http_get(p.monitor_port(), &format!("/healthz{q}")))
            .collect();
        let warned = p.log_lines("Healthcheck failed").len();
        seen.push((answers, warned));
    }
    for (i, q) in queries.iter().enumerate() {
        assert_eq!(seen[0].0[i], seen[1].0[i], "/healthz{q}: petrel, then nats-server");
    }
    assert_eq!(seen[0].1, seen[1].1, "Healthcheck failed warnings");
    assert_eq!(seen[0].1, 4, "one per failed check");
}
