//! Stream and service imports between accounts, resolved to account ids
//! once at start-up and shared read-only by every shard (no lock on the
//! publish path).
//!
//! A service request's reply subject is replaced by one in the shard's
//! reply space (`responses.rs`), where the response is matched, checked
//! against the export's response rules and sent on to the original reply
//! subject in the importer.
//!
//! In a cluster, an importer's subscription also stands for interest in
//! the exporter's account (nats-server's shadow subscriptions): see
//! [`Imports::shadows`].

use crate::auth::accounts::AccountTable;
use crate::auth::config::{AccountConfig, ExchangeKind, ExportConfig, LatencyConfig, ResponseRule, ResponseType};
use crate::ids::AccountId;
use crate::mapping::{Mapping, Mappings};
use crate::subject;
use crate::transform::{import_pair, tokenize, Transform};
use std::sync::Arc;
use std::time::Duration;

/// Prefix of rewritten service reply subjects.
pub const REPLY_PREFIX: &[u8] = b"_R_.";

/// Messages published in one account that also go to another.
#[derive(Debug, Clone)]
pub struct StreamImport {
    /// The imported subject in the exporter's space.
    pub subject: Box<[u8]>,
    /// The importing account.
    pub to: AccountId,
    /// The subject in the importer's space, when mapped.
    pub local: Option<Box<[u8]>>,
    /// The mapping when `to` names wildcards (`bar.$2.$1`); otherwise
    /// wildcards map in order.
    pub transform: Option<Arc<Transform>>,
    /// The importer lets traced messages stay traced (`allow_trace`).
    pub allow_trace: bool,
}

/// Applies an import's transform, strict and so without randomness.
fn apply_strict(t: &Transform, subject: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(subject.len() + 16);
    t.apply(&tokenize(subject), &mut fastrand::Rng::with_seed(0), &mut out);
    out
}

impl StreamImport {
    /// The subject a message published to `subject` (which matched the
    /// import) has in the importer's space, when mapped.
    pub fn map(&self, subject: &[u8]) -> Option<Vec<u8>> {
        if let Some(t) = &self.transform {
            return Some(apply_strict(t, subject));
        }
        self.local.as_ref().map(|l| map_subject(subject, &self.subject, l))
    }
}

/// Requests published in the importer that go to an exporter's service.
#[derive(Debug, Clone)]
pub struct ServiceImport {
    /// The subject in the importer's space.
    pub local: Box<[u8]>,
    /// The exporting account.
    pub exporter: AccountId,
    /// The subject in the exporter's space.
    pub remote: Box<[u8]>,
    /// Importer's subjects to the exporter's, when `to` names wildcards
    /// (`local.$2.$1`); otherwise wildcards map in order.
    pub transform: Option<Arc<Transform>>,
    /// The export's response rules.
    pub response: ResponseRule,
    /// The export lets traced requests stay traced (`allow_trace`).
    pub allow_trace: bool,
    /// The importer shares all it knows of the requester (`share`).
    pub share: bool,
    /// The export's latency tracking (a singleton's only, as nats-server).
    pub latency: Option<Arc<LatencyConfig>>,
}

impl ServiceImport {
    /// The exporter's subject for a request published to `subject` (which
    /// matched `local`).
    pub fn map(&self, subject: &[u8]) -> Vec<u8> {
        match &self.transform {
            Some(t) => apply_strict(t, subject),
            None => map_subject(subject, &self.local, &self.remote),
        }
    }
}

/// One account's imports and subject mappings.
#[derive(Debug, Clone, Default)]
pub struct AccountImports {
    /// Subject mappings applied to what this account's clients and leaf
    /// connections publish (and to service requests it receives).
    pub mappings: Mappings,
    /// Stream imports fed by this account's publishes.
    pub streams_out: Vec<StreamImport>,
    /// Service imports this account's publishes may hit.
    pub services_in: Vec<ServiceImport>,
    /// Streams this account imports.
    streams_in: Vec<ImportedStream>,
    /// Where a sampled `traceparent` alone asks traces to go, and the
    /// percent of client messages sampled (0: all).
    trace_dest: Option<(Box<[u8]>, u8)>,
    /// The services this account exports, with their response
    /// thresholds: a measured request from another server delivered to
    /// one of its clients is timed here (`latency.rs`).
    service_exports: Vec<(Box<[u8]>, Duration)>,
}

