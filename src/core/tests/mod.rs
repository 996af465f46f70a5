//! In-process tests of several shards: batches are moved between cores by
//! hand, so ordering and exactly-once properties are checked without
//! sockets or threads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::auth::config::AuthConfig;
use crate::auth::verify::Verifier;
use crate::proto::info::ServerInfo;
use crate::proto::session::{Session, SessionConfig};
use crate::shard::host::{ConnAuth, CoreHost};

struct Cluster {
    cores: Vec<ShardCore>,
    sessions: HashMap<ConnId, (usize, Session, ConnAuth)>,
    info: ServerInfo,
    next: u64,
    verifier: std::sync::Arc<Verifier>,
}

fn info() -> ServerInfo {
    ServerInfo {
        server_id: "N".into(),
        proto: 1,
        headers: true,
        max_payload: 1 << 20,
        ..Default::default()
    }
}

impl Cluster {
    fn new(n: usize, cfg: CoreConfig) -> Cluster {
        Self::with_auth(n, cfg, &AuthConfig::default())
    }

    fn with_auth(n: usize, cfg: CoreConfig, auth: &AuthConfig) -> Cluster {
        Cluster {
            verifier: std::sync::Arc::new(Verifier::new(auth).unwrap()),
            cores: {
                let pools = std::sync::Arc::new(BufferPools::new(n));
                (0..n)
                    .map(|i| ShardCore::with_pools(ShardId(i as u16), n, cfg.clone(), pools.clone(), Instant::now()))
                    .collect()
            },
            sessions: HashMap::new(),
            info: info(),
            next: 1,
        }
    }

    fn connect(&mut self, shard: usize) -> ConnId {
        self.connect_with(shard, "")
    }

    /// Connects with extra CONNECT fields (credentials), e.g. `,"user":"a","pass":"a"`.
    fn connect_with(&mut self, shard: usize, extra: &str) -> ConnId {
        let cid = ConnId(self.next);
        self.next += 1;
        self.cores[shard].add_conn(cid);
        self.cores[shard].set_movable(cid);
        let cfg = SessionConfig {
            auth_required: self.verifier.auth_required(),
            ..Default::default()
        };
        let s = Session::new(cfg, Instant::now(), Duration::from_secs(3600));
        let auth = ConnAuth::new(self.verifier.clone(), None);
        self.sessions.insert(cid, (shard, s, auth));
        let connect = format!("CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true{extra}}}\r\n");
        self.feed(cid, connect.as_bytes());
        cid
    }

    fn feed(&mut self, cid: ConnId, bytes: &[u8]) {
        let (shard, session, auth) = self.sessions.get_mut(&cid).unwrap();
        let mut host = CoreHost {
            core: &mut self.cores[*shard],
            cid,
            info: &self.info,
            client_ip: "127.0.0.1",
            headers_supported: true,
            auth,
        };
        let used = session
            .receive(bytes, Instant::now(), &mut host)
            .expect("no protocol error");
        assert_eq!(used, bytes.len());
    }

    /// Moves batches until every core is quiet.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.cores.len() {
                for (dest, b) in self.cores[i].take_batches() {
                    self.cores[dest.index()].apply_batch(b);
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn take_out(&mut self, cid: ConnId) -> Vec<u8> {
        let shard = self.sessions[&cid].0;
        self.cores[shard].conn_mut(cid).unwrap().out.take_bytes()
    }
}

/// Payloads of the MSG lines in `out`, in order.
fn payloads(out: &[u8]) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let mut rest = out;
    while !rest.is_empty() {
        let nl = rest.iter().position(|&b| b == b'\n').unwrap();
        let line = std::str::from_utf8(&rest[..nl - 1]).unwrap();
        assert!(line.starts_with("MSG "), "{line}");
        let len: usize = line.rsplit(' ').next().unwrap().parse().unwrap();
        v.push(rest[nl + 1..nl + 1 + len].to_vec());
        rest = &rest[nl + 1 + len + 2..];
    }
    v
}

#[test]
fn pong_waits_until_every_shard_has_the_subscription() {
    let mut c = Cluster::new(3, CoreConfig::default());
    let sub = c.connect(0);
    let publisher = c.connect(2);
    c.feed(sub, b"SUB foo 1\r\nPING\r\n");
    assert!(c.take_out(sub).is_empty(), "PONG held back until shards 1 and 2 acked");
    c.pump();
    assert_eq!(c.take_out(sub), b"PONG\r\n");
    c.feed(publisher, b"PUB foo 2\r\nhi\r\n");
    c.pump();
    assert_eq!(c.take_out(sub), b"MSG foo 1 2\r\nhi\r\n");
}

#[test]
fn order_per_publisher_holds_across_shards() {
    let mut c = Cluster::new(4, CoreConfig::default());
    let subs: Vec<ConnId> = (0..4).map(|s| c.connect(s)).collect();
    for s in &subs {
        c.feed(*s, b"SUB ord.> 1\r\n");
    }
    c.pump();
    let pubs: Vec<ConnId> = (0..4).map(|s| c.connect(s)).collect();
    for round in 0..500 {
        for (p, cid) in pubs.iter().enumerate() {
            let body = format!("{p}:{round}");
            c.feed(*cid, format!("PUB ord.{p} {}\r\n{body}\r\n", body.len()).as_bytes());
        }
        if round % 7 == 0 {
            c.pump();
        }
    }
    c.pump();
    for s in subs {
        let got = payloads(&c.take_out(s));
        assert_eq!(got.len(), 2000);
        let mut last = [-1i64; 4];
        for p in got {
            let t = String::from_utf8(p).unwrap();
            let (p, n) = t.split_once(':').unwrap();
            let (p, n): (usize, i64) = (p.parse().unwrap(), n.parse().unwrap());
            assert_eq!(n, last[p] + 1, "publisher {p} out of order");
            last[p] = n;
        }
    }
}

