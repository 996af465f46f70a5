//! What shards send each other: interest changes, deliveries and acks,
//! gathered per destination and sent as one [`Batch`] per read.

use bytes::Bytes;

use super::trace::{TracePart, TraceTag};
use crate::ids::{AccountId, ConnId, ShardId, SubKey};
use crate::index::SubRef;

/// A change to one shard's subscriptions, replayed on every other replica.
#[derive(Debug, Clone)]
pub enum InterestChange {
    /// A subscription was added.
    Add {
        /// The account whose subject space holds it.
        account: AccountId,
        /// Subscription subject.
        subject: Box<[u8]>,
        /// Queue group, if any.
        queue: Option<Box<[u8]>>,
        /// Its key and owner.
        sub: SubRef,
    },
    /// A subscription was removed.
    Remove {
        /// The account whose subject space held it.
        account: AccountId,
        /// Subscription subject.
        subject: Box<[u8]>,
        /// Queue group, if any.
        queue: Option<Box<[u8]>>,
        /// Its key.
        key: SubKey,
        /// The connection that held it.
        conn: ConnId,
    },
    /// A leaf connection registered on the sending shard: the other side's
    /// cluster (a message from one leaf connection never goes to another
    /// of the same cluster, nor its interest) and whether this server
    /// dialed it (interest held through it is not told to other hubs).
    LeafConn {
        /// The leaf connection.
        conn: ConnId,
        /// The remote cluster's name.
        cluster: Option<Box<str>>,
        /// This server is the leaf on it (its peer is a hub).
        spoke: bool,
    },
    /// A route queue subscription's weight (and leaf origin), as its
    /// peer announced it: how many members it stands for.
    QueueWeight {
        /// The route subscription.
        key: SubKey,
        /// Its weight and origin.
        weight: crate::core::QueueWeight,
    },
    /// That leaf connection is gone.
    LeafGone {
        /// The leaf connection.
        conn: ConnId,
    },
}

/// One subscription of a connection that moves between shards: every
/// replica swaps its old key for the new one (same subject and queue).
#[derive(Debug, Clone)]
pub struct Rekey {
    /// The account whose subject space holds it.
    pub account: AccountId,
    /// Subscription subject.
    pub subject: Box<[u8]>,
    /// Queue group, if any.
    pub queue: Option<Box<[u8]>>,
    /// Its key on the shard the connection leaves.
    pub old: SubKey,
    /// Its key on the shard it goes to.
    pub new: SubKey,
}

/// A connection moved from the sending shard to `to`: the receiver rekeys
/// its replica and acknowledges in its next batch to the sender, behind
/// every delivery it had already addressed to the old keys.
#[derive(Debug, Clone)]
pub struct MoveNote {
    /// The connection.
    pub conn: ConnId,
    /// Where it went.
    pub to: ShardId,
    /// Its subscriptions' keys, old and new.
    pub rekeys: Vec<Rekey>,
}

/// A byte range inside a batch's `data`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    /// Start offset.
    pub start: u32,
    /// Length.
    pub len: u32,
}

impl Span {
    /// The bytes this span covers in `data`.
    #[inline]
    pub fn of<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        &data[self.start as usize..(self.start + self.len) as usize]
    }
}

/// A message body: copied into the batch when small, shared when large.
#[derive(Debug, Clone)]
pub enum Body {
    /// Inside the batch's `data`.
    Inline(Span),
    /// A refcounted buffer shared by every destination shard.
    Shared(Bytes),
}

/// Payloads at least this large are copied once and shared between the
/// destination shards instead of being copied into each batch.
pub const SHARE_THRESHOLD: usize = 2048;

/// One message to deliver on the destination shard.
#[derive(Debug, Clone)]
pub struct RemoteMsg {
    /// Subject, in `data`.
    pub subject: Span,
    /// Reply subject, in `data`; `None` when absent.
    pub reply: Option<Span>,
    /// The remote cluster of the leaf connection it came from, in `data`.
    pub origin: Option<Span>,
    /// Header length for HPUB messages.
    pub header_len: Option<u32>,
    /// Headers and payload.
    pub body: Body,
    /// Range of `targets` this message goes to.
    pub targets: Span,
    /// A traced message: its tag's index in the batch's `traces`.
    pub trace: Option<u32>,
    /// A response to a measured request: the responder's `ClientInfo`
    /// JSON, in `data`.
    pub responder: Option<Span>,
}

