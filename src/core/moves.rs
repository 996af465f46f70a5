//! Connection affinity: a client connection that mostly receives from one
//! other shard moves there, so a request and its reply (or a publisher and
//! its only subscriber) stop crossing cores. The core decides which
//! connections should move and hands a connection's routing state over
//! without losing, duplicating or reordering a delivery:
//!
//! 1. The shard it leaves (`from`) rekeys the connection's subscriptions
//!    in its replica (new keys owned by the destination `to`), keeps the
//!    old keys as forwards and sends `to` the state itself
//!    ([`ConnParcel`]) behind everything it sent `to` before.
//! 2. `to` takes it in and acknowledges; only then does `from` tell every
//!    other shard the new keys (a [`MoveNote`], behind the connection's
//!    last publishes), so no delivery reaches a new key before its owner.
//! 3. Each shard applies the note (or the parcel), rekeys its replica and
//!    acknowledges to `from` on the data queue, behind every delivery it
//!    addressed to the old keys; `from` forwards those to `to` as they come.
//! 4. For each acknowledgement `from` sends `to` a clear for that shard;
//!    until then `to` holds what that shard sends the connection directly,
//!    and writes it after the forwarded deliveries. Once every shard is
//!    clear the connection is live ([`ShardCore::take_arrived`]): by then
//!    every shard has applied its earlier publishes, so its reader may run.

use std::time::{Duration, Instant};

use super::batch::{MoveNote, Rekey};
use super::{ConnEntry, LocalSub, ShardCore};
use crate::ids::{ConnId, LinkKind, ShardId, SubKey};
use crate::index::SubRef;

/// Deliveries a connection's affinity is judged on, at least.
const SAMPLE: u32 = 16;
/// A window that has not reached `SAMPLE` deliveries in this long restarts.
const WINDOW: Duration = Duration::from_secs(1);
/// Share of a window's deliveries (in tenths) that must come from one shard.
const DOMINANT_TENTHS: u32 = 9;
/// Deliveries per second above which a connection stays where it is: a
/// busy subscriber gains from its publisher's core and its own working
/// in parallel; affinity is for request/reply and light load.
const LIGHT_RATE: f64 = 20_000.0;
/// A connection that moved stays at least this long, and no connection
/// goes back the way one came for as long.
pub const SETTLE: Duration = Duration::from_secs(1);

/// Where a client's deliveries came from in the current window.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Affinity {
    src: u16,
    same: u32,
    total: u32,
    since: Option<Instant>,
}

impl Affinity {
    #[inline]
    pub(super) fn note(&mut self, src: ShardId, now: Instant) {
        if self.total == 0 {
            self.src = src.0;
            self.since = Some(now);
        }
        self.total += 1;
        if src.0 == self.src {
            self.same += 1;
        }
    }

    /// The shard that sent nearly all of a full window's deliveries at a
    /// light rate, if one did; `None` also while the window is filling.
    fn verdict(&mut self, now: Instant) -> Option<ShardId> {
        let since = self.since?;
        let age = now.saturating_duration_since(since);
        if self.total < SAMPLE {
            if age > WINDOW {
                *self = Affinity::default();
            }
            return None;
        }
        let rate = self.total as f64 / age.as_secs_f64().max(1e-3);
        let dominant = self.same * 10 >= self.total * DOMINANT_TENTHS;
        let src = ShardId(self.src);
        *self = Affinity::default();
        (dominant && rate <= LIGHT_RATE).then_some(src)
    }
}

/// A connection arrived from another shard whose deliveries from some
/// shards are still held (see the module's step 4).
#[derive(Debug)]
pub(super) struct MovingIn {
    /// Shards not yet clear, by index.
    pending: Vec<bool>,
    left: usize,
    /// What each pending shard sent directly, encoded, in order.
    held: Vec<Vec<u8>>,
}

impl MovingIn {
    /// The buffer a delivery from `src` goes to while `src` is not clear.
    #[inline]
    pub(super) fn hold_for(&mut self, src: ShardId) -> Option<&mut Vec<u8>> {
        if self.pending[src.index()] {
            Some(&mut self.held[src.index()])
        } else {
            None
        }
    }
}

/// A moving connection's forwards on the shard it left, until every other
/// shard has acknowledged the move.
#[derive(Debug)]
pub(super) struct Tombstone {
    to: ShardId,
    acks_left: usize,
    old: Vec<SubKey>,
    /// The new keys, until the other shards are told them: only once `to`
    /// has taken the connection in, so nothing reaches a new key first.
    rekeys: Option<Vec<Rekey>>,
}

/// A client connection's routing state on its way to another shard (the
/// runtime carries its socket and session beside it).
#[derive(Debug)]
pub struct ConnParcel {
    conn: ConnId,
    from: ShardId,
    entry: ConnEntry,
    subs: Vec<(SubKey, LocalSub)>,
    rekeys: Vec<Rekey>,
    /// Requests other servers measure that it has yet to answer.
    remote_requests: Vec<(Box<[u8]>, super::latency::RemoteRequest)>,
}