#[test]
fn queue_group_is_exactly_once_and_fair_across_shards() {
    let mut c = Cluster::new(3, CoreConfig::default());
    let members: Vec<ConnId> = (0..6).map(|i| c.connect(i % 3)).collect();
    for m in &members {
        c.feed(*m, b"SUB work q 7\r\n");
    }
    let plain = c.connect(1);
    c.feed(plain, b"SUB work 8\r\n");
    c.pump();
    let pubs: Vec<ConnId> = (0..3).map(|s| c.connect(s)).collect();
    let total = 3000;
    for i in 0..total {
        let body = i.to_string();
        c.feed(pubs[i % 3], format!("PUB work {}\r\n{body}\r\n", body.len()).as_bytes());
    }
    c.pump();
    let mut seen = vec![0u32; total];
    for m in &members {
        let got = payloads(&c.take_out(*m));
        assert!(got.len() > total / 6 / 2, "member got {} of {total}: unfair", got.len());
        for p in got {
            seen[String::from_utf8(p).unwrap().parse::<usize>().unwrap()] += 1;
        }
    }
    assert!(seen.iter().all(|&n| n == 1), "every message exactly once");
    assert_eq!(payloads(&c.take_out(plain)).len(), total, "plain subscriber gets all");
}

#[test]
fn slow_consumer_is_closed_and_others_keep_receiving() {
    let cfg = CoreConfig {
        max_pending: 64 * 1024,
        ..Default::default()
    };
    let mut c = Cluster::new(2, cfg);
    let slow = c.connect(1);
    let fast = c.connect(1);
    let remote = c.connect(0);
    for s in [slow, fast, remote] {
        c.feed(s, b"SUB feed 1\r\n");
    }
    c.pump();
    let p = c.connect(0);
    let body = vec![b'x'; 1000];
    let mut fast_got = 0;
    let mut remote_got = 0;
    for _ in 0..200 {
        let mut line = b"PUB feed 1000\r\n".to_vec();
        line.extend_from_slice(&body);
        line.extend_from_slice(b"\r\n");
        c.feed(p, &line);
        c.pump();
        fast_got += payloads(&c.take_out(fast)).len();
        remote_got += payloads(&c.take_out(remote)).len();
    }
    assert_eq!(
        c.cores[1].conn(slow).unwrap().closing(),
        Some(CloseReason::SlowConsumerPendingBytes)
    );
    assert_eq!(c.cores[1].counters().slow_consumers, 1);
    assert_eq!(fast_got, 200);
    assert_eq!(remote_got, 200);
}

#[test]
fn auto_unsubscribe_counts_remote_deliveries() {
    let mut c = Cluster::new(2, CoreConfig::default());
    let s = c.connect(1);
    c.feed(s, b"SUB n 1\r\nUNSUB 1 3\r\n");
    c.pump();
    let p = c.connect(0);
    for _ in 0..10 {
        c.feed(p, b"PUB n 1\r\nx\r\n");
    }
    c.pump();
    assert_eq!(payloads(&c.take_out(s)).len(), 3);
    assert!(
        c.cores[0].index(AccountId::GLOBAL).unwrap().is_empty(),
        "removal reached the other replica"
    );
    assert!(c.cores[1].index(AccountId::GLOBAL).unwrap().is_empty());
}

#[test]
fn echo_off_and_no_responders() {
    let mut c = Cluster::new(2, CoreConfig::default());
    let a = c.connect(0);
    c.feed(
        a,
        b"CONNECT {\"verbose\":false,\"echo\":false,\"headers\":true,\"no_responders\":true}\r\n",
    );
    c.feed(a, b"SUB self 1\r\nSUB _INBOX.x 2\r\nPUB self 1\r\nx\r\n");
    c.pump();
    assert!(c.take_out(a).is_empty(), "own message not echoed");
    c.feed(a, b"PUB nobody _INBOX.x 0\r\n\r\n");
    assert_eq!(
        c.take_out(a),
        b"HMSG _INBOX.x 2 38 38\r\nNATS/1.0 503\r\nNats-Subject: nobody\r\n\r\n\r\n"
    );
}

#[test]
fn large_bodies_are_shared_and_headers_stripped_for_old_clients() {
    let mut c = Cluster::new(3, CoreConfig::default());
    let old = c.connect(1);
    c.feed(old, b"CONNECT {\"verbose\":false}\r\nSUB big 1\r\n");
    let new = c.connect(2);
    c.feed(new, b"SUB big 1\r\n");
    c.pump();
    let p = c.connect(0);
    let body = vec![b'z'; 5000];
    let hdr = b"NATS/1.0\r\nA: b\r\n\r\n";
    let mut line = format!("HPUB big {} {}\r\n", hdr.len(), hdr.len() + body.len()).into_bytes();
    line.extend_from_slice(hdr);
    line.extend_from_slice(&body);
    line.extend_from_slice(b"\r\n");
    c.feed(p, &line);
    c.pump();
    assert_eq!(payloads(&c.take_out(old)), vec![body.clone()]);
    let got = c.take_out(new);
    assert!(got.starts_with(format!("HMSG big 1 {} {}\r\nNATS/1.0", hdr.len(), hdr.len() + body.len()).as_bytes()));
}

/// A subscriber that reads but lags more than SOFT_STALL behind paces its
/// publisher (through the receiving shard's stall), which then waits until
/// it holds less than SOFT_RESUME; one that never read does not, until the
/// hard 75 % threshold, so healthy subscribers keep their rate while it is
/// being cut off.
#[test]
fn lagging_reader_paces_publishers_but_a_stopped_one_does_not() {
    let cfg = CoreConfig {
        max_pending: 64 << 20,
        ..Default::default()
    };
    let body = vec![b'x'; 64 * 1024];
    let mut pub_line = b"PUB feed 65536\r\n".to_vec();
    pub_line.extend_from_slice(&body);
    pub_line.extend_from_slice(b"\r\n");
    for reading in [true, false] {
        let mut c = Cluster::new(2, cfg.clone());
        let sub = c.connect(1);
        c.feed(sub, b"SUB feed 1\r\n");
        c.pump();
        let p = c.connect(0);
        let now = Instant::now();
        c.cores[1].set_now(now);
        let waker = std::task::Waker::noop();
        if reading {
            // Its writer took output just now.
            c.feed(p, &pub_line);
            c.pump();
            let mut taken = Vec::new();
            assert!(c.cores[1].poll_output(sub, &mut taken, waker).is_some());
        }
        let _ = c.cores[1].take_stall();
        let mut stalled_at = None;
        for i in 0..1100 {
            c.feed(p, &pub_line);
            c.pump();
            if c.cores[1].take_stall() {
                stalled_at = Some(i);
                break;
            }
        }
        let queued = c.cores[1].conn(sub).unwrap().out.len();
        if reading {
            assert!(stalled_at.is_some(), "a lagging reader is paced");
            assert!(
                queued > SOFT_STALL && queued < SOFT_STALL + (256 << 10),
                "paced just past {SOFT_STALL}: {queued}"
            );
            // The paced reader waits while the subscriber holds more than
            // SOFT_RESUME, and goes on once its writer has taken the rest:
            // woken by the take that brings it there, not before.
            assert!(c.cores[1].lagging_over(SOFT_RESUME));
            let pacer = Arc::new(Wakes::default());
            let pacer_waker = std::task::Waker::from(pacer.clone());
            c.cores[1].wait_for_drain(&pacer_waker);
            c.cores[1].wait_for_drain(&pacer_waker);
            let mut taken = Vec::new();
            while c.cores[1].conn(sub).unwrap().out.len() > SOFT_RESUME {
                assert!(c.cores[1].lagging_over(SOFT_RESUME));
                assert_eq!(pacer.0.load(Ordering::Relaxed), 0, "woken early");
                assert!(c.cores[1].poll_output(sub, &mut taken, waker).is_some());
            }
            assert_eq!(pacer.0.load(Ordering::Relaxed), 1, "woken once, when drained");
            assert!(!c.cores[1].lagging_over(SOFT_RESUME));
        } else {
            assert!(stalled_at.is_some(), "the hard stall still applies");
            assert!(queued > 48 << 20, "a stopped reader is paced only at 75 %: {queued}");
            assert!(
                !c.cores[1].lagging_over(SOFT_RESUME),
                "nobody waits for a stopped reader"
            );
        }
    }
}

