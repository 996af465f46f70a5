//! Subject syntax: validation and tokenising (nats-server's sublist rules).
//!
//! Tokens are separated by `.`; an empty token is invalid; a token may not
//! contain whitespace; `*` and `>` are wildcards only when they are the whole
//! token, and `>` only as the last token.

/// Splits a subject into its tokens.
pub fn tokens(subject: &[u8]) -> impl Iterator<Item = &[u8]> + Clone {
    subject.split(|&b| b == b'.')
}

fn bad_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c)
}

/// True when `subject` is a valid subscription subject (wildcards allowed).
pub fn is_valid_subject(subject: &[u8]) -> bool {
    if subject.is_empty() {
        return false;
    }
    let mut saw_fwc = false;
    for tok in tokens(subject) {
        if tok.is_empty() || saw_fwc {
            return false;
        }
        if tok.len() == 1 && tok[0] == b'>' {
            saw_fwc = true;
            continue;
        }
        if tok.iter().any(|&b| bad_byte(b)) {
            return false;
        }
    }
    true
}

/// True when `subject` is valid and contains no wildcard token: the only
/// subjects a client may publish to (checked in pedantic mode).
pub fn is_valid_literal_subject(subject: &[u8]) -> bool {
    is_valid_subject(subject) && !has_wildcard(subject)
}

/// True when one of the subject's tokens is `*` or `>`.
pub fn has_wildcard(subject: &[u8]) -> bool {
    tokens(subject).any(|t| t == b"*" || t == b">")
}

/// True when the queue group name is acceptable (no whitespace, not empty).
pub fn is_valid_queue(queue: &[u8]) -> bool {
    !queue.is_empty() && !queue.iter().any(|&b| bad_byte(b))
}

/// True when the (possibly wildcard) `pattern` matches the literal `subject`.
pub fn matches(pattern: &[u8], subject: &[u8]) -> bool {
    let mut p = tokens(pattern);
    let mut s = tokens(subject);
    loop {
        match (p.next(), s.next()) {
            (Some(b">"), Some(_)) => return true,
            (Some(b"*"), Some(_)) => {}
            (Some(pt), Some(st)) if pt == st => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// True when every subject `sub` (a pattern) matches is also matched by
/// `pattern`.
pub fn is_subset(sub: &[u8], pattern: &[u8]) -> bool {
    let mut p = tokens(pattern);
    let mut s = tokens(sub);
    loop {
        match (p.next(), s.next()) {
            (Some(b">"), Some(_)) => return true,
            (Some(b"*"), Some(st)) if st != b">" => {}
            (Some(pt), Some(st)) if pt == st => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// True when some literal subject matches both patterns.
pub fn intersects(a: &[u8], b: &[u8]) -> bool {
    let mut x = tokens(a);
    let mut y = tokens(b);
    loop {
        match (x.next(), y.next()) {
            (Some(b">"), Some(_)) | (Some(_), Some(b">")) => return true,
            (Some(b"*"), Some(_)) | (Some(_), Some(b"*")) => {}
            (Some(t), Some(u)) if t == u => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The narrowest pattern both patterns cover (`in.*.x` and `in.feed.>`
/// give `in.feed.x`), when they intersect.
pub fn intersection(a: &[u8], b: &[u8]) -> Option<Vec<u8>> {
    let (mut x, mut y) = (tokens(a), tokens(b));
    let mut out: Vec<u8> = Vec::with_capacity(a.len().max(b.len()));
    let push = |out: &mut Vec<u8>, t: &[u8]| {
        if !out.is_empty() {
            out.push(b'.');
        }
        out.extend_from_slice(t);
    };
    loop {
        match (x.next(), y.next()) {
            (Some(b">"), Some(t)) => {
                push(&mut out, t);
                y.clone().for_each(|t| push(&mut out, t));
                return Some(out);
            }
            (Some(t), Some(b">")) => {
                push(&mut out, t);
                x.clone().for_each(|t| push(&mut out, t));
                return Some(out);
            }
            (Some(b"*"), Some(t)) | (Some(t), Some(b"*")) => push(&mut out, t),
            (Some(t), Some(u)) if t == u => push(&mut out, t),
            (None, None) => return Some(out),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersections_are_the_narrowest_common_pattern() {
        let i = |a: &[u8], b: &[u8]| intersection(a, b).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(i(b"in.*.x", b"in.feed.>").as_deref(), Some("in.feed.x"));
        assert_eq!(i(b"a.>", b"a.*.c").as_deref(), Some("a.*.c"));
        assert_eq!(i(b"a.*", b"*.b").as_deref(), Some("a.b"));
        assert_eq!(i(b">", b"x.y").as_deref(), Some("x.y"));
        assert_eq!(i(b"a.b", b"a.c"), None);
        assert_eq!(i(b"a", b"a.b"), None);
    }

    #[test]
    fn subsets_and_intersections() {
        assert!(is_subset(b"in.feed.*", b"in.feed.>"));
        assert!(is_subset(b"in.feed.x", b"in.*.x"));
        assert!(is_subset(b"in.*", b"in.*"));
        assert!(!is_subset(b"in.>", b"in.*"));
        assert!(!is_subset(b"in.*", b"in.x"));
        assert!(!is_subset(b"in", b"in.>"));
        assert!(intersects(b"in.>", b"in.feed.x"));
        assert!(intersects(b"in.*.x", b"in.feed.*"));
        assert!(!intersects(b"in.a", b"in.b"));
        assert!(!intersects(b"in.a.b", b"in.*"));
    }

    #[test]
    fn validity() {
        for ok in [
            "foo", "foo.bar", "foo.*", "foo.>", "*", ">", "foo*.bar", "a.*.c", "$SYS.>",
        ] {
            assert!(is_valid_subject(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "foo.",
            ".foo",
            "foo..bar",
            "foo.>.bar",
            "foo bar",
            "foo\tbar",
            ">.a",
        ] {
            assert!(!is_valid_subject(bad.as_bytes()), "{bad}");
        }
        assert!(is_valid_literal_subject(b"foo*.bar"));
        assert!(!is_valid_literal_subject(b"foo.*"));
        assert!(!is_valid_literal_subject(b"foo.>"));
    }

    #[test]
    fn matching() {
        assert!(matches(b"foo.*", b"foo.bar"));
        assert!(!matches(b"foo.*", b"foo.bar.baz"));
        assert!(matches(b"foo.>", b"foo.bar.baz"));
        assert!(!matches(b"foo.>", b"foo"));
        assert!(matches(b">", b"foo"));
        assert!(matches(b"*.bar", b"foo.bar"));
        assert!(!matches(b"foo", b"foo.bar"));
        assert!(!matches(b"foo.bar", b"foo"));
    }
}