impl ConnParcel {
    /// The connection.
    pub fn conn(&self) -> ConnId {
        self.conn
    }
}

impl ShardCore {
    /// Connections that should move, and where to: a client whose recent
    /// deliveries came nearly all from one other shard, at a light rate,
    /// goes there when that shard holds at least two fewer connections
    /// than this one (`loads`, by shard), or about as many (one more or
    /// fewer) and has the lower id, so the two ends of a pair do not swap
    /// even when they read the loads a connection apart; never to a shard
    /// that `back` marks (one moved a client here lately: its partner, most
    /// likely, whose arrival made this shard look the busier). Starts a
    /// new window for each connection judged. Each connection named is
    /// marked ([`Self::take_move`]).
    pub fn affinity_moves(&mut self, loads: &[usize], back: &[bool]) -> Vec<(ConnId, ShardId)> {
        if self.nshards < 2 || self.nshards > SubKey::MOVED_MAX_SHARDS {
            return Vec::new();
        }
        let (me, now) = (self.id, self.now);
        let mut out = Vec::new();
        for (&cid, c) in self.conns.iter_mut() {
            if c.link != LinkKind::Client {
                continue;
            }
            let Some(to) = c.affinity.verdict(now) else { continue };
            let settled = c.moved_at.is_none_or(|t| now.saturating_duration_since(t) >= SETTLE);
            let load = |s: ShardId| loads.get(s.index()).copied().unwrap_or(usize::MAX);
            // Each shard reads the loads at its own moment, so the two ends
            // of a pair may see them differ by a connection that just
            // arrived: within one of each other the lower shard id decides
            // (both ends agree on that), beyond it the lighter shard.
            let (there, here) = (load(to), load(me));
            let lighter = there.saturating_add(1) < here || (there <= here.saturating_add(1) && to < me);
            let came_from = back.get(to.index()).copied().unwrap_or(false);
            if to != me && to.index() < self.nshards && settled && lighter && !came_from {
                out.push((cid, to));
            }
        }
        out.retain(|&(cid, _)| self.movable(cid));
        for &(cid, to) in &out {
            if let Some(c) = self.conns.get_mut(&cid) {
                c.move_to = Some(to);
            }
        }
        out
    }

    /// Lets `cid` move between shards: its runtime can hand its transport
    /// over (plain TCP).
    pub fn set_movable(&mut self, cid: ConnId) {
        if let Some(c) = self.conns.get_mut(&cid) {
            c.may_move = true;
        }
    }

    /// Where `cid` was marked to move, if it was and still can now.
    pub fn take_move(&mut self, cid: ConnId) -> Option<ShardId> {
        let to = self.conns.get_mut(&cid)?.move_to.take()?;
        self.movable(cid).then_some(to)
    }

    /// Whether `cid`'s writer is waiting for output with nothing queued
    /// (so it can be stopped without cutting a write).
    pub fn writer_idle(&self, cid: ConnId) -> bool {
        self.conns
            .get(&cid)
            .is_some_and(|c| c.waker.is_some() && c.out.is_empty())
    }

    /// Whether `cid` can move now: a live client with no PONG waiting on
    /// other shards, no auto-unsubscribe pending and no move under way.
    pub fn movable(&self, cid: ConnId) -> bool {
        let Some(c) = self.conns.get(&cid) else { return false };
        c.link == LinkKind::Client
            && c.may_move
            && c.closing.is_none()
            && c.moving_in.is_none()
            && c.deferred_pongs.is_empty()
            && !self.waiting_pongs.contains(&cid)
            && !self.tombstones.contains_key(&cid)
            && c.sids
                .values()
                .all(|k| self.subs.get(k).is_some_and(|s| s.max.is_none()))
    }

