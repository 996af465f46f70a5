//! Per-shard counters. Each shard counts in plain integers while it works
//! and publishes them into its own cache-line-padded slot once per read;
//! readers sum the slots. No counter is written by two cores.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters one shard keeps while it works (no atomics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Messages received from clients.
    pub in_msgs: u64,
    /// Payload bytes received from clients.
    pub in_bytes: u64,
    /// Messages delivered to clients.
    pub out_msgs: u64,
    /// Payload bytes delivered to clients.
    pub out_bytes: u64,
    /// Open client connections.
    pub connections: u64,
    /// Connections accepted since start.
    pub total_connections: u64,
    /// Subscriptions owned by this shard's clients.
    pub subscriptions: u64,
    /// Clients closed as slow consumers.
    pub slow_consumers: u64,
    /// Connections closed as stale.
    pub stale_connections: u64,
}

/// A shard's published counters, readable from any thread.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct ShardStats {
    slots: [AtomicU64; 9],
    memory: [AtomicU64; 2],
}

/// Memory a shard holds for its connections, as its poll loop last saw it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShardMemory {
    /// Read buffers and outbound queues of its connections (clients,
    /// routes, leaf nodes), by capacity.
    pub buffers: u64,
    /// Written chunks its pool keeps for reuse.
    pub pool: u64,
}

impl ShardStats {
    /// Publishes a shard's counters (called by the owning shard only).
    pub fn publish(&self, c: &Counters) {
        let v = [
            c.in_msgs,
            c.in_bytes,
            c.out_msgs,
            c.out_bytes,
            c.connections,
            c.total_connections,
            c.subscriptions,
            c.slow_consumers,
            c.stale_connections,
        ];
        for (slot, v) in self.slots.iter().zip(v) {
            slot.store(v, Relaxed);
        }
    }

    /// Publishes a shard's memory (called by the owning shard only).
    pub fn publish_memory(&self, m: ShardMemory) {
        self.memory[0].store(m.buffers, Relaxed);
        self.memory[1].store(m.pool, Relaxed);
    }

    /// Reads the last published memory.
    pub fn read_memory(&self) -> ShardMemory {
        ShardMemory {
            buffers: self.memory[0].load(Relaxed),
            pool: self.memory[1].load(Relaxed),
        }
    }

    /// Reads the last published counters.
    pub fn read(&self) -> Counters {
        let v: Vec<u64> = self.slots.iter().map(|s| s.load(Relaxed)).collect();
        Counters {
            in_msgs: v[0],
            in_bytes: v[1],
            out_msgs: v[2],
            out_bytes: v[3],
            connections: v[4],
            total_connections: v[5],
            subscriptions: v[6],
            slow_consumers: v[7],
            stale_connections: v[8],
        }
    }
}

/// Sums the counters of all shards.
pub fn sum(shards: &[ShardStats]) -> Counters {
    shards
        .iter()
        .map(ShardStats::read)
        .fold(Counters::default(), |a, b| Counters {
            in_msgs: a.in_msgs + b.in_msgs,
            in_bytes: a.in_bytes + b.in_bytes,
            out_msgs: a.out_msgs + b.out_msgs,
            out_bytes: a.out_bytes + b.out_bytes,
            connections: a.connections + b.connections,
            total_connections: a.total_connections + b.total_connections,
            subscriptions: a.subscriptions + b.subscriptions,
            slow_consumers: a.slow_consumers + b.slow_consumers,
            stale_connections: a.stale_connections + b.stale_connections,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_and_sum() {
        let shards = [ShardStats::default(), ShardStats::default()];
        shards[0].publish(&Counters {
            in_msgs: 3,
            out_bytes: 5,
            ..Default::default()
        });
        shards[1].publish(&Counters {
            in_msgs: 4,
            slow_consumers: 1,
            ..Default::default()
        });
        let s = sum(&shards);
        assert_eq!((s.in_msgs, s.out_bytes, s.slow_consumers), (7, 5, 1));
        let m = ShardMemory {
            buffers: 66_048,
            pool: 81_920,
        };
        shards[1].publish_memory(m);
        assert_eq!(shards[1].read_memory(), m);
        assert_eq!(shards[0].read_memory(), ShardMemory::default());
        assert_eq!(shards[1].read().in_msgs, 4, "memory has its own slots");
    }
}
