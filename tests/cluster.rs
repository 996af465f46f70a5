//! Clusters over real route connections, mixed with nats-server 2.15:
//! three-node meshes seeded with one node (the other routes come from
//! gossip) in every mix, with async-nats clients; the system account
//! across a mixed cluster; raw route bytes compared with nats-server; bad
//! peers. Servers are on loopback with random ports.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use futures::StreamExt;
use tokio::time::timeout;

use common::links::{next, WAIT};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Petrel,
    Nats,
}

/// Starts one node of cluster `c1`, seeded with `seed`'s route port.
fn node(kind: Kind, seed: Option<&common::Proc>, extra: &[&str]) -> common::Proc {
    let routes = seed.map(|s| format!("nats://127.0.0.1:{}", s.route_port()));
    let mut args = vec!["--cluster", "nats://127.0.0.1:-1", "--cluster_name", "c1"];
    if let Some(r) = &routes {
        args.extend(["--routes", r.as_str()]);
    }
    args.extend_from_slice(extra);
    match kind {
        Kind::Petrel => common::petrel(&args),
        Kind::Nats => common::nats_server(&args),
    }
}

/// Three nodes, the second and third seeded with the first only.
fn cluster(kinds: [Kind; 3], extra: &[&str]) -> Vec<common::Proc> {
    let first = node(kinds[0], None, extra);
    let second = node(kinds[1], Some(&first), extra);
    let third = node(kinds[2], Some(&first), extra);
    vec![first, second, third]
}

async fn client(p: &common::Proc) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .connect(p.url())
        .await
        .expect("connect")
}

async fn user_client(p: &common::Proc, user: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), user.into())
        .connect(p.url())
        .await
        .expect("connect")
}

