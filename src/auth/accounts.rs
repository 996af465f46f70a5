//! The server-wide account table: names (or public keys) to dense
//! [`AccountId`]s, and the per-account counters enforced at connect time.
//! Only the connect path takes its lock; the publish path sees accounts as
//! ids only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

/// The name of the global account clients use when no accounts are configured.
pub const GLOBAL_ACCOUNT: &str = "$G";
/// The default system account's name.
pub const DEFAULT_SYSTEM_ACCOUNT: &str = "$SYS";
use crate::ids::AccountId;

/// One account.
#[derive(Debug)]
pub struct Account {
    /// Its id on every shard.
    pub id: AccountId,
    /// Its name (config mode) or public key (operator mode).
    pub name: String,
    /// Whether it is the system account.
    pub is_system: bool,
    conns: AtomicI64,
    /// Client connections the other servers of the cluster report for the
    /// account (their SERVER.CONNS events): the limit is cluster-wide.
    remote_conns: AtomicI64,
    max_conns: AtomicI64,
    /// Connections to close after the limit was lowered below the count.
    excess: AtomicI64,
    /// Leaf node connections bound to the account on this server.
    leafs: AtomicI64,
    /// The most leaf node connections (JWT `leaf`; −1: unlimited).
    max_leafs: AtomicI64,
    /// A configured account's payload limit (`limits`; −1: none).
    max_payload: AtomicI64,
    /// A configured account's subscription limit per client (−1: none).
    max_subs: AtomicI64,
}

impl Account {
    /// Client connections open in the account now.
    pub fn connections(&self) -> i64 {
        self.conns.load(Relaxed)
    }

    /// Sets how many connections the other servers of the cluster hold.
    pub fn set_remote_connections(&self, n: i64) {
        self.remote_conns.store(n.max(0), Relaxed);
    }

    /// Sets the most connections the account may have (−1: unlimited).
    pub fn set_max_connections(&self, max: i64) {
        self.max_conns.store(max, Relaxed);
    }

    /// Sets the most leaf node connections the account may have (−1:
    /// unlimited).
    pub fn set_max_leafnodes(&self, max: i64) {
        self.max_leafs.store(max, Relaxed);
    }

    /// Sets a configured account's payload and per-client subscription
    /// limits (−1: none; JWT accounts carry theirs in their claims).
    pub fn set_client_limits(&self, max_payload: i64, max_subs: i64) {
        self.max_payload.store(max_payload, Relaxed);
        self.max_subs.store(max_subs, Relaxed);
    }

    /// A configured account's payload limit.
    pub fn max_payload(&self) -> Option<usize> {
        usize::try_from(self.max_payload.load(Relaxed)).ok()
    }

    /// A configured account's subscription limit per client.
    pub fn max_subscriptions(&self) -> Option<usize> {
        usize::try_from(self.max_subs.load(Relaxed)).ok()
    }

    /// After a lowered limit: how many connections are beyond it, to be
    /// closed (newest first on each shard).
    pub fn mark_excess(&self) {
        let max = self.max_conns.load(Relaxed);
        let over = if max >= 0 {
            (self.conns.load(Relaxed) - max).max(0)
        } else {
            0
        };
        self.excess.store(over, Relaxed);
    }

    /// Takes one connection's worth of the excess; true when this
    /// connection should close.
    pub fn claim_excess(&self) -> bool {
        self.excess
            .fetch_update(Relaxed, Relaxed, |e| (e > 0).then_some(e - 1))
            .is_ok()
    }
}

/// A connection counted against its account; uncounted when dropped.
#[derive(Debug)]
pub struct ConnSlot(Arc<Account>);

impl ConnSlot {
    /// Takes a slot in `acc`, or `None` when its connection limit is reached.
    pub fn take(acc: &Arc<Account>) -> Option<ConnSlot> {
        let max = acc.max_conns.load(Relaxed);
        let n = acc.conns.fetch_add(1, Relaxed) + acc.remote_conns.load(Relaxed);
        if max >= 0 && n >= max {
            acc.conns.fetch_sub(1, Relaxed);
            return None;
        }
        Some(ConnSlot(acc.clone()))
    }

    /// The account.
    pub fn account(&self) -> &Arc<Account> {
        &self.0
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.conns.fetch_sub(1, Relaxed);
    }
}