/// A waker that counts its wakes.
#[derive(Default)]
struct Wakes(AtomicUsize);

impl std::task::Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A batch weighs what it holds, a shared body included: what the mesh
/// counts as in flight to a shard, and what its publishers wait on.
#[test]
fn a_batch_weighs_what_it_holds() {
    let mut c = Cluster::new(2, CoreConfig::default());
    let sub = c.connect(1);
    c.feed(sub, b"SUB feed 1\r\n");
    c.pump();
    let p = c.connect(0);
    c.pump();
    for size in [16, 8192] {
        let mut line = format!("PUB feed {size}\r\n").into_bytes();
        line.extend(std::iter::repeat_n(b'x', size));
        line.extend_from_slice(b"\r\n");
        c.feed(p, &line);
        let batches = c.cores[0].take_batches();
        let (dest, b) = batches
            .into_iter()
            .find(|(_, b)| !b.msgs.is_empty())
            .expect("a delivery batch");
        assert_eq!(dest, ShardId(1));
        assert!(
            b.weight >= size + "feed".len() && b.weight < size + 512,
            "{size} B weighs {}",
            b.weight
        );
        c.cores[1].apply_batch(b);
    }
}

/// `no_fast_producer_stall`: nobody is paced, a subscriber that stopped
/// reading is cut off at `max_pending` as before.
#[test]
fn without_the_fast_producer_stall_nobody_is_paced() {
    let cfg = CoreConfig {
        max_pending: 4 << 20,
        no_stall: true,
        ..Default::default()
    };
    let mut c = Cluster::new(2, cfg);
    let sub = c.connect(1);
    c.feed(sub, b"SUB feed 1\r\n");
    c.pump();
    let p = c.connect(0);
    let mut pub_line = b"PUB feed 65536\r\n".to_vec();
    pub_line.extend_from_slice(&vec![b'x'; 64 * 1024]);
    pub_line.extend_from_slice(b"\r\n");
    for _ in 0..80 {
        c.feed(p, &pub_line);
        c.pump();
        assert!(!c.cores[1].take_stall() && !c.cores[0].take_stall(), "never paced");
    }
    assert!(
        c.cores[1].conn(sub).is_none_or(|s| s.closing().is_some()),
        "cut off past max_pending"
    );
}

impl Cluster {
    /// Registers a link of `kind` on `shard` (a fake route or leaf node,
    /// or an internal client), bound to the global account.
    fn link(&mut self, shard: usize, kind: LinkKind) -> ConnId {
        let cid = ConnId(self.next);
        self.next += 1;
        self.cores[shard].add_link(cid, kind, AccountId::GLOBAL);
        cid
    }

    /// A leaf connection on `shard`, bound to the global account, of
    /// remote cluster `cluster`; `spoke`: this server is the leaf on it.
    fn leaf_of(&mut self, shard: usize, cluster: &str, spoke: bool) -> ConnId {
        let cid = self.link(shard, LinkKind::Leaf);
        let setup = LeafSetup {
            cluster: Some(cluster),
            spoke,
            ..Default::default()
        };
        self.cores[shard].add_leaf(cid, AccountId::GLOBAL, setup);
        cid
    }

    /// Subscribes a link (as the route and leaf protocols' RS+/LS+ will).
    fn link_sub(&mut self, shard: usize, cid: ConnId, subject: &[u8], queue: Option<&[u8]>, sid: &[u8]) {
        self.cores[shard].subscribe(cid, subject, queue, sid).unwrap();
    }

    /// Publishes as a link (as RMSG/LMSG and the internal client will).
    fn link_pub(&mut self, shard: usize, cid: ConnId, subject: &[u8], payload: &[u8]) -> Routed {
        self.cores[shard].publish(cid, subject, None, None, payload)
    }

    fn internal(&mut self, shard: usize) -> Vec<InternalMsg> {
        let mut v = Vec::new();
        self.cores[shard].poll_internal(&mut v, futures::task::noop_waker_ref());
        v
    }
}

#[test]
fn a_message_from_a_route_reaches_local_clients_and_leaves_but_no_route() {
    for (route_shard, other_shard) in [(0, 0), (0, 1)] {
        let mut c = Cluster::new(2, CoreConfig::default());
        let client = c.connect(other_shard);
        let route_in = c.link(route_shard, LinkKind::Route);
        let route_out = c.link(other_shard, LinkKind::Route);
        let leaf = c.link(other_shard, LinkKind::Leaf);
        c.feed(client, b"SUB foo 1\r\n");
        c.link_sub(other_shard, route_out, b"foo", None, b"r1");
        c.link_sub(other_shard, leaf, b"foo", None, b"l1");
        c.pump();

        c.link_pub(route_shard, route_in, b"foo", b"hi");
        c.pump();
        assert_eq!(c.take_out(client), b"MSG foo 1 2\r\nhi\r\n");
        let leaf_out = c.cores[other_shard].conn_mut(leaf).unwrap().out.take_bytes();
        assert_eq!(leaf_out, b"LMSG foo 2\r\nhi\r\n");
        let route_out_bytes = c.cores[other_shard].conn_mut(route_out).unwrap().out.take_bytes();
        assert!(route_out_bytes.is_empty(), "one hop: {route_out_bytes:?}");

        // A client's message goes out on the route, naming the account.
        c.cores[other_shard].name_account(AccountId::GLOBAL, "$G");
        c.feed(client, b"PUB foo 3\r\nyes\r\n");
        c.pump();
        let route_out_bytes = c.cores[other_shard].conn_mut(route_out).unwrap().out.take_bytes();
        assert_eq!(route_out_bytes, b"RMSG $G foo 3\r\nyes\r\n");
    }
}

