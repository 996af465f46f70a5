//! Recycling of batch buffers between shards. A batch's data buffer is
//! filled on the source shard and dropped on the destination; freeing memory
//! on another thread than the one that allocated it made the allocator touch
//! fresh pages for every batch (a third of the CPU time in a 1:1 profile went
//! to zeroing new huge pages). The destination now hands each drained
//! buffer back through a lock-free queue per (source, destination) pair,
//! which the source polls when it starts a new batch; nobody waits on it.

use crossbeam_queue::{ArrayQueue, SegQueue};

use super::batch::Batch;

/// Buffers parked per pair; more are simply freed.
const PER_PAIR: usize = 32;
/// Buffers bigger than this are freed instead of kept.
const MAX_KEPT: usize = 4 << 20;

/// `queues[src * n + dst]` holds buffers of shard `src` returned by `dst`;
/// `control[src * n + dst]` carries interest changes and acks from `src` to
/// `dst`.
///
/// Interest travels beside the delivery queues so that a shard can pick it
/// up before it processes its next client read, without waiting to be
/// scheduled for the mesh: a SUB on one shard is then visible to a PUB
/// another shard reads a few microseconds later, as with nats-server's
/// shared index (nats-py, for one, sends its flush PING ahead of the SUB).
pub struct BufferPools {
    n: usize,
    queues: Vec<ArrayQueue<Vec<u8>>>,
    control: Vec<SegQueue<Batch>>,
}

impl BufferPools {
    /// Pools for `n` shards.
    pub fn new(n: usize) -> BufferPools {
        BufferPools {
            n,
            queues: (0..n * n).map(|_| ArrayQueue::new(PER_PAIR)).collect(),
            control: (0..n * n).map(|_| SegQueue::new()).collect(),
        }
    }

    /// Queues interest changes and acks from `src` for `dst`.
    pub fn push_control(&self, src: usize, dst: usize, b: Batch) {
        self.control[src * self.n + dst].push(b);
    }

    /// The next control batch from `src` waiting for `dst`.
    pub fn pop_control(&self, src: usize, dst: usize) -> Option<Batch> {
        self.control[src * self.n + dst].pop()
    }

    /// A cleared buffer for a batch from `src` to `dst`, recycled when one
    /// is available.
    pub fn take(&self, src: usize, dst: usize, capacity: usize) -> Vec<u8> {
        match self.queues[src * self.n + dst].pop() {
            Some(b) => b,
            None => Vec::with_capacity(capacity),
        }
    }

    /// Hands a drained buffer of `src` back from `dst`.
    pub fn give_back(&self, src: usize, dst: usize, mut buf: Vec<u8>) {
        if buf.capacity() <= MAX_KEPT {
            buf.clear();
            let _ = self.queues[src * self.n + dst].push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_cleared() {
        let p = BufferPools::new(2);
        let mut b = p.take(0, 1, 64);
        b.extend_from_slice(b"hello");
        let ptr = b.as_ptr();
        p.give_back(0, 1, b);
        let again = p.take(0, 1, 64);
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.is_empty());
        assert_eq!(p.take(1, 0, 8).capacity(), 8, "pairs are separate");
    }
}
