//! Subject permissions: what a user may publish and subscribe to, with
//! nats-server's rules (allow list first, then deny; queue-specific
//! subscribe entries; `allow_responses`), and the per-connection cache that
//! makes an allowed publish cost one hash lookup.

use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::subject;

/// A list of subject patterns. Subscribe lists may name a queue group after
/// the subject (`"foo.> workers"`), which then only admits that group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatternList {
    plain: Vec<Box<[u8]>>,
    queue: Vec<QueueEntry>,
}

/// A subscribe entry for one queue group: (subject pattern, queue pattern).
type QueueEntry = (Box<[u8]>, Box<[u8]>);

impl PatternList {
    /// A list from configuration or JWT entries.
    pub fn new<S: AsRef<str>>(entries: &[S]) -> PatternList {
        let mut l = PatternList::default();
        for e in entries {
            let e = e.as_ref().trim();
            match e.split_once([' ', '\t']) {
                Some((s, q)) if !q.trim().is_empty() => {
                    l.queue.push((s.as_bytes().into(), q.trim().as_bytes().into()));
                }
                _ => l.plain.push(e.as_bytes().into()),
            }
        }
        l
    }

    /// The entries as written (queue entries as `"subject queue"`).
    pub fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .plain
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        v.extend(
            self.queue
                .iter()
                .map(|(s, q)| format!("{} {}", String::from_utf8_lossy(s), String::from_utf8_lossy(q))),
        );
        v
    }

    /// Whether a plain (non-queue) entry matches `subj`. A subject with
    /// wildcards is matched token by token as if literal, as nats-server's
    /// permission sublists do: `foo.>` covers `foo.*`, `foo.bar` does not.
    fn plain_matches(&self, subj: &[u8]) -> bool {
        self.plain.iter().any(|p| subject::matches(p, subj))
    }

    /// `Some(admitted)` when queue entries match `subj`: whether one of
    /// them names `queue` (queue names may use wildcards too).
    fn queue_verdict(&self, subj: &[u8], queue: &[u8]) -> Option<bool> {
        let mut any = false;
        for (s, q) in &self.queue {
            if subject::matches(s, subj) {
                any = true;
                if subject::matches(q, queue) {
                    return Some(true);
                }
            }
        }
        any.then_some(false)
    }
}

/// Allow and deny lists for one direction. `None` means "no list": an
/// absent allow list admits everything, an empty one admits nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectRule {
    /// Admitted subjects; `None` admits all.
    pub allow: Option<PatternList>,
    /// Refused subjects, checked after the allow list.
    pub deny: Option<PatternList>,
}

impl SubjectRule {
    /// True when the rule restricts nothing.
    pub fn is_open(&self) -> bool {
        self.allow.is_none() && self.deny.is_none()
    }

    /// A rule that admits everything but `deny`.
    pub fn all_but(deny: PatternList) -> SubjectRule {
        SubjectRule {
            allow: None,
            deny: Some(deny),
        }
    }

    /// Whether `subj` passes the allow list and then the deny list
    /// (queue-specific entries aside).
    pub fn admits(&self, subj: &[u8]) -> bool {
        let allowed = self.allow.as_ref().is_none_or(|a| a.plain_matches(subj));
        allowed && !self.deny.as_ref().is_some_and(|d| d.plain_matches(subj))
    }
}

/// `allow_responses`: a user may publish to the reply subject of a request
/// it received, `max` times within `expires`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponsePermission {
    /// Responses per request (0: unlimited).
    pub max: u64,
    /// How long the reply subject stays open (zero: forever).
    pub expires: Duration,
}

impl Default for ResponsePermission {
    /// nats-server's defaults for `allow_responses: true`: one response
    /// within two minutes.
    fn default() -> Self {
        ResponsePermission {
            max: 1,
            expires: Duration::from_secs(120),
        }
    }
}

/// A user's permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Publish rule.
    pub publish: SubjectRule,
    /// Subscribe rule.
    pub subscribe: SubjectRule,
    /// Response permission; when set without a publish allow list, the
    /// allow list becomes empty (only responses may be published), as in
    /// nats-server.
    pub response: Option<ResponsePermission>,
}