#[test]
fn a_routed_message_to_a_queue_group_prefers_local_members_and_never_a_route() {
    let mut c = Cluster::new(2, CoreConfig::default());
    let route_in = c.link(0, LinkKind::Route);
    let route_member = c.link(0, LinkKind::Route);
    c.link_sub(0, route_member, b"work", Some(b"q"), b"r1");
    // Only a route holds the group: a routed message is not delivered.
    c.pump();
    assert_eq!(c.link_pub(0, route_in, b"work", b"x"), Routed::NoInterest);
    let client = c.connect(1);
    c.feed(client, b"SUB work q 1\r\n");
    c.pump();
    for _ in 0..20 {
        c.link_pub(0, route_in, b"work", b"x");
    }
    c.pump();
    assert_eq!(payloads(&c.take_out(client)).len(), 20);
    assert!(c.cores[0].conn_mut(route_member).unwrap().out.take_bytes().is_empty());

    // A client's message to the group also prefers the local member.
    let publisher = c.connect(0);
    for _ in 0..20 {
        c.feed(publisher, b"PUB work 1\r\ny\r\n");
    }
    c.pump();
    assert_eq!(payloads(&c.take_out(client)).len(), 20);
    assert!(c.cores[0].conn_mut(route_member).unwrap().out.take_bytes().is_empty());
}

#[test]
fn the_internal_link_is_not_echoed_its_own_messages() {
    let mut c = Cluster::new(2, CoreConfig::default());
    let sys = c.link(0, LinkKind::System);
    c.cores[0].set_conn_opts(sys, false, true);
    c.link_sub(0, sys, b"$SYS.REQ.>", None, b"1");
    let client = c.connect(1);
    c.feed(client, b"SUB $SYS.REQ.> 9\r\n");
    c.pump();
    c.link_pub(0, sys, b"$SYS.REQ.X", b"own");
    c.pump();
    assert!(c.internal(0).is_empty(), "no echo of its own message");
    assert_eq!(payloads(&c.take_out(client)), vec![b"own".to_vec()]);
    c.feed(client, b"PUB $SYS.REQ.Y 5\r\nfromc\r\n");
    c.pump();
    let got = c.internal(0);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].conn, &got[0].message[..]), (sys, &b"fromc"[..]));
    // Links other than clients are not counted as client connections.
    assert_eq!(c.cores[0].counters().connections, 0);
    assert_eq!(c.cores[0].counters().subscriptions, 0);
}

#[test]
fn self_requests_are_answered_by_the_requesters_shard_and_never_cross() {
    let mut c = Cluster::new(2, CoreConfig::default());
    let system = AccountId(1);
    for core in &mut c.cores {
        core.set_system_account(system);
    }
    let services: Vec<ConnId> = (0..2).map(|s| c.link(s, LinkKind::System)).collect();
    for (s, cid) in services.iter().enumerate() {
        c.cores[s].add_self_service(*cid);
    }
    let listener = c.connect(0);
    c.feed(listener, b"SUB $SYS.REQ.> 1\r\n");
    let asker = c.connect(1);
    c.pump();
    c.feed(
        asker,
        b"PUB $SYS.REQ.USER.INFO _INBOX.1 2\r\nhi\r\nPUB $SYS.REQ.ACCOUNT.PING.STATZ _INBOX.2 0\r\n\r\n",
    );
    c.pump();
    let mut got = Vec::new();
    let w = futures::task::noop_waker_ref();
    assert!(
        !c.cores[0].poll_self_requests(&mut got, w),
        "only the asker's shard answers"
    );
    assert!(c.cores[1].poll_self_requests(&mut got, w));
    let seen: Vec<_> = got.iter().map(|r| (r.from, &*r.subject, &*r.reply, &*r.body)).collect();
    assert_eq!(
        seen,
        vec![
            (asker, &b"$SYS.REQ.USER.INFO"[..], &b"_INBOX.1"[..], &b"hi"[..]),
            (asker, &b"$SYS.REQ.ACCOUNT.PING.STATZ"[..], &b"_INBOX.2"[..], &b""[..]),
        ]
    );
    assert_eq!(got[0].account, AccountId::GLOBAL);
    // The account's own subscribers see the request too, as any subject.
    assert_eq!(payloads(&c.take_out(listener)), vec![b"hi".to_vec(), b"".to_vec()]);

    // A request that came over a route is its own server's to answer.
    let route = c.link(1, LinkKind::Route);
    assert_eq!(c.link_pub(1, route, b"$SYS.REQ.USER.INFO", b"x"), Routed::Delivered);
    got.clear();
    assert!(!c.cores[1].poll_self_requests(&mut got, w));

    // In the system account, only USER.INFO is the shard's: account
    // requests there reach the server-wide services.
    assert!(!c.cores[1]
        .index_mut(AccountId::GLOBAL)
        .matches(b"$SYS.REQ.ACCOUNT.PING.STATZ")
        .is_empty());
    let idx = c.cores[1].index_mut(system);
    assert!(idx.matches(b"$SYS.REQ.ACCOUNT.PING.STATZ").is_empty());
    assert_eq!(idx.matches(b"$SYS.REQ.USER.INFO").plain.len(), 1);
    // None of this is counted as the server's subscriptions.
    assert_eq!(c.cores[1].counters().subscriptions, 0);
}

fn clustered(n: usize) -> Cluster {
    let mut c = Cluster::new(n, CoreConfig::default());
    for core in &mut c.cores {
        core.set_clustered();
        core.name_account(AccountId::GLOBAL, "$G");
    }
    c
}

fn route_events(c: &mut Cluster, shard: usize) -> Vec<(String, Option<String>, u32)> {
    let mut v = Vec::new();
    c.cores[shard].poll_route_interest(&mut v, futures::task::noop_waker_ref());
    v.into_iter()
        .map(|e| {
            let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (s(&e.subject), e.queue.as_deref().map(s), e.weight)
        })
        .collect()
}