/// Everything one shard sends another after processing one read (or one
/// incoming batch). Interest changes are applied before the deliveries.
#[derive(Debug, Default)]
pub struct Batch {
    /// The sending shard.
    pub from: u16,
    /// Interest changes made on the sender.
    pub interest: Vec<InterestChange>,
    /// Sequence number of those changes (0 when there are none).
    pub interest_seq: u64,
    /// The sender has applied the receiver's interest up to this sequence.
    pub ack: Option<u64>,
    /// Subjects, replies and small bodies (handed back to the sender's pool
    /// after delivery).
    pub data: Vec<u8>,
    /// Messages, in publish order.
    pub msgs: Vec<RemoteMsg>,
    /// Target subscriptions on the receiver.
    pub targets: Vec<SubKey>,
    /// Connections moved away from the sender, applied after `msgs`.
    pub moves: Vec<MoveNote>,
    /// Moves of the receiver's the sender has applied: nothing more for
    /// the old keys follows from it.
    pub move_acks: Vec<ConnId>,
    /// (connection, shard): a connection moved to the receiver has been
    /// sent, ahead of this, every delivery that shard addressed to its old
    /// keys; what that shard sends it directly may now be written.
    pub clears: Vec<(ConnId, ShardId)>,
    /// Message tracing, when a traced message is on board (boxed: rare).
    pub trace: Option<Box<BatchTraces>>,
    /// About how many bytes the batch holds (its data, messages, targets
    /// and shared bodies): what the mesh counts as in flight.
    pub weight: usize,
}

/// What a batch carries for message tracing (`core/trace.rs`).
#[derive(Debug, Default)]
pub struct BatchTraces {
    /// Tags of the traced messages in `msgs` ([`RemoteMsg::trace`]).
    pub tags: Vec<TraceTag>,
    /// What the receiver's traced messages met on the sender.
    pub parts: Vec<TracePart>,
}

impl Batch {
    /// The sending shard's id.
    pub fn sender(&self) -> ShardId {
        ShardId(self.from)
    }
}

/// A batch being filled for one destination.
#[derive(Debug, Default)]
pub struct Outbox {
    pub(crate) interest: Vec<InterestChange>,
    pub(crate) ack: Option<u64>,
    pub(crate) data: Vec<u8>,
    pub(crate) msgs: Vec<RemoteMsg>,
    pub(crate) targets: Vec<SubKey>,
    pub(crate) moves: Vec<MoveNote>,
    pub(crate) move_acks: Vec<ConnId>,
    pub(crate) clears: Vec<(ConnId, ShardId)>,
    pub(crate) traces: Vec<TraceTag>,
    pub(crate) trace_parts: Vec<TracePart>,
    /// Bytes of the shared bodies in `msgs` (kept alive by the batch).
    pub(crate) shared_bytes: usize,
}

impl Outbox {
    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.interest.is_empty()
            && self.ack.is_none()
            && self.msgs.is_empty()
            && self.moves.is_empty()
            && self.move_acks.is_empty()
            && self.clears.is_empty()
            && self.trace_parts.is_empty()
    }

    pub(crate) fn push_bytes(&mut self, b: &[u8]) -> Span {
        let start = self.data.len() as u32;
        self.data.extend_from_slice(b);
        Span {
            start,
            len: b.len() as u32,
        }
    }

    /// Takes the contents as a batch, leaving the outbox empty.
    pub(crate) fn take(&mut self, from: ShardId, interest_seq: u64, fresh: Vec<u8>) -> Batch {
        let weight = self.data.len()
            + self.msgs.len() * std::mem::size_of::<RemoteMsg>()
            + self.targets.len() * std::mem::size_of::<SubKey>()
            + std::mem::take(&mut self.shared_bytes);
        Batch {
            weight,
            from: from.0,
            interest_seq: if self.interest.is_empty() { 0 } else { interest_seq },
            interest: std::mem::take(&mut self.interest),
            ack: self.ack.take(),
            data: std::mem::replace(&mut self.data, fresh),
            msgs: std::mem::take(&mut self.msgs),
            targets: std::mem::take(&mut self.targets),
            moves: std::mem::take(&mut self.moves),
            move_acks: std::mem::take(&mut self.move_acks),
            clears: std::mem::take(&mut self.clears),
            trace: (!self.traces.is_empty() || !self.trace_parts.is_empty()).then(|| {
                Box::new(BatchTraces {
                    tags: std::mem::take(&mut self.traces),
                    parts: std::mem::take(&mut self.trace_parts),
                })
            }),
        }
    }
}
