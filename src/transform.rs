//! Subject transforms: a source pattern and a destination template with
//! `$n` and `{{function(...)}}` tokens, as nats-server reads and applies
//! them (subject mappings, and later import/export mappings).
//!
//! Validation follows nats-server's order and texts, quirks included,
//! because users see them (`-t`) and clients depend on the subjects:
//! an index that names no wildcard (`$0`, `$-1`) takes the first token,
//! `partition` in a literal source hashes the whole subject, a split or
//! slice that does not fit leaves the token whole. Pure: randomness comes
//! in as a [`fastrand::Rng`].

use std::fmt;

/// Why a destination cannot be used; `Display` gives nats-server's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    /// A source or destination that is not a usable subject (an empty
    /// token, `>` not last, `*` in the destination, `>` on one side only).
    #[error("invalid subject")]
    BadSubject,
    /// A destination refused with one of nats-server's mapping texts.
    #[error("{0}")]
    Destination(DestinationError),
}

/// A destination error and the token it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationError {
    /// What is wrong.
    pub kind: DestinationErrorKind,
    /// The offending token (empty: not named).
    pub token: String,
}

/// The kinds of destination error nats-server distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationErrorKind {
    /// Empty token, whitespace, or a token after `>`.
    InvalidTransform,
    /// An import destination that does not use every wildcard.
    NotUsingAllWildcards,
    /// `{{name(...)}}` with a name nats-server does not know.
    UnknownFunction,
    /// An index beyond the source's wildcards, or a wildcard reference in
    /// a literal source.
    IndexOutOfRange,
    /// Too few arguments.
    NotEnoughArgs,
    /// An argument that is not a number, or a bad split delimiter.
    InvalidArg,
    /// Too many arguments.
    TooManyArgs,
    /// A function other than `wildcard` in a reversible (import) transform.
    NotSupportedForImport,
}

impl DestinationErrorKind {
    fn text(self) -> &'static str {
        use DestinationErrorKind::*;
        match self {
            InvalidTransform => "invalid transform",
            NotUsingAllWildcards => "not using all of the token wildcard(s)",
            UnknownFunction => "unknown function",
            IndexOutOfRange => "wildcard index out of range",
            NotEnoughArgs => "not enough arguments passed to the function",
            InvalidArg => "function argument is invalid or in the wrong format",
            TooManyArgs => "too many arguments passed to the function",
            NotSupportedForImport => "the only mapping function allowed for import transforms is {{Wildcard()}}",
        }
    }
}

impl fmt::Display for DestinationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid mapping destination: {}", self.kind.text())?;
        if !self.token.is_empty() {
            write!(f, " in {}", self.token)?;
        }
        Ok(())
    }
}

fn dest_err(kind: DestinationErrorKind, token: impl Into<String>) -> TransformError {
    TransformError::Destination(DestinationError {
        kind,
        token: token.into(),
    })
}

/// The functions a destination token may call, in the order nats-server
/// tries them. In a pattern an upper-case letter matches either case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    Wildcard,
    Partition,
    SplitFromLeft,
    SplitFromRight,
    SliceFromLeft,
    SliceFromRight,
    Right,
    Left,
    Split,
    Random,
}

const FUNCTIONS: [(Function, &str); 10] = [
    (Function::Wildcard, "Wildcard"),
    (Function::Partition, "Partition"),
    (Function::SplitFromLeft, "SplitFromLeft"),
    (Function::SplitFromRight, "SplitFromRight"),
    (Function::SliceFromLeft, "SliceFromLeft"),
    (Function::SliceFromRight, "SliceFromRight"),
    (Function::Right, "Right"),
    (Function::Left, "Left"),
    (Function::Split, "Split"),
    (Function::Random, "Random"),
];

/// Go's `\s` in regular expressions.
fn is_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0c | b'\r' | b' ')
}

fn skip_space(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_space(s[i]) {
        i += 1;
    }
    i
}

