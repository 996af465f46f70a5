//! The subscription index: a token trie with `*` and `>` wildcards, queue
//! groups merged by name, and a match-result cache that every insert and
//! remove keeps correct.
//!
//! Every shard holds one replica holding the subscriptions of all shards, so
//! a publish is matched where it arrives, queue members on every shard are
//! visible to the pick, and no lock is taken.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use std::rc::Rc;

use crate::ids::{ConnId, SubKey};
use crate::subject::{self, tokens};

/// One subscription as the index knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubRef {
    /// Server-wide key; its top bits name the owning shard.
    pub key: SubKey,
    /// The owning connection (for `echo: false`).
    pub conn: ConnId,
}

/// All members of one queue group that match a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMatch {
    /// The group name.
    pub name: Rc<[u8]>,
    /// Its matching members, on any shard.
    pub members: Vec<SubRef>,
}

/// The subscriptions that match one literal subject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchResult {
    /// Plain subscriptions: each receives the message.
    pub plain: Vec<SubRef>,
    /// Queue groups: one member of each receives it.
    pub queues: Vec<QueueMatch>,
}

impl MatchResult {
    /// True when nothing matched.
    pub fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.queues.is_empty()
    }
}

#[derive(Default)]
struct Node {
    next: Option<Box<Level>>,
    plain: Vec<SubRef>,
    queues: Vec<QueueMatch>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.queues.is_empty() && self.next.as_ref().is_none_or(|l| l.is_empty())
    }
}

#[derive(Default)]
struct Level {
    literal: HashMap<Box<[u8]>, Node, RandomState>,
    pwc: Option<Box<Node>>,
    fwc: Option<Box<Node>>,
}

impl Level {
    fn is_empty(&self) -> bool {
        self.literal.is_empty() && self.pwc.is_none() && self.fwc.is_none()
    }
}

/// Counters of the index's work, for subsz.
#[derive(Debug, Default, Clone, Copy)]
pub struct IndexStats {
    /// Subscriptions inserted.
    pub inserts: u64,
    /// Subscriptions removed.
    pub removes: u64,
    /// Match calls.
    pub matches: u64,
    /// Match calls answered from the cache.
    pub cache_hits: u64,
}

/// Most cached results kept; past it the cache is cut back to a quarter.
pub const CACHE_MAX: usize = 1024;

/// A subscription index replica.
pub struct SubIndex {
    root: Level,
    count: usize,
    cache: Option<HashMap<Box<[u8]>, Rc<MatchResult>, RandomState>>,
    stats: IndexStats,
}

impl Default for SubIndex {
    fn default() -> Self {
        SubIndex::new(true)
    }
}

impl SubIndex {
    /// An empty index, with or without the result cache
    /// (`disable_sublist_cache`).
    pub fn new(cache: bool) -> SubIndex {
        SubIndex {
            root: Level::default(),
            count: 0,
            cache: cache.then(HashMap::default),
            stats: IndexStats::default(),
        }
    }

    /// Number of subscriptions held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the index holds no subscription.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Number of cached results.
    pub fn cache_len(&self) -> usize {
        self.cache.as_ref().map_or(0, HashMap::len)
    }

    /// Work counters.
    pub fn stats(&self) -> IndexStats {
        self.stats
    }

    /// Largest and summed fan-out of the cached results (nats-server's
    /// `max_fanout` and, divided by the cache size, `avg_fanout`).
    pub fn cached_fanout(&self) -> (u64, u64) {
        let Some(c) = &self.cache else { return (0, 0) };
        c.values().fold((0, 0), |(max, sum), r| {
            let n = (r.plain.len() + r.queues.len()) as u64;
            (max.max(n), sum + n)
        })
    }

    /// Adds a subscription. `subject` must be a valid subscription subject.
    pub fn insert(&mut self, subj: &[u8], queue: Option<&[u8]>, sub: SubRef) {
        let mut level = &mut self.root;
        let mut toks = tokens(subj).peekable();
        let node = loop {
            let tok = toks.next().expect("subject has at least one token");
            let node: &mut Node = match tok {
                b"*" => level.pwc.get_or_insert_with(Default::default),
                b">" => level.fwc.get_or_insert_with(Default::default),
                t => level.literal.entry(t.into()).or_default(),
            };
            if toks.peek().is_none() {
                break node;
            }
            level = node.next.get_or_insert_with(Default::default);
        };
        match queue {
            None => node.plain.push(sub),
            Some(q) => match node.queues.iter_mut().find(|g| &*g.name == q) {
                Some(g) => g.members.push(sub),
                None => node.queues.push(QueueMatch {
                    name: q.into(),
                    members: vec![sub],
                }),
            },
        }
        self.count += 1;
        self.stats.inserts += 1;
        self.invalidate(subj);
    }