impl Permissions {
    /// Permissions that only keep `deny` from what a link is sent (its
    /// wildcard interest covers more): a route's export deny list, a
    /// leaf's deny_exports.
    pub fn sent_all_but(deny: PatternList) -> Permissions {
        Permissions {
            subscribe: SubjectRule::all_but(deny),
            ..Default::default()
        }
    }

    /// Normalises as nats-server does when it installs permissions.
    pub fn normalized(mut self) -> Permissions {
        if self.response.is_some() && self.publish.allow.is_none() {
            self.publish.allow = Some(PatternList::default());
        }
        self
    }

    /// The allow/deny verdict for publishing to `subj` (responses aside).
    pub fn publish_allowed(&self, subj: &[u8]) -> bool {
        self.publish.admits(subj)
    }

    /// Whether a subscription to `subj` (in `queue`) is admitted.
    pub fn subscribe_allowed(&self, subj: &[u8], queue: Option<&[u8]>) -> bool {
        let r = &self.subscribe;
        let mut allowed = true;
        if let Some(a) = &r.allow {
            allowed = a.plain_matches(subj);
            if let Some(v) = queue.and_then(|q| a.queue_verdict(subj, q)) {
                allowed = v;
            }
        }
        if allowed {
            if let Some(d) = &r.deny {
                allowed = !d.plain_matches(subj);
                if let Some(v) = queue.and_then(|q| d.queue_verdict(subj, q)) {
                    allowed = !v;
                }
            }
        }
        allowed
    }
}

/// Cached verdicts kept per connection before the cache is reset.
const CACHE_MAX: usize = 256;
/// Open reply subjects kept per connection before expired ones are pruned.
const REPLIES_PRUNE: usize = 1024;

/// One connection's view of its permissions: the rules plus the publish
/// verdict cache and the reply subjects it may answer.
#[derive(Debug)]
pub struct ConnPermissions {
    perms: std::sync::Arc<Permissions>,
    /// The last subject's verdict: publishers mostly repeat one subject.
    last: Option<(Box<[u8]>, bool)>,
    cache: FxHashMap<Box<[u8]>, bool>,
    deny_cache: FxHashMap<Box<[u8]>, bool>,
    replies: FxHashMap<Box<[u8]>, (u64, Instant)>,
}

impl ConnPermissions {
    /// Wraps a user's permissions for one connection.
    pub fn new(perms: std::sync::Arc<Permissions>) -> ConnPermissions {
        ConnPermissions {
            perms,
            last: None,
            cache: FxHashMap::default(),
            deny_cache: FxHashMap::default(),
            replies: FxHashMap::default(),
        }
    }

    /// The rules.
    pub fn rules(&self) -> &Permissions {
        &self.perms
    }

    /// Whether the connection may publish to `subj` now. A response to a
    /// request it received counts against that request's allowance.
    pub fn may_publish(&mut self, subj: &[u8], now: Instant) -> bool {
        if self.perms.publish.is_open() {
            return true;
        }
        let allowed = match &self.last {
            Some((s, v)) if **s == *subj => *v,
            _ => {
                let v = match self.cache.get(subj) {
                    Some(v) => *v,
                    None => {
                        let v = self.perms.publish_allowed(subj);
                        if self.cache.len() >= CACHE_MAX {
                            self.cache.clear();
                        }
                        self.cache.insert(subj.into(), v);
                        v
                    }
                };
                self.last = Some((subj.into(), v));
                v
            }
        };
        if allowed {
            return true;
        }
        let Some(rp) = self.perms.response else {
            return false;
        };
        let Some((n, at)) = self.replies.get_mut(subj) else {
            return false;
        };
        *n += 1;
        let too_many = rp.max > 0 && *n > rp.max;
        let expired = !rp.expires.is_zero() && now.saturating_duration_since(*at) > rp.expires;
        if too_many || expired {
            self.replies.remove(subj);
            return false;
        }
        true
    }