/// The argument text of `{{\s*name\s*\((.*)\)\s*}}` found anywhere in
/// `token` (leftmost match, greedy argument, no newline in it).
fn call_args<'a>(token: &'a str, name: &str) -> Option<&'a str> {
    let s = token.as_bytes();
    let name = name.as_bytes();
    for start in 0..s.len() {
        if !s[start..].starts_with(b"{{") {
            continue;
        }
        let mut i = skip_space(s, start + 2);
        let named = name.iter().all(|&n| {
            let ok = s
                .get(i)
                .is_some_and(|&c| c == n || (n.is_ascii_uppercase() && c == n.to_ascii_lowercase()));
            i += 1;
            ok
        });
        if !named {
            continue;
        }
        let open = skip_space(s, i);
        if s.get(open) != Some(&b'(') {
            continue;
        }
        let from = open + 1;
        let line_end = s[from..].iter().position(|&b| b == b'\n').map_or(s.len(), |p| from + p);
        let close = (from..line_end)
            .rev()
            .find(|&p| s[p] == b')' && s[skip_space(s, p + 1)..].starts_with(b"}}"));
        if let Some(p) = close {
            return Some(&token[from..p]);
        }
    }
    None
}

/// Splits arguments at commas, each comma taking the whitespace after it.
fn split_args(args: &str) -> Vec<&str> {
    let s = args.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    let mut i = 0;
    while i < s.len() {
        if s[i] == b',' {
            out.push(&args[from..i]);
            i = skip_space(s, i + 1);
            from = i;
        } else {
            i += 1;
        }
    }
    out.push(&args[from..]);
    out
}

/// Looks like a function call: `{{...}}`, longer than four bytes.
fn is_mustache(token: &str) -> bool {
    token.len() > 4 && token.starts_with("{{") && token.ends_with("}}")
}

fn find_function(token: &str) -> Option<(Function, Vec<&str>)> {
    FUNCTIONS
        .iter()
        .find_map(|&(f, name)| call_args(token, name).map(|a| (f, split_args(a))))
}

/// Go's `strconv.Atoi` on an argument with spaces trimmed.
fn int_arg(s: &str) -> Option<i64> {
    s.trim_matches(' ').parse::<i64>().ok()
}

/// What one destination token asks for, with indexes counted in wildcards.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Placeholder {
    Literal,
    Wildcard(i64),
    Partition { buckets: i32, wildcards: Vec<i64> },
    Indexed { f: Function, wildcard: i64, n: i32 },
    Split { wildcard: i64, delim: String },
    Random(i32),
}

fn placeholder(token: &str) -> Result<Placeholder, TransformError> {
    use DestinationErrorKind::*;
    if token.len() > 1 && token.starts_with('$') {
        // `$foo` is a literal token; `$1` the first wildcard.
        return Ok(token[1..]
            .parse::<i64>()
            .map_or(Placeholder::Literal, Placeholder::Wildcard));
    }
    if !is_mustache(token) {
        return Ok(Placeholder::Literal);
    }
    let Some((f, args)) = find_function(token) else {
        return Err(dest_err(UnknownFunction, token));
    };
    let bad = |k| Err(dest_err(k, token));
    match f {
        Function::Wildcard => match args.as_slice() {
            [""] => bad(NotEnoughArgs),
            [a] => int_arg(a).map_or(bad(InvalidArg), |i| Ok(Placeholder::Wildcard(i))),
            _ => bad(TooManyArgs),
        },
        Function::Partition => {
            let Some(buckets) = int_arg(args[0]).filter(|&n| n <= i32::MAX as i64) else {
                return bad(InvalidArg);
            };
            let mut wildcards = Vec::new();
            for a in &args[1..] {
                match int_arg(a) {
                    Some(i) => wildcards.push(i),
                    None => return bad(InvalidArg),
                }
            }
            // Go keeps the low 32 bits of a large negative count.
            Ok(Placeholder::Partition {
                buckets: buckets as i32,
                wildcards,
            })
        }
        Function::Split => match args.as_slice() {
            [_] => bad(NotEnoughArgs),
            [i, d] => match int_arg(i) {
                Some(_) if d.contains(' ') || d.contains('.') => bad(InvalidArg),
                Some(wildcard) => Ok(Placeholder::Split {
                    wildcard,
                    delim: d.to_string(),
                }),
                None => bad(InvalidArg),
            },
            _ => bad(TooManyArgs),
        },
        Function::Random => match args.as_slice() {
            [a] => match int_arg(a).filter(|&n| n <= i32::MAX as i64) {
                Some(n) => Ok(Placeholder::Random(n as i32)),
                None => bad(InvalidArg),
            },
            _ => bad(NotEnoughArgs),
        },
        _ => match args.as_slice() {
            [_] => bad(NotEnoughArgs),
            [i, n] => {
                let wildcard = int_arg(i);
                let n = n.trim_matches(' ').parse::<i32>().ok();
                match (wildcard, n) {
                    (Some(wildcard), Some(n)) => Ok(Placeholder::Indexed { f, wildcard, n }),
                    _ => bad(InvalidArg),
                }
            }
            _ => bad(TooManyArgs),
        },
    }
}

