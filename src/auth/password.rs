//! Password and token comparison, with bcrypt verdicts remembered.
//!
//! A bcrypt check costs tens to hundreds of milliseconds by design, so a
//! flood of wrong passwords would otherwise keep real users waiting behind
//! it. Verdicts are remembered under a keyed hash of (stored hash, given
//! secret): a user who logged in once logs in again without bcrypt, and a
//! wrong password sent again costs nothing. The key is random per process,
//! so the table reveals nothing about the secrets. Matches and mismatches
//! are kept apart: mismatches, which anyone can make up, can only evict
//! mismatches.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};

/// How many remembered matches and mismatches, each, before that table is
/// emptied.
const REMEMBERED: usize = 8192;

/// Whether `stored` is a bcrypt hash (as nats-server tells them apart).
pub fn is_bcrypt(stored: &str) -> bool {
    ["$2a$", "$2b$", "$2x$", "$2y$"].iter().any(|p| stored.starts_with(p))
}

/// The verdict table.
struct Remembered {
    key: [u8; 32],
    matches: Mutex<HashSet<[u8; 32]>>,
    mismatches: Mutex<HashSet<[u8; 32]>>,
}

fn remembered() -> &'static Remembered {
    static TABLE: OnceLock<Remembered> = OnceLock::new();
    TABLE.get_or_init(|| Remembered {
        key: std::array::from_fn(|_| fastrand::u8(..)),
        matches: Mutex::new(HashSet::new()),
        mismatches: Mutex::new(HashSet::new()),
    })
}

impl Remembered {
    fn digest(&self, stored: &str, given: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update((stored.len() as u64).to_le_bytes());
        h.update(stored.as_bytes());
        h.update(given.as_bytes());
        h.finalize().into()
    }

    fn lookup(&self, d: &[u8; 32]) -> Option<bool> {
        if self.matches.lock().unwrap_or_else(|e| e.into_inner()).contains(d) {
            return Some(true);
        }
        if self.mismatches.lock().unwrap_or_else(|e| e.into_inner()).contains(d) {
            return Some(false);
        }
        None
    }

    fn record(&self, d: [u8; 32], verdict: bool) {
        let table = if verdict { &self.matches } else { &self.mismatches };
        let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() >= REMEMBERED {
            t.clear();
        }
        t.insert(d);
    }
}

/// Whether comparing `given` with `stored` would run bcrypt (a bcrypt
/// hash whose verdict for this secret is not remembered).
pub fn is_slow(stored: &str, given: &str) -> bool {
    if !is_bcrypt(stored) {
        return false;
    }
    let r = remembered();
    r.lookup(&r.digest(stored, given)).is_none()
}

/// Whether `given` matches `stored` (plain text, compared in constant
/// time, or a bcrypt hash).
pub fn matches(stored: &str, given: &str) -> bool {
    if !is_bcrypt(stored) {
        return constant_time_eq(stored.as_bytes(), given.as_bytes());
    }
    let r = remembered();
    let d = r.digest(stored, given);
    if let Some(v) = r.lookup(&d) {
        return v;
    }
    let v = bcrypt::verify(given, stored).unwrap_or(false);
    r.record(d, v);
    v
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_bcrypt_verdicts() {
        assert!(matches("s3cret", "s3cret"));
        assert!(!matches("s3cret", "s3cre"));
        assert!(!is_slow("s3cret", "x"));
        let stored = bcrypt::hash("pw-one", 4).unwrap();
        assert!(is_bcrypt(&stored));
        assert!(is_slow(&stored, "pw-one"));
        assert!(matches(&stored, "pw-one"));
        assert!(!is_slow(&stored, "pw-one"), "a match is remembered");
        assert!(is_slow(&stored, "wrong"));
        assert!(!matches(&stored, "wrong"));
        assert!(!is_slow(&stored, "wrong"), "a mismatch is remembered");
        assert!(!matches(&stored, "wrong"));
        assert!(matches(&stored, "pw-one"));
    }

    #[test]
    fn made_up_mismatches_do_not_evict_matches() {
        let stored = bcrypt::hash("pw-two", 4).unwrap();
        assert!(matches(&stored, "pw-two"));
        let r = remembered();
        for i in 0..REMEMBERED + 10 {
            r.record(r.digest(&stored, &format!("guess {i}")), false);
        }
        assert!(!is_slow(&stored, "pw-two"));
        // The same secret under another stored hash is not a match.
        let other = bcrypt::hash("pw-three", 4).unwrap();
        assert!(is_slow(&other, "pw-two"));
    }
}