#[test]
fn every_shard_counts_the_interest_routes_must_hear() {
    let mut c = clustered(2);
    let a = c.connect(0);
    let b = c.connect(1);
    c.feed(a, b"SUB foo 1\r\nSUB work q 2\r\n");
    c.feed(b, b"SUB foo 1\r\nSUB work q 2\r\n");
    c.pump();
    for shard in 0..2 {
        let mut got = route_events(&mut c, shard);
        got.sort();
        let q = Some("q".to_string());
        assert_eq!(
            got,
            vec![
                ("foo".into(), None, 1),
                ("work".into(), q.clone(), 1),
                ("work".into(), q.clone(), 2)
            ],
            "shard {shard}: a plain subject once, a queue group's weight on each change"
        );
    }
    // A route's own interest is never announced to routes (one hop).
    let route = c.link(0, LinkKind::Route);
    c.cores[0].subscribe_routed(route, AccountId::GLOBAL, b"bar", None, None, b"$G bar");
    c.pump();
    assert!(route_events(&mut c, 1).is_empty());
    let mut all = c.cores[1].route_interest();
    all.sort_by(|x, y| x.subject.cmp(&y.subject));
    assert_eq!(all.len(), 2);
    c.feed(a, b"UNSUB 1\r\nUNSUB 2\r\n");
    c.pump();
    let mut got = route_events(&mut c, 1);
    got.sort();
    assert_eq!(got, vec![("work".into(), Some("q".into()), 1)], "foo still held by b");
    assert_eq!(route_events(&mut c, 0).len(), 1);
    c.feed(b, b"UNSUB 1\r\n");
    c.pump();
    assert_eq!(route_events(&mut c, 0), vec![("foo".into(), None, 0)]);
    // A route that goes takes its subscriptions and its count with it.
    c.cores[0].remove_conn(route);
    assert_eq!(c.cores[0].counters().connections, 1);
    assert_eq!(c.cores[0].counters().subscriptions, 0);
}

#[test]
fn a_route_gets_one_message_however_many_of_its_subscriptions_match() {
    for route_shard in [0, 1] {
        let mut c = clustered(2);
        let route = c.link(route_shard, LinkKind::Route);
        c.cores[route_shard].subscribe_routed(route, AccountId::GLOBAL, b"foo", None, None, b"1");
        c.cores[route_shard].subscribe_routed(route, AccountId::GLOBAL, b">", None, None, b"2");
        c.cores[route_shard].subscribe_routed(route, AccountId::GLOBAL, b"foo", Some((b"q", 1)), None, b"3");
        c.cores[route_shard].subscribe_routed(route, AccountId::GLOBAL, b"*", Some((b"r", 1)), None, b"4");
        c.pump();
        let publisher = c.connect(0);
        c.feed(publisher, b"PUB foo reply 2\r\nhi\r\nPUB bar 1\r\nx\r\n");
        c.pump();
        let out = c.cores[route_shard].conn_mut(route).unwrap().out.take_bytes();
        let text = String::from_utf8(out).unwrap();
        let mut lines: Vec<&str> = text.split("\r\n").filter(|l| l.starts_with("RMSG")).collect();
        lines.sort();
        assert_eq!(lines.len(), 2, "{text}");
        // Queue groups in the order they matched: both picked the route.
        assert!(
            lines[1] == "RMSG $G foo + reply q r 2" || lines[1] == "RMSG $G foo + reply r q 2",
            "{text}"
        );
        assert_eq!(lines[0], "RMSG $G bar | r 1", "{text}");
        // As nats-server picks: a member on this server and the route's
        // share a client's messages, the route's counting its weight.
        let member = c.connect(1 - route_shard);
        c.feed(member, b"SUB foo q 9\r\n");
        c.pump();
        let split = |c: &mut Cluster| {
            for _ in 0..200 {
                c.feed(publisher, b"PUB foo 2\r\nhi\r\n");
            }
            c.pump();
            let out = String::from_utf8(c.cores[route_shard].conn_mut(route).unwrap().out.take_bytes()).unwrap();
            let routed = out.matches("RMSG $G foo | q r 2").count() + out.matches("RMSG $G foo | r q 2").count();
            let local = String::from_utf8(c.take_out(member))
                .unwrap()
                .matches("MSG foo 9 2")
                .count();
            assert_eq!(local + routed, 200, "each once");
            (local, routed)
        };
        let (local, routed) = split(&mut c);
        assert!(local > 40 && routed > 40, "about even: {local} {routed}");
        // Weight 4 (a repeated RS+): about four routed for one local.
        c.cores[route_shard].subscribe_routed(route, AccountId::GLOBAL, b"foo", Some((b"q", 4)), None, b"3");
        c.pump();
        let (local, routed) = split(&mut c);
        assert!(routed > 2 * local, "weighted: {local} {routed}");
        // A member the route holds for a leaf cluster is picked only when
        // there is no other.
        c.cores[route_shard].subscribe_routed(route, AccountId::GLOBAL, b"foo", Some((b"q", 4)), Some(b"lc"), b"3");
        c.pump();
        let (local, routed) = split(&mut c);
        assert_eq!((local, routed), (200, 0));
    }
}

/// A message as a route brings it in.
fn routed<'a>(
    subject: &'a [u8],
    queues: Vec<&'a [u8]>,
    message: &'a [u8],
    origin: Option<&'a [u8]>,
) -> crate::proto::route::RoutedMsg<'a> {
    crate::proto::route::RoutedMsg {
        origin,
        account: None,
        subject,
        reply: None,
        queues,
        header_len: None,
        message,
    }
}

#[test]
fn a_routed_message_reaches_only_the_queue_groups_it_names() {
    let mut c = clustered(2);
    let plain = c.connect(1);
    c.feed(plain, b"SUB work 1\r\n");
    let members: Vec<ConnId> = (0..4).map(|i| c.connect(i % 2)).collect();
    for m in &members {
        c.feed(*m, b"SUB work q 2\r\n");
    }
    let other = c.connect(0);
    c.feed(other, b"SUB work other 3\r\n");
    c.pump();
    let route = c.link(0, LinkKind::Route);
    for _ in 0..10 {
        let r = c.cores[0].publish_routed(route, AccountId::GLOBAL, &routed(b"work", vec![], b"p", None));
        assert_eq!(r, Routed::Delivered);
        c.cores[0].publish_routed(route, AccountId::GLOBAL, &routed(b"work", vec![b"q"], b"q", None));
    }
    c.pump();
    let got = payloads(&c.take_out(plain));
    assert_eq!(got.len(), 20, "plain subscribers get every routed message");
    let to_members: usize = members.iter().map(|m| payloads(&c.take_out(*m)).len()).sum();
    assert_eq!(to_members, 10, "the named group once per message");
    assert!(c.take_out(other).is_empty(), "a group not named gets nothing");
}