/// One destination token, ready to apply: indexes are source token
/// positions.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Box<[u8]>),
    /// `>`: the source's remaining tokens follow.
    Rest,
    Token(usize),
    Partition {
        buckets: i32,
        tokens: Vec<usize>,
    },
    Indexed {
        f: Function,
        token: usize,
        n: i32,
    },
    Split {
        token: usize,
        delim: Box<[u8]>,
    },
    Random(i32),
}

/// A compiled subject transform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    source: Box<[u8]>,
    source_tokens: usize,
    parts: Vec<Part>,
}

/// A subject's validity, wildcard count and whether it ends in `>`
/// (nats-server's `subjectInfo`: whitespace is not checked here).
fn subject_info(s: &str) -> Option<(Vec<&str>, usize, bool)> {
    if s.is_empty() {
        return None;
    }
    let tokens: Vec<&str> = s.split('.').collect();
    let mut pwcs = 0;
    let mut fwc = false;
    for t in &tokens {
        if t.is_empty() || fwc {
            return None;
        }
        match *t {
            ">" => fwc = true,
            "*" => pwcs += 1,
            _ => {}
        }
    }
    Some((tokens, pwcs, fwc))
}

impl Transform {
    /// Compiles `source` (empty: `>`) to `dest`, as nats-server does for
    /// mappings (any function); `strict` is for imports, which must be
    /// reversible: `wildcard` only, and every wildcard used.
    pub fn new(source: &str, dest: &str, strict: bool) -> Result<Transform, TransformError> {
        use DestinationErrorKind::*;
        let source = if source.is_empty() { ">" } else { source };
        let (Some((stokens, npwcs, sfwc)), Some((dtokens, dpwcs, dfwc))) = (subject_info(source), subject_info(dest))
        else {
            return Err(TransformError::BadSubject);
        };
        if dpwcs > 0 || sfwc != dfwc {
            return Err(TransformError::BadSubject);
        }
        // Position in the source of the n-th `*` (from 1); others: 0.
        let wildcard_pos: Vec<usize> = stokens
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == "*")
            .map(|(i, _)| i)
            .collect();
        let pos = |n: i64| -> usize {
            usize::try_from(n)
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|n| wildcard_pos.get(n).copied())
                .unwrap_or(0)
        };
        let wild = npwcs > 0 || sfwc;
        let mut parts = Vec::with_capacity(dtokens.len());
        let mut used = 0usize;
        for token in &dtokens {
            let p = placeholder(token)?;
            if strict && !matches!(p, Placeholder::Literal | Placeholder::Wildcard(_)) {
                return Err(dest_err(NotSupportedForImport, *token));
            }
            let check = |n: i64| {
                if n > npwcs as i64 {
                    Err(dest_err(IndexOutOfRange, format!("{token}: [{n}]")))
                } else {
                    Ok(pos(n))
                }
            };
            let part = match p {
                Placeholder::Literal if *token == ">" => Part::Rest,
                Placeholder::Literal => Part::Literal(token.as_bytes().into()),
                Placeholder::Random(n) => Part::Random(n),
                Placeholder::Partition { buckets, .. } if !wild => Part::Partition {
                    buckets,
                    tokens: Vec::new(),
                },
                _ if !wild => return Err(dest_err(IndexOutOfRange, *token)),
                Placeholder::Wildcard(n) => {
                    used += 1;
                    Part::Token(check(n)?)
                }
                Placeholder::Partition { buckets, wildcards } => {
                    used += wildcards.len();
                    let tokens = wildcards.into_iter().map(check).collect::<Result<_, _>>()?;
                    Part::Partition { buckets, tokens }
                }
                Placeholder::Indexed { f, wildcard, n } => {
                    used += 1;
                    Part::Indexed {
                        f,
                        token: check(wildcard)?,
                        n,
                    }
                }
                Placeholder::Split { wildcard, delim } => {
                    used += 1;
                    Part::Split {
                        token: check(wildcard)?,
                        delim: delim.into_bytes().into(),
                    }
                }
            };
            parts.push(part);
        }
        if strict && wild && used < npwcs {
            return Err(dest_err(NotUsingAllWildcards, dest));
        }
        Ok(Transform {
            source: source.as_bytes().into(),
            source_tokens: stokens.len(),
            parts,
        })
    }

    /// Checks a mapping destination as nats-server does before compiling
    /// it (token shapes and function names first), then compiles it.
    pub fn for_mapping(source: &str, dest: &str) -> Result<Transform, TransformError> {
        use DestinationErrorKind::*;
        let mut after_fwc = false;
        for t in dest.split('.') {
            if t.is_empty() || after_fwc {
                return Err(dest_err(InvalidTransform, t));
            }
            if is_mustache(t) {
                if find_function(t).is_none() {
                    return Err(dest_err(UnknownFunction, t));
                }
                continue;
            }
            if t == ">" {
                after_fwc = true;
            } else if t.bytes().any(|b| matches!(b, b'\t' | b'\n' | 0x0c | b'\r' | b' ')) {
                return Err(dest_err(InvalidTransform, ""));
            }
        }
        Transform::new(source, dest, false)
    }

    /// The source pattern.
    pub fn source(&self) -> &[u8] {
        &self.source
    }

    /// Whether the destination is the same for every subject (no
    /// reference to the source's tokens).
    pub fn is_constant(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// Writes the destination for a subject split into `tokens` (which
    /// matched the source) to `out`.
    pub fn apply(&self, tokens: &[&[u8]], rng: &mut fastrand::Rng, out: &mut Vec<u8>) {
        let get = |i: usize| tokens.get(i).copied().unwrap_or_default();
        let last = self.parts.len().saturating_sub(1);
        for (i, part) in self.parts.iter().enumerate() {
            match part {
                Part::Rest => break,
                Part::Literal(t) => out.extend_from_slice(t),
                Part::Token(i) => out.extend_from_slice(get(*i)),
                Part::Partition { buckets, tokens: which } => {
                    let mut h = Fnv1a::default();
                    if which.is_empty() {
                        for (j, t) in tokens.iter().enumerate() {
                            if j > 0 {
                                h.write(b".");
                            }
                            h.write(t);
                        }
                    } else {
                        for &j in which {
                            h.write(get(j));
                        }
                    }
                    let n = if *buckets == 0 { 0 } else { h.0 % (*buckets as u32) };
                    out.extend_from_slice(n.to_string().as_bytes());
                }
                Part::Indexed { f, token, n } => indexed(*f, get(*token), *n, out),
                Part::Split { token, delim } => split(get(*token), delim, out),
                Part::Random(n) => {
                    let v = if *n == 0 { 0 } else { rng.i32(0..i32::MAX) % *n };
                    out.extend_from_slice(v.to_string().as_bytes());
                }
            }
            if i < last {
                out.push(b'.');
            }
        }
        if matches!(self.parts.last(), Some(Part::Rest)) {
            let from = self.source_tokens.saturating_sub(1);
            for (j, t) in tokens.iter().enumerate().skip(from) {
                out.extend_from_slice(t);
                if j + 1 < tokens.len() {
                    out.push(b'.');
                }
            }
        }
    }
}

