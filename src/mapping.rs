//! Subject mappings of one account (nats-server's `mappings`): a
//! published subject that falls under a mapping's source is replaced by
//! one of its destinations, picked by weight, before anything matches it.
//!
//! Weights are percentages. When an account's destinations (per cluster)
//! add up to less than 100 the rest keeps the original subject, unless
//! the source is itself listed as a destination: then the rest is
//! dropped, as in nats-server (a way to shed load on purpose).

use crate::transform::{subset_match, tokenize, Transform, TransformError};

/// One destination as configured (config file or account JWT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDest {
    /// The destination subject template.
    pub subject: String,
    /// Percentage of messages sent here.
    pub weight: u8,
    /// The cluster this destination is for (empty: any).
    pub cluster: String,
}

impl MapDest {
    /// A destination taking every message.
    pub fn all(subject: &str) -> MapDest {
        MapDest {
            subject: subject.to_string(),
            weight: 100,
            cluster: String::new(),
        }
    }
}

/// One source subject and its destinations, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingConfig {
    /// The source subject (wildcards allowed).
    pub source: String,
    /// Where its messages go.
    pub dests: Vec<MapDest>,
}

/// Why a mapping cannot be added; `Display` gives nats-server's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// The source is not a valid subject.
    #[error("invalid subject")]
    BadSource,
    /// A destination listed twice.
    #[error("duplicate entry for {0:?}")]
    Duplicate(String),
    /// A weight above 100.
    #[error("individual weights need to be <= 100")]
    Weight,
    /// Weights of one cluster (or of no cluster) above 100 together.
    #[error("total weight needs to be <= 100")]
    TotalWeight,
    /// A destination that does not compile.
    #[error("{0}")]
    Transform(#[from] TransformError),
}

/// A destination with the cumulative weight up to and including it.
#[derive(Debug, Clone)]
struct Dest {
    transform: Transform,
    upto: u8,
    /// The destination as written (the source for the remainder).
    subject: Box<str>,
}

/// Destinations with their own weights and texts, before they are completed.
type Weighted = Vec<(Transform, u8, Box<str>)>;

/// One source subject and its destinations.
#[derive(Debug, Clone)]
pub struct Mapping {
    source: Box<[u8]>,
    wildcard: bool,
    dests: Vec<Dest>,
    /// Destinations scoped to a cluster, used instead of `dests` there.
    by_cluster: Vec<(Box<str>, Vec<Dest>)>,
}

impl Mapping {
    /// Checks and compiles a mapping as nats-server's account does.
    pub fn new(source: &str, dests: &[MapDest]) -> Result<Mapping, MappingError> {
        if !crate::subject::is_valid_subject(source.as_bytes()) {
            return Err(MappingError::BadSource);
        }
        let mut seen: Vec<&str> = Vec::new();
        let mut totals: Vec<(&str, u32)> = Vec::new();
        let mut plain: Weighted = Vec::new();
        let mut scoped: Vec<(Box<str>, Weighted)> = Vec::new();
        for d in dests {
            if seen.contains(&d.subject.as_str()) {
                return Err(MappingError::Duplicate(d.subject.clone()));
            }
            seen.push(&d.subject);
            if d.weight > 100 {
                return Err(MappingError::Weight);
            }
            let total = match totals.iter_mut().find(|(c, _)| *c == d.cluster) {
                Some((_, t)) => t,
                None => {
                    totals.push((&d.cluster, 0));
                    &mut totals.last_mut().expect("just pushed").1
                }
            };
            *total += d.weight as u32;
            if *total > 100 {
                return Err(MappingError::TotalWeight);
            }
            let t = Transform::for_mapping(source, &d.subject)?;
            let entry = (t, d.weight, d.subject.as_str().into());
            if d.cluster.is_empty() {
                plain.push(entry);
            } else {
                match scoped.iter_mut().find(|(c, _)| **c == *d.cluster) {
                    Some((_, l)) => l.push(entry),
                    None => scoped.push((d.cluster.as_str().into(), vec![entry])),
                }
            }
        }
        let source_listed = seen.contains(&source);
        let wildcard = crate::subject::has_wildcard(source.as_bytes());
        let complete = |mut l: Weighted| -> Result<Vec<Dest>, MappingError> {
            let sum: u32 = l.iter().map(|(_, w, _)| *w as u32).sum();
            if sum != 100 && !source_listed {
                let rest = if l.is_empty() { 100 } else { 100 - sum as u8 };
                let identity = Transform::new(source, &numbered_wildcards(source), false)?;
                l.push((identity, rest, source.into()));
            }
            // Lightest first, as nats-server orders them (stable).
            l.sort_by_key(|(_, w, _)| *w);
            let mut upto = 0u8;
            Ok(l.into_iter()
                .map(|(transform, w, subject)| {
                    upto += w;
                    Dest {
                        transform,
                        upto,
                        subject,
                    }
                })
                .collect())
        };
        let dests = complete(plain)?;
        let by_cluster = scoped
            .into_iter()
            .map(|(c, l)| Ok((c, complete(l)?)))
            .collect::<Result<_, MappingError>>()?;
        Ok(Mapping {
            source: source.as_bytes().into(),
            wildcard,
            dests,
            by_cluster,
        })
    }