    /// Notes that the connection received a message with `reply`, which
    /// it may then answer under `allow_responses`.
    pub fn note_reply(&mut self, reply: &[u8], now: Instant) {
        let Some(rp) = self.perms.response else {
            return;
        };
        if self.replies.len() >= REPLIES_PRUNE {
            self.replies.retain(|_, (n, at)| {
                (rp.max == 0 || *n < rp.max)
                    && (rp.expires.is_zero() || now.saturating_duration_since(*at) <= rp.expires)
            });
        }
        self.replies.insert(reply.into(), (0, now));
    }

    /// Whether a message on `subj` must not be delivered to this
    /// connection: its subscribe deny list covers the subject (a wildcard
    /// subscription may cover more than the deny list allows).
    pub fn delivery_denied(&mut self, subj: &[u8]) -> bool {
        let Some(deny) = &self.perms.subscribe.deny else {
            return false;
        };
        if let Some(v) = self.deny_cache.get(subj) {
            return *v;
        }
        let v = deny.plain_matches(subj);
        if self.deny_cache.len() >= CACHE_MAX {
            self.deny_cache.clear();
        }
        self.deny_cache.insert(subj.into(), v);
        v
    }

    /// Whether the connection may subscribe to `subj` in `queue`.
    pub fn may_subscribe(&self, subj: &[u8], queue: Option<&[u8]>) -> bool {
        self.perms.subscribe_allowed(subj, queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn rule(allow: Option<&[&str]>, deny: Option<&[&str]>) -> SubjectRule {
        SubjectRule {
            allow: allow.map(PatternList::new),
            deny: deny.map(PatternList::new),
        }
    }

    #[test]
    fn subscribe_rules_follow_nats_server() {
        // The cases below were checked against nats-server 2.15.1.
        let p = Permissions {
            subscribe: rule(Some(&["foo", "bar q1"]), Some(&["bar.*"])),
            ..Default::default()
        };
        assert!(!p.subscribe_allowed(b"bar", None));
        assert!(p.subscribe_allowed(b"bar", Some(b"q1")));
        assert!(!p.subscribe_allowed(b"bar", Some(b"q2")));
        assert!(p.subscribe_allowed(b"foo", Some(b"q")));
        assert!(!p.subscribe_allowed(b"bar.x", None));
        assert!(!p.subscribe_allowed(b"bar.*", None));
        assert!(!p.subscribe_allowed(b">", None));
        let p = Permissions {
            subscribe: rule(Some(&["foo.>"]), None),
            ..Default::default()
        };
        assert!(p.subscribe_allowed(b"foo.*", None));
        assert!(p.subscribe_allowed(b"foo.>", None));
        assert!(!p.subscribe_allowed(b"foo", None));
    }

    #[test]
    fn publish_allow_then_deny_and_cache() {
        let p = Arc::new(Permissions {
            publish: rule(Some(&["foo.>"]), Some(&["foo.secret"])),
            ..Default::default()
        });
        let mut c = ConnPermissions::new(p);
        let now = Instant::now();
        for _ in 0..2 {
            assert!(c.may_publish(b"foo.x", now));
            assert!(!c.may_publish(b"foo.secret", now));
            assert!(!c.may_publish(b"bar.x", now));
        }
    }

    #[test]
    fn responses_are_counted_and_expire() {
        let p = Permissions {
            response: Some(ResponsePermission {
                max: 2,
                expires: Duration::from_secs(10),
            }),
            ..Default::default()
        }
        .normalized();
        let mut c = ConnPermissions::new(Arc::new(p));
        let now = Instant::now();
        assert!(
            !c.may_publish(b"foo", now),
            "allow_responses alone denies other publishes"
        );
        c.note_reply(b"_INBOX.a", now);
        assert!(c.may_publish(b"_INBOX.a", now));
        assert!(c.may_publish(b"_INBOX.a", now));
        assert!(!c.may_publish(b"_INBOX.a", now), "max reached");
        c.note_reply(b"_INBOX.b", now);
        assert!(!c.may_publish(b"_INBOX.b", now + Duration::from_secs(11)), "expired");
    }
}
