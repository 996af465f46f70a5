//! A connection's outbound bytes as a queue of chunks. Appending never
//! moves what is already queued (a growing `Vec` copied megabytes and
//! faulted in fresh pages whenever a reader fell behind), and written chunks
//! go back to a per-shard pool for reuse.

/// A chunk is closed once it holds this much; the writer sends chunk by chunk.
pub const CHUNK: usize = 64 * 1024;
/// Full chunks a writer takes at once (256 KiB): what a writer holds
/// counts towards peak memory, with each slow subscriber's.
const WRITE_BATCH: usize = 4;
/// Chunks kept in a shard's pool (1 MiB).
const POOL_MAX: usize = 16;
/// Chunks bigger than this (a large message grew one) are not pooled.
const POOLED_CAPACITY_MAX: usize = 4 * CHUNK;

/// Outbound bytes of one connection.
#[derive(Debug, Default)]
pub struct OutQueue {
    tail: Vec<u8>,
    full: Vec<Vec<u8>>,
    full_bytes: usize,
}

impl OutQueue {
    /// The chunk being filled; encoders append here.
    #[inline]
    pub fn tail(&mut self) -> &mut Vec<u8> {
        &mut self.tail
    }

    /// Bytes queued in all.
    #[inline]
    pub fn len(&self) -> usize {
        self.full_bytes + self.tail.len()
    }

    /// Memory its chunks hold (capacity, not just what is queued).
    pub fn held(&self) -> usize {
        self.tail.capacity() + self.full.iter().map(Vec::capacity).sum::<usize>()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes the tail chunk when it is full, taking the next from `pool`.
    #[inline]
    pub fn rotate(&mut self, pool: &mut ChunkPool) {
        if self.tail.len() >= CHUNK {
            let next = pool.take();
            self.full_bytes += self.tail.len();
            self.full.push(std::mem::replace(&mut self.tail, next));
        }
    }

    /// Moves queued chunks, in order, to `into`: up to 1 MiB of full
    /// chunks, and the chunk being filled once no full one is left.
    pub fn drain_into(&mut self, into: &mut Vec<Vec<u8>>, pool: &mut ChunkPool) {
        // At most WRITE_BATCH full chunks at a time: what the writer holds is
        // bounded, and what it has not taken still counts as queued (for the
        // stall and the slow-consumer limit).
        let k = self.full.len().min(WRITE_BATCH);
        for c in self.full.drain(..k) {
            self.full_bytes -= c.len();
            into.push(c);
        }
        if self.full.is_empty() && !self.tail.is_empty() {
            let next = if self.tail.capacity() >= CHUNK {
                pool.take()
            } else {
                Vec::new()
            };
            into.push(std::mem::replace(&mut self.tail, next));
        }
    }

    /// Drops everything queued (a slow consumer being cut off).
    pub fn discard(&mut self) {
        *self = OutQueue::default();
    }

    /// Everything queued as one buffer (tests and tools).
    pub fn take_bytes(&mut self) -> Vec<u8> {
        let mut all = Vec::with_capacity(self.len());
        for c in self.full.drain(..) {
            all.extend_from_slice(&c);
        }
        all.extend_from_slice(&self.tail);
        self.tail.clear();
        self.full_bytes = 0;
        all
    }
}

/// Written chunks waiting for reuse on one shard.
#[derive(Debug, Default)]
pub struct ChunkPool {
    free: Vec<Vec<u8>>,
}

impl ChunkPool {
    /// A cleared chunk.
    pub fn take(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_else(|| Vec::with_capacity(CHUNK + CHUNK / 4))
    }

    /// Memory the pooled chunks hold.
    pub fn held(&self) -> usize {
        self.free.iter().map(Vec::capacity).sum()
    }

    /// Takes back a written chunk.
    pub fn give_back(&mut self, mut chunk: Vec<u8>) {
        if self.free.len() < POOL_MAX && chunk.capacity() >= CHUNK && chunk.capacity() <= POOLED_CAPACITY_MAX {
            chunk.clear();
            self.free.push(chunk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_keep_order_and_recycle() {
        let mut pool = ChunkPool::default();
        let mut q = OutQueue::default();
        let mut expect = Vec::new();
        for i in 0..200_000u32 {
            let line = format!("MSG s 1 {i}\r\n");
            q.tail().extend_from_slice(line.as_bytes());
            expect.extend_from_slice(line.as_bytes());
            q.rotate(&mut pool);
        }
        assert_eq!(q.len(), expect.len());
        let mut out = Vec::new();
        let mut takes = 0;
        while !q.is_empty() {
            let before = out.len();
            q.drain_into(&mut out, &mut pool);
            assert!(
                out.len() - before <= WRITE_BATCH,
                "a writer takes at most {WRITE_BATCH} chunks"
            );
            takes += 1;
            assert_eq!(
                q.len(),
                expect.len() - out.iter().map(Vec::len).sum::<usize>(),
                "the rest still counts"
            );
        }
        assert!(takes > 1 && out.len() > WRITE_BATCH);
        assert_eq!(out.concat(), expect);
        for c in out {
            pool.give_back(c);
        }
        assert!(!pool.free.is_empty());
    }
}
