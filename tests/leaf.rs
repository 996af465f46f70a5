//! Leaf nodes over real connections, mixed with nats-server 2.15: a hub
//! with accounts A and B and a leaf bound to A (user and password, or a
//! creds file against an operator-mode hub), each of petrel and
//! nats-server on either side; messages both ways in order, wildcards and
//! headers, a queue group spanning hub and leaf, request/reply and no
//! responders, the other account kept apart, leafz on both sides; a hub
//! killed and restarted; loops; bad credentials; clients on the leaf port.
//! Servers are on loopback with random ports.

mod common;

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

/// (hub, leaf) pairs: petrel on either side and on both.
const MIXES: [(Kind, Kind); 3] = [
    (Kind::Nats, Kind::Petrel),
    (Kind::Petrel, Kind::Nats),
    (Kind::Petrel, Kind::Petrel),
];

fn start(kind: Kind, conf: &std::path::Path) -> common::Proc {
    let args = ["-c", conf.to_str().unwrap(), "-m", "-1"];
    match kind {
        Kind::Petrel => common::petrel(&args),
        Kind::Nats => common::nats_server(&args),
    }
}

/// A hub with accounts A and B whose leaf port (`leaf_port`, or a free
/// one) binds the leaf user `lu` to A.
fn hub(kind: Kind, leaf_port: i32) -> common::Proc {
    let conf = common::jwt::write_conf(&format!(
        "server_name: HUB\nleafnodes {{\n  listen: 127.0.0.1:{leaf_port}\n  authorization {{ user: lu, password: lp, account: A }}\n}}\n\
         accounts {{\n  A {{ users [{{user: a, password: a}}] }}\n  B {{ users [{{user: b, password: b}}] }}\n}}\n"
    ));
    start(kind, &conf)
}

/// A leaf whose account L is bound to the hub's leaf port as `user:pass`.
fn leaf(kind: Kind, hub_leaf_port: u16, user: &str, pass: &str) -> common::Proc {
    let conf = common::jwt::write_conf(&format!(
        "server_name: LEAF\nleafnodes {{\n  reconnect: \"200ms\"\n  remotes [ {{ url: \"nats://{user}:{pass}@127.0.0.1:{hub_leaf_port}\", account: L }} ]\n}}\n\
         accounts {{\n  L {{ users [{{user: l, password: l}}] }}\n}}\n"
    ));
    start(kind, &conf)
}

async fn client(p: &common::Proc, user: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), user.into())
        .connect(p.url())
        .await
        .expect("connect")
}

fn leafz(p: &common::Proc) -> serde_json::Value {
    let (_, body) = common::http_get(p.monitor_port(), "/leafz?subs=1");
    serde_json::from_str(&body).unwrap()
}

