//! Connections moving between shards (`core/moves.rs`): with every
//! (source, destination) queue a FIFO and the queues served in random
//! order, nothing addressed to a moving connection is lost, duplicated or
//! reordered per publisher.

use std::collections::VecDeque;

use super::*;

/// What travels on one (source, destination) queue.
#[allow(clippy::large_enum_variant)] // a test's queue of deliveries
enum Item {
    Batch(Batch),
    Parcel(Box<ConnParcel>),
}

/// The shards' data queues, served one item at a time in random order.
struct Mesh {
    queues: HashMap<(usize, usize), VecDeque<Item>>,
    rng: fastrand::Rng,
}

impl Mesh {
    fn new(seed: u64) -> Mesh {
        Mesh {
            queues: HashMap::new(),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Queues what core `i` has to send.
    fn collect(&mut self, c: &mut Cluster, i: usize) {
        for (dest, b) in c.cores[i].take_batches() {
            self.queues
                .entry((i, dest.index()))
                .or_default()
                .push_back(Item::Batch(b));
        }
    }

    /// Delivers one queued item, picked at random; false when all are empty.
    fn step(&mut self, c: &mut Cluster) -> bool {
        let busy: Vec<(usize, usize)> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, _)| *k)
            .collect();
        if busy.is_empty() {
            return false;
        }
        let (src, dst) = busy[self.rng.usize(..busy.len())];
        match self.queues.get_mut(&(src, dst)).unwrap().pop_front().unwrap() {
            Item::Batch(b) => c.cores[dst].apply_batch(b),
            Item::Parcel(p) => c.cores[dst].move_in(*p),
        }
        self.collect(c, dst);
        true
    }

    fn drain(&mut self, c: &mut Cluster) {
        while self.step(c) {}
    }

    /// Moves `cid` to shard `to` as the runtime does: its shard's pending
    /// batches first, then the parcel on the same queue.
    fn move_conn(&mut self, c: &mut Cluster, cid: ConnId, to: usize) {
        let from = c.sessions[&cid].0;
        let parcel = c.cores[from].move_out(cid, ShardId(to as u16)).expect("movable");
        self.collect(c, from);
        self.queues
            .entry((from, to))
            .or_default()
            .push_back(Item::Parcel(Box::new(parcel)));
        c.sessions.get_mut(&cid).unwrap().0 = to;
    }
}

/// Publisher `p`'s messages, checked for order and counted.
fn check_order(out: &[u8], publishers: usize) -> Vec<usize> {
    let mut last = vec![-1i64; publishers];
    let mut counts = vec![0; publishers];
    for p in payloads(out) {
        let t = String::from_utf8(p).unwrap();
        let (p, n) = t.split_once(':').unwrap();
        let (p, n): (usize, i64) = (p.parse().unwrap(), n.parse().unwrap());
        assert_eq!(n, last[p] + 1, "publisher {p} out of order or duplicated");
        last[p] = n;
        counts[p] += 1;
    }
    counts
}

#[test]
fn a_subscriber_moving_mid_stream_gets_everything_once_in_order() {
    for seed in 0..20 {
        let mut c = Cluster::new(4, CoreConfig::default());
        let mut mesh = Mesh::new(seed);
        let sub = c.connect(3);
        c.feed(sub, b"SUB ord.> 1\r\nSUB ord.x.> 2\r\n");
        for i in 0..4 {
            mesh.collect(&mut c, i);
        }
        mesh.drain(&mut c);
        let pubs: Vec<ConnId> = (0..4).map(|s| c.connect(s)).collect();
        let mut out = Vec::new();
        let mut arrived = false;
        for round in 0..200 {
            if round == 50 {
                out.extend(c.take_out(sub));
                mesh.move_conn(&mut c, sub, (seed % 3) as usize);
            }
            for (p, cid) in pubs.iter().enumerate() {
                let body = format!("{p}:{round}");
                c.feed(*cid, format!("PUB ord.{p} {}\r\n{body}\r\n", body.len()).as_bytes());
                mesh.collect(&mut c, p);
            }
            for _ in 0..mesh.rng.usize(0..12) {
                mesh.step(&mut c);
            }
            let at = c.sessions[&sub].0;
            arrived |= c.cores[at].take_arrived().contains(&sub);
        }
        mesh.drain(&mut c);
        let at = c.sessions[&sub].0;
        arrived |= c.cores[at].take_arrived().contains(&sub);
        assert!(arrived, "seed {seed}: every shard cleared the move");
        assert!(c.cores[3].conn(sub).is_none());
        out.extend(c.take_out(sub));
        assert_eq!(check_order(&out, 4), vec![200; 4], "seed {seed}");
        assert!(c.cores.iter().all(|k| k.forwards.is_empty() && k.tombstones.is_empty()));
        // Afterwards it is an ordinary subscriber of its new shard.
        c.feed(sub, b"UNSUB 1\r\n");
        for i in 0..4 {
            mesh.collect(&mut c, i);
        }
        mesh.drain(&mut c);
        c.feed(pubs[2], b"PUB ord.2 1\r\nz\r\nPUB ord.x.1 1\r\ny\r\n");
        mesh.collect(&mut c, 2);
        mesh.drain(&mut c);
        assert_eq!(c.take_out(sub), b"MSG ord.x.1 2 1\r\ny\r\n");
    }
}