/// Waits until every node's `/routez` names both others, with their
/// system account routes (the mesh is full), then checks that a new
/// client's INFO lists the other servers.
fn full_mesh(nodes: &[common::Proc]) {
    let ids: Vec<String> = nodes
        .iter()
        .map(|n| {
            let (_, body) = common::http_get(n.monitor_port(), "/varz");
            serde_json::from_str::<serde_json::Value>(&body).unwrap()["server_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for (i, n) in nodes.iter().enumerate() {
        let deadline = Instant::now() + WAIT;
        loop {
            let (_, body) = common::http_get(n.monitor_port(), "/routez");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            // Whole means every peer's dedicated system account route too
            // (pools come up one connection at a time): what the system
            // account says, such as connection counts, reaches every peer.
            let remotes: std::collections::BTreeSet<String> = v["routes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["account"].is_string())
                .map(|r| r["remote_id"].as_str().unwrap().to_string())
                .collect();
            let others: std::collections::BTreeSet<String> = ids
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, id)| id.clone())
                .collect();
            if remotes == others {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i}: routez names {remotes:?}, not {others:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Shards take the peers' client URLs into their INFO from their
        // own poll loops: a client that comes right after may be early.
        loop {
            let c = common::raw::Raw::open(&n.addr());
            let urls: Vec<String> = c.info()["connect_urls"]
                .as_array()
                .map(|a| a.iter().map(|u| u.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            let missing: Vec<String> = nodes
                .iter()
                .enumerate()
                .filter(|(j, other)| *j != i && !urls.contains(&other.addr()))
                .map(|(_, other)| other.addr())
                .collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i}: connect_urls {urls:?} lacks {missing:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `n` messages from every client to every other, each run in order,
/// once its subscription's interest has crossed.
async fn every_pair_in_order(clients: &[async_nats::Client], prefix: &str, n: usize, what: &str) {
    for (i, from) in clients.iter().enumerate() {
        for (j, to) in clients.iter().enumerate() {
            if i == j {
                continue;
            }
            let subject = format!("{prefix}.{i}.{j}");
            let mut sub = to.subscribe(subject.clone()).await.unwrap();
            common::links::await_crossing(from, &mut sub, &subject).await;
            for k in 0..n {
                from.publish(subject.clone(), k.to_string().into()).await.unwrap();
            }
            from.flush().await.unwrap();
            for k in 0..n {
                assert_eq!(next(&mut sub).await.payload, k.to_string(), "{what}: {i}->{j} in order");
            }
        }
    }
}

async fn mesh_behaves(kinds: [Kind; 3]) {
    let nodes = cluster(kinds, &["-m", "-1"]);
    full_mesh(&nodes);
    let mut clients = Vec::new();
    for n in &nodes {
        clients.push(client(n).await);
    }
    // Every ordered pair carries 1000 messages in order.
    every_pair_in_order(&clients, "pair", 1000, &format!("{kinds:?}")).await;
    // Wildcards and headers cross routes.
    let mut wild = clients[2].subscribe("wild.*.>").await.unwrap();
    common::links::await_crossing(&clients[0], &mut wild, "wild.probe.x").await;
    let mut headers = HeaderMap::new();
    headers.insert("X-Petrel", "yes");
    clients[0]
        .publish_with_headers("wild.a.b.c", headers, "h".into())
        .await
        .unwrap();
    clients[0].flush().await.unwrap();
    let m = next(&mut wild).await;
    assert_eq!(m.subject.as_str(), "wild.a.b.c");
    assert_eq!(m.headers.unwrap().get("X-Petrel").unwrap().as_str(), "yes");

    // A queue group with members on the two other servers: exactly once.
    let mut m1 = clients[1].queue_subscribe("work", "q".into()).await.unwrap();
    let mut m2 = clients[2].queue_subscribe("work", "q".into()).await.unwrap();
    let mut watch1 = clients[1].subscribe("work").await.unwrap();
    let mut watch2 = clients[2].subscribe("work").await.unwrap();
    common::links::await_crossing(&clients[0], &mut watch1, "work").await;
    common::links::await_crossing(&clients[0], &mut watch2, "work").await;
    // The probes above went to the group too: drain them.
    while let Ok(Some(_)) = timeout(Duration::from_millis(300), m1.next()).await {}
    while let Ok(Some(_)) = timeout(Duration::from_millis(300), m2.next()).await {}
    for k in 0..200 {
        clients[0].publish("work", k.to_string().into()).await.unwrap();
    }
    clients[0].flush().await.unwrap();
    let mut seen = vec![0u32; 200];
    let deadline = Instant::now() + WAIT;
    while seen.iter().sum::<u32>() < 200 && Instant::now() < deadline {
        tokio::select! {
            Some(m) = m1.next() => seen[std::str::from_utf8(&m.payload).unwrap().parse::<usize>().unwrap()] += 1,
            Some(m) = m2.next() => seen[std::str::from_utf8(&m.payload).unwrap().parse::<usize>().unwrap()] += 1,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(Some(m)) = timeout(Duration::from_millis(50), m1.next()).await {
        seen[std::str::from_utf8(&m.payload).unwrap().parse::<usize>().unwrap()] += 1;
    }
    while let Ok(Some(m)) = timeout(Duration::from_millis(50), m2.next()).await {
        seen[std::str::from_utf8(&m.payload).unwrap().parse::<usize>().unwrap()] += 1;
    }
    assert!(
        seen.iter().all(|&n| n == 1),
        "{kinds:?}: each queued message exactly once: {seen:?}"
    );

    // Request/reply across servers, and no responders.
    let mut svc = clients[2].subscribe("svc").await.unwrap();
    common::links::await_crossing(&clients[0], &mut svc, "svc").await;
    let responder = clients[2].clone();
    tokio::spawn(async move {
        while let Some(m) = svc.next().await {
            if let Some(r) = m.reply {
                responder.publish(r, "pong".into()).await.unwrap();
                responder.flush().await.unwrap();
            }
        }
    });
    let reply = timeout(WAIT, clients[0].request("svc", "ping".into()))
        .await
        .expect("in time")
        .expect("a reply across routes");
    assert_eq!(reply.payload, "pong");
    let err = timeout(WAIT, clients[1].request("nobody.home", "x".into()))
        .await
        .expect("in time")
        .expect_err("no responders");
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders);
}

#[tokio::test]
async fn petrel_nats_petrel_mesh() {
    mesh_behaves([Kind::Petrel, Kind::Nats, Kind::Petrel]).await;
}

#[tokio::test]
async fn nats_petrel_nats_mesh() {
    mesh_behaves([Kind::Nats, Kind::Petrel, Kind::Nats]).await;
}

#[tokio::test]
async fn three_petrels_mesh() {
    mesh_behaves([Kind::Petrel, Kind::Petrel, Kind::Petrel]).await;
}

/// `kill -9` of one node leaves the others serving; a node that rejoins
/// gets the cluster's interest again and its own is announced.
#[tokio::test]
async fn a_killed_node_rejoins_and_interest_is_resynced() {
    let mut nodes = cluster([Kind::Petrel, Kind::Nats, Kind::Petrel], &[]);
    let c0 = client(&nodes[0]).await;
    let c2 = client(&nodes[2]).await;
    let mut sub = c2.subscribe("after").await.unwrap();
    common::links::await_crossing(&c0, &mut sub, "after").await;
    drop(nodes.remove(1)); // SIGKILL
    for k in 0..100 {
        c0.publish("after", k.to_string().into()).await.unwrap();
    }
    c0.flush().await.unwrap();
    for k in 0..100 {
        assert_eq!(next(&mut sub).await.payload, k.to_string());
    }
    // A petrel node joins again, seeded with the first.
    drop(nodes.remove(1));
    let back = node(Kind::Petrel, Some(&nodes[0]), &[]);
    let cb = client(&back).await;
    let mut at_back = cb.subscribe("resync").await.unwrap();
    common::links::await_crossing(&c0, &mut at_back, "resync").await;
    let mut at_first = c0.subscribe("resync2").await.unwrap();
    common::links::await_crossing(&cb, &mut at_first, "resync2").await;
}

const SYS_CONF: &str = "accounts {\n  SYS { users [{user: sys, password: sys}] }\n  APP { users [{user: app, password: app}] }\n}\nsystem_account: SYS\n";

/// `$SYS.REQ.SERVER.PING` gets one answer per server of a mixed cluster,
/// and accounts stay apart across routes.
#[tokio::test]
async fn system_ping_is_answered_by_every_server_and_accounts_cross() {
    let conf = common::jwt::write_conf(SYS_CONF);
    let conf = conf.to_str().unwrap();
    let nodes = cluster([Kind::Petrel, Kind::Nats, Kind::Petrel], &["-c", conf]);
    let a0 = user_client(&nodes[0], "app").await;
    let a1 = user_client(&nodes[1], "app").await;
    let a2 = user_client(&nodes[2], "app").await;
    let mut sub = a2.subscribe("acc.test").await.unwrap();
    common::links::await_crossing(&a0, &mut sub, "acc.test").await;
    // The same subject in another account on the same server: not seen.
    let s1 = user_client(&nodes[1], "sys").await;
    s1.publish("acc.test", "other account".into()).await.unwrap();
    s1.flush().await.unwrap();
    a1.publish("acc.test", "same account".into()).await.unwrap();
    a1.flush().await.unwrap();
    assert_eq!(next(&mut sub).await.payload, "same account");

    let sys = user_client(&nodes[0], "sys").await;
    // Each server's PING service must have crossed the routes: retry until
    // all three answer (petrel's interest reaches nats-server, and back),
    // each counting three active servers.
    let deadline = Instant::now() + WAIT;
    loop {
        let answers = ping_round(&sys).await;
        let ids: std::collections::BTreeSet<&str> =
            answers.iter().map(|v| v["server"]["id"].as_str().unwrap()).collect();
        let active: Vec<u64> = answers
            .iter()
            .map(|v| v["statsz"]["active_servers"].as_u64().unwrap_or(0))
            .collect();
        if ids.len() == 3 && active.iter().all(|&n| n == 3) {
            assert_eq!(answers.len(), 3, "one answer per server");
            // Every server's STATSZ lists its two routes, named after the
            // peers, with the messages sent each way (petrel as nats-server).
            for a in &answers {
                let routes = a["statsz"]["routes"].as_array().expect("routes in STATSZ");
                let names: std::collections::BTreeSet<&str> =
                    routes.iter().map(|r| r["name"].as_str().unwrap()).collect();
                let others: std::collections::BTreeSet<&str> = answers
                    .iter()
                    .map(|b| b["server"]["name"].as_str().unwrap())
                    .filter(|n| *n != a["server"]["name"].as_str().unwrap())
                    .collect();
                assert_eq!(names, others, "{}", a["statsz"]["routes"]);
                assert!(routes
                    .iter()
                    .all(|r| r["rid"].as_u64().is_some() && r["sent"]["msgs"].is_u64()));
                assert!(routes.iter().any(|r| r["received"]["msgs"].as_u64() > Some(0)));
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "answers from {ids:?} only, active_servers {active:?}"
        );
    }
}

/// One round of `$SYS.REQ.SERVER.PING` from a system account user: the
/// answers that come within 700 ms of each other.
async fn ping_round(sys: &async_nats::Client) -> Vec<serde_json::Value> {
    common::links::answers(sys, "$SYS.REQ.SERVER.PING", Duration::from_millis(700)).await
}

/// The JSON message bodies `r` reads until it has been quiet for `quiet`
/// (for `max` at most).
fn json_bodies(r: &mut common::raw::Raw, quiet: Duration, max: Duration) -> Vec<serde_json::Value> {
    r.read_until_quiet(quiet, max)
        .text()
        .split("\r\n")
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A raw peer server: dials `port`, sends CONNECT and INFO, and reads.
struct Peer {
    s: TcpStream,
    got: Vec<u8>,
}

impl Peer {
    fn dial(port: u16, cluster: &str, id: &str, extra: &str) -> Peer {
        Peer::dial_pooled(port, cluster, id, extra, "")
    }

    /// A raw peer whose INFO adds `info_extra` (pool fields).
    fn dial_pooled(port: u16, cluster: &str, id: &str, extra: &str, info_extra: &str) -> Peer {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut p = Peer { s, got: Vec::new() };
        let connect = format!(
            "CONNECT {{\"echo\":true,\"verbose\":false,\"pedantic\":false,\"tls_required\":false,\"headers\":true,\"name\":\"{id}\",\"cluster\":\"{cluster}\"{extra}}}\r\n"
        );
        let info = format!(
            "INFO {{\"server_id\":\"{id}\",\"server_name\":\"{id}\",\"host\":\"127.0.0.1\",\"port\":1,\"headers\":true,\"cluster\":\"{cluster}\"{info_extra}}}\r\n"
        );
        p.send(connect.as_bytes());
        p.send(info.as_bytes());
        p
    }

    fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    /// Reads for `d`, keeping what came.
    fn read_for(&mut self, d: Duration) -> String {
        let end = Instant::now() + d;
        let mut buf = [0u8; 65536];
        while Instant::now() < end {
            match self.s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.got.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        String::from_utf8_lossy(&self.got).into_owned()
    }

    /// Lines received so far that start with `prefix`, sorted.
    fn lines(&self, prefix: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.got);
        let mut v: Vec<String> = text
            .split("\r\n")
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }
}

/// The same raw peer against petrel and nats-server: the interest each
/// announces for its clients, and how each delivers routed messages with
/// and without queue lists.
#[test]
fn route_bytes_match_nats_server() {
    let mut results = Vec::new();
    for kind in [Kind::Petrel, Kind::Nats] {
        let server = node(kind, None, &[]);
        let mut peer = Peer::dial(server.route_port(), "c1", "NPEER", "");
        let info = peer.read_for(Duration::from_millis(300));
        assert!(info.starts_with("INFO {"), "{kind:?}: {info}");
        let mut c = common::raw::Raw::open(&server.addr());
        c.exchange(b"CONNECT {\"verbose\":false}\r\nSUB foo 1\r\nSUB bar q1 2\r\nSUB bar q1 3\r\nSUB baz q2 4\r\nSUB baz 5\r\nPING\r\n");
        peer.read_for(Duration::from_millis(300));
        c.exchange(b"UNSUB 2\r\nUNSUB 1\r\nPING\r\n");
        peer.read_for(Duration::from_millis(300));
        let interest: Vec<String> = peer.lines("RS").into_iter().filter(|l| l.contains(" $G ")).collect();
        peer.send(b"RMSG $G foo 2\r\nm1\r\nRMSG $G bar + rep q1 2\r\nm3\r\nRMSG $G baz | q2 q1 2\r\nm5\r\nRMSG $G baz 2\r\nm6\r\nPING\r\n");
        let pong = peer.read_for(Duration::from_millis(300));
        assert!(pong.contains("PONG\r\n"), "{kind:?}: {pong}");
        let mut delivered: Vec<String> = c
            .exchange(b"PING\r\n")
            .text()
            .split("\r\n")
            .filter(|l| l.starts_with("MSG"))
            .map(str::to_string)
            .collect();
        delivered.sort();
        results.push((interest, delivered));
    }
    assert_eq!(results[0], results[1], "petrel (left) and nats-server (right)");
    // And what that is: plain subjects once, queue weights, and deliveries
    // to the named groups only.
    assert!(
        results[0].0.contains(&"RS+ $G bar q1 2".to_string()),
        "{:?}",
        results[0].0
    );
    assert_eq!(
        results[0].1,
        vec!["MSG bar 3 rep 2", "MSG baz 4 2", "MSG baz 5 2", "MSG baz 5 2"]
    );
}

/// Two servers with petrel in them: both petrel, and petrel first or
/// second beside nats-server.
const PETREL_PAIRS: [(Kind, Kind); 3] = [
    (Kind::Petrel, Kind::Petrel),
    (Kind::Petrel, Kind::Nats),
    (Kind::Nats, Kind::Petrel),
];

/// A raw client of `addr` logged in with `connect`'s fields, past its
/// first PONG.
fn raw_login(addr: &str, connect: &str) -> common::raw::Raw {
    let mut r = common::raw::Raw::open(addr);
    r.exchange(format!("CONNECT {{\"verbose\":false{connect}}}\r\nPING\r\n").as_bytes());
    r
}

/// Publishes to `probe` from `publisher` until `listener` (subscribed to
/// it on another server) gets it: the route carries its interest.
fn until_probe_heard(publisher: &mut common::raw::Raw, listener: &mut common::raw::Raw, kinds: (Kind, Kind)) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        publisher.exchange(b"PUB probe 1\r\nx\r\nPING\r\n");
        if listener.exchange(b"PING\r\n").text().contains("MSG probe") {
            break;
        }
        assert!(Instant::now() < deadline, "{kinds:?}: no route");
    }
}

/// On two servers `kinds` (the second seeded with the first): one member
/// of queue group `q` on the first, two on the second, 1,000 messages
/// published on the first: how many each server's members got.
fn queue_split(kinds: (Kind, Kind)) -> (usize, usize) {
    let a = node(kinds.0, None, &[]);
    let b = node(kinds.1, Some(&a), &[]);
    let mut here = raw_login(&a.addr(), "");
    here.exchange(b"SUB work q 1\r\nPING\r\n");
    let mut there = raw_login(&b.addr(), "");
    there.exchange(b"SUB work q 1\r\nSUB work q 2\r\nPING\r\n");
    let mut publisher = raw_login(&a.addr(), "");
    // Until the second server's members are known on the first: a probe
    // subject only they hear.
    there.exchange(b"SUB probe 3\r\nPING\r\n");
    until_probe_heard(&mut publisher, &mut there, kinds);
    let mut batch = Vec::new();
    for _ in 0..1000 {
        batch.extend_from_slice(b"PUB work 1\r\nx\r\n");
    }
    batch.extend_from_slice(b"PING\r\n");
    publisher.exchange(&batch);
    let count = |r: &mut common::raw::Raw| {
        r.read_until_quiet(Duration::from_millis(300), Duration::from_secs(5))
            .text()
            .matches("MSG work")
            .count()
    };
    (count(&mut here), count(&mut there))
}

/// A queue group with members on two servers shares a client's messages
/// as nats-server shares them: at random across the cluster, each server
/// by its members (the other server's count is its `RS+` weight), so the
/// server with two of the three members gets about two thirds; in every
/// mix of petrel and nats-server.
#[test]
fn queue_members_across_servers_share_as_nats_server_shares() {
    for kinds in std::iter::once((Kind::Nats, Kind::Nats)).chain(PETREL_PAIRS) {
        let (here, there) = queue_split(kinds);
        assert_eq!(here + there, 1000, "{kinds:?}: each message once");
        assert!(
            (550..=780).contains(&there),
            "{kinds:?}: about two thirds to the second server: {here} / {there}"
        );
    }
}

/// A client of account APP on the first of two servers `kinds` (with a
/// client of APP on the second too) asks about its account: for each
/// request, the servers that answered (by name).
fn account_request_answers(kinds: (Kind, Kind)) -> Vec<(String, Vec<String>)> {
    let conf = common::jwt::write_conf(
        "accounts { SYS: { users: [{user: sys, password: sys}] }, APP: { users: [{user: app, password: app}] } }\nsystem_account: SYS\n",
    );
    let c = conf.to_str().unwrap();
    let a = node(kinds.0, None, &["-c", c, "-n", "A"]);
    let b = node(kinds.1, Some(&a), &["-c", c, "-n", "B"]);
    let app = ",\"user\":\"app\",\"pass\":\"app\"";
    let mut there = raw_login(&b.addr(), app);
    there.exchange(b"SUB probe 1\r\nPING\r\n");
    let mut here = raw_login(&a.addr(), app);
    here.exchange(b"SUB r.> 1\r\nPING\r\n");
    until_probe_heard(&mut here, &mut there, kinds);
    let mut out = Vec::new();
    for (i, subject) in [
        "$SYS.REQ.ACCOUNT.PING.CONNZ",
        "$SYS.REQ.SERVER.PING.CONNZ",
        "$SYS.REQ.ACCOUNT.PING.STATZ",
        "$SYS.REQ.USER.INFO",
    ]
    .iter()
    .enumerate()
    {
        here.send(format!("PUB {subject} r.{i} 0\r\n\r\n").as_bytes());
        let mut servers: Vec<String> = json_bodies(&mut here, Duration::from_millis(700), Duration::from_secs(5))
            .iter()
            .map(|v| v["server"]["name"].as_str().unwrap_or_default().to_string())
            .collect();
        servers.sort();
        out.push((subject.to_string(), servers));
    }
    out
}

/// A client's requests about its own account reach every server of the
/// cluster, as nats-server's system imports send them: one CONNZ and one
/// STATZ answer per server, USER.INFO from its own; in every mix.
#[test]
fn account_requests_are_answered_by_every_server_as_nats_server_answers() {
    let reference = account_request_answers((Kind::Nats, Kind::Nats));
    let both = vec!["A".to_string(), "B".to_string()];
    assert_eq!(reference[0].1, both, "{reference:?}");
    assert_eq!(reference[3].1, vec!["A".to_string()], "{reference:?}");
    for kinds in PETREL_PAIRS {
        assert_eq!(account_request_answers(kinds), reference, "{kinds:?}");
    }
}

/// A traced message and a traced-only one to `foo`, which a raw peer
/// announcing protocol `proto` in its INFO (`None`: no level, an old
/// server) is interested in: the route egress events the tracer gets
/// (error and hop) and the messages the peer receives.
fn trace_to_peer(kind: Kind, proto: Option<u32>) -> (Vec<String>, Vec<String>) {
    let server = node(kind, None, &[]);
    let info_extra = proto.map(|p| format!(",\"proto\":{p}")).unwrap_or_default();
    let mut peer = Peer::dial_pooled(server.route_port(), "c1", "NPEER", "", &info_extra);
    peer.read_for(Duration::from_millis(300));
    peer.send(b"RS+ $G foo\r\nPING\r\n");
    assert!(peer.read_for(Duration::from_millis(300)).contains("PONG"), "{kind:?}");
    let mut tracer = common::raw::Raw::open(&server.addr());
    tracer.exchange(b"CONNECT {\"verbose\":false,\"headers\":true}\r\nSUB trace.dest 1\r\nPING\r\n");
    let mut publisher = common::raw::Raw::open(&server.addr());
    let hdr = |extra: &str| format!("NATS/1.0\r\nNats-Trace-Dest: trace.dest\r\n{extra}\r\n");
    let (one, two) = (hdr(""), hdr("Nats-Trace-Only: true\r\n"));
    publisher.exchange(
        format!(
            "CONNECT {{\"verbose\":false,\"headers\":true}}\r\nHPUB foo {} {}\r\n{one}m1\r\nHPUB foo {} {}\r\n{two}m2\r\nPING\r\n",
            one.len(),
            one.len() + 2,
            two.len(),
            two.len() + 2
        )
        .as_bytes(),
    );
    let mut egresses: Vec<String> = json_bodies(&mut tracer, Duration::from_millis(300), Duration::from_secs(3))
        .iter()
        .flat_map(|v| v["events"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["type"] == "eg" && e["kind"] == 1)
        .map(|e| format!("hop={} error={}", e["hop"], e["error"]))
        .collect();
    egresses.sort();
    peer.read_for(Duration::from_millis(300));
    let got: Vec<String> = peer
        .lines("")
        .into_iter()
        .filter(|l| {
            l.starts_with("HMSG") || l.starts_with("RMSG") || l.starts_with("Nats-Trace-Hop") || l == "m1" || l == "m2"
        })
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .collect();
    (egresses, got)
}

/// A route peer that does not announce protocol 3 does not understand
/// message tracing: as nats-server, a traced message still goes to it
/// with its egress saying no event will come from there, a traced-only
/// one does not (it would be delivered); a peer at protocol 3 gets both.
#[test]
fn traces_to_a_peer_without_tracing_match_nats_server() {
    for proto in [None, Some(3)] {
        let ours = trace_to_peer(Kind::Petrel, proto);
        let theirs = trace_to_peer(Kind::Nats, proto);
        assert_eq!(ours, theirs, "proto {proto:?}: petrel (left) and nats-server (right)");
        assert_eq!(ours.0.len(), 2, "{ours:?}");
        if proto.is_none() {
            assert!(ours.0.iter().any(|e| e.contains("remote does not support")), "{ours:?}");
            assert!(!ours.1.iter().any(|l| l == "m2"), "{ours:?}");
        } else {
            assert!(ours.1.iter().any(|l| l == "m2"), "{ours:?}");
        }
    }
}

/// A client that subscribes to its inbox and sends a request over a route
/// in one write: the peer hears the inbox's `RS+` before the request's
/// `RMSG` (its answer depends on it), whichever shard holds the route and
/// the client; as nats-server orders them.
#[test]
fn interest_goes_out_before_the_message_that_needs_it() {
    for kind in [Kind::Petrel, Kind::Nats] {
        let server = node(kind, None, &[]);
        let mut peer = Peer::dial(server.route_port(), "c1", "NPEER", "");
        peer.read_for(Duration::from_millis(300));
        peer.send(b"RS+ $G svc\r\nPING\r\n");
        assert!(peer.read_for(Duration::from_millis(300)).contains("PONG"));
        // Clients land on either shard: several, each in one write.
        for i in 0..6 {
            let mut c = common::raw::Raw::open(&server.addr());
            c.send(
                format!("CONNECT {{\"verbose\":false}}\r\nSUB _INBOX.{i} 1\r\nPUB svc _INBOX.{i} 2\r\nhi\r\n")
                    .as_bytes(),
            );
            let got = peer.read_for(Duration::from_millis(300));
            let sub = got.find(&format!("RS+ $G _INBOX.{i}\r\n"));
            let msg = got.find(&format!("RMSG $G svc _INBOX.{i} 2\r\n"));
            assert!(
                matches!((sub, msg), (Some(s), Some(m)) if s < m),
                "{kind:?}, client {i}: {got:?}"
            );
        }
    }
}

/// A peer's interest for a leaf node (`LS+ <origin>`) is counted apart
/// from its own (`RS+`) on the same subject: its `LS-` leaves the `RS+`
/// standing, as nats-server keys them.
#[test]
fn leaf_interest_from_a_peer_is_kept_apart_from_its_own() {
    for kind in [Kind::Petrel, Kind::Nats] {
        let server = node(kind, None, &[]);
        // A peer as nats-server 2.10+ is: `LS-` names its origin.
        let mut peer = Peer::dial_pooled(server.route_port(), "c1", "NPEER", "", ",\"lnoc\":true,\"lnocu\":true");
        peer.read_for(Duration::from_millis(300));
        peer.send(b"RS+ $G foo\r\nLS+ spokes $G foo\r\nLS- spokes $G foo\r\nRS+ $G bar\r\nLS+ spokes $G bar\r\nRS- $G bar\r\nPING\r\n");
        assert!(peer.read_for(Duration::from_millis(300)).contains("PONG"));
        let mut c = common::raw::Raw::open(&server.addr());
        c.send(b"CONNECT {\"verbose\":false}\r\nPUB foo 2\r\nhi\r\nPUB bar 2\r\nho\r\nPING\r\n");
        let got = peer.read_for(Duration::from_millis(500));
        assert!(
            got.contains("RMSG $G foo 2\r\nhi\r\n"),
            "{kind:?}: the RS+ stands: {got:?}"
        );
        assert!(
            got.contains("RMSG $G bar 2\r\nho\r\n"),
            "{kind:?}: the LS+ stands: {got:?}"
        );
    }
}

/// What a raw route peer taking leaf origins (`lnoc`, `lnocu`) hears
/// from a hub of `kind` when a client of a nats-server leaf node (of
/// cluster `LC`) subscribes to `foo`, joins queue group `q` on `bar`, and
/// unsubscribes both; and when a client of the hub itself subscribes to
/// `foo` too.
fn leaf_interest_told_to_a_peer(kind: Kind) -> Vec<String> {
    let conf =
        common::jwt::write_conf("cluster { name: c1, listen: 127.0.0.1:-1 }\nleafnodes { listen: 127.0.0.1:-1 }\n");
    let hub = match kind {
        Kind::Petrel => common::petrel(&["-c", conf.to_str().unwrap()]),
        Kind::Nats => common::nats_server(&["-c", conf.to_str().unwrap()]),
    };
    let mut peer = Peer::dial_pooled(hub.route_port(), "c1", "NPEER", "", ",\"lnoc\":true,\"lnocu\":true");
    peer.read_for(Duration::from_millis(300));
    let leaf_conf = common::jwt::write_conf(&format!(
        "server_name: L1\ncluster {{ name: LC, listen: 127.0.0.1:-1 }}\nleafnodes {{ remotes: [{{url: \"nats-leaf://127.0.0.1:{}\"}}] }}\n",
        hub.leaf_port()
    ));
    let leaf = common::nats_server(&["-c", leaf_conf.to_str().unwrap()]);
    let mut c = common::raw::Raw::open(&leaf.addr());
    // Until the leaf connection is up: the hub tells the peer of it.
    let deadline = Instant::now() + Duration::from_secs(10);
    c.exchange(b"CONNECT {\"verbose\":false}\r\nSUB foo 1\r\nSUB bar q 2\r\nPING\r\n");
    while !peer.read_for(Duration::from_millis(200)).contains(" bar q ") {
        assert!(Instant::now() < deadline, "{kind:?}: no leaf interest reached the peer");
    }
    let mut h = common::raw::Raw::open(&hub.addr());
    h.exchange(b"CONNECT {\"verbose\":false}\r\nSUB foo 1\r\nPING\r\n");
    peer.read_for(Duration::from_millis(300));
    c.exchange(b"UNSUB 1\r\nUNSUB 2\r\nPING\r\n");
    peer.read_for(Duration::from_millis(500));
    let mut lines: Vec<String> = peer
        .lines("")
        .into_iter()
        .filter(|l| (l.starts_with("LS") || l.starts_with("RS")) && (l.contains(" foo") || l.contains(" bar")))
        .collect();
    lines.sort();
    lines
}

/// Interest a hub's leaf connections hold goes to route peers as
/// nats-server sends it: `LS+ <leaf cluster> ...` (counted apart from the
/// hub's own `RS+` on the same subject) and `LS- <leaf cluster> ...`.
#[test]
fn leaf_interest_is_told_to_routes_with_its_origin_as_nats_server_tells_it() {
    let theirs = leaf_interest_told_to_a_peer(Kind::Nats);
    let ours = leaf_interest_told_to_a_peer(Kind::Petrel);
    assert_eq!(ours, theirs, "petrel (left) and nats-server (right)");
    assert!(theirs.iter().any(|l| l.starts_with("LS+ LC $G foo")), "{theirs:?}");
    assert!(theirs.iter().any(|l| l == "RS+ $G foo"), "{theirs:?}");
    assert!(theirs.iter().any(|l| l == "LS- LC $G bar q"), "{theirs:?}");
}

/// Wrong peers get nats-server's answers and clients keep being served.
#[test]
fn bad_peers_are_refused_as_nats_server_refuses_them() {
    let conf = common::jwt::write_conf(
        "cluster {\n  name: c1\n  listen: 127.0.0.1:-1\n  authorization { user: ruser, password: rpass }\n}\n",
    );
    for kind in [Kind::Petrel, Kind::Nats] {
        let server = match kind {
            Kind::Petrel => common::petrel(&["-c", conf.to_str().unwrap()]),
            Kind::Nats => common::nats_server(&["-c", conf.to_str().unwrap()]),
        };
        let port = server.route_port();
        let expect = |extra: &str, cluster: &str, want: &str| {
            let mut p = Peer::dial(port, cluster, "NBAD", extra);
            let got = p.read_for(Duration::from_millis(500));
            assert!(got.contains(want), "{kind:?}: wanted {want:?} in {got:?}");
        };
        expect("", "c1", "-ERR 'Authorization Violation'");
        expect(
            ",\"user\":\"ruser\",\"pass\":\"wrong\"",
            "c1",
            "-ERR 'Authorization Violation'",
        );
        expect(
            ",\"user\":\"ruser\",\"pass\":\"rpass\"",
            "c2",
            "-ERR 'Rejecting connection, cluster name \"c2\" does not match \"c1\"'",
        );
        expect(
            ",\"lang\":\"go\",\"user\":\"ruser\",\"pass\":\"rpass\"",
            "c1",
            "-ERR 'attempted to connect to route port'",
        );
        // Garbage after a good handshake.
        let mut p = Peer::dial(port, "c1", "NGARBAGE", ",\"user\":\"ruser\",\"pass\":\"rpass\"");
        p.read_for(Duration::from_millis(200));
        p.send(b"FOO bar\r\n");
        let got = p.read_for(Duration::from_millis(500));
        assert!(got.contains("-ERR 'Unknown Protocol Operation'"), "{kind:?}: {got:?}");
        // Clients are still served.
        let mut c = common::raw::Raw::open(&server.addr());
        assert!(c.exchange(b"CONNECT {}\r\nPING\r\n").text().contains("PONG"));
    }
}

const POOL_CONF: &str = "accounts {\n  A { users [{user: a, password: a}] }\n  B { users [{user: b, password: b}] }\n  G { users [{user: g, password: g}] }\n  SYS { users [{user: sys, password: sys}] }\n}\nsystem_account: SYS\ncluster {\n  name: c1\n  listen: 127.0.0.1:-1\n  accounts: [A]\n}\n";

/// Route pooling as the accepting side, byte for byte against nats-server:
/// pool index and dedicated-route refusals, which connection of a pool
/// hears which account's interest (names omitted on a dedicated route),
/// and a message in over a dedicated route.
#[test]
fn pooled_and_pinned_routes_match_nats_server() {
    let conf = common::jwt::write_conf(POOL_CONF);
    let mut seen = Vec::new();
    for kind in [Kind::Petrel, Kind::Nats] {
        let server = match kind {
            Kind::Petrel => common::petrel(&["-c", conf.to_str().unwrap()]),
            Kind::Nats => common::nats_server(&["-c", conf.to_str().unwrap()]),
        };
        let port = server.route_port();
        let refused = |info: &str, want: &str| {
            let mut p = Peer::dial_pooled(port, "c1", "NREFUSED", "", info);
            let got = p.read_for(Duration::from_millis(500));
            assert!(got.contains(want), "{kind:?}: wanted {want:?} in {got:?}");
        };
        refused(
            ",\"route_pool_size\":3,\"route_pool_idx\":7",
            "-ERR 'Invalid route pool index: 7 - pool size is 3'",
        );
        refused(
            ",\"route_pool_size\":3,\"route_account\":\"B\"",
            "-ERR 'No route for account \"B\"'",
        );
        refused(
            ",\"route_account\":\"A\"",
            "-ERR 'Not possible to have a dedicated route for account \"A\" between those servers'",
        );
        // One peer, three connections: pool indexes 0 and 2, and A's own.
        let pool = ",\"route_pool_size\":3";
        let mut slot0 = Peer::dial_pooled(port, "c1", "NPOOL", "", &format!("{pool},\"route_pool_idx\":0"));
        let mut slot2 = Peer::dial_pooled(port, "c1", "NPOOL", "", &format!("{pool},\"route_pool_idx\":2"));
        let mut pinned = Peer::dial_pooled(port, "c1", "NPOOL", "", &format!("{pool},\"route_account\":\"A\""));
        for p in [&mut slot0, &mut slot2, &mut pinned] {
            p.read_for(Duration::from_millis(200));
        }
        let mut clients = Vec::new();
        for (user, subject) in [("a", "pin.x"), ("b", "b.x"), ("g", "g.x")] {
            let mut c = common::raw::Raw::open(&server.addr());
            let sub = format!("CONNECT {{\"user\":\"{user}\",\"pass\":\"{user}\"}}\r\nSUB {subject} 1\r\nSUB {subject} q 2\r\nPING\r\n");
            assert!(c.exchange(sub.as_bytes()).text().contains("PONG"), "{kind:?}");
            clients.push(c);
        }
        let ours = |p: &mut Peer| -> Vec<String> {
            p.read_for(Duration::from_millis(300));
            p.lines("RS+").into_iter().filter(|l| l.contains(".x")).collect()
        };
        let lines = (ours(&mut slot0), ours(&mut slot2), ours(&mut pinned));
        // A message in over the dedicated route names no account.
        pinned.send(b"RMSG pin.x 5\r\nhello\r\n");
        let got = clients[0]
            .read_until_quiet(Duration::from_millis(300), Duration::from_secs(2))
            .text();
        assert!(got.contains("MSG pin.x 1 5"), "{kind:?}: {got}");
        seen.push(lines);
    }
    assert_eq!(seen[0], seen[1], "petrel, then nats-server");
    // B hashes to index 0 and G to 2 (of 3), A has its own route.
    assert_eq!(seen[0].0, ["RS+ B b.x", "RS+ B b.x q 1"]);
    assert_eq!(seen[0].1, ["RS+ G g.x", "RS+ G g.x q 1"]);
    assert_eq!(seen[0].2, ["RS+ pin.x", "RS+ pin.x q 1"]);
}

/// The number of route connections `p` lists to each other server, and
/// which of them are dedicated to an account.
fn route_shape(p: &common::Proc) -> (usize, Vec<String>) {
    let (_, body) = common::http_get(p.monitor_port(), "/routez");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let routes = v["routes"].as_array().unwrap();
    let mut pinned: Vec<String> = routes
        .iter()
        .filter_map(|r| r["account"].as_str().map(str::to_string))
        .collect();
    pinned.sort();
    (routes.len(), pinned)
}

/// Waits until `p` lists `n` route connections.
fn await_routes(p: &common::Proc, n: usize) {
    let deadline = Instant::now() + WAIT;
    while route_shape(p).0 != n {
        assert!(Instant::now() < deadline, "{:?}, not {n} routes", route_shape(p));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// petrel and nats-server with pools of different sizes (each side opens
/// the larger), and petrel without a pool (`pool_size: -1`) beside a
/// pooling nats-server: one connection then carries every account, the
/// system account's included.
#[tokio::test]
async fn pools_of_any_size_interoperate() {
    let nats_conf = common::jwt::write_conf(POOL_CONF);
    for (pool, routes, pinned) in [("5", 7, vec!["A", "SYS"]), ("-1", 1, vec![])] {
        let text = POOL_CONF.replace("accounts: [A]", &format!("pool_size: {pool}"));
        let text = if pool == "-1" {
            text
        } else {
            POOL_CONF.replace("accounts: [A]", &format!("accounts: [A]\n  pool_size: {pool}"))
        };
        let conf = common::jwt::write_conf(&text);
        let nats = common::nats_server(&["-c", nats_conf.to_str().unwrap(), "-m", "-1"]);
        let seed = format!("nats://127.0.0.1:{}", nats.route_port());
        let petrel = common::petrel(&["-c", conf.to_str().unwrap(), "-m", "-1", "--routes", &seed]);
        await_routes(&petrel, routes);
        await_routes(&nats, routes);
        let shape = route_shape(&petrel);
        assert_eq!(shape.1, pinned, "pool_size {pool}");
        assert_eq!(route_shape(&nats).1, pinned, "nats-server's view, pool_size {pool}");
        for user in ["a", "b", "g"] {
            let n = user_client(&nats, user).await;
            let p = user_client(&petrel, user).await;
            every_pair_in_order(&[n, p], user, 100, &format!("pool_size {pool}, account of {user}")).await;
        }
        // The system account crosses: one PING reply per server.
        let sys = user_client(&petrel, "sys").await;
        let inbox = sys.new_inbox();
        let mut replies = sys.subscribe(inbox.clone()).await.unwrap();
        sys.publish_with_reply("$SYS.REQ.SERVER.PING", inbox, "".into())
            .await
            .unwrap();
        sys.flush().await.unwrap();
        for _ in 0..2 {
            next(&mut replies).await;
        }
        let (_, varz) = common::http_get(petrel.monitor_port(), "/varz");
        let varz: serde_json::Value = serde_json::from_str(&varz).unwrap();
        assert_eq!(
            varz["cluster"]["pool_size"],
            serde_json::json!(pool.parse::<i32>().unwrap())
        );
        assert_eq!(
            (varz["routes"].as_u64(), varz["remotes"].as_u64()),
            (Some(routes as u64), Some(1))
        );
    }
}

/// A reload that changes the pool closes the routes, which come back with
/// the new size (nats-server does the same).
#[tokio::test]
async fn reload_changes_the_pool() {
    let nats = node(Kind::Nats, None, &["-m", "-1"]);
    let text = |pool: i32| {
        format!(
            "cluster {{\n  name: c1\n  listen: 127.0.0.1:-1\n  pool_size: {pool}\n  routes: [\"nats://127.0.0.1:{}\"]\n}}\n",
            nats.route_port()
        )
    };
    let conf = common::jwt::write_conf(&text(3));
    let petrel = common::petrel(&["-c", conf.to_str().unwrap(), "-m", "-1"]);
    await_routes(&petrel, 4);
    std::fs::write(&conf, text(4)).unwrap();
    hup(petrel.pid());
    await_routes(&petrel, 5);
    await_routes(&nats, 5);
    let (n, p) = (client(&nats).await, client(&petrel).await);
    every_pair_in_order(&[n, p], "repooled", 100, "after a pool reload").await;
}

/// S2 on routes between petrel and nats-server, each mode against each
/// (nats-server's matrix: `off` wins, `accept` follows, a level writes its
/// own), either side dialing: what `/routez` shows on both, and messages
/// (small, and a large compressible one) both ways.
#[tokio::test]
async fn route_compression_with_nats_server() {
    // (petrel's mode, nats-server's, who dials, what each side writes)
    let cases = [
        ("s2_fast", "accept", Kind::Petrel, "s2_fast", "s2_fast"),
        ("accept", "s2_best", Kind::Nats, "s2_best", "s2_best"),
        ("s2_better", "s2_fast", Kind::Nats, "s2_better", "s2_fast"),
        ("s2_auto", "s2_auto", Kind::Petrel, "s2_uncompressed", "s2_uncompressed"),
        ("accept", "accept", Kind::Petrel, "off", "off"),
        ("off", "s2_fast", Kind::Nats, "off", "off"),
    ];
    for (pmode, nmode, dialer, pwrites, nwrites) in cases {
        let conf = |mode: &str, routes: Option<u16>| {
            let routes = routes.map_or(String::new(), |p| format!("  routes: [\"nats://127.0.0.1:{p}\"]\n"));
            common::jwt::write_conf(&format!(
                "cluster {{\n  name: c1\n  listen: 127.0.0.1:-1\n  compression: {mode}\n{routes}}}\n"
            ))
        };
        let (nats, petrel) = if dialer == Kind::Petrel {
            let nats = common::nats_server(&["-c", conf(nmode, None).to_str().unwrap(), "-m", "-1"]);
            let pc = conf(pmode, Some(nats.route_port()));
            (nats, common::petrel(&["-c", pc.to_str().unwrap(), "-m", "-1"]))
        } else {
            let petrel = common::petrel(&["-c", conf(pmode, None).to_str().unwrap(), "-m", "-1"]);
            let nc = conf(nmode, Some(petrel.route_port()));
            (common::nats_server(&["-c", nc.to_str().unwrap(), "-m", "-1"]), petrel)
        };
        let what = format!("petrel {pmode}, nats-server {nmode}, {dialer:?} dials");
        await_routes(&petrel, 4);
        await_routes(&nats, 4);
        for (p, want) in [(&petrel, pwrites), (&nats, nwrites)] {
            let (_, body) = common::http_get(p.monitor_port(), "/routez");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            for r in v["routes"].as_array().unwrap() {
                assert_eq!(r["compression"], want, "{what}: {r}");
            }
        }
        let (n, p) = (client(&nats).await, client(&petrel).await);
        every_pair_in_order(&[n.clone(), p.clone()], "s2", 200, &what).await;
        let big: bytes::Bytes = "compressible ".repeat(80_000).into();
        for (from, to) in [(&n, &p), (&p, &n)] {
            let mut sub = to.subscribe("s2.big").await.unwrap();
            common::links::await_crossing(from, &mut sub, "s2.big").await;
            from.publish("s2.big", big.clone()).await.unwrap();
            from.flush().await.unwrap();
            assert_eq!(next(&mut sub).await.payload, big, "{what}");
        }
    }
}

/// S2 between two petrels, each writing at its own level; a three-node
/// mesh of them behaves as without compression.
#[tokio::test]
async fn route_compression_between_petrels() {
    let conf = |mode: &str| {
        common::jwt::write_conf(&format!("cluster {{\n  compression: {mode}\n}}\n"))
            .to_str()
            .unwrap()
            .to_string()
    };
    let (best, fast) = (conf("s2_best"), conf("s2_fast"));
    let first = node(Kind::Petrel, None, &["-c", &best, "-m", "-1"]);
    let second = node(Kind::Petrel, Some(&first), &["-c", &fast, "-m", "-1"]);
    let third = node(Kind::Petrel, Some(&first), &["-c", &best, "-m", "-1"]);
    let nodes = vec![first, second, third];
    full_mesh(&nodes);
    await_routes(&nodes[1], 8);
    let (_, body) = common::http_get(nodes[1].monitor_port(), "/routez");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    for r in v["routes"].as_array().unwrap() {
        assert_eq!(r["compression"], "s2_fast", "{r}");
    }
    let mut clients = Vec::new();
    for n in &nodes {
        clients.push(client(n).await);
    }
    every_pair_in_order(&clients, "s2mesh", 500, "compressed petrels").await;
}

/// A client that knows one server finds the others through INFO: async
/// INFO as peers join, and after its server dies it reconnects (with its
/// user and password) to one it learned of.
#[tokio::test]
async fn clients_discover_servers_and_fail_over() {
    let conf = common::jwt::write_conf(SYS_CONF);
    let conf = conf.to_str().unwrap();
    let mut first = node(Kind::Petrel, None, &["-c", conf]);
    let mut watcher = common::raw::Raw::open(&first.addr());
    watcher.exchange(b"CONNECT {\"protocol\":1,\"verbose\":false,\"user\":\"app\",\"pass\":\"app\"}\r\nPING\r\n");
    let second = node(Kind::Nats, Some(&first), &["-c", conf]);
    let third = node(Kind::Petrel, Some(&first), &["-c", conf]);
    // An async INFO naming the servers that joined.
    let deadline = Instant::now() + WAIT;
    let mut seen = String::new();
    while !(seen.contains(&second.addr()) && seen.contains(&third.addr())) {
        assert!(Instant::now() < deadline, "no async INFO with both peers: {seen}");
        seen.push_str(
            &watcher
                .read_until_quiet(Duration::from_millis(100), Duration::from_millis(500))
                .text(),
        );
    }
    assert!(seen.contains("INFO {"), "{seen}");

    let client = async_nats::ConnectOptions::with_user_and_password("app".into(), "app".into())
        .connect(first.url())
        .await
        .unwrap();
    let mut sub = client.subscribe("failover").await.unwrap();
    let other = user_client(&third, "app").await;
    common::links::await_crossing(&other, &mut sub, "failover").await;
    drop(watcher);
    let _ = first.wait_exit(Duration::from_millis(1));
    drop(first); // SIGKILL: the client must move to a server it learned of
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        other.publish("failover", "after".into()).await.unwrap();
        other.flush().await.unwrap();
        if let Ok(Some(m)) = timeout(Duration::from_millis(200), sub.next()).await {
            if m.payload == "after" {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the client did not fail over to a discovered server"
        );
    }
    drop(second);
}

/// A client that has sent CONNECT but not yet its first PING gets no
/// async INFO when a server joins: the PONG to that PING comes first, and
/// the INFO after it lists the new server, as nats-server does (clients
/// read the line after their CONNECT+PING as the PONG; nats-py took an
/// INFO there for a failed handshake and never wrote again).
#[test]
fn async_info_waits_for_the_first_pong() {
    for kind in [Kind::Petrel, Kind::Nats] {
        let first = node(kind, None, &[]);
        let mut early = common::raw::Raw::open(&first.addr());
        early.send(b"CONNECT {\"protocol\":1,\"verbose\":false}\r\n");
        let second = node(Kind::Petrel, Some(&first), &[]);
        // A new client's INFO names the second server once the first knows it.
        let deadline = Instant::now() + WAIT;
        while !common::raw::Raw::open(&first.addr()).info_line.contains(&second.addr()) {
            assert!(Instant::now() < deadline, "{kind:?}: the second server never listed");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Every shard has had time to tell its clients.
        std::thread::sleep(Duration::from_millis(300));
        early.send(b"PING\r\n");
        let line = early.read_line(Duration::from_secs(5));
        assert_eq!(line.as_deref(), Some("PONG\r\n"), "{kind:?}");
        let line = early.read_line(Duration::from_secs(5)).unwrap_or_default();
        assert!(
            line.starts_with("INFO ") && line.contains(&second.addr()),
            "{kind:?}: {line}"
        );
    }
}

/// A nats-server peer receives petrel's heartbeats and account connection
/// counts with a rising `seq`, as it checks: clients coming and going on
/// every shard once made it log "Received out of order remote server
/// update" (12 times for 300 clients), since each shard built its
/// account's CONNS event, and took its `seq`, on its own.
#[test]
fn system_events_reach_a_nats_server_peer_in_order() {
    let conf = common::jwt::write_conf(SYS_CONF);
    let conf = conf.to_str().unwrap();
    let first = node(Kind::Petrel, None, &["-c", conf, "-m", "-1"]);
    let second = node(Kind::Nats, Some(&first), &["-c", conf, "-m", "-1"]);
    let nodes = vec![first, second];
    full_mesh(&nodes);
    for _ in 0..300 {
        let mut c = common::raw::Raw::open(&nodes[0].addr());
        c.send(b"CONNECT {\"verbose\":false,\"user\":\"app\",\"pass\":\"app\"}\r\n");
        assert_eq!(c.ping(), "");
    }
    // The last counts go out, and a heartbeat or two.
    std::thread::sleep(Duration::from_millis(1500));
    let disorder = nodes[1].log_lines("out of order");
    assert!(disorder.is_empty(), "{} lines: {:?}", disorder.len(), disorder.first());
}

/// Routes added to and removed from the configuration by a reload are
/// dialed and closed.
#[test]
fn reload_adds_and_removes_routes() {
    let peer = node(Kind::Nats, None, &[]);
    let dir = common::jwt::temp_dir();
    let path = dir.join("cluster.conf");
    let write = |routes: &str| {
        std::fs::write(
            &path,
            format!("cluster {{\n  name: c1\n  listen: 127.0.0.1:-1\n  routes: [{routes}]\n}}\n"),
        )
        .unwrap();
    };
    write("");
    let p = common::petrel(&["-c", path.to_str().unwrap()]);
    let route = format!("\"nats://127.0.0.1:{}\"", peer.route_port());
    write(&route);
    let hup = |pid: u32| {
        std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
    };
    hup(p.pid());
    let deadline = Instant::now() + WAIT;
    while p.log_lines("Route connection created").is_empty() {
        assert!(Instant::now() < deadline, "the added route was not dialed");
        std::thread::sleep(Duration::from_millis(50));
    }
    write("");
    hup(p.pid());
    while p.log_lines("Router connection closed: Route Removed").is_empty() {
        assert!(Instant::now() < deadline, "the removed route was not closed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn creds_client(p: &common::Proc, creds: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_credentials_file(format!("{}creds/{creds}", common::jwt::FIXTURES))
        .await
        .expect("creds file")
        .connect(p.url())
        .await
        .expect("connect")
}

/// A mixed cluster in operator mode (the same operator and MEMORY resolver
/// on every node): a JWT account's messages cross routes named by the
/// account's public key, and the system account's PING is answered by
/// every server.
#[tokio::test]
async fn operator_mode_mixed_cluster() {
    let conf = common::jwt::memory_conf(&common::jwt::fixture_accounts());
    let conf = conf.to_str().unwrap();
    let nodes = cluster([Kind::Nats, Kind::Petrel, Kind::Petrel], &["-c", conf]);
    let a0 = creds_client(&nodes[0], "a.creds").await;
    let a1 = creds_client(&nodes[1], "a.creds").await;
    let a2 = creds_client(&nodes[2], "a.creds").await;
    let mut at1 = a1.subscribe("op.test").await.unwrap();
    let mut at2 = a2.subscribe("op.test").await.unwrap();
    common::links::await_crossing(&a0, &mut at1, "op.test").await;
    common::links::await_crossing(&a0, &mut at2, "op.test").await;
    let mut at0 = a0.subscribe("op.back").await.unwrap();
    common::links::await_crossing(&a2, &mut at0, "op.back").await;
    for k in 0..100 {
        a2.publish("op.back", k.to_string().into()).await.unwrap();
    }
    a2.flush().await.unwrap();
    for k in 0..100 {
        assert_eq!(next(&mut at0).await.payload, k.to_string());
    }
    let sys = creds_client(&nodes[1], "sys.creds").await;
    let deadline = Instant::now() + WAIT;
    loop {
        let answers = ping_round(&sys).await;
        let ids: std::collections::BTreeSet<&str> =
            answers.iter().map(|v| v["server"]["id"].as_str().unwrap()).collect();
        if ids.len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "answers from {ids:?} only");
    }
}

/// A peer that subscribes to everything and stops reading: the route is
/// cut off past `max_pending` as a slow consumer, and clients are served.
#[test]
fn a_stalled_route_is_cut_off_and_clients_keep_working() {
    let server = node(Kind::Petrel, None, &["--max_pending", "1048576"]);
    let mut peer = Peer::dial(server.route_port(), "c1", "NSTALL", "");
    peer.read_for(Duration::from_millis(200));
    peer.send(b"RS+ $G >\r\nPING\r\n");
    peer.read_for(Duration::from_millis(200));
    let mut publisher = common::raw::Raw::open(&server.addr());
    publisher.send(b"CONNECT {\"verbose\":false}\r\n");
    let body = vec![b'x'; 60_000];
    let mut frame = b"PUB flood 60000\r\n".to_vec();
    frame.extend_from_slice(&body);
    frame.extend_from_slice(b"\r\n");
    let deadline = Instant::now() + WAIT;
    while server.log_lines("Router connection closed: Slow Consumer").is_empty() {
        assert!(Instant::now() < deadline, "the stalled route was not cut off");
        for _ in 0..20 {
            publisher.send(&frame);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut c = common::raw::Raw::open(&server.addr());
    let got = c
        .exchange(b"CONNECT {}\r\nSUB ok 1\r\nPUB ok 2\r\nhi\r\nPING\r\n")
        .text();
    assert!(got.contains("MSG ok 1 2"), "{got}");
}

/// Lame duck mode in a mixed cluster: petrel tells its routes (an INFO
/// with `ldm`, seen by a raw peer, and the LAMEDUCK event), and
/// nats-server's clients get an INFO without petrel's URL.
#[test]
fn lame_duck_is_told_to_peers() {
    let petrel = node(Kind::Petrel, None, &[]);
    let nats = node(Kind::Nats, Some(&petrel), &[]);
    let mut peer = Peer::dial(petrel.route_port(), "c1", "NRAWPEER", "");
    peer.read_for(Duration::from_millis(200));
    let mut watcher = common::raw::Raw::open(&nats.addr());
    watcher.send(b"CONNECT {\"protocol\":1,\"verbose\":false}\r\nPING\r\n");
    let deadline = Instant::now() + WAIT;
    let mut seen = String::from(&*watcher.info().to_string());
    while !seen.contains(&petrel.addr()) {
        assert!(Instant::now() < deadline, "nats-server never advertised petrel: {seen}");
        seen.push_str(
            &watcher
                .read_until_quiet(Duration::from_millis(100), Duration::from_millis(300))
                .text(),
        );
    }
    std::process::Command::new("kill")
        .args(["-USR2", &petrel.pid().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no INFO without petrel's URL");
        let text = watcher
            .read_until_quiet(Duration::from_millis(100), Duration::from_millis(300))
            .text();
        let dropped = text.split("\r\n").filter(|l| l.starts_with("INFO ")).any(|l| {
            let v: serde_json::Value = serde_json::from_str(l.trim_start_matches("INFO ").trim()).unwrap();
            // nats-server's own URL stays; petrel's is gone.
            v["connect_urls"]
                .as_array()
                .is_some_and(|a| !a.is_empty() && !a.iter().any(|u| u.as_str() == Some(petrel.addr().as_str())))
        });
        if dropped {
            break;
        }
    }
    let got = peer.read_for(Duration::from_millis(300));
    assert!(
        got.split("\r\n")
            .any(|l| l.starts_with("INFO ") && l.contains("\"ldm\":true")),
        "no ldm INFO on the route: {got}"
    );
}

/// What a client past an account's connection limit is told.
const LIMIT_REACHED: &str = "maximum account active connections exceeded";

/// An operator-mode configuration with an account limited to two
/// connections, and a user of it.
struct LimitedAccount {
    conf: std::path::PathBuf,
    user_jwt: String,
    user_seed: String,
}

impl LimitedAccount {
    fn new() -> LimitedAccount {
        use common::jwt;
        let (acc_pub, acc_jwt, acc_seed) = jwt::account(
            "LIMITED",
            serde_json::json!({"type": "account", "version": 2, "limits": {"conn": 2, "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true, "leaf": -1}}),
        );
        let mut accounts = jwt::fixture_accounts();
        accounts.push((acc_pub, acc_jwt));
        let (user_jwt, user_seed) = jwt::user(&acc_seed, "u", jwt::user_nats(), serde_json::json!({}));
        LimitedAccount {
            conf: jwt::memory_conf(&accounts),
            user_jwt,
            user_seed,
        }
    }

    /// A raw client of the account on `n`: the connection and what it was told.
    fn connect(&self, n: &common::Proc) -> (common::raw::Raw, String, bool) {
        common::jwt::raw_jwt_connect(&n.addr(), &self.user_jwt, &self.user_seed)
    }

    /// Connects to `n` until the answer holds `wanted` (the cluster's
    /// counts travel by events), or fails with `what`.
    fn until_answered(&self, n: &common::Proc, wanted: &str, what: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let (_c, text, _) = self.connect(n);
            if text.contains(wanted) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: {text}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// An account JWT's connection limit holds across a mixed cluster: each
/// server counts the others' clients from their SERVER.CONNS events (petrel
/// sends nats-server's subject too), so a client past the limit is refused
/// on any server, petrel or nats-server.
#[test]
fn account_connection_limits_are_cluster_wide() {
    let limited = LimitedAccount::new();
    let conf = limited.conf.to_str().unwrap();
    let nodes = cluster([Kind::Nats, Kind::Petrel, Kind::Petrel], &["-c", conf, "-m", "-1"]);
    // Counts are sent when they change (and every 30 s): the mesh must be
    // whole before the clients connect, or a server misses them.
    full_mesh(&nodes);
    let connect = |n: &common::Proc| limited.connect(n);
    // Wait for the mesh: a probe client per node sees no error.
    let (_c0, t0, _) = connect(&nodes[0]);
    assert!(t0.contains("PONG"), "{t0}");
    let (_c1, t1, _) = connect(&nodes[1]);
    assert!(t1.contains("PONG"), "{t1}");
    // A third client, on any server, is past the limit once the counts
    // have crossed the routes.
    for (i, n) in nodes.iter().enumerate() {
        limited.until_answered(n, LIMIT_REACHED, &format!("node {i} let a third client in"));
    }
}

/// A server that joins later hears petrel's account connection counts at
/// once (not at the next 30 s heartbeat): with the limit reached on petrel,
/// a client of the nats-server that just joined is refused.
#[test]
fn a_joining_server_learns_account_connection_counts() {
    let limited = LimitedAccount::new();
    let conf = limited.conf.to_str().unwrap();
    let petrel = node(Kind::Petrel, None, &["-c", conf]);
    let connect = |n: &common::Proc| limited.connect(n);
    let (_c0, t0, _) = connect(&petrel);
    let (_c1, t1, _) = connect(&petrel);
    assert!(t0.contains("PONG") && t1.contains("PONG"), "{t0} {t1}");
    let joined = node(Kind::Nats, Some(&petrel), &["-c", conf, "-m", "-1"]);
    limited.until_answered(&joined, LIMIT_REACHED, "the joining server let a third client in");
}

/// A server that shuts down takes its clients out of the cluster's account
/// connection counts: the others forget its counts at its SHUTDOWN event,
/// as nats-server does, so clients past the limit before are let in.
#[test]
fn a_server_shutting_down_leaves_the_account_connection_counts() {
    let limited = LimitedAccount::new();
    let conf = limited.conf.to_str().unwrap();
    let connect = |n: &common::Proc| limited.connect(n);
    // (the server that shuts down, the one that stays)
    for (going, staying) in [
        (Kind::Petrel, Kind::Petrel),
        (Kind::Nats, Kind::Petrel),
        (Kind::Petrel, Kind::Nats),
    ] {
        let what = format!("{going:?} shuts down, {staying:?} stays");
        let first = node(staying, None, &["-c", conf, "-m", "-1"]);
        let second = node(going, Some(&first), &["-c", conf, "-m", "-1"]);
        let nodes = [first, second];
        full_mesh(&nodes);
        let [stays, goes] = &nodes;
        let (_c0, t0, _) = connect(goes);
        let (_c1, t1, _) = connect(goes);
        assert!(t0.contains("PONG") && t1.contains("PONG"), "{what}: {t0} {t1}");
        let deadline = Instant::now() + WAIT;
        loop {
            let (_c, text, _) = connect(stays);
            if text.contains("maximum account active connections exceeded") {
                break;
            }
            assert!(Instant::now() < deadline, "{what}: a third client let in: {text}");
            std::thread::sleep(Duration::from_millis(200));
        }
        unsafe { libc::kill(goes.pid() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + WAIT;
        loop {
            let (_c, text, _) = connect(stays);
            if text.contains("PONG") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: still refused after the shutdown: {text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `cluster { tls }` naming `p`'s CA and its `route` certificate.
fn route_tls_conf(p: &common::pki::Pki) -> std::path::PathBuf {
    common::jwt::write_conf(&format!(
        "cluster {{\n  tls {{\n    cert_file: \"{}\"\n    key_file: \"{}\"\n    ca_file: \"{}\"\n    timeout: 2\n  }}\n}}\n",
        p.path("route.pem").display(),
        p.path("route-key.pem").display(),
        p.path("ca.pem").display()
    ))
}

/// Waits until `p`'s log has `n` lines with `needle`.
fn await_log(p: &common::Proc, needle: &str, n: usize) {
    let deadline = Instant::now() + WAIT;
    while p.log_lines(needle).len() < n {
        assert!(Instant::now() < deadline, "no {n} log lines {needle:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Mutual TLS on routes in a cluster seeded with nats-server: the mesh
/// forms over TLS (the other routes by gossip) and carries messages both
/// ways; a server whose certificate another CA signed, and one without
/// route TLS, are refused on both a nats-server and a petrel node, with
/// nats-server's log line, and the mesh is untouched.
#[tokio::test]
async fn route_tls_mixed_cluster() {
    let pki = common::pki::Pki::new();
    pki.issue(&["127.0.0.1", "localhost"], "route", "route");
    let good = route_tls_conf(&pki);
    let nodes = cluster(
        [Kind::Nats, Kind::Petrel, Kind::Petrel],
        &["-c", good.to_str().unwrap(), "-m", "-1"],
    );
    full_mesh(&nodes);
    let (_, varz) = common::http_get(nodes[1].monitor_port(), "/varz");
    let varz: serde_json::Value = serde_json::from_str(&varz).unwrap();
    assert_eq!(varz["cluster"]["tls_required"], true, "{}", varz["cluster"]);
    assert_eq!(varz["cluster"]["tls_verify"], true);
    let mut clients = Vec::new();
    for n in &nodes {
        clients.push(client(n).await);
    }
    every_pair_in_order(&clients, "tls", 100, "over TLS").await;

    let other_ca = common::pki::Pki::new();
    other_ca.issue(&["127.0.0.1", "localhost"], "route", "route");
    let rogue = route_tls_conf(&other_ca);
    let rogue = rogue.to_str().unwrap();
    const ERR: &str = "TLS route handshake error";
    // A petrel with the wrong CA dials nats-server: both sides refuse.
    let bad_petrel = node(Kind::Petrel, Some(&nodes[0]), &["-c", rogue, "-m", "-1"]);
    await_log(&nodes[0], ERR, 1);
    await_log(&bad_petrel, ERR, 1);
    // A nats-server with the wrong CA dials petrel: both sides refuse.
    let before = nodes[1].log_lines(ERR).len();
    let bad_nats = node(Kind::Nats, Some(&nodes[1]), &["-c", rogue, "-m", "-1"]);
    await_log(&nodes[1], ERR, before + 1);
    await_log(&bad_nats, ERR, 1);
    // A server without route TLS is refused by a petrel node.
    let before = nodes[2].log_lines(ERR).len();
    let plain = node(Kind::Nats, Some(&nodes[2]), &["-m", "-1"]);
    await_log(&nodes[2], ERR, before + 1);
    for p in [&bad_petrel, &bad_nats, &plain] {
        let (_, body) = common::http_get(p.monitor_port(), "/routez");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["num_routes"], 0, "a refused server has no routes: {body}");
    }
    full_mesh(&nodes);
}

/// Sends SIGHUP to `pid` (a reload).
fn hup(pid: u32) {
    std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
}

/// Route permissions on a petrel node routed to nats-server: `import`
/// keeps petrel's other interest to itself, `export` ignores nats-server's
/// interest outside it and its deny list filters a wildcard's deliveries;
/// a reload widens import and narrows export. Then the other way round:
/// nats-server widens its `export` on reload and petrel sends the interest
/// nats-server takes now.
#[tokio::test]
async fn route_permissions_filter_interest_both_ways() {
    let perms = |import: &str, export: &str| {
        format!("cluster {{\n  permissions {{\n    import: {import}\n    export: {export}\n  }}\n}}\n")
    };
    let dir = common::jwt::temp_dir();
    let path = dir.join("perms.conf");
    std::fs::write(
        &path,
        perms(
            r#"["in.>", "probe.>"]"#,
            r#"{ allow: ["out.>", "wild.>", "probe.>"], deny: ["wild.secret"] }"#,
        ),
    )
    .unwrap();
    let nats = node(Kind::Nats, None, &["-m", "-1"]);
    let petrel = node(Kind::Petrel, Some(&nats), &["-c", path.to_str().unwrap(), "-m", "-1"]);
    let (n, p) = (client(&nats).await, client(&petrel).await);

    // import: petrel sends its interest in in.x, not in blocked.x.
    let mut p_in = p.subscribe("in.x").await.unwrap();
    let mut p_blocked = p.subscribe("blocked.x").await.unwrap();
    common::links::await_crossing(&n, &mut p_in, "in.x").await;
    common::links::blocked_then_marker(&n, "blocked.x", &mut p_blocked, "in.x", &mut p_in, "route").await;

    // export: petrel takes nats-server's interest in out.a, not in nope.a,
    // and keeps wild.secret from a wild.> subscriber.
    let mut n_out = n.subscribe("out.a").await.unwrap();
    let mut n_nope = n.subscribe("nope.a").await.unwrap();
    let mut n_wild = n.subscribe("wild.>").await.unwrap();
    common::links::await_crossing(&p, &mut n_out, "out.a").await;
    common::links::await_crossing(&p, &mut n_wild, "wild.probe").await;
    common::links::blocked_then_marker(&p, "nope.a", &mut n_nope, "out.a", &mut n_out, "route").await;
    common::links::blocked_then_marker(&p, "wild.secret", &mut n_wild, "out.a", &mut n_out, "route").await;

    // The INFO petrel sent carries the lists as nats-server reads them, on
    // every connection of the pool; the interest is on the one the global
    // account hashes to.
    let (_, routez) = common::http_get(nats.monitor_port(), "/routez?subs=1");
    let routez: serde_json::Value = serde_json::from_str(&routez).unwrap();
    let routes = routez["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 4, "3 pooled and the system account's: {routez}");
    let subs: String = routes.iter().map(|r| r["subscriptions_list"].to_string()).collect();
    assert!(subs.contains("in.x") && !subs.contains("blocked.x"), "{subs}");
    for r in routes {
        assert_eq!(r["import"]["allow"], serde_json::json!(["in.>", "probe.>"]), "{r}");
        assert_eq!(r["export"]["deny"], serde_json::json!(["wild.secret"]), "{r}");
    }

    // Reload: import widens to blocked.>, export loses out.>.
    std::fs::write(
        &path,
        perms(
            r#"["in.>", "probe.>", "blocked.>"]"#,
            r#"{ allow: ["wild.>", "probe.>"], deny: ["wild.secret"] }"#,
        ),
    )
    .unwrap();
    hup(petrel.pid());
    common::links::await_crossing(&n, &mut p_blocked, "blocked.x").await;
    let mut n_probe = n.subscribe("probe.n").await.unwrap();
    common::links::await_crossing(&p, &mut n_probe, "probe.n").await;
    common::links::blocked_then_marker(&p, "out.a", &mut n_out, "probe.n", &mut n_probe, "route").await;

    // nats-server with route permissions of its own, widened by a reload
    // (its cluster port in the file: nats-server refuses to reload a
    // random one).
    let npath = dir.join("nats-perms.conf");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nperms = |export: &str| {
        format!(
            "cluster {{\n  name: c1\n  listen: 127.0.0.1:{port}\n  permissions {{\n    export: {export}\n  }}\n}}\n"
        )
    };
    std::fs::write(&npath, nperms(r#"["a.>", "probe.>"]"#)).unwrap();
    let nats2 = common::nats_server(&["-c", npath.to_str().unwrap()]);
    let petrel2 = node(Kind::Petrel, Some(&nats2), &[]);
    let (n2, p2) = (client(&nats2).await, client(&petrel2).await);
    let mut p2_a = p2.subscribe("a.x").await.unwrap();
    let mut p2_b = p2.subscribe("b.x").await.unwrap();
    common::links::await_crossing(&n2, &mut p2_a, "a.x").await;
    common::links::blocked_then_marker(&n2, "b.x", &mut p2_b, "a.x", &mut p2_a, "route").await;
    std::fs::write(&npath, nperms(r#"["a.>", "b.>", "probe.>"]"#)).unwrap();
    hup(nats2.pid());
    common::links::await_crossing(&n2, &mut p2_b, "b.x").await;
}

const IMPORTS_CONF: &str = "accounts {\n  \
  EXP { users [{user: exp, password: exp}]\n    exports [{stream: \"feed.>\"}, {service: \"svc.>\"}]\n  }\n  \
  IMP { users [{user: imp, password: imp}]\n    imports [{stream: {account: EXP, subject: \"feed.>\"}, prefix: \"in\"}, {service: {account: EXP, subject: \"svc.>\"}}]\n  }\n}\n";

/// Stream and service imports across servers: the importer's client on one
/// server, the exporter's on another (each way round, petrel and
/// nats-server).
async fn imports_cross(kinds: [Kind; 2]) {
    let conf = common::jwt::write_conf(IMPORTS_CONF);
    let conf = conf.to_str().unwrap();
    let a = node(kinds[0], None, &["-c", conf]);
    let b = node(kinds[1], Some(&a), &["-c", conf]);
    for (imp_at, exp_at) in [(&a, &b), (&b, &a)] {
        let imp = user_client(imp_at, "imp").await;
        let exp = user_client(exp_at, "exp").await;
        // A stream: published in EXP as feed.x, seen in IMP as in.feed.x.
        let mut feed = imp.subscribe("in.feed.x").await.unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            exp.publish("feed.x", "tick".into()).await.unwrap();
            exp.flush().await.unwrap();
            if let Ok(Some(m)) = timeout(Duration::from_millis(100), feed.next()).await {
                assert_eq!(m.payload, "tick");
                break;
            }
            assert!(Instant::now() < deadline, "{kinds:?}: the stream import never crossed");
        }
        while let Ok(Some(_)) = timeout(Duration::from_millis(200), feed.next()).await {}
        for k in 0..20 {
            exp.publish("feed.x", format!("n-{k}").into()).await.unwrap();
        }
        exp.flush().await.unwrap();
        for k in 0..20 {
            assert_eq!(
                next(&mut feed).await.payload,
                format!("n-{k}"),
                "{kinds:?}: in order, once"
            );
        }
        assert!(
            timeout(Duration::from_millis(200), feed.next()).await.is_err(),
            "{kinds:?}: a stream message came twice"
        );
        // A service: requested in IMP, answered in EXP.
        let mut svc = exp.subscribe("svc.echo").await.unwrap();
        let responder = exp.clone();
        let counted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = counted.clone();
        let task = tokio::spawn(async move {
            while let Some(m) = svc.next().await {
                if m.payload.starts_with(b"count-") {
                    seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                if let Some(r) = m.reply {
                    responder.publish(r, m.payload).await.unwrap();
                    responder.flush().await.unwrap();
                }
            }
        });
        let deadline = Instant::now() + WAIT;
        loop {
            match timeout(Duration::from_millis(300), imp.request("svc.echo", "hello".into())).await {
                Ok(Ok(r)) => {
                    assert_eq!(r.payload, "hello");
                    break;
                }
                other => assert!(
                    Instant::now() < deadline,
                    "{kinds:?}: the service import never answered: {other:?}"
                ),
            }
        }
        // Each request reaches the exporter once (no server maps it twice).
        for k in 0..20 {
            let r = timeout(WAIT, imp.request("svc.echo", format!("count-{k}").into()))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(r.payload, format!("count-{k}"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            counted.load(std::sync::atomic::Ordering::SeqCst),
            20,
            "{kinds:?}: requests delivered once"
        );
        task.abort();
    }
}

#[tokio::test]
async fn imports_cross_servers_petrel_petrel() {
    imports_cross([Kind::Petrel, Kind::Petrel]).await;
}

#[tokio::test]
async fn imports_cross_servers_petrel_nats() {
    imports_cross([Kind::Petrel, Kind::Nats]).await;
}

/// A peer that stops reading while the route's write deadline passes: with
/// the routes' default `write_timeout: retry` the route is a slow
/// consumer (logged once) but stays, and everything queued reaches the
/// peer once it reads again; with `write_timeout: close` it is closed.
#[test]
fn a_route_past_its_write_deadline_retries_or_closes_as_configured() {
    for policy in ["retry", "close"] {
        let dir = common::jwt::temp_dir();
        let conf = dir.join("deadline.conf");
        std::fs::write(
            &conf,
            format!("cluster {{ write_deadline: \"300ms\", write_timeout: {policy} }}\nmax_pending: 64MB\n"),
        )
        .unwrap();
        let server = node(Kind::Petrel, None, &["-c", conf.to_str().unwrap()]);
        let mut peer = Peer::dial(server.route_port(), "c1", "NDEADLINE", "");
        peer.read_for(Duration::from_millis(200));
        peer.send(b"RS+ $G flood\r\nPING\r\n");
        peer.read_for(Duration::from_millis(200));
        let mut publisher = common::raw::Raw::open(&server.addr());
        publisher.send(b"CONNECT {\"verbose\":false}\r\n");
        let mut frame = b"PUB flood 60000\r\n".to_vec();
        frame.extend_from_slice(&[b'x'; 60_000]);
        frame.extend_from_slice(b"\r\n");
        let mut sent = 0;
        let deadline = Instant::now() + WAIT;
        while server.log_lines("Slow Consumer Detected: WriteDeadline").is_empty()
            && server.log_lines("Router connection closed").is_empty()
        {
            assert!(Instant::now() < deadline, "{policy}: the write deadline never passed");
            for _ in 0..10 {
                publisher.send(&frame);
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(publisher.ping(), "", "{policy}: the publisher is served");
        if policy == "retry" {
            assert!(server.log_lines("Router connection closed").is_empty(), "{policy}");
            // Reading again, the peer gets every message queued for it.
            let deadline = Instant::now() + WAIT;
            loop {
                let text = peer.read_for(Duration::from_millis(200));
                if text.matches("RMSG $G flood 60000").count() == sent {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{policy}: {} of {sent} arrived",
                    text.matches("RMSG $G flood").count()
                );
            }
            assert!(!server.log_lines("Slow Consumer Recovered").is_empty(), "{policy}");
        } else {
            let deadline = Instant::now() + WAIT;
            while server.log_lines("Router connection closed").is_empty() {
                assert!(Instant::now() < deadline, "{policy}: the route stayed");
                peer.read_for(Duration::from_millis(100));
            }
        }
    }
}