#[test]
fn a_leaf_is_told_the_accounts_interest_but_never_its_own() {
    let mut c = Cluster::new(2, CoreConfig::default());
    for core in &mut c.cores {
        core.set_leafing();
    }
    let early = c.connect(1);
    c.feed(early, b"SUB before 1\r\nSUB q.x grp 2\r\n");
    c.pump();
    // Registering: the whole of the account's interest, from any shard.
    let leaf = c.link(0, LinkKind::Leaf);
    c.cores[0].add_leaf(leaf, AccountId::GLOBAL, LeafSetup::default());
    let told = String::from_utf8(c.cores[0].conn_mut(leaf).unwrap().out.take_bytes()).unwrap();
    let mut lines: Vec<&str> = told.lines().collect();
    lines.sort();
    assert_eq!(lines, ["LS+ before", "LS+ q.x grp 1"]);
    // Changes as they happen: a second member raises the group's weight.
    let other = c.connect(1);
    c.feed(other, b"SUB q.x grp 1\r\nSUB before 2\r\n");
    c.pump();
    assert_eq!(
        c.cores[0].conn_mut(leaf).unwrap().out.take_bytes(),
        b"LS+ q.x grp 2\r\n"
    );
    // The leaf's own subscriptions are not told back to it; a second leaf
    // hears of them.
    let leaf2 = c.link(1, LinkKind::Leaf);
    c.cores[1].add_leaf(leaf2, AccountId::GLOBAL, LeafSetup::default());
    c.cores[1].conn_mut(leaf2).unwrap().out.take_bytes();
    c.cores[0].subscribe_leaf(leaf, b"from.leaf", None, b"from.leaf");
    c.pump();
    assert!(c.cores[0].conn_mut(leaf).unwrap().out.take_bytes().is_empty());
    assert_eq!(
        c.cores[1].conn_mut(leaf2).unwrap().out.take_bytes(),
        b"LS+ from.leaf\r\n"
    );
    // The last plain subscriber gone: LS-.
    c.feed(early, b"UNSUB 1\r\n");
    c.pump();
    assert!(
        c.cores[0].conn_mut(leaf).unwrap().out.take_bytes().is_empty(),
        "one left"
    );
    c.feed(other, b"UNSUB 2\r\n");
    c.pump();
    assert_eq!(c.cores[0].conn_mut(leaf).unwrap().out.take_bytes(), b"LS- before\r\n");
}

#[test]
fn a_message_from_a_leaf_goes_everywhere_but_back_once_per_link() {
    let mut c = Cluster::new(2, CoreConfig::default());
    for core in &mut c.cores {
        core.set_leafing();
    }
    let leaf = c.link(0, LinkKind::Leaf);
    c.cores[0].add_leaf(leaf, AccountId::GLOBAL, LeafSetup::default());
    let other_leaf = c.link(1, LinkKind::Leaf);
    c.cores[1].add_leaf(other_leaf, AccountId::GLOBAL, LeafSetup::default());
    let route = c.link(1, LinkKind::Route);
    let client = c.connect(1);
    c.feed(client, b"SUB a.b 1\r\n");
    c.cores[0].subscribe_leaf(leaf, b"a.b", None, b"a.b");
    c.cores[1].subscribe_leaf(other_leaf, b"a.*", None, b"a.*");
    c.cores[1].subscribe_leaf(other_leaf, b"a.>", None, b"a.>");
    c.link_sub(1, route, b"a.b", None, b"r");
    c.cores[1].name_account(AccountId::GLOBAL, "$G");
    c.pump();
    for l in [leaf, other_leaf] {
        let shard = if l == leaf { 0 } else { 1 };
        c.cores[shard].conn_mut(l).unwrap().out.take_bytes();
    }
    let r = c.cores[0].publish_leaf(leaf, b"a.b", Some(b"rep"), &[], None, b"hi");
    assert_eq!(r, Routed::Delivered);
    c.pump();
    assert_eq!(c.take_out(client), b"MSG a.b 1 rep 2\r\nhi\r\n");
    assert!(
        c.cores[0].conn_mut(leaf).unwrap().out.take_bytes().is_empty(),
        "not back to its leaf"
    );
    assert_eq!(
        c.cores[1].conn_mut(other_leaf).unwrap().out.take_bytes(),
        b"LMSG a.b rep 2\r\nhi\r\n",
        "one LMSG however many of its subscriptions match"
    );
    assert_eq!(
        c.cores[1].conn_mut(route).unwrap().out.take_bytes(),
        b"RMSG $G a.b rep 2\r\nhi\r\n"
    );
}