    /// Removes a subscription; returns whether it was present.
    pub fn remove(&mut self, subj: &[u8], queue: Option<&[u8]>, key: SubKey) -> bool {
        let toks: Vec<&[u8]> = tokens(subj).collect();
        let removed = remove_at(&mut self.root, &toks, queue, key);
        if removed {
            self.count -= 1;
            self.stats.removes += 1;
            self.invalidate(subj);
        }
        removed
    }

    /// Drops cached results that the subscription subject `subj` affects.
    fn invalidate(&mut self, subj: &[u8]) {
        let Some(cache) = self.cache.as_mut() else {
            return;
        };
        if subject::has_wildcard(subj) {
            cache.retain(|k, _| !subject::matches(subj, k));
        } else {
            cache.remove(subj);
        }
    }

    /// The subscriptions matching the literal subject `subj`.
    pub fn matches(&mut self, subj: &[u8]) -> Rc<MatchResult> {
        self.stats.matches += 1;
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(subj)) {
            self.stats.cache_hits += 1;
            return hit.clone();
        }
        let mut result = MatchResult::default();
        let toks: Vec<&[u8]> = tokens(subj).collect();
        if toks.iter().all(|t| !t.is_empty()) {
            collect(&self.root, &toks, &mut result);
        }
        let result = Rc::new(result);
        if let Some(cache) = self.cache.as_mut() {
            if cache.len() >= CACHE_MAX {
                // Sweep: keep a quarter, chosen by the map's own order.
                let mut keep = CACHE_MAX / 4;
                cache.retain(|_, _| {
                    keep = keep.saturating_sub(1);
                    keep > 0
                });
            }
            cache.insert(subj.into(), result.clone());
        }
        result
    }
}

fn add_node(node: &Node, out: &mut MatchResult) {
    out.plain.extend_from_slice(&node.plain);
    for g in &node.queues {
        match out.queues.iter_mut().find(|q| q.name == g.name) {
            Some(q) => q.members.extend_from_slice(&g.members),
            None => out.queues.push(g.clone()),
        }
    }
}

fn collect(level: &Level, toks: &[&[u8]], out: &mut MatchResult) {
    let (tok, rest) = toks.split_first().expect("non-empty");
    if let Some(fwc) = &level.fwc {
        add_node(fwc, out);
    }
    if let Some(pwc) = &level.pwc {
        visit(pwc, rest, out);
    }
    if let Some(lit) = level.literal.get(*tok) {
        visit(lit, rest, out);
    }
}

fn visit(node: &Node, rest: &[&[u8]], out: &mut MatchResult) {
    if rest.is_empty() {
        add_node(node, out);
    } else if let Some(next) = &node.next {
        collect(next, rest, out);
    }
}

fn remove_from_node(node: &mut Node, queue: Option<&[u8]>, key: SubKey) -> bool {
    match queue {
        None => match node.plain.iter().position(|s| s.key == key) {
            Some(i) => {
                node.plain.swap_remove(i);
                true
            }
            None => false,
        },
        Some(q) => {
            let Some(gi) = node.queues.iter().position(|g| &*g.name == q) else {
                return false;
            };
            let g = &mut node.queues[gi];
            let Some(i) = g.members.iter().position(|s| s.key == key) else {
                return false;
            };
            g.members.swap_remove(i);
            if g.members.is_empty() {
                node.queues.swap_remove(gi);
            }
            true
        }
    }
}