    /// The source subject.
    pub fn source(&self) -> &[u8] {
        &self.source
    }

    /// Its destinations as nats-server's account detail lists them:
    /// lightest first with cumulative weights (the last reaches 100), the
    /// cluster-scoped ones after, each with its cluster.
    pub fn describe(&self) -> Vec<MapDest> {
        let list = |dests: &[Dest], cluster: &str| -> Vec<MapDest> {
            dests
                .iter()
                .map(|d| MapDest {
                    subject: d.subject.to_string(),
                    weight: d.upto,
                    cluster: cluster.to_string(),
                })
                .collect()
        };
        let mut out = list(&self.dests, "");
        for (c, dests) in &self.by_cluster {
            out.extend(list(dests, c));
        }
        out
    }
}

/// `foo.*.*` as `foo.$1.$2`: the source as its own destination.
pub fn numbered_wildcards(source: &str) -> String {
    let mut n = 0;
    source
        .split('.')
        .map(|t| {
            if t == "*" {
                n += 1;
                format!("${n}")
            } else {
                t.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// An account's mappings, in the order they were given (the first whose
/// source takes a subject applies). nats-server keeps a Go map's order,
/// which differs from run to run when sources overlap.
#[derive(Debug, Clone, Default)]
pub struct Mappings {
    list: Vec<Mapping>,
}

impl Mappings {
    /// Adds a mapping, replacing one with the same source.
    pub fn add(&mut self, m: Mapping) {
        match self.list.iter_mut().find(|e| e.source == m.source) {
            Some(e) => *e = m,
            None => self.list.push(m),
        }
    }

    /// The mappings, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Mapping> {
        self.list.iter()
    }

    /// Every mapping's source subject.
    pub fn sources(&self) -> impl Iterator<Item = &[u8]> {
        self.list.iter().map(|m| &*m.source)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The subject a message published to `subject` goes to: `None` when
    /// no mapping takes it, an empty subject when the pick drops it. In
    /// `cluster`, destinations scoped to it replace the others.
    pub fn map(&self, subject: &[u8], cluster: Option<&str>, rng: &mut fastrand::Rng) -> Option<Vec<u8>> {
        let mut tokens: Vec<&[u8]> = Vec::new();
        let mut found = None;
        for m in &self.list {
            if !m.wildcard && *m.source == *subject {
                found = Some(m);
                break;
            }
            if tokens.is_empty() {
                tokens = tokenize(subject);
            }
            if subset_match(&tokens, &m.source) {
                found = Some(m);
                break;
            }
        }
        let m = found?;
        let dests = cluster
            .and_then(|c| m.by_cluster.iter().find(|(n, _)| **n == *c))
            .map_or(&m.dests, |(_, l)| l);
        let pick = match dests.as_slice() {
            [only] if only.upto == 100 => Some(only),
            _ => {
                let w = rng.u8(0..100);
                dests.iter().find(|d| w < d.upto)
            }
        };
        let mut out = Vec::with_capacity(subject.len() + 16);
        if let Some(d) = pick {
            // nats-server splits the subject only once a wildcard source
            // was looked at: a literal source found first sees no tokens
            // (its `partition` hashes nothing, a constant either way).
            d.transform.apply(&tokens, rng, &mut out);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(s: &str, w: u8) -> MapDest {
        MapDest {
            subject: s.into(),
            weight: w,
            cluster: String::new(),
        }
    }

    fn one(src: &str, dests: &[MapDest]) -> Mappings {
        let mut m = Mappings::default();
        m.add(Mapping::new(src, dests).unwrap());
        m
    }

    #[test]
    fn simple_and_unmatched() {
        let m = one("foo.*", &[MapDest::all("bar.$1")]);
        let mut rng = fastrand::Rng::with_seed(3);
        assert_eq!(m.map(b"foo.x", None, &mut rng).as_deref(), Some(&b"bar.x"[..]));
        assert_eq!(m.map(b"foo", None, &mut rng), None);
        assert_eq!(m.map(b"foo.x.y", None, &mut rng), None);
        assert_eq!(m.map(b"foo.*", None, &mut rng).as_deref(), Some(&b"bar.*"[..]));
    }

    #[test]
    fn weights_split_and_the_rest_keeps_the_subject() {
        let m = one("foo", &[dest("a", 20), dest("b", 30)]);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..10_000 {
            let s = m.map(b"foo", None, &mut rng).unwrap();
            *counts.entry(String::from_utf8(s).unwrap()).or_insert(0) += 1;
        }
        let share = |k: &str| counts.get(k).copied().unwrap_or(0) as f64 / 10_000.0;
        assert!((share("a") - 0.2).abs() < 0.03, "{counts:?}");
        assert!((share("b") - 0.3).abs() < 0.03, "{counts:?}");
        assert!((share("foo") - 0.5).abs() < 0.03, "{counts:?}");
    }

    #[test]
    fn listing_the_source_drops_the_rest() {
        let m = one("foo", &[dest("foo", 50)]);
        let mut rng = fastrand::Rng::with_seed(9);
        let dropped = (0..1000)
            .filter(|_| m.map(b"foo", None, &mut rng).unwrap().is_empty())
            .count();
        assert!((400..600).contains(&dropped), "{dropped}");
    }

    #[test]
    fn cluster_scoped_destinations_win_in_their_cluster() {
        let mut d = dest("east.$1", 100);
        d.cluster = "east".into();
        let m = one("foo.*", &[d, dest("any.$1", 100)]);
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(m.map(b"foo.x", Some("east"), &mut rng).unwrap(), b"east.x");
        assert_eq!(m.map(b"foo.x", Some("west"), &mut rng).unwrap(), b"any.x");
        assert_eq!(m.map(b"foo.x", None, &mut rng).unwrap(), b"any.x");
    }

    #[test]
    fn errors_have_nats_server_texts() {
        let e = |d: &[MapDest]| Mapping::new("foo.*", d).unwrap_err().to_string();
        assert_eq!(
            e(&[dest("a.$1", 60), dest("b.$1", 50)]),
            "total weight needs to be <= 100"
        );
        assert_eq!(e(&[dest("a.$1", 10), dest("a.$1", 20)]), "duplicate entry for \"a.$1\"");
        assert_eq!(e(&[dest("a.$1", 101)]), "individual weights need to be <= 100");
        assert_eq!(
            e(&[dest("a.$2", 100)]),
            "invalid mapping destination: wildcard index out of range in $2: [2]"
        );
        assert_eq!(Mapping::new("foo..x", &[]).unwrap_err().to_string(), "invalid subject");
    }

    #[test]
    fn a_later_mapping_with_the_same_source_replaces_it() {
        let mut m = one("foo", &[MapDest::all("a")]);
        m.add(Mapping::new("foo", &[MapDest::all("b")]).unwrap());
        assert_eq!(m.map(b"foo", None, &mut fastrand::Rng::new()).unwrap(), b"b");
    }
}