/// A token of an import's `to` that names a source wildcard: `$1`..`$9...`
/// or `{{wildcard(n)}}` (nats-server's placeholders in reversible
/// transforms).
fn is_placeholder(token: &str) -> bool {
    let b = token.as_bytes();
    (b.len() > 1 && b[0] == b'$' && (b'1'..=b'9').contains(&b[1]))
        || call_args(token, "Wildcard").is_some_and(|a| split_args(a).len() == 1 && !a.is_empty())
}

/// An import whose `to` names wildcards (`bar.$2.$1`): the pattern of its
/// subjects in the importer's space (`bar.*.*`), the transform from the
/// exporter's subjects and its reverse (for interest), both strict, as
/// nats-server builds them. `None` when `to` names none (wildcards then
/// map in order).
pub fn import_pair(from: &str, to: &str) -> Option<Result<(String, Transform, Transform), TransformError>> {
    if !to.split('.').any(is_placeholder) {
        return None;
    }
    let mut placeholders = Vec::new();
    let here: Vec<&str> = to
        .split('.')
        .map(|t| {
            if is_placeholder(t) {
                placeholders.push(t);
                "*"
            } else {
                t
            }
        })
        .collect();
    let mut next = placeholders.iter();
    let back: Vec<&str> = from
        .split('.')
        .map(|t| if t == "*" { next.next().copied().unwrap_or(t) } else { t })
        .collect();
    let pair = Transform::new(from, to, true).and_then(|fwd| {
        Ok((
            here.join("."),
            fwd,
            Transform::new(&here.join("."), &back.join("."), true)?,
        ))
    });
    Some(pair)
}