/// Waits until `p` has `n` leaf connections.
fn await_leafs(p: &common::Proc, n: u64) {
    let deadline = Instant::now() + WAIT;
    while leafz(p)["leafnodes"].as_u64() != Some(n) {
        assert!(Instant::now() < deadline, "no {n} leaf connections: {}", leafz(p));
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn hub_and_leaf_behave(hub_kind: Kind, leaf_kind: Kind) {
    let what = format!("hub {hub_kind:?}, leaf {leaf_kind:?}");
    let h = hub(hub_kind, -1);
    let l = leaf(leaf_kind, h.leaf_port(), "lu", "lp");
    await_leafs(&h, 1);
    await_leafs(&l, 1);
    // leafz on both sides: the hub binds the leaf to A, the leaf to L.
    let (hz, lz) = (leafz(&h), leafz(&l));
    assert_eq!(hz["leafs"][0]["account"], "A", "{what}: {hz}");
    assert_eq!(hz["leafs"][0]["is_spoke"], false, "{what}");
    assert_eq!(hz["leafs"][0]["name"], "LEAF", "{what}");
    assert_eq!(lz["leafs"][0]["account"], "L", "{what}: {lz}");
    assert_eq!(lz["leafs"][0]["is_spoke"], true, "{what}");
    assert_eq!(lz["leafs"][0]["name"], "HUB", "{what}");

    let (ha, hb, lc) = (client(&h, "a").await, client(&h, "b").await, client(&l, "l").await);
    // 1000 messages each way, in order.
    for (from, to, dir) in [(&lc, &ha, "to.hub"), (&ha, &lc, "to.leaf")] {
        let mut sub = to.subscribe(dir).await.unwrap();
        common::links::await_crossing(from, &mut sub, dir).await;
        for k in 0..1000 {
            from.publish(dir, k.to_string().into()).await.unwrap();
        }
        from.flush().await.unwrap();
        for k in 0..1000 {
            assert_eq!(next(&mut sub).await.payload, k.to_string(), "{what}: {dir} in order");
        }
    }
    // Wildcards and headers cross.
    let mut wild = ha.subscribe("wild.*.>").await.unwrap();
    common::links::await_crossing(&lc, &mut wild, "wild.probe.x").await;
    let mut headers = HeaderMap::new();
    headers.insert("X-Leaf", "yes");
    lc.publish_with_headers("wild.a.b", headers, "h".into()).await.unwrap();
    lc.flush().await.unwrap();
    let m = next(&mut wild).await;
    assert_eq!(m.subject.as_str(), "wild.a.b");
    assert_eq!(m.headers.unwrap().get("X-Leaf").unwrap().as_str(), "yes", "{what}");
    // The hub's other account sees none of the leaf's traffic.
    let mut other = hb.subscribe("to.hub").await.unwrap();
    hb.flush().await.unwrap();
    lc.publish("to.hub", "for A only".into()).await.unwrap();
    lc.flush().await.unwrap();
    assert!(
        timeout(Duration::from_millis(300), other.next()).await.is_err(),
        "{what}: account B saw the leaf's message"
    );

    // A queue group with a member on each side gets each message once;
    // the publisher's own side is preferred (as nats-server does).
    let mut qh = ha.queue_subscribe("work", "q".into()).await.unwrap();
    let mut ql = lc.queue_subscribe("work", "q".into()).await.unwrap();
    let mut watch = lc.subscribe("work").await.unwrap();
    common::links::await_crossing(&ha, &mut watch, "work").await;
    while let Ok(Some(_)) = timeout(Duration::from_millis(200), qh.next()).await {}
    while let Ok(Some(_)) = timeout(Duration::from_millis(200), ql.next()).await {}
    for k in 0..100 {
        lc.publish("work", k.to_string().into()).await.unwrap();
    }
    lc.flush().await.unwrap();
    let mut seen = vec![0u32; 100];
    let deadline = Instant::now() + WAIT;
    while seen.iter().sum::<u32>() < 100 && Instant::now() < deadline {
        tokio::select! {
            Some(m) = qh.next() => seen[std::str::from_utf8(&m.payload).unwrap().parse::<usize>().unwrap()] += 1,
            Some(m) = ql.next() => seen[std::str::from_utf8(&m.payload).unwrap().parse::<usize>().unwrap()] += 1,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(Some(m)) = timeout(Duration::from_millis(50), qh.next()).await {
        seen[std::str::from_utf8(&m.payload).unwrap().parse::<usize>().unwrap()] += 1;
    }
    while let Ok(Some(m)) = timeout(Duration::from_millis(50), ql.next()).await {
        seen[std::str::from_utf8(&m.payload).unwrap().parse::<usize>().unwrap()] += 1;
    }
    assert!(
        seen.iter().all(|&n| n == 1),
        "{what}: each queued message once: {seen:?}"
    );
    // Only the hub has a member now: messages from the leaf reach it.
    drop(ql);
    lc.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(Some(_)) = timeout(Duration::from_millis(100), qh.next()).await {}
    lc.publish("work", "to the hub member".into()).await.unwrap();
    lc.flush().await.unwrap();
    assert_eq!(next(&mut qh).await.payload, "to the hub member", "{what}");

    // Request/reply both ways, and no responders.
    for (svc_side, req_side, subject) in [(&lc, &ha, "svc.leaf"), (&ha, &lc, "svc.hub")] {
        let mut svc = svc_side.subscribe(subject).await.unwrap();
        let mut probe = svc_side.subscribe(format!("{subject}.probe")).await.unwrap();
        common::links::await_crossing(req_side, &mut probe, &format!("{subject}.probe")).await;
        let responder = svc_side.clone();
        let task = tokio::spawn(async move {
            while let Some(m) = svc.next().await {
                if let Some(r) = m.reply {
                    responder.publish(r, "pong".into()).await.unwrap();
                    responder.flush().await.unwrap();
                }
            }
        });
        let reply = timeout(WAIT, req_side.request(subject, "ping".into()))
            .await
            .expect("in time")
            .expect("a reply across the leaf connection");
        assert_eq!(reply.payload, "pong", "{what}: {subject}");
        task.abort();
    }
    let err = timeout(WAIT, lc.request("nobody.home", "x".into()))
        .await
        .expect("in time")
        .expect_err("no responders");
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders, "{what}");
    // The leaf's subscriptions show in the hub's leafz (monitoring sees
    // them within a shard's poll, 20 ms).
    let deadline = Instant::now() + WAIT;
    loop {
        let hz = leafz(&h);
        let subs = hz["leafs"][0]["subscriptions_list"].to_string();
        // Both sides measure the round trip of their PINGs (leafz `rtt`).
        let rtts = hz["leafs"][0]["rtt"].is_string() && leafz(&l)["leafs"][0]["rtt"].is_string();
        if subs.contains("\"work\"") && subs.contains("$LDS.") && subs.contains("_INBOX.") && rtts {
            assert!(hz["leafs"][0]["in_msgs"].as_u64().unwrap() >= 1000, "{what}: {hz}");
            break;
        }
        assert!(Instant::now() < deadline, "{what}: {subs}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn nats_hub_petrel_leaf() {
    hub_and_leaf_behave(Kind::Nats, Kind::Petrel).await;
}

#[tokio::test]
async fn petrel_hub_nats_leaf() {
    hub_and_leaf_behave(Kind::Petrel, Kind::Nats).await;
}

#[tokio::test]
async fn petrel_hub_petrel_leaf() {
    hub_and_leaf_behave(Kind::Petrel, Kind::Petrel).await;
}

/// `kill -9` of the hub and its restart on the same ports: the leaf
/// reconnects and its interest is there again (and the hub's reaches it).
#[tokio::test]
async fn a_killed_hub_comes_back_and_interest_is_resynced() {
    for (hub_kind, leaf_kind) in [(Kind::Nats, Kind::Petrel), (Kind::Petrel, Kind::Nats)] {
        let what = format!("hub {hub_kind:?}, leaf {leaf_kind:?}");
        let port = common::free_port() as i32;
        let mut h = hub(hub_kind, port);
        let l = leaf(leaf_kind, port as u16, "lu", "lp");
        let lc = client(&l, "l").await;
        let mut sub = lc.subscribe("after.restart").await.unwrap();
        lc.flush().await.unwrap();
        await_leafs(&h, 1);
        unsafe {
            libc::kill(h.pid() as i32, libc::SIGKILL);
        }
        h.wait_exit(Duration::from_secs(5));
        let h = hub(hub_kind, port);
        await_leafs(&h, 1);
        let ha = client(&h, "a").await;
        common::links::await_crossing(&ha, &mut sub, "after.restart").await;
        ha.publish("after.restart", "back".into()).await.unwrap();
        ha.flush().await.unwrap();
        assert_eq!(next(&mut sub).await.payload, "back", "{what}");
        // And the hub's interest reaches the leaf's clients.
        let mut at_hub = ha.subscribe("to.new.hub").await.unwrap();
        common::links::await_crossing(&lc, &mut at_hub, "to.new.hub").await;
    }
}

/// Wrong credentials: the hub answers `-ERR 'Authorization Violation'`,
/// the leaf logs it and tries again, as nats-server's leaf does.
#[test]
fn wrong_credentials_are_refused_and_retried() {
    for (hub_kind, leaf_kind) in MIXES {
        let h = hub(hub_kind, -1);
        let l = leaf(leaf_kind, h.leaf_port(), "lu", "wrong");
        let deadline = Instant::now() + WAIT;
        while l.log_lines("Leafnode Error 'Authorization Violation'").len() < 2 {
            assert!(
                Instant::now() < deadline,
                "hub {hub_kind:?}, leaf {leaf_kind:?}: no retried refusal"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !h.log_lines("authentication error").is_empty(),
            "hub {hub_kind:?} logs it"
        );
        assert_eq!(leafz(&h)["leafnodes"], 0);
    }
}

/// Two servers, each a leaf of the other in the same account: the loop is
/// detected (each hears its own `$LDS.` subject back) with nats-server's
/// error, and the leaf waits 30 s before trying again.
#[test]
fn a_loop_is_detected() {
    for (a_kind, b_kind) in [(Kind::Petrel, Kind::Petrel), (Kind::Petrel, Kind::Nats)] {
        let (pa, pb) = (common::free_port(), common::free_port());
        let conf = |own: u16, other: u16| {
            common::jwt::write_conf(&format!(
                "leafnodes {{\n  listen: 127.0.0.1:{own}\n  remotes [ {{ url: \"nats://127.0.0.1:{other}\" }} ]\n}}\n"
            ))
        };
        let a = start(a_kind, &conf(pa, pb));
        let b = start(b_kind, &conf(pb, pa));
        let deadline = Instant::now() + WAIT;
        let needle = "Loop detected for leafnode account=\"$G\". Delaying attempt to reconnect for 30s";
        while a.log_lines(needle).is_empty() && b.log_lines(needle).is_empty() {
            assert!(Instant::now() < deadline, "{a_kind:?} <-> {b_kind:?}: no loop detected");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The same raw bytes to a petrel and a nats-server leaf port: a client's
/// CONNECT (`lang`), an operation before CONNECT.
#[test]
fn clients_and_early_operations_on_the_leaf_port() {
    let mut results = Vec::new();
    for kind in [Kind::Petrel, Kind::Nats] {
        let conf = common::jwt::write_conf("leafnodes { listen: 127.0.0.1:-1 }\n");
        let s = start(kind, &conf);
        let addr = format!("127.0.0.1:{}", s.leaf_port());
        let mut c = common::raw::Raw::open(&addr);
        let info = c.info();
        assert!(info["client_id"].as_u64().unwrap() > 0, "{kind:?}: {info}");
        assert!(info["leafnode_urls"].is_array(), "{kind:?}: {info}");
        assert_eq!(info["auth_required"], true, "{kind:?}: {info}");
        assert!(info["nonce"].is_string(), "{kind:?}: {info}");
        let client = c.exchange(b"CONNECT {\"lang\":\"rust\",\"verbose\":false}\r\n");
        let mut early = common::raw::Raw::open(&addr);
        early.info();
        let ping = early.exchange(b"PING\r\n");
        results.push((client.text(), client.closed, ping.text(), ping.closed));
    }
    assert_eq!(results[0], results[1], "petrel then nats-server");
    assert!(
        results[0].0.contains("-ERR 'attempted to connect to leaf node port'"),
        "{results:?}"
    );
    assert!(results[0].2.contains("-ERR 'Authorization Violation'"), "{results:?}");
}

/// deny_imports and deny_exports on a remote, with either server as the
/// leaf: denied imports are neither asked for nor delivered, denied
/// exports are not sent.
#[tokio::test]
async fn deny_imports_and_exports() {
    for (hub_kind, leaf_kind) in [(Kind::Nats, Kind::Petrel), (Kind::Petrel, Kind::Nats)] {
        let what = format!("hub {hub_kind:?}, leaf {leaf_kind:?}");
        let h = hub(hub_kind, -1);
        let conf = common::jwt::write_conf(&format!(
            "leafnodes {{\n  remotes [ {{ url: \"nats://lu:lp@127.0.0.1:{}\", account: L, deny_imports: [\"secret.>\"], deny_exports: \"private.>\" }} ]\n}}\n\
             accounts {{\n  L {{ users [{{user: l, password: l}}] }}\n}}\n",
            h.leaf_port()
        ));
        let l = start(leaf_kind, &conf);
        let (ha, lc) = (client(&h, "a").await, client(&l, "l").await);
        let mut ok_at_leaf = lc.subscribe("ok.x").await.unwrap();
        let mut secret_at_leaf = lc.subscribe("secret.x").await.unwrap();
        common::links::await_crossing(&ha, &mut ok_at_leaf, "ok.x").await;
        let denied_import = format!("{what}: a denied import");
        common::links::blocked_then_marker(
            &ha,
            "secret.x",
            &mut secret_at_leaf,
            "ok.x",
            &mut ok_at_leaf,
            &denied_import,
        )
        .await;
        let mut private_at_hub = ha.subscribe("private.x").await.unwrap();
        let mut ok_at_hub = ha.subscribe("ok.y").await.unwrap();
        common::links::await_crossing(&lc, &mut ok_at_hub, "ok.y").await;
        let denied_export = format!("{what}: a denied export");
        common::links::blocked_then_marker(
            &lc,
            "private.x",
            &mut private_at_hub,
            "ok.y",
            &mut ok_at_hub,
            &denied_export,
        )
        .await;
    }
}

/// An operator-mode hub (the same operator and MEMORY resolver as the
/// fixtures) and a leaf whose remote uses a creds file: bound to the
/// creds' account, messages both ways.
#[tokio::test]
async fn operator_mode_hub_and_a_creds_leaf() {
    for (hub_kind, leaf_kind) in MIXES {
        let what = format!("hub {hub_kind:?}, leaf {leaf_kind:?}");
        let base = std::fs::read_to_string(common::jwt::memory_conf(&common::jwt::fixture_accounts())).unwrap();
        let hub_conf = common::jwt::write_conf(&format!("{base}\nleafnodes {{ listen: 127.0.0.1:-1 }}\n"));
        let h = start(hub_kind, &hub_conf);
        let leaf_conf = common::jwt::write_conf(&format!(
            "leafnodes {{\n  remotes [ {{ url: \"nats://127.0.0.1:{}\", credentials: \"{}creds/a.creds\" }} ]\n}}\n",
            h.leaf_port(),
            common::jwt::FIXTURES
        ));
        let l = start(leaf_kind, &leaf_conf);
        await_leafs(&h, 1);
        let hc = async_nats::ConnectOptions::with_credentials_file(format!("{}creds/a.creds", common::jwt::FIXTURES))
            .await
            .unwrap()
            .connect(h.url())
            .await
            .unwrap();
        let lc = async_nats::connect(l.url()).await.unwrap();
        let mut at_hub = hc.subscribe("op.up").await.unwrap();
        common::links::await_crossing(&lc, &mut at_hub, "op.up").await;
        let mut at_leaf = lc.subscribe("op.down").await.unwrap();
        common::links::await_crossing(&hc, &mut at_leaf, "op.down").await;
        let acc = leafz(&h)["leafs"][0]["account"].as_str().unwrap().to_string();
        assert!(
            acc.starts_with('A') && acc.len() == 56,
            "{what}: bound to the creds' account: {acc}"
        );
    }
}

/// A leaf on one node of a cluster reaches subscribers on the other node
/// and hears their publishes (interest crosses the route and the leaf
/// connection), with petrel and nats-server nodes and leaves.
#[tokio::test]
async fn a_leaf_reaches_the_whole_cluster() {
    for (n1, n2, leaf_kind) in [
        (Kind::Petrel, Kind::Nats, Kind::Nats),
        (Kind::Petrel, Kind::Petrel, Kind::Petrel),
        (Kind::Nats, Kind::Petrel, Kind::Petrel),
    ] {
        let what = format!("nodes {n1:?}+{n2:?}, leaf {leaf_kind:?}");
        let conf = |routes: &str| {
            common::jwt::write_conf(&format!(
                "server_name: N{}\ncluster {{ name: c1, listen: 127.0.0.1:-1{routes} }}\n\
                 leafnodes {{ listen: 127.0.0.1:-1, authorization {{ user: lu, password: lp, account: A }} }}\n\
                 accounts {{ A {{ users [{{user: a, password: a}}] }} }}\n",
                if routes.is_empty() { 1 } else { 2 }
            ))
        };
        let first = start(n1, &conf(""));
        let second = start(
            n2,
            &conf(&format!(", routes: [\"nats://127.0.0.1:{}\"]", first.route_port())),
        );
        let l = leaf(leaf_kind, first.leaf_port(), "lu", "lp");
        await_leafs(&first, 1);
        let (far, lc) = (client(&second, "a").await, client(&l, "l").await);
        let mut at_far = far.subscribe("leaf.to.far").await.unwrap();
        common::links::await_crossing(&lc, &mut at_far, "leaf.to.far").await;
        let mut at_leaf = lc.subscribe("far.to.leaf").await.unwrap();
        common::links::await_crossing(&far, &mut at_leaf, "far.to.leaf").await;
        for k in 0..100 {
            lc.publish("leaf.to.far", k.to_string().into()).await.unwrap();
        }
        lc.flush().await.unwrap();
        for k in 0..100 {
            assert_eq!(next(&mut at_far).await.payload, k.to_string(), "{what}");
        }
    }
}

/// A leaf that authenticates as a server user with permissions (no
/// `leafnodes` authorization), sent the same bytes by a raw leaf to petrel
/// and nats-server hubs: the confirming INFO carries the user's
/// permissions (import: what it may receive, export: what it may send),
/// the interest it is told is what it may publish, and a subscription or
/// publish outside them is refused with nats-server's error and a close.
#[tokio::test]
async fn a_leaf_users_permissions_apply() {
    let conf = common::jwt::write_conf(
        "leafnodes { listen: 127.0.0.1:-1 }\naccounts {\n  A { users [\n    {user: a, password: a}\n    \
         {user: pu, password: pp, permissions: { publish: { deny: [\"hub.deny.>\"] }, subscribe: { allow: [\"hub.>\", \"leaf.>\"], deny: [\"hub.nosub.>\"] } }}\n  ] }\n}\n",
    );
    let connect = b"CONNECT {\"version\":\"2.15.1\",\"server_id\":\"NFAKELEAF\",\"name\":\"FAKE\",\"cluster\":\"FAKE\",\"headers\":true,\"compress_mode\":\"off\",\"remote_account\":\"L\",\"protocol\":3,\"user\":\"pu\",\"pass\":\"pp\"}\r\n";
    let mut results = Vec::new();
    for kind in [Kind::Petrel, Kind::Nats] {
        let s = start(kind, &conf);
        let a = client(&s, "a").await;
        let mut kept = Vec::new();
        for subj in ["hub.a", "hub.nosub.a", "hub.deny.a", "other.a"] {
            kept.push(a.subscribe(subj).await.unwrap());
        }
        a.flush().await.unwrap();
        let addr = format!("127.0.0.1:{}", s.leaf_port());
        let mut leaf = common::raw::Raw::open(&addr);
        let r = leaf.exchange(connect).text();
        let info_line = r
            .lines()
            .find(|l| l.starts_with("INFO "))
            .expect("confirming INFO")
            .to_string();
        let info: serde_json::Value = serde_json::from_str(info_line.trim_start_matches("INFO ").trim_end()).unwrap();
        let mut told: Vec<String> = r
            .lines()
            .filter(|l| l.starts_with("LS+ ") && !l.contains("$SYS") && !l.contains("$LDS"))
            .map(str::to_string)
            .collect();
        told.sort();
        let sub = leaf.exchange(b"LS+ other.b\r\n");
        let mut leaf2 = common::raw::Raw::open(&addr);
        leaf2.exchange(connect);
        let publish = leaf2.exchange(b"LMSG hub.deny.a 2\r\nhi\r\n");
        results.push((
            info["import"].clone(),
            info["export"].clone(),
            told,
            sub.text(),
            sub.closed,
            publish.text(),
            publish.closed,
        ));
    }
    assert_eq!(results[0], results[1], "petrel then nats-server");
    let r = &results[0];
    assert_eq!(r.2, ["LS+ hub.a", "LS+ hub.nosub.a", "LS+ other.a"], "{r:?}");
    assert!(
        r.3.contains("Permissions Violation for Subscription to \"other.b\"") && r.4,
        "{r:?}"
    );
    assert!(
        r.5.contains("Permissions Violation for Publish to \"hub.deny.a\"") && r.6,
        "{r:?}"
    );
}

/// `$SYS` events for leaf connections, as nats-server sends them: the hub
/// counts the leaf in its account's CONNS (`leafnodes`) and sends a
/// DISCONNECT (kind `Leafnode`) when it goes; the leaf side sends CONNECT
/// and DISCONNECT for its own account.
#[tokio::test]
async fn leaf_connections_in_system_events() {
    for (hub_kind, leaf_kind) in MIXES {
        let what = format!("hub {hub_kind:?}, leaf {leaf_kind:?}");
        let port = common::free_port();
        let hub_conf = common::jwt::write_conf(&format!(
            "server_name: HUB\nleafnodes {{ listen: 127.0.0.1:{port}, authorization {{ user: lu, password: lp, account: A }} }}\n\
             accounts {{\n  A {{ users [{{user: a, password: a}}] }}\n  SYS {{ users [{{user: sys, password: sys}}] }}\n}}\nsystem_account: SYS\n"
        ));
        let leaf_conf = common::jwt::write_conf(&format!(
            "server_name: LEAF\nleafnodes {{ reconnect: \"200ms\", remotes [ {{ url: \"nats://lu:lp@127.0.0.1:{port}\", account: L }} ] }}\n\
             accounts {{\n  L {{ users [{{user: l, password: l}}] }}\n  SYS {{ users [{{user: sys, password: sys}}] }}\n}}\nsystem_account: SYS\n"
        ));
        let h = start(hub_kind, &hub_conf);
        let hs = client(&h, "sys").await;
        let mut hub_events = hs.subscribe("$SYS.>").await.unwrap();
        hs.flush().await.unwrap();
        let l = start(leaf_kind, &leaf_conf);
        // The hub: A's connection counts with one leaf node.
        let deadline = Instant::now() + WAIT;
        loop {
            let m = timeout(WAIT, hub_events.next()).await.expect("event").unwrap();
            if m.subject.as_str() == "$SYS.ACCOUNT.A.SERVER.CONNS" {
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                if v["leafnodes"] == 1 {
                    assert_eq!(v["total_conns"], 1, "{what}: {v}");
                    break;
                }
            }
            assert!(Instant::now() < deadline, "{what}: no CONNS with the leaf");
        }
        // The leaf goes: DISCONNECT, kind Leafnode, naming it.
        drop(l);
        let deadline = Instant::now() + WAIT;
        loop {
            let m = timeout(WAIT, hub_events.next()).await.expect("event").unwrap();
            if m.subject.as_str() == "$SYS.ACCOUNT.A.DISCONNECT" {
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                assert_eq!(v["client"]["kind"], "Leafnode", "{what}: {v}");
                assert_eq!(v["client"]["name"], "LEAF", "{what}: {v}");
                assert_eq!(v["client"]["user"], "lu", "{what}: {v}");
                break;
            }
            assert!(Instant::now() < deadline, "{what}: no DISCONNECT");
        }
        drop(hs);
        drop(h);
        // The leaf side: CONNECT for its account when the hub comes, and
        // DISCONNECT when it goes.
        let l = start(leaf_kind, &leaf_conf);
        let ls = client(&l, "sys").await;
        let mut leaf_events = ls.subscribe("$SYS.ACCOUNT.L.>").await.unwrap();
        ls.flush().await.unwrap();
        let h = start(hub_kind, &hub_conf);
        let mut seen = Vec::new();
        let deadline = Instant::now() + WAIT;
        while seen.len() < 2 {
            assert!(Instant::now() < deadline, "{what}: leaf side saw {seen:?}");
            let Ok(Some(m)) = timeout(Duration::from_secs(1), leaf_events.next()).await else {
                continue;
            };
            let kind = m.subject.as_str().rsplit('.').next().unwrap().to_string();
            if kind == "CONNECT" || kind == "DISCONNECT" {
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                assert_eq!(kind, "CONNECT", "{what}: {v}");
                assert_eq!(v["client"]["kind"], "Leafnode", "{what}: {v}");
                assert_eq!(v["client"]["acc"], "L", "{what}: {v}");
                seen.push(kind);
                if seen.len() == 1 {
                    drop(h);
                    break;
                }
            }
        }
        let deadline = Instant::now() + WAIT;
        while seen.len() < 2 {
            assert!(Instant::now() < deadline, "{what}: leaf side saw {seen:?}");
            let Ok(Some(m)) = timeout(Duration::from_secs(1), leaf_events.next()).await else {
                continue;
            };
            let kind = m.subject.as_str().rsplit('.').next().unwrap().to_string();
            if kind == "DISCONNECT" {
                seen.push(kind);
            }
        }
        assert_eq!(seen, ["CONNECT", "DISCONNECT"], "{what}");
    }
}

/// TLS on leaf connections, as nats-server runs it (INFO in the clear,
/// then the handshake the leaf starts): a hub with `leafnodes { tls }` and
/// a leaf trusting its CA, each of petrel and nats-server on either side;
/// a leaf that does not trust the CA is refused.
#[tokio::test]
async fn tls_leaf_connections() {
    let pki = common::pki::Pki::new();
    pki.issue(&["127.0.0.1", "localhost"], "hub", "hub");
    let other = common::pki::Pki::new();
    for (hub_kind, leaf_kind) in MIXES {
        let what = format!("hub {hub_kind:?}, leaf {leaf_kind:?}");
        let hub_conf = common::jwt::write_conf(&format!(
            "leafnodes {{\n  listen: 127.0.0.1:-1\n  tls {{ cert_file: \"{}\", key_file: \"{}\", timeout: 2 }}\n  authorization {{ user: lu, password: lp, account: A }}\n}}\n\
             accounts {{ A {{ users [{{user: a, password: a}}] }} }}\n",
            pki.path("hub.pem").display(),
            pki.path("hub-key.pem").display()
        ));
        let h = start(hub_kind, &hub_conf);
        let remote = |ca: &std::path::Path| {
            common::jwt::write_conf(&format!(
                "leafnodes {{\n  reconnect: \"200ms\"\n  remotes [ {{ url: \"tls://lu:lp@127.0.0.1:{}\", account: L, tls {{ ca_file: \"{}\" }} }} ]\n}}\n\
                 accounts {{ L {{ users [{{user: l, password: l}}] }} }}\n",
                h.leaf_port(),
                ca.display()
            ))
        };
        let l = start(leaf_kind, &remote(&pki.path("ca.pem")));
        await_leafs(&h, 1);
        let (ha, lc) = (client(&h, "a").await, client(&l, "l").await);
        let mut at_hub = ha.subscribe("over.tls").await.unwrap();
        common::links::await_crossing(&lc, &mut at_hub, "over.tls").await;
        let mut at_leaf = lc.subscribe("back.over.tls").await.unwrap();
        common::links::await_crossing(&ha, &mut at_leaf, "back.over.tls").await;
        // A leaf that trusts another CA gets nowhere.
        let bad = start(leaf_kind, &remote(&other.path("ca.pem")));
        let deadline = Instant::now() + WAIT;
        while bad.log_lines("TLS").is_empty() || bad.log_lines("handshake").is_empty() {
            assert!(
                Instant::now() < deadline,
                "{what}: no TLS handshake error on the untrusting leaf"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(leafz(&h)["leafnodes"], 1, "{what}: only the trusting leaf");
    }
}

/// Whether `leaf` (a `/leafz` entry) shows a level `s2_auto` may have
/// picked where `want` is its pick for a round trip under 10 ms: both
/// servers go to `s2_fast` past 10 ms (then `s2_better`, `s2_best`), from
/// a round trip measured earlier than the one `/leafz` shows, and a loaded
/// machine measures such round trips.
fn auto_picked_by_rtt(leaf: &serde_json::Value, want: &str) -> bool {
    want == "s2_uncompressed"
        && ["s2_fast", "s2_better", "s2_best"]
            .iter()
            .any(|l| leaf["compression"] == *l)
}

/// An account JWT's `leaf` limit holds on a hub in operator mode: a
/// second leaf of an account limited to one is refused with nats-server's
/// error (petrel and nats-server hubs, petrel leaves).
#[test]
fn the_account_leaf_limit_holds() {
    use common::jwt;
    let (acc_pub, acc_jwt, acc_seed) = jwt::account(
        "ONELEAF",
        serde_json::json!({"type": "account", "version": 2, "limits": {"conn": -1, "leaf": 1, "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true}}),
    );
    let mut accounts = jwt::fixture_accounts();
    accounts.push((acc_pub, acc_jwt));
    let base = std::fs::read_to_string(jwt::memory_conf(&accounts)).unwrap();
    let (user_jwt, user_seed) = jwt::user(&acc_seed, "leafuser", jwt::user_nats(), serde_json::json!({}));
    let creds = write_creds(&user_jwt, &user_seed);
    for hub_kind in [Kind::Petrel, Kind::Nats] {
        let hub_conf = jwt::write_conf(&format!("{base}\nleafnodes {{ listen: 127.0.0.1:-1 }}\n"));
        let h = start(hub_kind, &hub_conf);
        let leaf_conf = jwt::write_conf(&format!(
            "leafnodes {{ remotes [ {{ url: \"nats://127.0.0.1:{}\", credentials: \"{}\" }} ] }}\n",
            h.leaf_port(),
            creds.display()
        ));
        let first = start(Kind::Petrel, &leaf_conf);
        await_leafs(&h, 1);
        let second = start(Kind::Petrel, &leaf_conf);
        let deadline = Instant::now() + WAIT;
        while second
            .log_lines("Leafnode Error 'maximum account active connections exceeded'")
            .is_empty()
        {
            assert!(
                Instant::now() < deadline,
                "hub {hub_kind:?}: the second leaf was not refused"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(leafz(&h)["leafnodes"], 1, "hub {hub_kind:?}");
        drop(first);
    }
}

/// A leaf cluster (two nodes of one cluster, each a leaf of the same hub):
/// a message published on one leaf node reaches a subscriber on the other
/// once (over their route), not a second time through the hub, and the
/// hub's own subscribers get it once too (nats-server's same-cluster rule).
#[tokio::test]
async fn a_leaf_cluster_gets_each_message_once() {
    for (hub_kind, leaf_kind) in [
        (Kind::Petrel, Kind::Nats),
        (Kind::Petrel, Kind::Petrel),
        (Kind::Nats, Kind::Petrel),
    ] {
        let what = format!("hub {hub_kind:?}, leaf cluster of {leaf_kind:?}");
        let h = hub(hub_kind, -1);
        let conf = |name: &str, routes: &str| {
            common::jwt::write_conf(&format!(
                "server_name: {name}\ncluster {{ name: edge, listen: 127.0.0.1:-1{routes} }}\n\
                 leafnodes {{ remotes [ {{ url: \"nats://lu:lp@127.0.0.1:{}\", account: L }} ] }}\n\
                 accounts {{ L {{ users [{{user: l, password: l}}] }} }}\n",
                h.leaf_port()
            ))
        };
        let l1 = start(leaf_kind, &conf("E1", ""));
        let l2 = start(
            leaf_kind,
            &conf("E2", &format!(", routes: [\"nats://127.0.0.1:{}\"]", l1.route_port())),
        );
        await_leafs(&h, 2);
        let (c1, c2, ha) = (client(&l1, "l").await, client(&l2, "l").await, client(&h, "a").await);
        let mut at_l2 = c2.subscribe("edge.x").await.unwrap();
        let mut at_hub = ha.subscribe("edge.x").await.unwrap();
        common::links::await_crossing(&c1, &mut at_l2, "edge.x").await;
        common::links::await_crossing(&c1, &mut at_hub, "edge.x").await;
        // Let every path settle, then count.
        tokio::time::sleep(Duration::from_millis(500)).await;
        while let Ok(Some(_)) = timeout(Duration::from_millis(200), at_l2.next()).await {}
        while let Ok(Some(_)) = timeout(Duration::from_millis(200), at_hub.next()).await {}
        for k in 0..50 {
            c1.publish("edge.x", k.to_string().into()).await.unwrap();
        }
        c1.flush().await.unwrap();
        for (sub, name) in [(&mut at_l2, "the other leaf node"), (&mut at_hub, "the hub")] {
            for k in 0..50 {
                assert_eq!(next(sub).await.payload, k.to_string(), "{what}: {name}");
            }
            assert!(
                timeout(Duration::from_millis(300), sub.next()).await.is_err(),
                "{what}: {name} got a message twice"
            );
        }
    }
}

/// Interest isolation, as nats-server has it: with the hub's
/// `isolate_leafnode_interest` no leaf is told another leaf's interest;
/// with a leaf's `request_isolation` only that leaf is spared it.
#[tokio::test]
async fn leaf_interest_isolation() {
    for (hub_kind, leaf_kind) in MIXES {
        for (hub_isolates, f2_requests) in [(true, false), (false, true)] {
            let what = format!(
                "hub {hub_kind:?}, leaves {leaf_kind:?}, hub isolates {hub_isolates}, F2 requests {f2_requests}"
            );
            let hub_conf = common::jwt::write_conf(&format!(
                "leafnodes {{ listen: 127.0.0.1:-1, isolate_leafnode_interest: {hub_isolates} }}\n"
            ));
            let h = start(hub_kind, &hub_conf);
            let leaf_conf = |name: &str, request: bool| {
                common::jwt::write_conf(&format!(
                    "server_name: {name}\nleafnodes {{ remotes [ {{ url: \"nats://127.0.0.1:{}\", request_isolation: {request} }} ] }}\n",
                    h.leaf_port()
                ))
            };
            let f1 = start(leaf_kind, &leaf_conf("F1", false));
            let f2 = start(leaf_kind, &leaf_conf("F2", f2_requests));
            await_leafs(&h, 2);
            let hc = async_nats::connect(h.url()).await.unwrap();
            let c1 = async_nats::connect(f1.url()).await.unwrap();
            let c2 = async_nats::connect(f2.url()).await.unwrap();
            // The hub's own interest reaches both leaves either way.
            let mut at_hub = hc.subscribe("hub.x").await.unwrap();
            common::links::await_crossing(&c1, &mut at_hub, "hub.x").await;
            common::links::await_crossing(&c2, &mut at_hub, "hub.x").await;
            let mut at_f1 = c1.subscribe("from.f1").await.unwrap();
            let mut at_f2 = c2.subscribe("from.f2").await.unwrap();
            c1.flush().await.unwrap();
            c2.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            c2.publish("from.f1", "f2 to f1".into()).await.unwrap();
            c2.flush().await.unwrap();
            c1.publish("from.f2", "f1 to f2".into()).await.unwrap();
            c1.flush().await.unwrap();
            let f1_got = timeout(Duration::from_millis(500), at_f1.next()).await.is_ok();
            let f2_got = timeout(Duration::from_millis(500), at_f2.next()).await.is_ok();
            // F2 hears F1's interest only when nothing isolates F2; F1
            // hears F2's unless the hub isolates everyone.
            assert_eq!(
                f1_got,
                !hub_isolates && !f2_requests,
                "{what}: F2 knew of F1's interest"
            );
            assert_eq!(f2_got, !hub_isolates, "{what}: F1 knew of F2's interest");
        }
    }
}

/// A creds file for a user JWT and its seed.
fn write_creds(user_jwt: &str, user_seed: &str) -> std::path::PathBuf {
    let creds = common::jwt::temp_dir().join("leaf.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{user_seed}\n------END USER NKEY SEED------\n"
        ),
    )
    .unwrap();
    creds
}

/// A user JWT's `allowed_connection_types` on a hub in operator mode: a
/// user limited to STANDARD cannot connect a leaf, one allowed LEAFNODE
/// can (petrel and nats-server hubs).
#[test]
fn leaf_connections_honour_allowed_connection_types() {
    use common::jwt;
    let (acc_pub, acc_jwt, acc_seed) = jwt::account(
        "TYPES",
        serde_json::json!({"type": "account", "version": 2, "limits": {"conn": -1, "leaf": -1, "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true}}),
    );
    let mut accounts = jwt::fixture_accounts();
    accounts.push((acc_pub, acc_jwt));
    let base = std::fs::read_to_string(jwt::memory_conf(&accounts)).unwrap();
    let user_of = |types: &[&str]| {
        let mut nats = jwt::user_nats();
        nats["allowed_connection_types"] = serde_json::json!(types);
        let (j, seed) = jwt::user(&acc_seed, "typed", nats, serde_json::json!({}));
        write_creds(&j, &seed)
    };
    let standard_only = user_of(&["STANDARD"]);
    let leafnode = user_of(&["LEAFNODE"]);
    for hub_kind in [Kind::Petrel, Kind::Nats] {
        let h = start(
            hub_kind,
            &jwt::write_conf(&format!("{base}\nleafnodes {{ listen: 127.0.0.1:-1 }}\n")),
        );
        let leaf_with = |creds: &std::path::Path| {
            jwt::write_conf(&format!(
                "leafnodes {{ remotes [ {{ url: \"nats://127.0.0.1:{}\", credentials: \"{}\" }} ] }}\n",
                h.leaf_port(),
                creds.display()
            ))
        };
        let refused = start(Kind::Petrel, &leaf_with(&standard_only));
        let deadline = Instant::now() + WAIT;
        while refused.log_lines("Leafnode Error 'Authorization Violation'").is_empty() {
            assert!(
                Instant::now() < deadline,
                "hub {hub_kind:?}: a STANDARD-only user connected a leaf"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let _allowed = start(Kind::Petrel, &leaf_with(&leafnode));
        await_leafs(&h, 1);
    }
}

/// `min_version` on a hub, the same bytes to petrel and nats-server: an
/// older leaf gets the confirming INFO and then nats-server's refusal; a
/// new enough one is taken.
#[test]
fn a_hubs_minimum_leaf_version() {
    let conf = common::jwt::write_conf("leafnodes { listen: 127.0.0.1:-1, min_version: \"2.12.0\" }\n");
    let connect = |version: &str| {
        format!(
            "CONNECT {{\"version\":\"{version}\",\"server_id\":\"NFAKE\",\"name\":\"FAKE\",\"cluster\":\"FAKE\",\"headers\":true,\"compress_mode\":\"off\",\"remote_account\":\"L\",\"protocol\":3}}\r\nPING\r\n"
        )
    };
    let mut results = Vec::new();
    for kind in [Kind::Petrel, Kind::Nats] {
        let s = start(kind, &conf);
        let addr = format!("127.0.0.1:{}", s.leaf_port());
        let mut old = common::raw::Raw::open(&addr);
        let r = old.exchange(connect("2.10.0").as_bytes());
        let err: Vec<String> = r
            .text()
            .lines()
            .filter(|l| l.starts_with("-ERR"))
            .map(str::to_string)
            .collect();
        let mut new = common::raw::Raw::open(&addr);
        let ok = new.exchange(connect("2.12.0").as_bytes());
        results.push((err, r.closed, ok.text().contains("PONG"), ok.closed));
    }
    assert_eq!(results[0], results[1], "petrel then nats-server");
    assert_eq!(
        results[0].0,
        ["-ERR 'connection rejected since minimum version required is \"2.12.0\"'"]
    );
    assert!(results[0].1 && results[0].2 && !results[0].3, "{results:?}");
}

/// `n` numbered messages each way between a hub's client `ha` and a
/// leaf's `lc` (on `<prefix>.up` and `<prefix>.down`), each run in order,
/// then `big` each way when given.
async fn both_ways(
    ha: &async_nats::Client,
    lc: &async_nats::Client,
    prefix: &str,
    n: usize,
    big: Option<&bytes::Bytes>,
    what: &str,
) {
    for (from, to, dir) in [(lc, ha, format!("{prefix}.up")), (ha, lc, format!("{prefix}.down"))] {
        let mut sub = to.subscribe(dir.clone()).await.unwrap();
        common::links::await_crossing(from, &mut sub, &dir).await;
        for k in 0..n {
            from.publish(dir.clone(), k.to_string().into()).await.unwrap();
        }
        if let Some(b) = big {
            from.publish(dir.clone(), b.clone()).await.unwrap();
        }
        from.flush().await.unwrap();
        for k in 0..n {
            assert_eq!(next(&mut sub).await.payload, k.to_string(), "{what}: {dir} in order");
        }
        if let Some(b) = big {
            assert_eq!(&next(&mut sub).await.payload, b, "{what}: {dir}");
        }
    }
}

/// S2 with leaf nodes, petrel and nats-server on either side, in each
/// mode pair (nats-server's matrix: `off` wins, `accept` follows, a level
/// or `s2_auto` writes its own; on loopback `s2_auto` is uncompressed):
/// what `/leafz` shows on both sides, and messages (small, and a large
/// compressible one) both ways.
#[tokio::test]
async fn leaf_compression_with_nats_server() {
    // (hub, its mode, leaf, its mode, what the hub writes, what the leaf writes)
    let cases = [
        (
            Kind::Nats,
            "s2_best",
            Kind::Petrel,
            "s2_auto",
            "s2_best",
            "s2_uncompressed",
        ),
        (Kind::Petrel, "s2_fast", Kind::Nats, "accept", "s2_fast", "s2_fast"),
        (Kind::Petrel, "off", Kind::Nats, "s2_auto", "off", "off"),
        (Kind::Nats, "s2_auto", Kind::Petrel, "off", "off", "off"),
        (
            Kind::Petrel,
            "s2_auto",
            Kind::Nats,
            "s2_auto",
            "s2_uncompressed",
            "s2_uncompressed",
        ),
        (
            Kind::Petrel,
            "s2_better",
            Kind::Petrel,
            "s2_best",
            "s2_better",
            "s2_best",
        ),
    ];
    for (hub_kind, hub_mode, leaf_kind, leaf_mode, hub_writes, leaf_writes) in cases {
        let what = format!("hub {hub_kind:?} {hub_mode}, leaf {leaf_kind:?} {leaf_mode}");
        let hconf = common::jwt::write_conf(&format!(
            "server_name: HUB\nleafnodes {{\n  listen: 127.0.0.1:-1\n  compression: {hub_mode}\n  authorization {{ user: lu, password: lp, account: A }}\n}}\n\
             accounts {{\n  A {{ users [{{user: a, password: a}}] }}\n}}\n"
        ));
        let h = start(hub_kind, &hconf);
        let lconf = common::jwt::write_conf(&format!(
            "server_name: LEAF\nleafnodes {{\n  reconnect: \"200ms\"\n  remotes [ {{ url: \"nats://lu:lp@127.0.0.1:{}\", account: L, compression: {leaf_mode} }} ]\n}}\n\
             accounts {{\n  L {{ users [{{user: l, password: l}}] }}\n}}\n",
            h.leaf_port()
        ));
        let l = start(leaf_kind, &lconf);
        await_leafs(&h, 1);
        await_leafs(&l, 1);
        for (side, want) in [(&h, hub_writes), (&l, leaf_writes)] {
            let z = leafz(side);
            let leaf = &z["leafs"][0];
            assert!(
                leaf["compression"] == want || auto_picked_by_rtt(leaf, want),
                "{what}: {z}"
            );
        }
        let (ha, lc) = (client(&h, "a").await, client(&l, "l").await);
        let big: bytes::Bytes = "compressible ".repeat(80_000).into();
        both_ways(&ha, &lc, "s2", 200, Some(&big), &what).await;
    }
}

/// A remote with `hub: true`: the dialing server takes the hub's role
/// and the accepting one the leaf's (`is_spoke` in `/leafz` both sides,
/// petrel dialing nats-server and the other way round); messages cross
/// both ways.
#[tokio::test]
async fn a_remote_can_take_the_hub_role() {
    for (acceptor, dialer) in [(Kind::Nats, Kind::Petrel), (Kind::Petrel, Kind::Nats)] {
        let what = format!("{dialer:?} dials {acceptor:?} with hub: true");
        let h = hub(acceptor, -1);
        let lconf = common::jwt::write_conf(&format!(
            "server_name: LEAF\nleafnodes {{\n  reconnect: \"200ms\"\n  remotes [ {{ url: \"nats://lu:lp@127.0.0.1:{}\", account: L, hub: true }} ]\n}}\n\
             accounts {{\n  L {{ users [{{user: l, password: l}}] }}\n}}\n",
            h.leaf_port()
        ));
        let l = start(dialer, &lconf);
        await_leafs(&h, 1);
        await_leafs(&l, 1);
        assert_eq!(leafz(&h)["leafs"][0]["is_spoke"], true, "{what}: {}", leafz(&h));
        assert_eq!(leafz(&l)["leafs"][0]["is_spoke"], false, "{what}: {}", leafz(&l));
        let (ha, lc) = (client(&h, "a").await, client(&l, "l").await);
        both_ways(&ha, &lc, "role", 100, None, &what).await;
    }
}

/// Leaf nodes over WebSocket: a leaf dialing the hub's WebSocket port
/// (`ws://`, with and without `ws_no_masking`, with and without
/// permessage-deflate), petrel and nats-server on either side; the leaf
/// is bound as over the leaf port, messages (and a large one) cross both
/// ways; `/leafz` lists it.
#[tokio::test]
async fn leaf_nodes_over_websocket() {
    for (hub_kind, leaf_kind, no_masking, deflate) in [
        (Kind::Nats, Kind::Petrel, false, false),
        (Kind::Petrel, Kind::Nats, false, false),
        (Kind::Petrel, Kind::Petrel, true, false),
        (Kind::Nats, Kind::Petrel, true, false),
        (Kind::Nats, Kind::Petrel, false, true),
        (Kind::Petrel, Kind::Nats, false, true),
        (Kind::Petrel, Kind::Petrel, false, true),
    ] {
        let what =
            format!("hub {hub_kind:?}, leaf {leaf_kind:?} over ws, no_masking {no_masking}, compression {deflate}");
        let hconf = common::jwt::write_conf(&format!(
            "server_name: HUB\nwebsocket {{ listen: 127.0.0.1:-1, no_tls: true, compression: {deflate} }}\n\
             leafnodes {{\n  listen: 127.0.0.1:-1\n  authorization {{ user: lu, password: lp, account: A }}\n}}\n\
             accounts {{\n  A {{ users [{{user: a, password: a}}] }}\n}}\n",
        ));
        let h = start(hub_kind, &hconf);
        let lconf = common::jwt::write_conf(&format!(
            "server_name: LEAF\nleafnodes {{\n  reconnect: \"200ms\"\n  remotes [ {{ url: \"ws://lu:lp@127.0.0.1:{}\", account: L, ws_no_masking: {no_masking}, ws_compression: {deflate} }} ]\n}}\n\
             accounts {{\n  L {{ users [{{user: l, password: l}}] }}\n}}\n",
            h.ws_port()
        ));
        let l = start(leaf_kind, &lconf);
        await_leafs(&h, 1);
        await_leafs(&l, 1);
        assert_eq!(leafz(&h)["leafs"][0]["account"], "A", "{what}: {}", leafz(&h));
        assert_eq!(leafz(&l)["leafs"][0]["account"], "L", "{what}: {}", leafz(&l));
        // Both log it as a WebSocket leaf connection.
        for p in [&h, &l] {
            assert!(
                !p.log_lines("lid_ws:").is_empty() && !p.log_lines("Leafnode connection created").is_empty(),
                "{what}"
            );
        }
        let (ha, lc) = (client(&h, "a").await, client(&l, "l").await);
        let big: bytes::Bytes = "websocket ".repeat(50_000).into();
        both_ways(&ha, &lc, "ws", 200, Some(&big), &what).await;
    }
}

/// Leaf nodes over wss: TLS to the hub's WebSocket port (its `websocket
/// { tls }` certificate), verified by the remote's `ca_file`; petrel on
/// either side of nats-server.
#[tokio::test]
async fn leaf_nodes_over_secure_websocket() {
    let pki = common::pki::Pki::new();
    pki.issue(&["127.0.0.1", "localhost"], "hub", "hub");
    for (hub_kind, leaf_kind) in MIXES {
        let what = format!("hub {hub_kind:?}, leaf {leaf_kind:?} over wss");
        let hconf = common::jwt::write_conf(&format!(
            "websocket {{ listen: 127.0.0.1:-1, tls {{ cert_file: \"{}\", key_file: \"{}\" }} }}\n\
             leafnodes {{\n  listen: 127.0.0.1:-1\n  authorization {{ user: lu, password: lp, account: A }}\n}}\n\
             accounts {{ A {{ users [{{user: a, password: a}}] }} }}\n",
            pki.path("hub.pem").display(),
            pki.path("hub-key.pem").display()
        ));
        let h = start(hub_kind, &hconf);
        let lconf = common::jwt::write_conf(&format!(
            "leafnodes {{\n  reconnect: \"200ms\"\n  remotes [ {{ url: \"wss://lu:lp@127.0.0.1:{}\", account: L, tls {{ ca_file: \"{}\" }} }} ]\n}}\n\
             accounts {{ L {{ users [{{user: l, password: l}}] }} }}\n",
            h.ws_port(),
            pki.path("ca.pem").display()
        ));
        let l = start(leaf_kind, &lconf);
        await_leafs(&h, 1);
        await_leafs(&l, 1);
        let (ha, lc) = (client(&h, "a").await, client(&l, "l").await);
        let mut at_hub = ha.subscribe("over.wss").await.unwrap();
        common::links::await_crossing(&lc, &mut at_hub, "over.wss").await;
        let mut at_leaf = lc.subscribe("back.over.wss").await.unwrap();
        common::links::await_crossing(&ha, &mut at_leaf, "back.over.wss").await;
        assert!(!h.log_lines("lid_ws:").is_empty(), "{what}");
    }
}

/// A leaf cluster whose two nodes are leaves of two different servers of
/// a hub cluster: a message published on one leaf node reaches a
/// subscriber on the other once (over their own route), not a second time
/// through the hubs' route (nats-server's origin cluster on routed leaf
/// interest and messages), and each hub's subscriber gets it once.
#[tokio::test]
async fn a_leaf_cluster_across_a_hub_cluster_gets_each_message_once() {
    for (h1_kind, h2_kind, leaf_kind) in [
        (Kind::Nats, Kind::Nats, Kind::Nats),
        (Kind::Petrel, Kind::Petrel, Kind::Nats),
        (Kind::Petrel, Kind::Nats, Kind::Nats),
        (Kind::Nats, Kind::Petrel, Kind::Petrel),
        (Kind::Petrel, Kind::Petrel, Kind::Petrel),
    ] {
        let what = format!("hubs {h1_kind:?} + {h2_kind:?}, leaf cluster of {leaf_kind:?}");
        let hub_conf = |name: &str, routes: &str| {
            common::jwt::write_conf(&format!(
                "server_name: {name}\ncluster {{ name: core, listen: 127.0.0.1:-1{routes} }}\n\
                 leafnodes {{\n  listen: 127.0.0.1:-1\n  authorization {{ user: lu, password: lp, account: A }}\n}}\n\
                 accounts {{\n  A {{ users [{{user: a, password: a}}] }}\n}}\n"
            ))
        };
        let h1 = start(h1_kind, &hub_conf("H1", ""));
        let h2 = start(
            h2_kind,
            &hub_conf("H2", &format!(", routes: [\"nats://127.0.0.1:{}\"]", h1.route_port())),
        );
        let conf = |name: &str, hub_port: u16, routes: &str| {
            common::jwt::write_conf(&format!(
                "server_name: {name}\ncluster {{ name: edge, listen: 127.0.0.1:-1{routes} }}\n\
                 leafnodes {{ remotes [ {{ url: \"nats://lu:lp@127.0.0.1:{hub_port}\", account: L }} ] }}\n\
                 accounts {{ L {{ users [{{user: l, password: l}}] }} }}\n"
            ))
        };
        let l1 = start(leaf_kind, &conf("E1", h1.leaf_port(), ""));
        let l2 = start(
            leaf_kind,
            &conf(
                "E2",
                h2.leaf_port(),
                &format!(", routes: [\"nats://127.0.0.1:{}\"]", l1.route_port()),
            ),
        );
        await_leafs(&h1, 1);
        await_leafs(&h2, 1);
        let (c1, c2) = (client(&l1, "l").await, client(&l2, "l").await);
        let (a1, a2) = (client(&h1, "a").await, client(&h2, "a").await);
        let mut at_l2 = c2.subscribe("edge.x").await.unwrap();
        let mut at_h1 = a1.subscribe("edge.x").await.unwrap();
        let mut at_h2 = a2.subscribe("edge.x").await.unwrap();
        for sub in [&mut at_l2, &mut at_h1, &mut at_h2] {
            common::links::await_crossing(&c1, sub, "edge.x").await;
        }
        // Let every path settle, then count.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for sub in [&mut at_l2, &mut at_h1, &mut at_h2] {
            while let Ok(Some(_)) = timeout(Duration::from_millis(200), sub.next()).await {}
        }
        for k in 0..50 {
            c1.publish("edge.x", k.to_string().into()).await.unwrap();
        }
        c1.flush().await.unwrap();
        for (sub, name) in [
            (&mut at_l2, "the other leaf node"),
            (&mut at_h1, "H1"),
            (&mut at_h2, "H2"),
        ] {
            for k in 0..50 {
                assert_eq!(next(sub).await.payload, k.to_string(), "{what}: {name}");
            }
            assert!(
                timeout(Duration::from_millis(300), sub.next()).await.is_err(),
                "{what}: {name} got a message twice"
            );
        }
    }
}

/// STATSZ `active_servers` counts the servers heard through the system
/// account, as nats-server counts them: a hub and a leaf that share `$SYS`
/// over their leaf connection count each other (no route tells them), and
/// a server that shuts down (its SHUTDOWN event) is counted no longer.
#[tokio::test]
async fn servers_sharing_the_system_account_over_a_leaf_count_each_other() {
    const SYS: &str = "accounts {\n  SYS { users [{user: sys, password: sys}] }\n}\nsystem_account: SYS\n";
    for (hub_kind, leaf_kind) in MIXES {
        let what = format!("hub {hub_kind:?}, leaf {leaf_kind:?}");
        let port = common::free_port();
        let hub_conf = common::jwt::write_conf(&format!(
            "server_name: HUB\nleafnodes {{ listen: 127.0.0.1:{port}, authorization {{ user: lu, password: lp, account: SYS }} }}\n{SYS}"
        ));
        let leaf_conf = common::jwt::write_conf(&format!(
            "server_name: LEAF\nleafnodes {{ reconnect: \"200ms\", remotes [ {{ url: \"nats://lu:lp@127.0.0.1:{port}\", account: SYS }} ] }}\n{SYS}"
        ));
        let h = start(hub_kind, &hub_conf);
        let l = start(leaf_kind, &leaf_conf);
        await_leafs(&h, 1);
        let hs = client(&h, "sys").await;
        // Both servers answer the PING, each counting two active servers.
        let deadline = Instant::now() + WAIT;
        loop {
            let active = active_servers(&hs).await;
            if active.len() == 2 && active.values().all(|&n| n == 2) {
                break;
            }
            assert!(Instant::now() < deadline, "{what}: active servers {active:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The leaf shuts down: the hub counts itself alone.
        unsafe { libc::kill(l.pid() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + WAIT;
        loop {
            let active = active_servers(&hs).await;
            if active.len() == 1 && active.get("HUB") == Some(&1) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: after the leaf's shutdown {active:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Each server's `active_servers` from one `$SYS.REQ.SERVER.PING.STATSZ`
/// round, by server name.
async fn active_servers(sys: &async_nats::Client) -> std::collections::BTreeMap<String, u64> {
    common::links::answers(sys, "$SYS.REQ.SERVER.PING.STATSZ", Duration::from_millis(500))
        .await
        .into_iter()
        .map(|v| {
            let name = v["server"]["name"].as_str().unwrap_or_default().to_string();
            (name, v["statsz"]["active_servers"].as_u64().unwrap_or(0))
        })
        .collect()
}
