//! Integration tests over real sockets with the async-nats client against a
//! petrel process with two shards.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

async fn client(p: &common::Proc) -> async_nats::Client {
    async_nats::connect(p.url()).await.expect("connect")
}

/// Flushes `c` and gives its new subscriptions time to reach every shard.
/// async-nats 0.38's `flush()` only writes its buffer (no PING round trip),
/// and NATS orders nothing across connections; petrel's guarantee (the PONG
/// waits until every shard has the subscription) is tested in
/// `tests/protocol.rs` with a real PING.
async fn ready(c: &async_nats::Client) {
    c.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    timeout(WAIT, sub.next())
        .await
        .expect("message in time")
        .expect("subscription open")
}

#[tokio::test]
async fn pub_sub_and_wildcards() {
    let p = common::petrel(&["--shards", "2"]);
    let sub_client = client(&p).await;
    let pub_client = client(&p).await;
    let mut exact = sub_client.subscribe("a.b.c").await.unwrap();
    let mut star = sub_client.subscribe("a.*.c").await.unwrap();
    let mut gt = sub_client.subscribe("a.>").await.unwrap();
    ready(&sub_client).await;
    pub_client.publish("a.b.c", "one".into()).await.unwrap();
    pub_client.publish("a.x.c", "two".into()).await.unwrap();
    pub_client.publish("a.x.y.z", "three".into()).await.unwrap();
    pub_client.flush().await.unwrap();
    assert_eq!(next(&mut exact).await.payload, "one");
    assert_eq!(next(&mut star).await.payload, "one");
    assert_eq!(next(&mut star).await.payload, "two");
    for want in ["one", "two", "three"] {
        let m = next(&mut gt).await;
        assert_eq!(m.payload, want);
    }
    assert!(
        timeout(Duration::from_millis(200), exact.next()).await.is_err(),
        "no extra message"
    );
}

#[tokio::test]
async fn queue_group_delivers_each_message_once() {
    let p = common::petrel(&["--shards", "2"]);
    let mut members = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..4 {
        let c = client(&p).await;
        members.push(c.queue_subscribe("jobs", "workers".into()).await.unwrap());
        ready(&c).await;
        clients.push(c);
    }
    let publisher = client(&p).await;
    let total = 2000;
    for i in 0..total {
        publisher.publish("jobs", Bytes::from(i.to_string())).await.unwrap();
    }
    publisher.flush().await.unwrap();
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut per_member = Vec::new();
    let mut received = 0;
    for m in members.iter_mut() {
        let mut n = 0;
        while let Ok(Some(msg)) = timeout(Duration::from_millis(500), m.next()).await {
            *seen
                .entry(String::from_utf8(msg.payload.to_vec()).unwrap())
                .or_default() += 1;
            n += 1;
        }
        received += n;
        per_member.push(n);
    }
    assert_eq!(received, total, "per member: {per_member:?}");
    assert!(seen.values().all(|&n| n == 1));
    assert!(
        per_member.iter().all(|&n| n > total / 4 / 3),
        "fair spread: {per_member:?}"
    );
}

#[tokio::test]
async fn request_reply_and_no_responders() {
    let p = common::petrel(&["--shards", "2"]);
    let service = client(&p).await;
    let mut requests = service.subscribe("svc.echo").await.unwrap();
    ready(&service).await;
    let responder = service.clone();
    tokio::spawn(async move {
        while let Some(m) = requests.next().await {
            if let Some(reply) = m.reply {
                responder.publish(reply, m.payload).await.unwrap();
            }
        }
    });
    let requester = client(&p).await;
    for i in 0..50 {
        let body = Bytes::from(format!("ping {i}"));
        let r = timeout(WAIT, requester.request("svc.echo", body.clone()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.payload, body);
    }
    let err = timeout(WAIT, requester.request("svc.nobody", "x".into()))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders, "{err:?}");
}