fn remove_at(level: &mut Level, toks: &[&[u8]], queue: Option<&[u8]>, key: SubKey) -> bool {
    let (tok, rest) = toks.split_first().expect("non-empty");
    let node: &mut Node = match *tok {
        b"*" => match level.pwc.as_deref_mut() {
            Some(n) => n,
            None => return false,
        },
        b">" => match level.fwc.as_deref_mut() {
            Some(n) => n,
            None => return false,
        },
        t => match level.literal.get_mut(t) {
            Some(n) => n,
            None => return false,
        },
    };
    let removed = if rest.is_empty() {
        remove_from_node(node, queue, key)
    } else {
        match node.next.as_deref_mut() {
            Some(next) => {
                let r = remove_at(next, rest, queue, key);
                if next.is_empty() {
                    node.next = None;
                }
                r
            }
            None => false,
        }
    };
    if removed && node.is_empty() {
        match *tok {
            b"*" => level.pwc = None,
            b">" => level.fwc = None,
            t => {
                level.literal.remove(t);
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ShardId;

    fn r(n: u64) -> SubRef {
        SubRef {
            key: SubKey::new(ShardId(0), n),
            conn: ConnId(n),
        }
    }

    fn keys(m: &MatchResult) -> Vec<u64> {
        let mut v: Vec<u64> = m.plain.iter().map(|s| s.key.0).collect();
        v.sort();
        v
    }

    #[test]
    fn wildcards_match() {
        let mut ix = SubIndex::default();
        ix.insert(b"foo.bar", None, r(1));
        ix.insert(b"foo.*", None, r(2));
        ix.insert(b"foo.>", None, r(3));
        ix.insert(b">", None, r(4));
        ix.insert(b"*.bar", None, r(5));
        ix.insert(b"foo", None, r(6));
        assert_eq!(keys(&ix.matches(b"foo.bar")), vec![1, 2, 3, 4, 5]);
        assert_eq!(keys(&ix.matches(b"foo.baz.x")), vec![3, 4]);
        assert_eq!(keys(&ix.matches(b"foo")), vec![4, 6]);
        assert_eq!(keys(&ix.matches(b"bar")), vec![4]);
        assert_eq!(ix.len(), 6);
    }

    #[test]
    fn cache_stays_correct_under_churn() {
        let mut ix = SubIndex::default();
        ix.insert(b"a.b", None, r(1));
        assert_eq!(keys(&ix.matches(b"a.b")), vec![1]);
        ix.insert(b"a.*", None, r(2));
        assert_eq!(keys(&ix.matches(b"a.b")), vec![1, 2]);
        assert!(ix.remove(b"a.b", None, r(1).key));
        assert_eq!(keys(&ix.matches(b"a.b")), vec![2]);
        ix.insert(b">", None, r(3));
        assert_eq!(keys(&ix.matches(b"a.b")), vec![2, 3]);
        assert!(ix.remove(b"a.*", None, r(2).key));
        assert!(ix.remove(b">", None, r(3).key));
        assert!(ix.matches(b"a.b").is_empty());
        assert!(!ix.remove(b"a.b", None, r(1).key));
        assert_eq!(ix.len(), 0);
        assert!(ix.root.is_empty(), "empty nodes are pruned");
    }

    #[test]
    fn queue_groups_merge_by_name() {
        let mut ix = SubIndex::default();
        ix.insert(b"a.b", Some(b"q"), r(1));
        ix.insert(b"a.*", Some(b"q"), r(2));
        ix.insert(b"a.b", Some(b"other"), r(3));
        let m = ix.matches(b"a.b");
        assert_eq!(m.queues.len(), 2);
        let q = m.queues.iter().find(|g| &*g.name == b"q").unwrap();
        assert_eq!(q.members.len(), 2);
        assert!(ix.remove(b"a.b", Some(b"q"), r(1).key));
        let m = ix.matches(b"a.b");
        assert_eq!(m.queues.iter().find(|g| &*g.name == b"q").unwrap().members.len(), 1);
    }

    /// Random churn against a brute-force model, with and without the cache.
    #[test]
    fn agrees_with_brute_force() {
        let subjects: Vec<&[u8]> = vec![
            b"a", b"a.b", b"a.*", b"*.b", b"a.>", b">", b"*", b"a.b.c", b"*.*.c", b"b.>",
        ];
        let pubs: Vec<&[u8]> = vec![b"a", b"a.b", b"b.b", b"a.b.c", b"x.y.c", b"b", b"b.c"];
        let mut rng = fastrand::Rng::with_seed(7);
        for cache in [true, false] {
            let mut ix = SubIndex::new(cache);
            let mut model: Vec<(usize, u64)> = Vec::new();
            for n in 0..3000u64 {
                if rng.bool() || model.is_empty() {
                    let s = rng.usize(..subjects.len());
                    ix.insert(subjects[s], None, r(n));
                    model.push((s, n));
                } else {
                    let (s, k) = model.swap_remove(rng.usize(..model.len()));
                    assert!(ix.remove(subjects[s], None, r(k).key));
                }
                let p = pubs[rng.usize(..pubs.len())];
                let mut want: Vec<u64> = model
                    .iter()
                    .filter(|(s, _)| subject::matches(subjects[*s], p))
                    .map(|(_, k)| r(*k).key.0)
                    .collect();
                want.sort();
                assert_eq!(keys(&ix.matches(p)), want);
            }
        }
    }
}