/// Split, slice, left and right of one token; a size that does not fit
/// leaves the token whole.
fn indexed(f: Function, t: &[u8], n: i32, out: &mut Vec<u8>) {
    let len = t.len();
    let fits = n > 0 && (n as usize) < len;
    if !fits {
        out.extend_from_slice(t);
        return;
    }
    let n = n as usize;
    match f {
        Function::SplitFromLeft => {
            out.extend_from_slice(&t[..n]);
            out.push(b'.');
            out.extend_from_slice(&t[n..]);
        }
        Function::SplitFromRight => {
            out.extend_from_slice(&t[..len - n]);
            out.push(b'.');
            out.extend_from_slice(&t[len - n..]);
        }
        Function::SliceFromLeft => {
            let pieces: Vec<&[u8]> = t.chunks(n).collect();
            out.extend_from_slice(&pieces.join(&b'.'));
        }
        Function::SliceFromRight => {
            let rem = len % n;
            let mut pieces: Vec<&[u8]> = Vec::new();
            if rem > 0 {
                pieces.push(&t[..rem]);
            }
            pieces.extend(t[rem..].chunks(n));
            out.extend_from_slice(&pieces.join(&b'.'));
        }
        Function::Left => out.extend_from_slice(&t[..n]),
        Function::Right => out.extend_from_slice(&t[len - n..]),
        _ => out.extend_from_slice(t),
    }
}

/// `split(n, delim)`: the token's pieces around `delim` as tokens, empty
/// pieces left out.
fn split(t: &[u8], delim: &[u8], out: &mut Vec<u8>) {
    let pieces = go_split(t, delim);
    for (j, p) in pieces.iter().enumerate() {
        out.extend_from_slice(p);
        let next_non_empty = pieces.get(j + 1).is_some_and(|n| !n.is_empty());
        if next_non_empty && !(j == 0 && p.is_empty()) {
            out.push(b'.');
        }
    }
}

/// Go's `strings.Split`: an empty separator splits after each UTF-8
/// sequence (each invalid byte alone).
fn go_split<'a>(s: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    if sep.is_empty() {
        let mut out = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            let n = match std::str::from_utf8(&rest[..rest.len().min(4)]) {
                Ok(c) => c.chars().next().map_or(1, char::len_utf8),
                Err(e) if e.valid_up_to() > 0 => std::str::from_utf8(&rest[..e.valid_up_to()])
                    .map_or(1, |c| c.chars().next().map_or(1, char::len_utf8)),
                Err(_) => 1,
            };
            out.push(&rest[..n]);
            rest = &rest[n..];
        }
        return out;
    }
    let mut out = Vec::new();
    let mut from = 0;
    let mut i = 0;
    while i + sep.len() <= s.len() {
        if &s[i..i + sep.len()] == sep {
            out.push(&s[from..i]);
            i += sep.len();
            from = i;
        } else {
            i += 1;
        }
    }
    out.push(&s[from..]);
    out
}

/// 32-bit FNV-1a (nats-server's partition hash).
struct Fnv1a(u32);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0x811c_9dc5)
    }
}

impl Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u32;
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
    }
}

/// Whether a published subject's `tokens` fall under `pattern`: as
/// matching, except that a `*` or `>` token in the published subject is
/// only matched by the same wildcard (nats-server's subset match).
pub fn subset_match(tokens: &[&[u8]], pattern: &[u8]) -> bool {
    let mut n = 0;
    for (i, p) in pattern.split(|&b| b == b'.').enumerate() {
        n = i + 1;
        let Some(&t) = tokens.get(i) else { return false };
        if p.is_empty() {
            return false;
        }
        if p == b">" {
            return true;
        }
        if t.is_empty() || t == b">" {
            return false;
        }
        if t == b"*" {
            if p != b"*" {
                return false;
            }
            continue;
        }
        if p != b"*" && p != t {
            return false;
        }
    }
    tokens.len() == n
}