#[test]
fn hubs_hear_only_this_servers_side_and_leaf_clusters_are_kept_apart() {
    let mut c = Cluster::new(2, CoreConfig::default());
    for core in &mut c.cores {
        core.set_leafing();
    }
    // A hub of this server (spoke link) and two leaves of one cluster.
    let hub = c.leaf_of(0, "HUBC", true);
    let e1 = c.leaf_of(1, "edge", false);
    let e2 = c.leaf_of(0, "edge", false);
    let route = c.link(1, LinkKind::Route);
    c.pump();
    for (shard, l) in [(0, hub), (1, e1), (0, e2)] {
        c.cores[shard].conn_mut(l).unwrap().out.take_bytes();
    }
    // Route-held interest: the leaves hear it, the hub does not.
    c.link_sub(1, route, b"routed", None, b"r");
    // e1's interest: the hub hears it (e1 is behind this server), e2 does not.
    c.cores[1].subscribe_leaf(e1, b"from.e1", None, b"from.e1");
    c.pump();
    let told = |c: &mut Cluster, shard: usize, l: ConnId| {
        String::from_utf8(c.cores[shard].conn_mut(l).unwrap().out.take_bytes()).unwrap()
    };
    assert_eq!(told(&mut c, 0, hub), "LS+ from.e1\r\n");
    assert_eq!(told(&mut c, 0, e2), "LS+ routed\r\n");
    // A message from e1 does not go to e2 (same cluster); a routed one
    // does not go to the hub.
    c.cores[0].subscribe_leaf(e2, b"x", None, b"x");
    c.cores[0].subscribe_leaf(hub, b"x", None, b"x");
    c.pump();
    assert_eq!(told(&mut c, 0, hub), "LS+ x\r\n", "e2 is behind this server");
    told(&mut c, 0, e2);
    c.cores[1].publish_leaf(e1, b"x", None, &[], None, b"hi");
    c.pump();
    assert_eq!(told(&mut c, 0, hub), "LMSG x 2\r\nhi\r\n");
    assert!(told(&mut c, 0, e2).is_empty(), "same cluster");
    c.link_pub(1, route, b"x", b"ro");
    c.pump();
    assert!(told(&mut c, 0, hub).is_empty(), "routed, not to a hub");
    assert_eq!(told(&mut c, 0, e2), "LMSG x 2\r\nro\r\n");
    // A routed LMSG from a leaf of cluster edge (on another server) does
    // not come back to this server's leaves of that cluster.
    c.cores[1].publish_routed(route, AccountId::GLOBAL, &routed(b"x", vec![], b"lo", Some(b"edge")));
    c.pump();
    assert!(told(&mut c, 0, e2).is_empty(), "origin cluster edge");
    c.cores[1].publish_routed(route, AccountId::GLOBAL, &routed(b"x", vec![], b"lo", Some(b"other")));
    c.pump();
    assert_eq!(told(&mut c, 0, e2), "LMSG x 2\r\nlo\r\n");
}

#[test]
fn a_leafs_message_goes_to_routes_with_its_cluster() {
    let mut c = clustered(2);
    for core in &mut c.cores {
        core.set_leafing();
    }
    let leaf = c.leaf_of(0, "edge", false);
    let (old, new) = (c.link(1, LinkKind::Route), c.link(1, LinkKind::Route));
    c.cores[1].set_route_origins(
        new,
        LeafOrigins {
            lnoc: true,
            lnocu: true,
        },
    );
    c.link_sub(1, old, b"x", None, b"o");
    c.link_sub(1, new, b"x", None, b"n");
    c.pump();
    c.cores[0].publish_leaf(leaf, b"x", None, &[], None, b"hi");
    c.pump();
    let out = |c: &mut Cluster, r: ConnId| String::from_utf8(c.cores[1].conn_mut(r).unwrap().out.take_bytes()).unwrap();
    assert_eq!(
        out(&mut c, new),
        "LMSG edge $G x 0 2\r\nhi\r\n",
        "a peer that said lnoc"
    );
    assert_eq!(out(&mut c, old), "RMSG $G x 2\r\nhi\r\n");
}

mod moves;

#[test]
fn a_limit_already_met_when_applied_closes_the_client() {
    let mut c = Cluster::new(1, CoreConfig::default());
    let a = c.connect(0);
    let b = c.connect(0);
    c.feed(a, b"SUB foo 1\r\n");
    c.feed(b, b"SUB foo 1\r\n");
    // A limit above what `a` holds changes nothing; one at it closes `b`.
    c.cores[0].set_conn_identity(a, AccountId::GLOBAL, None, Some(2));
    c.cores[0].set_conn_identity(b, AccountId::GLOBAL, None, Some(1));
    assert!(
        !c.cores[0].enforce_subs_limit(b),
        "a new identity alone (a reload) applies nothing"
    );
    c.cores[0].check_subs_limit(a);
    c.cores[0].check_subs_limit(b);
    assert!(!c.cores[0].enforce_subs_limit(a));
    assert!(c.cores[0].enforce_subs_limit(b));
    assert_eq!(c.cores[0].conn(a).unwrap().closing(), None);
    assert_eq!(
        c.cores[0].conn(b).unwrap().closing(),
        Some(CloseReason::MaxSubscriptionsExceeded)
    );
    assert_eq!(c.take_out(b), b"-ERR 'maximum subscriptions exceeded'\r\n");
    // Told once: the flag is spent.
    c.cores[0].enforce_subs_limit(b);
    assert!(c.take_out(b).is_empty());
    // The server's max_subscriptions counts too (0 means none).
    let mut c = Cluster::new(
        1,
        CoreConfig {
            max_subscriptions: 1,
            ..CoreConfig::default()
        },
    );
    let d = c.connect(0);
    c.feed(d, b"SUB foo 1\r\n");
    c.cores[0].set_conn_identity(d, AccountId::GLOBAL, None, None);
    c.cores[0].check_subs_limit(d);
    c.cores[0].enforce_subs_limit(d);
    assert_eq!(
        c.cores[0].conn(d).unwrap().closing(),
        Some(CloseReason::MaxSubscriptionsExceeded)
    );
}