#[tokio::test]
async fn headers_travel_and_echo_can_be_off() {
    let p = common::petrel(&["--shards", "2"]);
    let c = client(&p).await;
    let mut sub = c.subscribe("h").await.unwrap();
    c.flush().await.unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("X-Trace", "abc");
    c.publish_with_headers("h", headers, "body".into()).await.unwrap();
    let m = next(&mut sub).await;
    assert_eq!(m.payload, "body");
    assert_eq!(m.headers.unwrap().get("X-Trace").unwrap().as_str(), "abc");

    let quiet = async_nats::ConnectOptions::new()
        .no_echo()
        .connect(p.url())
        .await
        .unwrap();
    let mut own = quiet.subscribe("echo.test").await.unwrap();
    ready(&quiet).await;
    quiet.publish("echo.test", "mine".into()).await.unwrap();
    quiet.flush().await.unwrap();
    c.publish("echo.test", "theirs".into()).await.unwrap();
    c.flush().await.unwrap();
    assert_eq!(next(&mut own).await.payload, "theirs", "own publish is not echoed");
}

#[tokio::test]
async fn unsubscribe_after_n() {
    let p = common::petrel(&["--shards", "2"]);
    let c = client(&p).await;
    let mut sub = c.subscribe("n").await.unwrap();
    sub.unsubscribe_after(3).await.unwrap();
    ready(&c).await;
    let other = client(&p).await;
    for i in 0..10 {
        other.publish("n", Bytes::from(i.to_string())).await.unwrap();
    }
    other.flush().await.unwrap();
    let mut got = Vec::new();
    while let Ok(Some(m)) = timeout(Duration::from_millis(500), sub.next()).await {
        got.push(m.payload);
    }
    assert_eq!(got, vec!["0", "1", "2"]);
}

#[tokio::test]
async fn large_payloads_cross_shards_intact() {
    let p = common::petrel(&["--shards", "2"]);
    let subs_clients: Vec<_> = futures::future::join_all((0..4).map(|_| client(&p))).await;
    let mut subs = Vec::new();
    for c in &subs_clients {
        subs.push(c.subscribe("big").await.unwrap());
        ready(c).await;
    }
    let publisher = client(&p).await;
    let max = publisher.server_info().max_payload;
    assert_eq!(max, 1024 * 1024);
    let sizes = [0usize, 1, 4095, 4096, 65_537, 300_000, max];
    for (i, &size) in sizes.iter().enumerate() {
        let body: Vec<u8> = (0..size).map(|j| (i * 31 + j * 7) as u8).collect();
        publisher.publish("big", body.into()).await.unwrap();
    }
    publisher.flush().await.unwrap();
    for s in subs.iter_mut() {
        for (i, &size) in sizes.iter().enumerate() {
            let m = next(s).await;
            assert_eq!(m.payload.len(), size);
            assert!(m.payload.iter().enumerate().all(|(j, &b)| b == (i * 31 + j * 7) as u8));
        }
    }
}

#[tokio::test]
async fn many_connections_spread_over_shards() {
    let p = common::petrel(&["--shards", "2", "-D"]);
    let n = 24;
    let subs_clients: Vec<_> = futures::future::join_all((0..n).map(|_| client(&p))).await;
    let mut subs = Vec::new();
    for c in &subs_clients {
        subs.push(c.subscribe("fan.*").await.unwrap());
        c.flush().await.unwrap();
    }
    for c in &subs_clients {
        ready(c).await;
    }
    let pubs: Vec<_> = futures::future::join_all((0..n).map(|_| client(&p))).await;
    for (i, c) in pubs.iter().enumerate() {
        c.publish(format!("fan.{i}"), Bytes::from(i.to_string())).await.unwrap();
        c.flush().await.unwrap();
    }
    for s in subs.iter_mut() {
        let mut got = Vec::new();
        for _ in 0..n {
            got.push(
                String::from_utf8(next(s).await.payload.to_vec())
                    .unwrap()
                    .parse::<usize>()
                    .unwrap(),
            );
        }
        got.sort();
        assert_eq!(got, (0..n).collect::<Vec<_>>());
    }
    let on = |s: &str| p.log_lines(&format!("Client connection created (shard {s})")).len();
    let (a, b) = (on("0"), on("1"));
    assert_eq!(a + b, 2 * n);
    assert!(a.abs_diff(b) <= 2, "connections balanced across shards: {a} vs {b}");
}