/// A stream an account imports, seen from the importer.
#[derive(Debug, Clone)]
struct ImportedStream {
    exporter: AccountId,
    /// The subject in the exporter's space.
    subject: Box<[u8]>,
    /// The subject in the importer's space, when mapped.
    local: Option<Box<[u8]>>,
    /// Importer's subjects back to the exporter's, when `to` names
    /// wildcards.
    reverse: Option<Arc<Transform>>,
}

/// Every account's imports, by account id.
#[derive(Debug, Default)]
pub struct Imports {
    accounts: Vec<AccountImports>,
    /// Whether any account has service imports (replies need tracking).
    has_services: bool,
    /// Whether any account has subject mappings.
    has_mappings: bool,
    /// Whether any account exports a service.
    has_service_exports: bool,
    /// Whether any service import is measured (`latency` on its export).
    measures_latency: bool,
}

/// The export that admits an import of `subject` by `importer`: one
/// exported under that very subject first, else the first whose wildcards
/// cover it (nats-server looks the exact subject up before wildcards).
fn admitting_export<'a>(
    exports: &'a [ExportConfig],
    kind: ExchangeKind,
    subject: &str,
    importer: &str,
) -> Option<&'a ExportConfig> {
    let admits = |e: &&ExportConfig| {
        e.kind == kind
            && subject::matches(e.subject.as_bytes(), subject.as_bytes())
            && e.accounts.as_ref().is_none_or(|l| l.iter().any(|a| a == importer))
    };
    let mut candidates = exports.iter().filter(admits);
    let first = candidates.next()?;
    Some(
        std::iter::once(first)
            .chain(candidates)
            .find(|e| e.subject == subject)
            .unwrap_or(first),
    )
}

