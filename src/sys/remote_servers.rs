//! The other servers this one hears through the system account, as
//! nats-server keeps them: a server is known from its first STATSZ
//! heartbeat or account connection event, forgotten at its SHUTDOWN event
//! or when nothing came from it for [`ORPHAN_AFTER`]. STATSZ
//! `active_servers` is this server plus the known ones, so it counts
//! servers reached through leaf connections that share `$SYS` as well as
//! route peers, and keeps counting a peer killed without a word until it
//! is an orphan, as nats-server does. Executor-free: the system client
//! feeds it and reads what to do.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// nats-server's event heartbeat interval, which its orphan limits are
/// multiples of.
const EVENTS_HEARTBEAT: Duration = Duration::from_secs(30);
/// A server silent this long is taken to be gone (nats-server's `orphMax`).
pub const ORPHAN_AFTER: Duration = Duration::from_secs(5 * EVENTS_HEARTBEAT.as_secs());
/// How often orphans are looked for (nats-server's `chkOrph`).
pub const ORPHAN_CHECK_EVERY: Duration = Duration::from_secs(3 * EVENTS_HEARTBEAT.as_secs());

/// What one event from a remote server meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// The first event from it: nats-server announces itself at once.
    New,
    /// A later event, in order.
    Again,
    /// An event whose `seq` is not above the last one (nats-server logs
    /// it and keeps the older state).
    OutOfOrder,
}

/// The last event seen from one server.
#[derive(Debug, Clone, Copy)]
struct LastEvent {
    seq: u64,
    at: Instant,
}

/// The remote servers known, by server id.
#[derive(Debug, Default)]
pub struct RemoteServers {
    known: HashMap<String, LastEvent>,
}

impl RemoteServers {
    /// Takes an event from server `id` carrying its `seq`, at `now`.
    pub fn heard(&mut self, id: &str, seq: u64, now: Instant) -> Heard {
        match self.known.get_mut(id) {
            None => {
                self.known.insert(id.to_string(), LastEvent { seq, at: now });
                Heard::New
            }
            Some(last) if seq <= last.seq => Heard::OutOfOrder,
            Some(last) => {
                *last = LastEvent { seq, at: now };
                Heard::Again
            }
        }
    }

    /// Forgets server `id` (its SHUTDOWN event); true if it was known.
    pub fn gone(&mut self, id: &str) -> bool {
        self.known.remove(id).is_some()
    }

    /// Forgets and returns the servers silent for longer than
    /// [`ORPHAN_AFTER`] at `now`.
    pub fn orphans(&mut self, now: Instant) -> Vec<String> {
        let gone: Vec<String> = self
            .known
            .iter()
            .filter(|(_, last)| now.saturating_duration_since(last.at) > ORPHAN_AFTER)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.known.remove(id);
        }
        gone
    }

    /// How many remote servers are known.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// True when no remote server is known.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_is_new_once_then_heard_in_order() {
        let mut r = RemoteServers::default();
        let t = Instant::now();
        assert_eq!(r.heard("B", 3, t), Heard::New);
        assert_eq!(r.heard("B", 4, t), Heard::Again);
        assert_eq!(r.heard("B", 4, t), Heard::OutOfOrder);
        assert_eq!(r.heard("B", 2, t), Heard::OutOfOrder);
        assert_eq!(r.heard("C", 1, t), Heard::New);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn a_shutdown_forgets_and_a_restart_is_new_again() {
        let mut r = RemoteServers::default();
        let t = Instant::now();
        r.heard("B", 9, t);
        assert!(r.gone("B"));
        assert!(!r.gone("B"));
        assert!(r.is_empty());
        // A restarted server counts its seq from 1 again.
        assert_eq!(r.heard("B", 1, t), Heard::New);
    }

    #[test]
    fn only_servers_silent_past_the_limit_are_orphans() {
        let mut r = RemoteServers::default();
        let t = Instant::now();
        r.heard("old", 1, t);
        r.heard("fresh", 1, t);
        let later = t + ORPHAN_AFTER + Duration::from_secs(1);
        r.heard("fresh", 2, later - Duration::from_secs(10));
        // An out-of-order event does not keep a server alive.
        assert_eq!(r.heard("old", 1, later), Heard::OutOfOrder);
        assert_eq!(r.orphans(t + ORPHAN_AFTER), Vec::<String>::new());
        assert_eq!(r.orphans(later), vec!["old".to_string()]);
        assert_eq!(r.len(), 1);
    }
}