/// Requesters and responders that talk only to each other end up on one
/// shard (connection affinity), moved while requests are in flight: every
/// request is answered once, a subscriber watching all of them sees each
/// requester's in order, and every pair that the accept placement split
/// is together at the end (shards read from the debug log).
#[tokio::test]
async fn request_reply_pairs_move_to_one_shard_and_lose_nothing() {
    let p = common::petrel(&["--shards", "2", "-D"]);
    let watcher = client(&p).await;
    let mut seen = watcher.subscribe("svc.>").await.unwrap();
    ready(&watcher).await;
    let mut pairs = Vec::new();
    let mut cids = Vec::new();
    for pair in 0..3 {
        let service = client(&p).await;
        let mut requests = service.subscribe(format!("svc.{pair}")).await.unwrap();
        ready(&service).await;
        let requester = client(&p).await;
        cids.push((requester.server_info().client_id, service.server_info().client_id));
        tokio::spawn(async move {
            while let Some(m) = requests.next().await {
                if let Some(reply) = m.reply {
                    service.publish(reply, m.payload).await.unwrap();
                }
            }
        });
        pairs.push(tokio::spawn(async move {
            // At least 400 requests and a second: time for the moves.
            let started = std::time::Instant::now();
            let mut i: i64 = 0;
            while i < 400 || started.elapsed() < Duration::from_secs(1) {
                request(&requester, pair, i).await;
                i += 1;
            }
            (requester, i)
        }));
    }
    let mut sent = Vec::new();
    let mut requesters = Vec::new();
    for t in pairs {
        let (requester, i) = t.await.unwrap();
        requesters.push(requester);
        sent.push(i);
    }
    let mut last = [-1i64; 3];
    for _ in 0..sent.iter().sum::<i64>() {
        let m = next(&mut seen).await;
        let t = String::from_utf8(m.payload.to_vec()).unwrap();
        let (pair, n) = t.split_once(':').unwrap();
        let (pair, n): (usize, i64) = (pair.parse().unwrap(), n.parse().unwrap());
        assert_eq!(n, last[pair] + 1, "requester {pair} out of order");
        last[pair] = n;
    }
    assert_eq!(last.map(|n| n + 1).to_vec(), sent, "every request seen once");
    // Where each connection is now: its shard at accept, or the last move.
    let shard_of = |cid: u64| -> String {
        let tag = format!("cid:{cid} - Client connection ");
        let lines: Vec<String> = p
            .log_lines(&tag)
            .into_iter()
            .filter(|l| l.contains("created (shard") || l.contains("moved to shard"))
            .collect();
        let last = lines.last().unwrap_or_else(|| panic!("no log of cid {cid}"));
        let tail = last.rsplit("shard ").next().unwrap();
        tail.trim_end_matches(')').to_string()
    };
    // On a loaded machine a move may come later than the first second:
    // a pair still apart keeps talking (up to 10 s), in order as before.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for (pair, (requester, service)) in cids.iter().enumerate() {
        while shard_of(*requester) != shard_of(*service) && std::time::Instant::now() < deadline {
            for _ in 0..50 {
                request(&requesters[pair], pair, sent[pair]).await;
                let m = next(&mut seen).await;
                assert_eq!(
                    m.payload,
                    format!("{pair}:{}", sent[pair]),
                    "requester {pair} out of order"
                );
                sent[pair] += 1;
            }
        }
        assert_eq!(shard_of(*requester), shard_of(*service), "pair {pair} on one shard");
    }
}

/// One request of requester `pair` (payload `<pair>:<i>`), answered with
/// its own payload.
async fn request(requester: &async_nats::Client, pair: usize, i: i64) {
    let body = Bytes::from(format!("{pair}:{i}"));
    let r = timeout(WAIT, requester.request(format!("svc.{pair}"), body.clone()))
        .await
        .expect("reply in time")
        .expect("reply");
    assert_eq!(r.payload, body);
}