/// Maps `subj`, which matches `from`, onto `to`: wildcard tokens of `from`
/// fill the wildcards of `to` in order; a literal `to` is taken as is.
pub fn map_subject(subj: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut captures: Vec<&[u8]> = Vec::new();
    let mut rest: Option<&[u8]> = None;
    let mut st = subject::tokens(subj);
    let mut consumed = 0usize;
    for pt in subject::tokens(from) {
        match pt {
            b">" => {
                rest = Some(&subj[consumed.min(subj.len())..]);
                break;
            }
            _ => {
                let t = st.next().unwrap_or_default();
                consumed += t.len() + 1;
                if pt == b"*" {
                    captures.push(t);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(to.len() + subj.len());
    let mut caps = captures.into_iter();
    for (i, t) in subject::tokens(to).enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        match t {
            b"*" => out.extend_from_slice(caps.next().unwrap_or(b"*")),
            b">" => out.extend_from_slice(rest.unwrap_or(b">")),
            lit => out.extend_from_slice(lit),
        }
    }
    out
}

impl Imports {
    /// Resolves the configured imports. Imports no export allows are
    /// returned as warnings and left out, as nats-server does.
    pub fn build(table: &AccountTable, accounts: &[AccountConfig]) -> (Imports, Vec<String>) {
        let mut r = Imports::default();
        let mut warnings = Vec::new();
        for acc in accounts {
            let importer = table.get_or_create(&acc.name).id;
            if let Some(t) = &acc.trace_dest {
                r.slot(importer).trace_dest = Some((t.dest.as_bytes().into(), t.sampling));
            }
            for m in &acc.mappings {
                // Config files were checked when read; a JWT's mapping
                // nats-server cannot add is left out, as there.
                match Mapping::new(&m.source, &m.dests) {
                    Ok(mapping) => {
                        r.slot(importer).mappings.add(mapping);
                        r.has_mappings = true;
                    }
                    Err(e) => warnings.push(format!("account {}: mapping of {:?} left out: {e}", acc.name, m.source)),
                }
            }
            for e in acc.exports.iter().filter(|e| e.kind == ExchangeKind::Service) {
                let exports = &mut r.slot(importer).service_exports;
                exports.push((e.subject.as_bytes().into(), e.response.threshold));
                r.has_service_exports = true;
            }
            for imp in &acc.imports {
                let Some(exp_cfg) = accounts.iter().find(|a| a.name == imp.account) else {
                    warnings.push(format!(
                        "account {}: import of {:?} from unknown account {:?}",
                        acc.name, imp.subject, imp.account
                    ));
                    continue;
                };
                let Some(export) = admitting_export(&exp_cfg.exports, imp.kind, &imp.subject, &acc.name) else {
                    warnings.push(format!(
                        "account {}: import of {:?} from account {:?} is not authorized by an export",
                        acc.name, imp.subject, imp.account
                    ));
                    continue;
                };
                let exporter = table.get_or_create(&imp.account).id;
                // `to` naming the exporter's wildcards (`bar.$2.$1`): the
                // importer's pattern, and transforms both ways.
                let pair = match imp.local.as_deref().and_then(|l| import_pair(&imp.subject, l)) {
                    Some(Ok((here, fwd, back))) => Some((here, Arc::new(fwd), Arc::new(back))),
                    Some(Err(e)) => {
                        let kind = match imp.kind {
                            ExchangeKind::Stream => "stream",
                            ExchangeKind::Service => "service",
                        };
                        warnings.push(format!(
                            "account {}: failed to create mapping transform for {kind} import subject from {:?} to {:?}: {e}",
                            acc.name,
                            imp.subject,
                            imp.local.as_deref().unwrap_or_default()
                        ));
                        continue;
                    }
                    None => None,
                };
                match imp.kind {
                    ExchangeKind::Stream => {
                        let (local, transform, reverse) = match pair {
                            Some((here, fwd, back)) => (Some(here.as_bytes().into()), Some(fwd), Some(back)),
                            None => (imp.local.as_ref().map(|l| l.as_bytes().into()), None, None),
                        };
                        r.slot(exporter).streams_out.push(StreamImport {
                            subject: imp.subject.as_bytes().into(),
                            to: importer,
                            local: local.clone(),
                            transform,
                            allow_trace: imp.allow_trace,
                        });
                        r.slot(importer).streams_in.push(ImportedStream {
                            exporter,
                            subject: imp.subject.as_bytes().into(),
                            local,
                            reverse,
                        });
                    }
                    ExchangeKind::Service => {
                        // Requests on `local.*.*` reach the exporter's
                        // subject with the tokens reordered.
                        let (local, transform): (Box<[u8]>, _) = match pair {
                            Some((here, _, back)) => (here.as_bytes().into(), Some(back)),
                            None => (imp.local.as_deref().unwrap_or(&imp.subject).as_bytes().into(), None),
                        };
                        r.has_services = true;
                        r.measures_latency |= export.latency.is_some();
                        r.slot(importer).services_in.push(ServiceImport {
                            local,
                            exporter,
                            remote: imp.subject.as_bytes().into(),
                            transform,
                            response: export.response,
                            allow_trace: export.allow_trace,
                            share: imp.share,
                            latency: export
                                .latency
                                .as_ref()
                                .filter(|l| {
                                    export.response.kind == ResponseType::Singleton
                                        && subject::is_valid_literal_subject(l.subject.as_bytes())
                                })
                                .map(|l| Arc::new(l.clone())),
                        })
                    }
                }
            }
        }
        (r, warnings)
    }

    fn slot(&mut self, id: AccountId) -> &mut AccountImports {
        if self.accounts.len() <= id.index() {
            self.accounts.resize_with(id.index() + 1, Default::default);
        }
        &mut self.accounts[id.index()]
    }

    /// The imports of account `id`, when it has any.
    #[inline]
    pub fn of(&self, id: AccountId) -> Option<&AccountImports> {
        self.accounts
            .get(id.index())
            .filter(|r| !r.streams_out.is_empty() || !r.services_in.is_empty())
    }

    /// Whether any account has imports.
    pub fn any(&self) -> bool {
        self.accounts
            .iter()
            .any(|r| !r.streams_out.is_empty() || !r.services_in.is_empty())
    }

    /// Account `id`'s own trace destination and sampling percent.
    pub fn trace_dest_of(&self, id: AccountId) -> Option<(&[u8], u8)> {
        self.accounts
            .get(id.index())
            .and_then(|r| r.trace_dest.as_ref())
            .map(|(d, s)| (&d[..], *s))
    }

    /// Whether any account has subject mappings.
    #[inline]
    pub fn has_mappings(&self) -> bool {
        self.has_mappings
    }

    /// The subject mappings of account `id`, when it has any.
    #[inline]
    pub fn mappings_of(&self, id: AccountId) -> Option<&Mappings> {
        self.accounts
            .get(id.index())
            .map(|r| &r.mappings)
            .filter(|m| !m.is_empty())
    }

    /// Every account's mapping sources.
    pub fn mapping_sources(&self) -> Vec<(AccountId, Box<[u8]>)> {
        self.accounts
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.mappings.sources().map(move |s| (AccountId(i as u32), s.into())))
            .collect()
    }

    /// Whether service replies may need routing back.
    #[inline]
    pub fn has_services(&self) -> bool {
        self.has_services
    }

    /// Whether any account exports a service.
    #[inline]
    pub fn has_service_exports(&self) -> bool {
        self.has_service_exports
    }

    /// Whether any service import is measured: responses may come with
    /// another server's measurement.
    pub fn measures_latency(&self) -> bool {
        self.measures_latency
    }

    /// The response threshold of `account`'s service export that covers
    /// `subject`: one exported under that very subject first, else the
    /// first whose wildcards match (as nats-server looks exports up).
    pub fn service_export(&self, account: AccountId, subject: &[u8]) -> Option<Duration> {
        let exports = &self.accounts.get(account.index())?.service_exports;
        exports
            .iter()
            .find(|(s, _)| &s[..] == subject)
            .or_else(|| exports.iter().find(|(s, _)| subject::matches(s, subject)))
            .map(|(_, t)| *t)
    }

    /// The exporter-side interest a subscription to `subject` in
    /// `importer` stands for: for each stream it imports whose subjects
    /// meet `subject`, the subscription's subject mapped back into the
    /// exporter's space (or the whole import when the subscription is
    /// wider or only overlaps it).
    pub fn shadows(&self, importer: AccountId, subject: &[u8]) -> Vec<(AccountId, Vec<u8>)> {
        let Some(r) = self.accounts.get(importer.index()) else {
            return Vec::new();
        };
        r.streams_in
            .iter()
            .filter_map(|s| {
                let (from, here) = (&s.subject, s.local.as_deref().unwrap_or(&s.subject));
                if subject::is_subset(subject, here) {
                    let back = match &s.reverse {
                        Some(t) => apply_strict(t, subject),
                        None => map_subject(subject, here, from),
                    };
                    Some((s.exporter, back))
                } else if subject::intersects(subject, here) {
                    Some((s.exporter, from.to_vec()))
                } else {
                    None
                }
            })
            .collect()
    }

    /// How nats-server names the shadow of `importer`'s subscription to
    /// `subject` in `exporter`'s space (trace events): the part of the
    /// subscription the import covers, mapped back.
    pub fn shadow_name(&self, importer: AccountId, exporter: AccountId, subject: &[u8]) -> Option<Vec<u8>> {
        let r = self.accounts.get(importer.index())?;
        r.streams_in.iter().filter(|s| s.exporter == exporter).find_map(|s| {
            let (from, here) = (&s.subject, s.local.as_deref().unwrap_or(&s.subject));
            let covered = subject::intersection(subject, here)?;
            Some(match &s.reverse {
                Some(t) => apply_strict(t, &covered),
                None => map_subject(&covered, here, from),
            })
        })
    }

    /// The accounts whose services are imported, where responses must be
    /// caught on their way back (by id, each once).
    pub fn reply_exporters(&self) -> Vec<AccountId> {
        let mut exporters: Vec<AccountId> = self
            .accounts
            .iter()
            .flat_map(|r| r.services_in.iter().map(|sv| sv.exporter))
            .collect();
        exporters.sort_by_key(|a| a.0);
        exporters.dedup();
        exporters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::config::{ExportConfig, ImportConfig};

    #[test]
    fn mapping() {
        assert_eq!(map_subject(b"foo.bar", b"foo.>", b"p.foo.>"), b"p.foo.bar");
        assert_eq!(map_subject(b"foo.a.b", b"foo.*.b", b"x.*"), b"x.a");
        assert_eq!(map_subject(b"foo.a.b.c", b"foo.>", b"bar.>"), b"bar.a.b.c");
        assert_eq!(map_subject(b"svc", b"svc", b"remote.svc"), b"remote.svc");
    }

    #[test]
    fn a_service_import_takes_the_rules_of_the_export_named_for_it() {
        use crate::auth::config::ResponseType;
        let t = AccountTable::new(None);
        let rule = |kind| ResponseRule {
            kind,
            threshold: std::time::Duration::from_secs(1),
        };
        let accounts = vec![
            AccountConfig {
                name: "A".into(),
                mappings: vec![],
                trace_dest: None,
                limits: Default::default(),
                exports: vec![
                    ExportConfig {
                        kind: ExchangeKind::Service,
                        subject: "svc.>".into(),
                        accounts: None,
                        response: rule(ResponseType::Stream),
                        allow_trace: false,
                        latency: None,
                    },
                    ExportConfig {
                        kind: ExchangeKind::Service,
                        subject: "svc.x".into(),
                        accounts: None,
                        response: rule(ResponseType::Chunked),
                        allow_trace: false,
                        latency: None,
                    },
                ],
                imports: vec![],
            },
            AccountConfig {
                name: "B".into(),
                mappings: vec![],
                trace_dest: None,
                limits: Default::default(),
                exports: vec![],
                imports: ["svc.x", "svc.y"]
                    .into_iter()
                    .map(|s| ImportConfig {
                        kind: ExchangeKind::Service,
                        account: "A".into(),
                        subject: s.into(),
                        local: None,
                        allow_trace: false,
                        share: false,
                    })
                    .collect(),
            },
        ];
        let (r, w) = Imports::build(&t, &accounts);
        assert!(w.is_empty());
        let (a, b) = (t.get("A").unwrap().id, t.get("B").unwrap().id);
        let kinds: Vec<ResponseType> = r.of(b).unwrap().services_in.iter().map(|s| s.response.kind).collect();
        assert_eq!(kinds, [ResponseType::Chunked, ResponseType::Stream], "exact first");
        assert_eq!(r.reply_exporters(), vec![a]);
    }

    #[test]
    fn imports_need_a_matching_export() {
        let t = AccountTable::new(None);
        let accounts = vec![
            AccountConfig {
                name: "A".into(),
                mappings: vec![],
                trace_dest: None,
                limits: Default::default(),
                exports: vec![ExportConfig {
                    kind: ExchangeKind::Stream,
                    subject: "pub.>".into(),
                    accounts: Some(vec!["B".into()]),
                    response: Default::default(),
                    allow_trace: false,
                    latency: None,
                }],
                imports: vec![],
            },
            AccountConfig {
                name: "B".into(),
                mappings: vec![],
                trace_dest: None,
                limits: Default::default(),
                exports: vec![],
                imports: vec![ImportConfig {
                    kind: ExchangeKind::Stream,
                    account: "A".into(),
                    subject: "pub.x".into(),
                    local: Some("from_a.pub.x".into()),
                    allow_trace: false,
                    share: false,
                }],
            },
            AccountConfig {
                name: "C".into(),
                mappings: vec![],
                trace_dest: None,
                limits: Default::default(),
                exports: vec![],
                imports: vec![ImportConfig {
                    kind: ExchangeKind::Stream,
                    account: "A".into(),
                    subject: "pub.x".into(),
                    local: None,
                    allow_trace: false,
                    share: false,
                }],
            },
        ];
        let (r, w) = Imports::build(&t, &accounts);
        assert_eq!(w.len(), 1, "C is not in the export's account list: {w:?}");
        let a = t.get("A").unwrap().id;
        assert_eq!(r.of(a).unwrap().streams_out.len(), 1);
        // B's subscriptions stand for interest in A's space (shadows).
        let b = t.get("B").unwrap().id;
        assert_eq!(r.shadows(b, b"from_a.pub.x"), vec![(a, b"pub.x".to_vec())]);
        assert_eq!(
            r.shadows(b, b"from_a.>"),
            vec![(a, b"pub.x".to_vec())],
            "wider: the import"
        );
        assert!(r.shadows(b, b"other").is_empty());
        assert!(r.shadows(a, b"pub.x").is_empty(), "A imports nothing");
        assert!(r.reply_exporters().is_empty(), "no services imported");
    }
}