    /// Takes `cid` off this shard for shard `to` (step 1): `None` when it
    /// cannot move now. Its queued output goes with it; the runtime must
    /// send the parcel to `to` after this shard's pending batches.
    pub fn move_out(&mut self, cid: ConnId, to: ShardId) -> Option<ConnParcel> {
        if to == self.id || to.index() >= self.nshards || !self.movable(cid) {
            return None;
        }
        let mut entry = self.conns.remove(&cid)?;
        entry.waker = None;
        entry.interest_seq = 0;
        entry.affinity = Affinity::default();
        entry.moved_at = Some(self.now);
        let mut subs = Vec::with_capacity(entry.sids.len());
        let mut rekeys = Vec::with_capacity(entry.sids.len());
        for (_, key) in entry.sids.iter_mut() {
            let Some(s) = self.subs.remove(key) else { continue };
            let (old, new) = (*key, SubKey::moved(to, self.id, self.next_sub));
            self.next_sub += 1;
            let sub = SubRef { key: new, conn: cid };
            let index = self.index_mut(s.account);
            index.remove(&s.subject, s.queue.as_deref(), old);
            index.insert(&s.subject, s.queue.as_deref(), sub);
            self.forwards.insert(old, sub);
            rekeys.push(Rekey {
                account: s.account,
                subject: s.subject.clone(),
                queue: s.queue.clone(),
                old,
                new,
            });
            *key = new;
            subs.push((new, s));
        }
        self.tombstones.insert(
            cid,
            Tombstone {
                to,
                acks_left: self.nshards - 1,
                old: rekeys.iter().map(|r| r.old).collect(),
                rekeys: Some(rekeys.clone()),
            },
        );
        let remote_requests = self
            .remote_requests
            .extract_if(|(c, _), _| *c == cid)
            .map(|((_, reply), r)| (reply, r))
            .collect();
        Some(ConnParcel {
            conn: cid,
            from: self.id,
            entry,
            subs,
            rekeys,
            remote_requests,
        })
    }

    /// Takes in a connection another shard moved here (step 2). It is not
    /// live until [`Self::take_arrived`] names it: meanwhile what the other
    /// shards send it directly is held, and its reader must not run.
    pub fn move_in(&mut self, p: ConnParcel) {
        let ConnParcel {
            conn,
            from,
            mut entry,
            subs,
            rekeys,
            remote_requests,
        } = p;
        for (reply, r) in remote_requests {
            self.remote_requests.insert((conn, reply), r);
        }
        self.rekey(conn, &rekeys);
        self.index_mut(entry.account);
        for (key, s) in subs {
            self.subs.insert(key, s);
        }
        let n = self.nshards;
        entry.moving_in = Some(Box::new(MovingIn {
            pending: (0..n).map(|i| i != from.index()).collect(),
            left: n - 1,
            held: vec![Vec::new(); n],
        }));
        self.conns.insert(conn, entry);
        self.outbox[from.index()].move_acks.push(conn);
    }

    /// Connections moved here that became live since the last call.
    pub fn take_arrived(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.arrived)
    }

    /// Swaps a moving connection's keys in this replica.
    fn rekey(&mut self, conn: ConnId, rekeys: &[Rekey]) {
        for r in rekeys {
            let index = self.index_mut(r.account);
            index.remove(&r.subject, r.queue.as_deref(), r.old);
            index.insert(&r.subject, r.queue.as_deref(), SubRef { key: r.new, conn });
        }
    }

    /// A delivery to a key this shard no longer holds: forwarded when the
    /// connection moved away and not every shard has caught up.
    pub(super) fn forward(&mut self, key: SubKey, msg: &super::Msg<'_>) {
        if let Some(&to) = self.forwards.get(&key) {
            // A message of its own in the destination's batch.
            self.publishes += 1;
            self.route_to(to, msg, &mut None);
        }
    }

    /// What a batch from shard `from` says about moves, after its
    /// deliveries: notes to apply, acknowledgements, clears.
    pub(super) fn apply_moves(
        &mut self,
        from: ShardId,
        moves: Vec<MoveNote>,
        acks: Vec<ConnId>,
        clears: Vec<(ConnId, ShardId)>,
    ) {
        for m in moves {
            self.rekey(m.conn, &m.rekeys);
            self.outbox[from.index()].move_acks.push(m.conn);
        }
        for conn in acks {
            let Some(t) = self.tombstones.get_mut(&conn) else {
                continue;
            };
            if from == t.to {
                if let Some(rekeys) = t.rekeys.take() {
                    let me = self.id.index();
                    for (i, ob) in self.outbox.iter_mut().enumerate() {
                        if i != me && i != t.to.index() {
                            ob.moves.push(MoveNote {
                                conn,
                                to: t.to,
                                rekeys: rekeys.clone(),
                            });
                        }
                    }
                }
            }
            self.outbox[t.to.index()].clears.push((conn, from));
            t.acks_left -= 1;
            if t.acks_left == 0 {
                let t = self.tombstones.remove(&conn).expect("present");
                for k in t.old {
                    self.forwards.remove(&k);
                }
            }
        }
        for (conn, src) in clears {
            let Some(c) = self.conns.get_mut(&conn) else { continue };
            let Some(m) = c.moving_in.as_mut() else { continue };
            if !std::mem::replace(&mut m.pending[src.index()], false) {
                continue;
            }
            m.left -= 1;
            let held = std::mem::take(&mut m.held[src.index()]);
            let live = m.left == 0;
            if !held.is_empty() {
                c.out.tail().extend_from_slice(&held);
                c.out.rotate(&mut self.chunks);
            }
            if live {
                c.moving_in = None;
                self.arrived.push(conn);
            }
            c.wake();
        }
    }
}
