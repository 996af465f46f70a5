//! Compressed replies and events, as nats-server compresses what a
//! request asked for with `Accept-Encoding` (`$SYS` monitoring replies,
//! message trace events): `snappy` or `s2` (a Snappy-compatible framed
//! stream), else `gzip`, else the body as is, said `identity`. The
//! message then carries `Content-Encoding` in a header of its own.

use std::io::Write;

/// The header a request names the encodings it accepts in.
pub const ACCEPT_ENCODING: &str = "Accept-Encoding";
/// The header a compressed message names its encoding in.
pub const CONTENT_ENCODING: &str = "Content-Encoding";

/// How a reply or event is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentEncoding {
    /// A Snappy-compatible framed stream.
    Snappy,
    /// gzip.
    Gzip,
    /// Asked for something else: sent as is, and said so.
    Identity,
}

impl ContentEncoding {
    /// What an `Accept-Encoding` value asks for, read as nats-server reads
    /// it: any case, `snappy` or `s2` anywhere first, then `gzip`; `None`
    /// when it is empty.
    pub fn from_accept(value: &str) -> Option<ContentEncoding> {
        if value.is_empty() {
            return None;
        }
        let v = value.to_ascii_lowercase();
        Some(if v.contains("snappy") || v.contains("s2") {
            ContentEncoding::Snappy
        } else if v.contains("gzip") {
            ContentEncoding::Gzip
        } else {
            ContentEncoding::Identity
        })
    }

    /// What a header block (`NATS/1.0\r\n...`) accepts: the value of its
    /// first `Accept-Encoding` line (exact name, as nats-server looks it up).
    pub fn accepted_by(hdr: &[u8]) -> Option<ContentEncoding> {
        let key = ACCEPT_ENCODING.as_bytes();
        let mut from = 0;
        while let Some(i) = memchr::memmem::find(&hdr[from..], key).map(|i| i + from) {
            let after = i + key.len();
            if i >= 2 && &hdr[i - 2..i] == b"\r\n" && hdr.get(after) == Some(&b':') {
                let value = &hdr[after + 1..];
                let end = memchr::memmem::find(value, b"\r\n").unwrap_or(value.len());
                let text = String::from_utf8_lossy(&value[..end]);
                return ContentEncoding::from_accept(text.trim_start_matches(' '));
            }
            from = after;
        }
        None
    }

    /// The `Content-Encoding` value.
    pub fn name(self) -> &'static str {
        match self {
            ContentEncoding::Snappy => "snappy",
            ContentEncoding::Gzip => "gzip",
            ContentEncoding::Identity => "identity",
        }
    }

    /// `body` encoded.
    pub fn encode(self, body: &[u8]) -> Vec<u8> {
        match self {
            ContentEncoding::Snappy => super::codec::snappy_stream(body),
            ContentEncoding::Gzip => {
                let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                // Writing to a Vec cannot fail.
                let _ = w.write_all(body);
                w.finish().unwrap_or_default()
            }
            ContentEncoding::Identity => body.to_vec(),
        }
    }
}

/// A message of `body` as nats-server sends it to a requester that asked
/// for `encoding`: its header block length (when it has one) and its
/// bytes. An empty body goes as is.
pub fn message(encoding: Option<ContentEncoding>, body: &[u8]) -> (Option<usize>, Vec<u8>) {
    match encoding {
        Some(e) if !body.is_empty() => {
            let mut out = format!("NATS/1.0\r\n{CONTENT_ENCODING}: {}\r\n\r\n", e.name()).into_bytes();
            let header_len = out.len();
            out.extend_from_slice(&e.encode(body));
            (Some(header_len), out)
        }
        _ => (None, body.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn accept_encoding_reads_as_nats_server_reads_it() {
        let e = ContentEncoding::from_accept;
        assert_eq!(e(""), None);
        assert_eq!(e("gzip, snappy"), Some(ContentEncoding::Snappy));
        assert_eq!(e("S2"), Some(ContentEncoding::Snappy));
        assert_eq!(e("GZIP"), Some(ContentEncoding::Gzip));
        assert_eq!(e("br"), Some(ContentEncoding::Identity));
        let h = |s: &str| ContentEncoding::accepted_by(s.as_bytes());
        assert_eq!(
            h("NATS/1.0\r\nAccept-Encoding: gzip\r\n\r\n"),
            Some(ContentEncoding::Gzip)
        );
        assert_eq!(h("NATS/1.0\r\nX-Accept-Encoding: gzip\r\n\r\n"), None);
        assert_eq!(h("NATS/1.0\r\naccept-encoding: gzip\r\n\r\n"), None, "exact name");
        assert_eq!(
            h("NATS/1.0\r\nA: Accept-Encoding\r\nAccept-Encoding:snappy\r\n\r\n"),
            Some(ContentEncoding::Snappy)
        );
        assert_eq!(h("NATS/1.0\r\nAccept-Encoding: \r\n\r\n"), None);
    }

    #[test]
    fn encoded_bodies_decode_back() {
        let body =
            br#"{"server":{"name":"x"},"data":{"a":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}}"#.repeat(50);
        let (hl, gz) = message(Some(ContentEncoding::Gzip), &body);
        assert_eq!(&gz[..hl.unwrap()], b"NATS/1.0\r\nContent-Encoding: gzip\r\n\r\n");
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&gz[hl.unwrap()..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, body);
        let (hl, sn) = message(Some(ContentEncoding::Snappy), &body);
        let stream = &sn[hl.unwrap()..];
        assert!(stream.starts_with(b"\xff\x06\x00\x00sNaPpY"));
        assert!(stream.len() < body.len() / 4, "compressed");
        let mut d = super::super::Deframer::default();
        d.push(stream);
        let mut out = Vec::new();
        while d.decode(&mut out, usize::MAX).unwrap() {}
        assert_eq!(out, body);
        assert_eq!(
            message(Some(ContentEncoding::Identity), b"{}").1,
            b"NATS/1.0\r\nContent-Encoding: identity\r\n\r\n{}"
        );
        assert_eq!(message(Some(ContentEncoding::Gzip), b""), (None, Vec::new()));
        assert_eq!(message(None, b"{}"), (None, b"{}".to_vec()));
    }
}
