//! The channels between shards: one bounded single-producer queue per
//! (source, destination) pair, so everything one shard sends another
//! arrives in the order it was sent. A per-destination local backlog keeps
//! that order when a queue is full. Each pair counts the bytes of the
//! batches sent and not yet applied (see [`InFlight`]), so a publisher can
//! wait for a destination that is behind.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use crate::rt::channel::{self, Receiver, Sender, TrySendError};
use crate::rt::net::AcceptedTcpStream;

use crate::core::Batch;
use crate::ids::ConnId;

/// Batches in flight per (source, destination) queue. Batches are per read,
/// so a full queue means the destination is far behind.
pub const QUEUE_SLOTS: usize = 256;

/// The bytes of batches one shard has sent another and that shard has
/// not applied yet: added by the sender, taken off by the receiver.
#[derive(Debug, Default, Clone)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Bytes sent and not yet applied.
    pub fn bytes(&self) -> usize {
        self.0.load(Relaxed)
    }

    fn sent(&self, bytes: usize) {
        self.0.fetch_add(bytes, Relaxed);
    }

    /// The receiver has applied a batch of `bytes`.
    pub fn landed(&self, bytes: usize) {
        self.0.fetch_sub(bytes, Relaxed);
    }
}

/// What one shard sends another.
pub enum ShardMsg {
    /// Interest changes, deliveries and acks.
    Batch(Batch),
    /// A connection handed over to balance the shards' loads.
    Conn(AcceptedTcpStream, ConnId, crate::ids::ConnKind),
    /// A client moving here by affinity: the core's state and the rest.
    Move(Box<crate::core::ConnParcel>, Box<super::arrival::Arrival>),
}

/// The unconnected ends of every queue, built before the executors start.
pub struct MeshEnds {
    /// `senders[src][dst]`.
    pub senders: Vec<Vec<Option<Sender<ShardMsg>>>>,
    /// `receivers[dst][src]`.
    pub receivers: Vec<Vec<Option<Receiver<ShardMsg>>>>,
    /// `in_flight[src][dst]`, shared by both ends.
    pub in_flight: Vec<Vec<InFlight>>,
}

impl MeshEnds {
    /// Creates the queues for `n` shards.
    pub fn new(n: usize) -> MeshEnds {
        let mut senders: Vec<Vec<Option<Sender<ShardMsg>>>> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        let mut receivers: Vec<Vec<Option<Receiver<ShardMsg>>>> =
            (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        for src in 0..n {
            for dst in 0..n {
                if src != dst {
                    let (tx, rx) = channel::bounded(QUEUE_SLOTS);
                    senders[src][dst] = Some(tx);
                    receivers[dst][src] = Some(rx);
                }
            }
        }
        let in_flight = (0..n).map(|_| (0..n).map(|_| InFlight::default()).collect()).collect();
        MeshEnds {
            senders,
            receivers,
            in_flight,
        }
    }

    /// Takes shard `i`'s ends: its senders to each peer, its receivers from each.
    pub fn take(&mut self, i: usize) -> ShardEnds {
        ShardEnds {
            senders: std::mem::take(&mut self.senders[i]),
            receivers: std::mem::take(&mut self.receivers[i]),
            sent: self.in_flight[i].clone(),
            received: self.in_flight.iter().map(|row| row[i].clone()).collect(),
        }
    }
}

/// One shard's unconnected ends (movable into its executor).
pub struct ShardEnds {
    senders: Vec<Option<Sender<ShardMsg>>>,
    receivers: Vec<Option<Receiver<ShardMsg>>>,
    /// By destination.
    sent: Vec<InFlight>,
    /// By source.
    received: Vec<InFlight>,
}

/// A connected sender with its local backlog.
pub struct Outlet {
    tx: Sender<ShardMsg>,
    backlog: RefCell<VecDeque<ShardMsg>>,
    draining: Cell<bool>,
    in_flight: InFlight,
}

impl Outlet {
    /// Sends in order: directly when nothing is waiting, else behind the backlog.
    /// Returns true when the backlog needs a drainer.
    pub fn push(&self, msg: ShardMsg) -> bool {
        if let ShardMsg::Batch(b) = &msg {
            self.in_flight.sent(b.weight);
        }
        if self.backlog.borrow().is_empty() && !self.draining.get() {
            match self.tx.try_send(msg) {
                Ok(()) => return false,
                Err(TrySendError::Full(m)) => self.backlog.borrow_mut().push_back(m),
                Err(TrySendError::Closed(_)) => return false, // the peer is gone: the server is stopping
            }
        } else {
            self.backlog.borrow_mut().push_back(msg);
        }
        !self.draining.get()
    }

    /// Sends the backlog, waiting for room; one drainer at a time.
    pub async fn drain(self: Rc<Self>) {
        if self.draining.replace(true) {
            return;
        }
        loop {
            let next = self.backlog.borrow_mut().pop_front();
            let Some(m) = next else { break };
            if self.tx.send(m).await.is_err() {
                break; // the peer is gone: the server is stopping
            }
        }
        self.draining.set(false);
    }

    /// Messages waiting behind a full queue.
    pub fn backlog_len(&self) -> usize {
        self.backlog.borrow().len()
    }

    /// Bytes of batches sent through here and not yet applied.
    pub fn in_flight(&self) -> usize {
        self.in_flight.bytes()
    }
}

/// One shard's connected ends.
pub struct Connected {
    /// Outlets by destination shard (`None` for itself).
    pub outlets: Vec<Option<Rc<Outlet>>>,
    /// Receivers by source shard (`None` for itself), each with the
    /// count its applied batches are taken off.
    pub receivers: Vec<Option<(Receiver<ShardMsg>, InFlight)>>,
}

impl ShardEnds {
    /// Takes the ends onto the current executor.
    pub fn connect(self) -> Connected {
        let outlets = self
            .senders
            .into_iter()
            .zip(self.sent)
            .map(|(s, in_flight)| {
                s.map(|tx| {
                    Rc::new(Outlet {
                        tx,
                        backlog: RefCell::new(VecDeque::new()),
                        draining: Cell::new(false),
                        in_flight,
                    })
                })
            })
            .collect();
        let receivers = self
            .receivers
            .into_iter()
            .zip(self.received)
            .map(|(r, in_flight)| r.map(|r| (r, in_flight)))
            .collect();
        Connected { outlets, receivers }
    }
}