/// A leaf node connection counted against its account (JWT `leaf`);
/// uncounted when dropped.
#[derive(Debug)]
pub struct LeafSlot(Arc<Account>);

impl LeafSlot {
    /// Takes a slot in `acc`, or `None` when its leaf limit is reached.
    pub fn take(acc: &Arc<Account>) -> Option<LeafSlot> {
        let max = acc.max_leafs.load(Relaxed);
        let n = acc.leafs.fetch_add(1, Relaxed);
        if max >= 0 && n >= max {
            acc.leafs.fetch_sub(1, Relaxed);
            return None;
        }
        Some(LeafSlot(acc.clone()))
    }
}

impl Drop for LeafSlot {
    fn drop(&mut self) {
        self.0.leafs.fetch_sub(1, Relaxed);
    }
}

/// Every account the server knows.
#[derive(Debug)]
pub struct AccountTable {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    list: Vec<Arc<Account>>,
    by_name: HashMap<String, AccountId>,
    system: Option<AccountId>,
}

impl AccountTable {
    /// A table holding `$G` (id 0) and the system account (`system`, or
    /// `$SYS` when none is named and `system` is `None`).
    pub fn new(system: Option<&str>) -> AccountTable {
        let t = AccountTable {
            inner: RwLock::new(Inner::default()),
        };
        t.get_or_create(GLOBAL_ACCOUNT);
        let sys = t.get_or_create(system.unwrap_or(DEFAULT_SYSTEM_ACCOUNT));
        t.inner.write().expect("account table lock").system = Some(sys.id);
        t
    }

    /// The account called `name`, created when new.
    pub fn get_or_create(&self, name: &str) -> Arc<Account> {
        if let Some(a) = self.get(name) {
            return a;
        }
        let mut inner = self.inner.write().expect("account table lock");
        if let Some(id) = inner.by_name.get(name) {
            return inner.list[id.index()].clone();
        }
        let id = AccountId(inner.list.len() as u32);
        // The table's constructor creates the system account second.
        let is_system = inner.list.len() == 1;
        let acc = Arc::new(Account {
            id,
            name: name.to_string(),
            is_system,
            conns: AtomicI64::new(0),
            remote_conns: AtomicI64::new(0),
            max_conns: AtomicI64::new(-1),
            excess: AtomicI64::new(0),
            leafs: AtomicI64::new(0),
            max_leafs: AtomicI64::new(-1),
            max_payload: AtomicI64::new(-1),
            max_subs: AtomicI64::new(-1),
        });
        inner.list.push(acc.clone());
        inner.by_name.insert(name.to_string(), id);
        acc
    }

    /// The account called `name`, if known.
    pub fn get(&self, name: &str) -> Option<Arc<Account>> {
        let inner = self.inner.read().expect("account table lock");
        inner.by_name.get(name).map(|id| inner.list[id.index()].clone())
    }

    /// The account with id `id`.
    pub fn by_id(&self, id: AccountId) -> Option<Arc<Account>> {
        self.inner
            .read()
            .expect("account table lock")
            .list
            .get(id.index())
            .cloned()
    }

    /// The system account.
    pub fn system(&self) -> Arc<Account> {
        let inner = self.inner.read().expect("account table lock");
        inner.list[inner.system.expect("set at creation").index()].clone()
    }

    /// Every account, in id order.
    pub fn all(&self) -> Vec<Arc<Account>> {
        self.inner.read().expect("account table lock").list.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_dense_and_system_is_marked() {
        let t = AccountTable::new(Some("SYS"));
        assert_eq!(t.get("$G").unwrap().id, AccountId::GLOBAL);
        let sys = t.system();
        assert_eq!(sys.name, "SYS");
        assert!(sys.is_system);
        let a = t.get_or_create("A");
        assert_eq!(a.id, AccountId(2));
        assert!(!a.is_system);
        assert_eq!(t.get_or_create("A").id, AccountId(2));
    }

    #[test]
    fn connection_limit() {
        let t = AccountTable::new(None);
        let a = t.get_or_create("A");
        a.set_max_connections(1);
        let s1 = ConnSlot::take(&a).unwrap();
        assert!(ConnSlot::take(&a).is_none());
        drop(s1);
        assert!(ConnSlot::take(&a).is_some());
    }
}