#[test]
fn a_moving_publisher_keeps_its_order_and_queue_groups_stay_exactly_once() {
    for seed in 0..20 {
        let mut c = Cluster::new(3, CoreConfig::default());
        let mut mesh = Mesh::new(seed);
        let subs: Vec<ConnId> = (0..3).map(|s| c.connect(s)).collect();
        for s in &subs {
            c.feed(*s, b"SUB q.> 1\r\nSUB q.> workers 2\r\n");
        }
        let publisher = c.connect(1);
        c.feed(publisher, b"SUB q.> workers 3\r\n");
        for i in 0..3 {
            mesh.collect(&mut c, i);
        }
        mesh.drain(&mut c);
        let mut outs: HashMap<ConnId, Vec<u8>> = HashMap::new();
        for n in 0..100 {
            if n == 30 {
                // The publisher's own queued output goes with it.
                mesh.move_conn(&mut c, publisher, 2);
                mesh.drain(&mut c);
                assert!(c.cores[2].take_arrived().contains(&publisher));
            }
            let body = format!("0:{n}");
            c.feed(publisher, format!("PUB q.a {}\r\n{body}\r\n", body.len()).as_bytes());
            let at = c.sessions[&publisher].0;
            mesh.collect(&mut c, at);
            for _ in 0..mesh.rng.usize(0..6) {
                mesh.step(&mut c);
            }
        }
        mesh.drain(&mut c);
        for s in subs.iter().chain([&publisher]) {
            outs.entry(*s).or_default().extend(c.take_out(*s));
        }
        let mut group = 0;
        for s in &subs {
            // sid 1 lines are everything in order; sid 2 lines the group's share.
            let text = String::from_utf8(outs[s].clone()).unwrap();
            group += text.matches(" 2 ").count();
            let mut only_plain = Vec::new();
            let mut rest = &outs[s][..];
            while !rest.is_empty() {
                let nl = rest.iter().position(|&b| b == b'\n').unwrap();
                let line = std::str::from_utf8(&rest[..nl - 1]).unwrap().to_string();
                let len: usize = line.rsplit(' ').next().unwrap().parse().unwrap();
                if line.split(' ').nth(2) == Some("1") {
                    only_plain.extend_from_slice(&rest[..nl + 1 + len + 2]);
                }
                rest = &rest[nl + 1 + len + 2..];
            }
            assert_eq!(check_order(&only_plain, 1), vec![100], "seed {seed}");
        }
        group += String::from_utf8(outs[&publisher].clone())
            .unwrap()
            .matches(" 3 ")
            .count();
        assert_eq!(group, 100, "seed {seed}: each message to one member of the group");
    }
}

/// Twenty requests from `requester` and their replies from `responder`.
fn exchange(c: &mut Cluster, requester: ConnId, responder: ConnId) {
    for n in 0..20 {
        c.feed(requester, format!("PUB svc _INBOX.{n} 1\r\nx\r\n").as_bytes());
        c.pump();
        c.feed(responder, format!("PUB _INBOX.{n} 1\r\ny\r\n").as_bytes());
        c.pump();
    }
}