/// Two accounts, `A` exporting `svc` with `rule` (`response: ...,
/// threshold: ...` entries) and `B` importing it, over `n` shards with
/// their response links; `B`'s requester on shard 0 subscribed to
/// `_INBOX.r`, `A`'s responder on the last shard subscribed to `svc`.
fn service_pair(n: usize, rule: &str) -> (Cluster, ConnId, ConnId) {
    let text = format!(
        "accounts {{\n A {{ users [{{user: a, password: a}}], exports [{{service: svc{rule}}}] }}\n \
         B {{ users [{{user: b, password: b}}], imports [{{service: {{account: A, subject: svc}}}}] }}\n}}\n"
    );
    let parsed = crate::conf::parse_str(&text, std::path::Path::new("t.conf")).unwrap();
    let mut o = crate::options::Options::default();
    crate::conf::options::apply(&mut o, &parsed).unwrap();
    let mut c = Cluster::with_auth(n, CoreConfig::default(), &o.auth);
    for (i, core) in c.cores.iter_mut().enumerate() {
        core.set_imports(c.verifier.imports());
        core.add_response_link(ConnId(1000 + i as u64));
    }
    c.next = 1;
    let requester = c.connect_with(0, r#","user":"b","pass":"b""#);
    let responder = c.connect_with(n - 1, r#","user":"a","pass":"a""#);
    c.feed(requester, b"SUB _INBOX.r 1\r\n");
    c.feed(responder, b"SUB svc 1\r\n");
    c.pump();
    (c, requester, responder)
}

/// Sends a request and returns the reply subject the responder saw.
fn request(c: &mut Cluster, requester: ConnId, responder: ConnId) -> String {
    c.feed(requester, b"PUB svc _INBOX.r 3\r\nreq\r\n");
    c.pump();
    let out = String::from_utf8(c.take_out(responder)).unwrap();
    let line = out.lines().next().unwrap_or_default();
    let reply = line.split(' ').nth(3).unwrap_or_else(|| panic!("{out:?}"));
    assert!(reply.starts_with("_R_."), "{out:?}");
    assert!(
        !reply.contains("_INBOX"),
        "the exporter does not see the importer's inbox"
    );
    reply.to_string()
}

fn respond(c: &mut Cluster, responder: ConnId, reply: &str, payloads: &[&str]) {
    for p in payloads {
        c.feed(responder, format!("PUB {reply} {}\r\n{p}\r\n", p.len()).as_bytes());
    }
    c.pump();
}

#[test]
fn a_singleton_request_takes_its_first_response_only() {
    for n in [1, 2] {
        let (mut c, req, resp) = service_pair(n, "");
        let reply = request(&mut c, req, resp);
        respond(&mut c, resp, &reply, &["one", "two"]);
        assert_eq!(payloads(&c.take_out(req)), vec![b"one".to_vec()], "{n} shards");
        respond(&mut c, resp, &reply, &["three"]);
        assert!(c.take_out(req).is_empty());
        // Another request gets its own reply subject.
        let again = request(&mut c, req, resp);
        assert_ne!(again, reply);
        respond(&mut c, resp, &again, &["four"]);
        assert_eq!(payloads(&c.take_out(req)), vec![b"four".to_vec()]);
        assert_eq!(c.cores.iter().map(|k| k.waiting_requests()).sum::<usize>(), 0);
        // A reply subject nobody was given goes nowhere.
        let forged = format!("{}x", &reply[..reply.len() - 1]);
        respond(&mut c, resp, &forged, &["forged"]);
        assert!(c.take_out(req).is_empty());
    }
}

#[test]
fn streamed_and_chunked_responses_flow_until_the_threshold_or_an_empty_one() {
    let (mut c, req, resp) = service_pair(2, ", response: stream, threshold: \"10s\"");
    let reply = request(&mut c, req, resp);
    respond(&mut c, resp, &reply, &["a", "b", "c"]);
    assert_eq!(payloads(&c.take_out(req)).len(), 3);
    // Each response restarts the threshold; past it, the request is over.
    let later = Instant::now() + Duration::from_secs(8);
    c.cores.iter_mut().for_each(|k| k.set_now(later));
    respond(&mut c, resp, &reply, &["d"]);
    assert_eq!(payloads(&c.take_out(req)), vec![b"d".to_vec()]);
    let too_late = later + Duration::from_secs(11);
    c.cores.iter_mut().for_each(|k| k.set_now(too_late));
    respond(&mut c, resp, &reply, &["e"]);
    assert!(c.take_out(req).is_empty());
    assert_eq!(c.cores.iter().map(|k| k.waiting_requests()).sum::<usize>(), 0);

    let (mut c, req, resp) = service_pair(2, ", response: chunked");
    let reply = request(&mut c, req, resp);
    respond(&mut c, resp, &reply, &["a", "b", "", "after the end"]);
    assert_eq!(
        payloads(&c.take_out(req)),
        vec![b"a".to_vec(), b"b".to_vec(), Vec::new()]
    );
}

#[test]
fn a_request_nobody_receives_or_answers_is_let_go() {
    let (mut c, req, resp) = service_pair(2, "");
    c.feed(resp, b"UNSUB 1\r\n");
    c.pump();
    c.feed(req, b"PUB svc _INBOX.r 3\r\nreq\r\n");
    c.pump();
    assert_eq!(
        c.cores.iter().map(|k| k.waiting_requests()).sum::<usize>(),
        0,
        "no responder"
    );
    c.feed(resp, b"SUB svc 2\r\n");
    c.pump();
    request(&mut c, req, resp);
    assert_eq!(c.cores[0].waiting_requests(), 1);
    // Two minutes (the default threshold) later the sweep lets it go.
    c.cores[0].set_now(Instant::now() + Duration::from_secs(121));
    assert_eq!(c.cores[0].waiting_requests(), 0);
}

/// A traced message published on shard 0 with subscribers on both shards:
/// shard 1 records its egress and sends it back, and shard 0 finishes one
/// trace with every egress; trace-only delivers nothing.
#[test]
fn a_trace_gathers_the_egresses_of_every_shard() {
    use crate::proto::trace::{read, TraceAsk};
    for only in [false, true] {
        let mut c = Cluster::new(2, CoreConfig::default());
        let publisher = c.connect(0);
        let near = c.connect(0);
        let far = c.connect(1);
        c.feed(near, b"SUB foo 1\r\n");
        c.feed(far, b"SUB foo 2\r\n");
        c.pump();
        let hdr: &[u8] = if only {
            b"NATS/1.0\r\nNats-Trace-Dest: t\r\nNats-Trace-Only: true\r\n\r\n"
        } else {
            b"NATS/1.0\r\nNats-Trace-Dest: t\r\n\r\n"
        };
        let TraceAsk::Trace(req) = read(hdr) else {
            panic!("a trace request")
        };
        let mut message = hdr.to_vec();
        message.extend_from_slice(b"hi");
        let core = &mut c.cores[0];
        core.trace_begin(publisher, AccountId::GLOBAL, req, b"foo", message.len());
        core.publish(publisher, b"foo", None, Some(hdr.len()), &message);
        core.trace_end();
        let waker = std::task::Waker::noop();
        let mut reports = Vec::new();
        assert!(!c.cores[0].poll_reports(&mut reports, waker), "waits for shard 1");
        c.pump();
        assert!(c.cores[0].poll_reports(&mut reports, waker));
        let [reports::Report::Trace(t)] = &reports[..] else {
            panic!("{reports:?}")
        };
        assert_eq!(&*t.dest, b"t");
        let egresses: Vec<u64> = t
            .events
            .iter()
            .filter_map(|e| match e {
                trace::TraceEvent::Egress { cid, error: None, .. } => Some(*cid),
                _ => None,
            })
            .collect();
        assert_eq!(egresses, vec![near.0, far.0]);
        assert!(matches!(t.events[0], trace::TraceEvent::Ingress { .. }));
        let delivered = !c.take_out(near).is_empty() || !c.take_out(far).is_empty();
        assert_eq!(delivered, !only, "trace only: {only}");
    }
}
