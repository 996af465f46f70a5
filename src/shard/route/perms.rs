//! Route permissions on a shard (`cluster { permissions { import, export }
//! }`), as nats-server applies them: `import` filters the interest this
//! server sends, `export` the interest it takes from peers (and, through
//! its deny list, what a peer's wildcard interest may receive). A reload
//! that changes them resyncs: interest now imported is sent, interest no
//! longer imported withdrawn, peers' interest no longer exported dropped,
//! and peers get an INFO with the new lists. A peer whose INFO widens its
//! `export` is sent the interest it now takes.

use std::sync::Arc;

use crate::auth::perms::{PatternList, SubjectRule};
use crate::core::RouteInterest;
use crate::ids::ConnId;
use crate::options::RoutePermissions;
use crate::proto::route_info::SubjectPermission;
use crate::shard::state::Shard;

/// A rule as INFO carries it (`None`: no rule).
pub(super) fn to_wire(rule: &SubjectRule) -> Option<SubjectPermission> {
    (!rule.is_open()).then(|| SubjectPermission {
        allow: rule.allow.as_ref().map(PatternList::entries).unwrap_or_default(),
        deny: rule.deny.as_ref().map(PatternList::entries).unwrap_or_default(),
    })
}

/// A rule from INFO (an empty list reads as no list, as nats-server's
/// `omitempty` writes it).
fn from_wire(w: Option<&SubjectPermission>) -> SubjectRule {
    let list = |v: &Vec<String>| (!v.is_empty()).then(|| PatternList::new(v));
    SubjectRule {
        allow: w.and_then(|w| list(&w.allow)),
        deny: w.and_then(|w| list(&w.deny)),
    }
}

/// Whether this shard takes a peer's interest in `subject`.
pub(super) fn may_export(shard: &Shard, subject: &[u8]) -> bool {
    shard
        .routes
        .perms
        .borrow()
        .as_ref()
        .is_none_or(|p| p.may_export(subject))
}

/// Whether this shard sends its interest in `subject`.
pub(super) fn may_import(shard: &Shard, subject: &[u8]) -> bool {
    shard
        .routes
        .perms
        .borrow()
        .as_ref()
        .is_none_or(|p| p.may_import(subject))
}

/// Installs the delivery filter of a route that just registered.
pub(super) fn guard_route(shard: &Shard, cid: ConnId) {
    let deny = shard.routes.perms().and_then(|p| p.export.deny.clone());
    shard.core.borrow_mut().set_route_deny(cid, deny);
}

/// A reload's route permissions, installed on this shard if they
/// changed: each route's delivery filter is reset and its peer's interest
/// no longer exported dropped. Returns the interest whose import changed
/// (weight 0: withdraw it), for the routes to hear with the new INFO.
pub(super) fn install(shard: &Shard, new: Option<RoutePermissions>) -> Option<Vec<RouteInterest>> {
    let old = shard.routes.perms();
    if old.as_deref() == new.as_ref() {
        return None;
    }
    let new = new.map(Arc::new);
    *shard.routes.perms.borrow_mut() = new.clone();
    let mut core = shard.core.borrow_mut();
    for (cid, _, _) in shard.routes.registered() {
        core.set_route_deny(cid, new.as_ref().and_then(|p| p.export.deny.clone()));
        let dropped = core.drop_routed_subs(cid, |s| new.as_ref().is_none_or(|p| p.may_export(s)));
        if dropped > 0 {
            crate::debug!(
                "rid:{} - Dropped {dropped} remote subscriptions no longer exported",
                cid.0
            );
        }
    }
    let import = |p: &Option<Arc<RoutePermissions>>, s: &[u8]| p.as_ref().is_none_or(|p| p.may_import(s));
    Some(
        core.route_interest()
            .into_iter()
            .filter_map(|mut ch| match (import(&old, &ch.subject), import(&new, &ch.subject)) {
                (false, true) => Some(ch),
                (true, false) => {
                    ch.weight = 0;
                    Some(ch)
                }
                _ => None,
            })
            .collect(),
    )
}

/// This server's interest that a peer whose INFO changed its `export`
/// from `old` to `new` takes now and did not before.
pub(super) fn newly_exported(
    shard: &Shard,
    old: Option<&SubjectPermission>,
    new: Option<&SubjectPermission>,
) -> Vec<RouteInterest> {
    let (old, new) = (from_wire(old), from_wire(new));
    shard
        .core
        .borrow()
        .route_interest()
        .into_iter()
        .filter(|ch| new.admits(&ch.subject) && !old.admits(&ch.subject))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_cross_the_wire_and_back() {
        let r = SubjectRule {
            allow: Some(PatternList::new(&["foo.>", "bar"])),
            deny: Some(PatternList::new(&["foo.secret"])),
        };
        let w = to_wire(&r).unwrap();
        assert_eq!(
            serde_json::to_string(&w).unwrap(),
            r#"{"allow":["foo.>","bar"],"deny":["foo.secret"]}"#
        );
        assert_eq!(from_wire(Some(&w)), r);
        assert_eq!(to_wire(&SubjectRule::default()), None);
        assert!(from_wire(None).admits(b"anything"));
    }
}