#[test]
fn affinity_picks_the_connection_on_the_busier_or_higher_shard_only() {
    let mut c = Cluster::new(2, CoreConfig::default());
    let requester = c.connect(0);
    let responder = c.connect(1);
    c.feed(responder, b"SUB svc 1\r\n");
    c.feed(requester, b"SUB _INBOX.> 1\r\n");
    c.pump();
    exchange(&mut c, requester, responder);
    let later = Instant::now() + Duration::from_millis(5);
    for core in &mut c.cores {
        core.set_now(later);
    }
    assert!(
        c.cores[0].affinity_moves(&[1, 1], &[]).is_empty(),
        "lower id stays on even loads"
    );
    assert_eq!(c.cores[1].affinity_moves(&[1, 1], &[]), vec![(responder, ShardId(0))]);
    // A window is judged once; the next one starts empty.
    assert!(c.cores[1].affinity_moves(&[1, 1], &[]).is_empty());
    exchange(&mut c, requester, responder);
    for core in &mut c.cores {
        core.set_now(later + Duration::from_millis(5));
    }
    assert_eq!(
        c.cores[0].affinity_moves(&[3, 1], &[]),
        vec![(requester, ShardId(1))],
        "to the lighter shard"
    );
    assert!(c.cores[1].affinity_moves(&[3, 1], &[]).is_empty());
    // The two ends read the loads a connection apart (one arrived on
    // shard 0 between their looks): only the higher shard's end moves,
    // where comparing loads alone would have swapped them.
    exchange(&mut c, requester, responder);
    for core in &mut c.cores {
        core.set_now(later + Duration::from_millis(10));
    }
    assert!(
        c.cores[0].affinity_moves(&[3, 2], &[]).is_empty(),
        "shard 0 saw itself one heavier"
    );
    assert_eq!(c.cores[1].affinity_moves(&[2, 2], &[]), vec![(responder, ShardId(0))]);
    // The responder's move was taken (shard 0 now counts two, shard 1
    // none): the requester, judged after it, must not go the other way.
    exchange(&mut c, requester, responder);
    for core in &mut c.cores {
        core.set_now(later + Duration::from_millis(15));
    }
    assert!(
        c.cores[0].affinity_moves(&[2, 0], &[false, true]).is_empty(),
        "no swap: a client just came from shard 1"
    );
    exchange(&mut c, requester, responder);
    for core in &mut c.cores {
        core.set_now(later + Duration::from_millis(20));
    }
    assert_eq!(
        c.cores[0].affinity_moves(&[2, 0], &[false, false]),
        vec![(requester, ShardId(1))],
        "loads alone would have swapped them"
    );
}

#[test]
fn a_busy_or_mixed_subscriber_stays_and_a_waiting_pong_blocks_a_move() {
    let mut c = Cluster::new(3, CoreConfig::default());
    let sub = c.connect(2);
    c.feed(sub, b"SUB a 1\r\n");
    c.pump();
    let (p0, p1) = (c.connect(0), c.connect(1));
    // Deliveries from two shards: no shard dominates.
    for _ in 0..20 {
        c.feed(p0, b"PUB a 1\r\nx\r\n");
        c.feed(p1, b"PUB a 1\r\nx\r\n");
        c.pump();
    }
    let t0 = Instant::now() + Duration::from_millis(50);
    c.cores[2].set_now(t0);
    assert!(c.cores[2].affinity_moves(&[1, 1, 1], &[]).is_empty(), "mixed sources");
    // Thousands a second from one shard: busy, stays.
    c.cores[2].set_now(t0);
    for _ in 0..100 {
        c.feed(p0, b"PUB a 1\r\nx\r\n");
        c.pump();
    }
    c.cores[2].set_now(t0 + Duration::from_millis(1));
    assert!(c.cores[2].affinity_moves(&[1, 1, 1], &[]).is_empty(), "busy");
    // A PONG waiting on other shards' acks pins it for now.
    c.feed(sub, b"SUB b 2\r\nPING\r\n");
    assert!(!c.cores[2].movable(sub));
    c.pump();
    assert!(c.cores[2].movable(sub));
    c.feed(sub, b"UNSUB 2 5\r\n");
    assert!(!c.cores[2].movable(sub), "auto-unsubscribe pending");
}