/// Splits a subject at `.`.
pub fn tokenize(subject: &[u8]) -> Vec<&[u8]> {
    subject.split(|&b| b == b'.').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(src: &str, dest: &str, subject: &str) -> String {
        let t = Transform::for_mapping(src, dest).unwrap();
        let mut out = Vec::new();
        t.apply(
            &tokenize(subject.as_bytes()),
            &mut fastrand::Rng::with_seed(1),
            &mut out,
        );
        String::from_utf8(out).unwrap()
    }

    fn refused(src: &str, dest: &str) -> String {
        Transform::for_mapping(src, dest).unwrap_err().to_string()
    }

    #[test]
    fn wildcards_and_rest() {
        assert_eq!(map("foo.*.*", "bar.$2.$1", "foo.a.b"), "bar.b.a");
        assert_eq!(
            map("foo.*.*", "bar.{{wildcard(2)}}.{{ Wildcard( 1 ) }}", "foo.a.b"),
            "bar.b.a"
        );
        assert_eq!(map("foo.>", "bar.>", "foo.a.b.c"), "bar.a.b.c");
        assert_eq!(map("foo.*.>", "bar.$1.>", "foo.a.b.c"), "bar.a.b.c");
        assert_eq!(map("foo", "bar", "foo"), "bar");
        assert_eq!(map("foo.*", "$foo.$1", "foo.x"), "$foo.x");
        // Indexes that name no wildcard take the first token.
        assert_eq!(map("foo.*", "bar.$0", "foo.x"), "bar.foo");
        assert_eq!(map("foo.*", "bar.$-1", "foo.x"), "bar.foo");
    }

    #[test]
    fn functions() {
        assert_eq!(map("a.*", "b.{{splitFromLeft(1,2)}}", "a.abcdef"), "b.ab.cdef");
        assert_eq!(map("a.*", "b.{{SplitFromRight(1,2)}}", "a.abcdef"), "b.abcd.ef");
        assert_eq!(map("a.*", "b.{{splitFromLeft(1,9)}}", "a.abc"), "b.abc");
        assert_eq!(map("a.*", "b.{{sliceFromLeft(1,2)}}", "a.abcde"), "b.ab.cd.e");
        assert_eq!(map("a.*", "b.{{sliceFromRight(1,2)}}", "a.abcde"), "b.a.bc.de");
        assert_eq!(map("a.*", "b.{{sliceFromLeft(1,2)}}", "a.abcd"), "b.ab.cd");
        assert_eq!(map("a.*", "b.{{left(1,2)}}", "a.abcdef"), "b.ab");
        assert_eq!(map("a.*", "b.{{right(1,2)}}", "a.abcdef"), "b.ef");
        assert_eq!(map("a.*", "b.{{split(1,-)}}", "a.a-b--c-"), "b.a.b.c");
        assert_eq!(map("a.*", "b.{{split(1,-)}}", "a.-a-b"), "b.a.b");
        assert_eq!(map("a.*", "b.{{split(1,-)}}", "a.---"), "b.");
        let fnv = |s: &[u8]| {
            let mut h = Fnv1a::default();
            h.write(s);
            h.0
        };
        assert_eq!(fnv(b"a"), 0xe40c292c, "FNV-1a test vector");
        assert_eq!(
            map("a.*", "b.{{partition(10,1)}}", "a.x"),
            format!("b.{}", fnv(b"x") % 10)
        );
        assert_eq!(
            map("a.*.*", "b.{{partition(7,2,1)}}", "a.x.y"),
            format!("b.{}", fnv(b"yx") % 7)
        );
        assert_eq!(
            map("a.*", "b.{{partition(10)}}", "a.x"),
            format!("b.{}", fnv(b"a.x") % 10)
        );
        assert_eq!(map("a", "b.{{partition(10)}}", "a"), format!("b.{}", fnv(b"a") % 10));
        let r = map("a.*", "b.{{random(5)}}.$1", "a.x");
        let n: i32 = r.split('.').nth(1).unwrap().parse().unwrap();
        assert!((0..5).contains(&n));
        assert_eq!(map("a.*", "b.{{random(0)}}", "a.x"), "b.0");
    }

    #[test]
    fn nats_server_errors() {
        assert_eq!(
            refused("foo.*", "bar.$2"),
            "invalid mapping destination: wildcard index out of range in $2: [2]"
        );
        assert_eq!(
            refused("foo", "bar.{{wildcard(1)}}"),
            "invalid mapping destination: wildcard index out of range in {{wildcard(1)}}"
        );
        assert_eq!(
            refused("foo.*", "bar.{{bogus(1)}}"),
            "invalid mapping destination: unknown function in {{bogus(1)}}"
        );
        assert_eq!(
            refused("foo.*", "bar..x"),
            "invalid mapping destination: invalid transform"
        );
        assert_eq!(
            refused("foo.*", "ba r.$1"),
            "invalid mapping destination: invalid transform"
        );
        assert_eq!(refused("foo.*", "bar.*"), "invalid subject");
        assert_eq!(refused("foo.>", "bar"), "invalid subject");
        assert_eq!(
            refused("foo.*", "{{random()}}.$1"),
            "invalid mapping destination: function argument is invalid or in the wrong format in {{random()}}"
        );
        assert_eq!(
            refused("foo.*", "{{wildcard()}}"),
            "invalid mapping destination: not enough arguments passed to the function in {{wildcard()}}"
        );
        assert_eq!(
            refused("foo.*", "{{wildcard(1,2)}}"),
            "invalid mapping destination: too many arguments passed to the function in {{wildcard(1,2)}}"
        );
        assert_eq!(
            refused("foo.*", "{{split(1,a b)}}"),
            "invalid mapping destination: function argument is invalid or in the wrong format in {{split(1,a b)}}"
        );
        assert!(Transform::for_mapping("foo.*.*", "{{partition(3,2,1)}}.$1.$2").is_ok());
        assert!(Transform::for_mapping("foo", "bar.{{partition(3)}}").is_ok());
    }

    #[test]
    fn strict_transforms_use_every_wildcard_and_only_wildcard() {
        assert!(Transform::new("a.*.*", "b.$2.$1", true).is_ok());
        assert_eq!(
            Transform::new("a.*.*", "b.$2", true).unwrap_err().to_string(),
            "invalid mapping destination: not using all of the token wildcard(s) in b.$2"
        );
        assert!(Transform::new("a.*", "b.{{partition(2,1)}}", true).is_err());
    }

    #[test]
    fn import_transforms_reverse() {
        let (here, fwd, rev) = import_pair("foo.*.*", "bar.$2.$1").unwrap().unwrap();
        assert_eq!(here, "bar.*.*");
        let run = |t: &Transform, s: &str| {
            let mut out = Vec::new();
            t.apply(&tokenize(s.as_bytes()), &mut fastrand::Rng::with_seed(0), &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(run(&fwd, "foo.x.y"), "bar.y.x");
        assert_eq!(run(&rev, "bar.y.x"), "foo.x.y");
        assert_eq!(run(&rev, "bar.y.*"), "foo.*.y", "a subscription's interest");
        assert!(import_pair("foo.*", "bar.*").is_none());
        assert!(
            import_pair("foo.*.*", "bar.$1").unwrap().is_err(),
            "every wildcard used"
        );
    }

    #[test]
    fn subset_matching() {
        fn t(s: &str) -> Vec<&[u8]> {
            tokenize(s.as_bytes())
        }
        assert!(subset_match(&t("foo.bar"), b"foo.*"));
        assert!(subset_match(&t("foo.*"), b"foo.*"));
        assert!(!subset_match(&t("foo.*"), b"foo.bar"));
        assert!(subset_match(&t("foo.a.b"), b"foo.>"));
        assert!(!subset_match(&t("foo"), b"foo.>"));
        assert!(!subset_match(&t("foo.a.b"), b"foo.*"));
    }

    #[test]
    fn arguments_parse_like_go_regexps() {
        assert_eq!(call_args("{{ wildcard (1) }}", "Wildcard"), Some("1"));
        assert_eq!(call_args("{{Wildcard(1)}}", "Wildcard"), Some("1"));
        assert_eq!(call_args("{{WILDCARD(1)}}", "Wildcard"), None);
        assert_eq!(call_args("{{splitfromleft(1,2)}}", "SplitFromLeft"), Some("1,2"));
        assert_eq!(call_args("{{split(1,2)}}", "SplitFromLeft"), None);
        assert_eq!(split_args("1,  2,\t3"), vec!["1", "2", "3"]);
        assert_eq!(split_args(""), vec![""]);
    }
}
