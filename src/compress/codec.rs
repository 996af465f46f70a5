//! The S2 stream format as klauspost/compress/s2 (and so nats-server)
//! writes and reads it: a stream identifier chunk, then data chunks
//! (`type`, 24-bit little-endian length, masked CRC-32C of the plain
//! bytes, then the S2 block or the plain bytes). nats-server writes each
//! flush as a whole stream (identifier included) and reads one endless
//! concatenation of them; so do we. The S2 blocks themselves are minlz's
//! (byte-compatible with Go's encoder and decoder).

use super::mode::Level;

const STREAM_ID: &[u8; 10] = b"\xff\x06\x00\x00S2sTwO";
const SNAPPY_ID: &[u8; 6] = b"sNaPpY";
const CHUNK_COMPRESSED: u8 = 0x00;
const CHUNK_PLAIN: u8 = 0x01;
const CHUNK_STREAM_ID: u8 = 0xff;
/// Plain bytes per data chunk written (the Go writer's default block).
const BLOCK: usize = 1 << 20;
/// Largest decoded block accepted (the Go reader's default limit).
const MAX_BLOCK: usize = 4 << 20;
/// Largest chunk body accepted: a compressed block of MAX_BLOCK plus its
/// CRC, or a skippable chunk's 24-bit most.
const MAX_CHUNK: usize = (1 << 24) - 1;

static CRC32C: crc::Crc<u32, crc::Table<16>> = crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

/// The S2 stream's checksum of plain bytes (`parts` one after the
/// other): CRC-32C, rotated and offset as the Snappy framing format masks
/// it.
fn masked_crc_parts(parts: &[&[u8]]) -> u32 {
    crc32c(parts).rotate_right(15).wrapping_add(0xa282_ead8)
}

fn masked_crc(data: &[u8]) -> u32 {
    masked_crc_parts(&[data])
}

/// CRC-32C: with the CPU's instruction where it has one (every x86-64
/// with SSE 4.2; several times the table's speed, and every byte a link
/// carries is summed), else the crc crate's slice-by-16 table.
fn crc32c(parts: &[&[u8]]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("sse4.2") {
        let mut c = !0u32;
        for p in parts {
            // SAFETY: the CPU has SSE 4.2 (checked just above).
            c = unsafe { crc32c_sse42(c, p) };
        }
        return !c;
    }
    let mut d = CRC32C.digest();
    for p in parts {
        d.update(p);
    }
    d.finalize()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn crc32c_sse42(mut c: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut words = data.chunks_exact(8);
    let mut c64 = u64::from(c);
    for w in &mut words {
        c64 = _mm_crc32_u64(c64, u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
    c = c64 as u32;
    for b in words.remainder() {
        c = _mm_crc32_u8(c, *b);
    }
    c
}

/// What an S2 stream from a peer can get wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum S2Error {
    /// The first chunk was not the stream identifier.
    #[error("s2: corrupt input (no stream identifier)")]
    NoStreamId,
    /// A reserved unskippable chunk type.
    #[error("s2: unsupported chunk type {0:#04x}")]
    Unsupported(u8),
    /// A chunk too large, a block that does not decode, or one past 4 MiB.
    #[error("s2: corrupt input")]
    Corrupt,
    /// The plain bytes do not match the chunk's checksum.
    #[error("s2: corrupt input, crc mismatch")]
    Crc,
}

/// Writes outbound bytes as S2 streams, one per [`Framer::frame`] call.
#[derive(Default)]
pub struct Framer {
    encoder: minlz::Encoder,
}

impl std::fmt::Debug for Framer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Framer")
    }
}

impl Framer {
    /// Appends `plain` to `out` as one whole S2 stream at `level`.
    pub fn frame(&mut self, level: Level, plain: &[u8], out: &mut Vec<u8>) {
        self.frame_parts(level, &[plain], out);
    }

    /// Appends the bytes of `parts`, one after the other, to `out` as one
    /// whole S2 stream at `level` (uncompressed: copied once, straight
    /// from the parts).
    pub fn frame_parts(&mut self, level: Level, parts: &[&[u8]], out: &mut Vec<u8>) {
        out.extend_from_slice(STREAM_ID);
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if level == Level::Uncompressed {
            // Blocks of BLOCK bytes across the parts.
            let mut block: Vec<&[u8]> = Vec::new();
            let mut len = 0;
            let flush = |block: &mut Vec<&[u8]>, len: &mut usize, out: &mut Vec<u8>| {
                if *len == 0 {
                    return;
                }
                let n = *len + 4;
                out.extend_from_slice(&[CHUNK_PLAIN, n as u8, (n >> 8) as u8, (n >> 16) as u8]);
                out.extend_from_slice(&masked_crc_parts(block).to_le_bytes());
                for p in block.iter() {
                    out.extend_from_slice(p);
                }
                block.clear();
                *len = 0;
            };
            out.reserve(total + 8 * (total / BLOCK + 1));
            for p in parts {
                let mut p: &[u8] = p;
                while !p.is_empty() {
                    let take = (BLOCK - len).min(p.len());
                    block.push(&p[..take]);
                    len += take;
                    p = &p[take..];
                    if len == BLOCK {
                        flush(&mut block, &mut len, out);
                    }
                }
            }
            flush(&mut block, &mut len, out);
            return;
        }
        let joined;
        let plain: &[u8] = if parts.len() == 1 {
            parts[0]
        } else {
            joined = parts.concat();
            &joined
        };
        for block in plain.chunks(BLOCK) {
            let encoded = match level {
                Level::Better => self.encoder.encode_better(block),
                Level::Best => self.encoder.encode_best(block),
                _ => self.encoder.encode(block),
            };
            data_chunk(block, &encoded, out);
        }
    }
}

/// Appends the data chunk of `block`, given its `encoded` form: as the Go
/// writer, stored plain unless compression saves enough to be worth the
/// reader's work.
fn data_chunk(block: &[u8], encoded: &[u8], out: &mut Vec<u8>) {
    let worth = block.len() >= 32 && encoded.len() < block.len() - block.len() / 32 - 5;
    let (kind, body) = if worth {
        (CHUNK_COMPRESSED, encoded)
    } else {
        (CHUNK_PLAIN, block)
    };
    let len = body.len() + 4;
    out.extend_from_slice(&[kind, len as u8, (len >> 8) as u8, (len >> 16) as u8]);
    out.extend_from_slice(&masked_crc(block).to_le_bytes());
    out.extend_from_slice(body);
}

/// Plain bytes per block of a Snappy-compatible stream (the Go writer's
/// limit in that mode).
const SNAPPY_BLOCK: usize = 64 << 10;

/// `plain` as one Snappy-compatible framed stream, as klauspost's writer
/// with `WriterSnappyCompat` writes it (what nats-server sends a request
/// that accepts `snappy`): Snappy's stream identifier and blocks any
/// Snappy or S2 reader decodes.
pub fn snappy_stream(plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plain.len() / 2 + 16);
    out.extend_from_slice(&[CHUNK_STREAM_ID, 0x06, 0x00, 0x00]);
    out.extend_from_slice(SNAPPY_ID);
    for block in plain.chunks(SNAPPY_BLOCK) {
        data_chunk(block, &minlz::encode_snappy(block), &mut out);
    }
    out
}

/// Reads a peer's S2 streams as their bytes arrive, in any cut.
#[derive(Debug, Default)]
pub struct Deframer {
    /// Bytes not yet decoded (a chunk not yet whole, or whole chunks left
    /// by a bounded [`Deframer::decode`]).
    pending: Vec<u8>,
    /// Whether the stream identifier came.
    started: bool,
    /// A reused buffer for decoded blocks.
    block: Vec<u8>,
}

impl Deframer {
    /// Takes `raw` bytes from the peer.
    pub fn push(&mut self, raw: &[u8]) {
        self.pending.extend_from_slice(raw);
    }

    /// Appends the plain bytes of the whole chunks taken so far to `out`,
    /// stopping once `out` grew by `limit` or more; true when whole
    /// chunks may be left (call again before pushing more).
    pub fn decode(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<bool, S2Error> {
        let pending = std::mem::take(&mut self.pending);
        let start = out.len();
        let mut at = 0;
        let mut more = false;
        while pending.len() - at >= 4 {
            if out.len() - start >= limit {
                more = true;
                break;
            }
            match self.chunk(&pending[at..], out)? {
                Some(used) => at += used,
                None => break,
            }
        }
        self.pending = pending;
        self.pending.drain(..at);
        Ok(more)
    }

    /// Decodes the chunk at the front of `buf` if it is whole; returns
    /// the bytes it took.
    fn chunk(&mut self, buf: &[u8], out: &mut Vec<u8>) -> Result<Option<usize>, S2Error> {
        let kind = buf[0];
        let len = usize::from(buf[1]) | usize::from(buf[2]) << 8 | usize::from(buf[3]) << 16;
        if len > MAX_CHUNK {
            return Err(S2Error::Corrupt);
        }
        if buf.len() - 4 < len {
            return Ok(None);
        }
        let body = &buf[4..4 + len];
        if kind == CHUNK_STREAM_ID {
            if len != 6 || (body != b"S2sTwO" && body != SNAPPY_ID) {
                return Err(S2Error::Corrupt);
            }
            self.started = true;
            return Ok(Some(4 + len));
        }
        if !self.started {
            return Err(S2Error::NoStreamId);
        }
        match kind {
            CHUNK_COMPRESSED | CHUNK_PLAIN => {
                if len < 4 {
                    return Err(S2Error::Corrupt);
                }
                let crc = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
                let data = &body[4..];
                let plain: &[u8] = if kind == CHUNK_PLAIN {
                    if data.len() > MAX_BLOCK {
                        return Err(S2Error::Corrupt);
                    }
                    data
                } else {
                    // The length first: a block may claim any size.
                    let (n, _) = minlz::decode_len(data).map_err(|_| S2Error::Corrupt)?;
                    if n > MAX_BLOCK {
                        return Err(S2Error::Corrupt);
                    }
                    self.block.resize(n, 0);
                    let got = minlz::decode_into(&mut self.block, data).map_err(|_| S2Error::Corrupt)?;
                    &self.block[..got]
                };
                if masked_crc(plain) != crc {
                    return Err(S2Error::Crc);
                }
                out.extend_from_slice(plain);
            }
            0x02..=0x7f => return Err(S2Error::Unsupported(kind)),
            // Skippable chunks (padding, the seek index).
            _ => {}
        }
        Ok(Some(4 + len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(level: Level, plain: &[u8], cut: usize) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut f = Framer::default();
        f.frame(level, plain, &mut wire);
        f.frame(level, plain, &mut wire);
        let mut d = Deframer::default();
        let mut out = Vec::new();
        for piece in wire.chunks(cut.max(1)) {
            d.push(piece);
            while d.decode(&mut out, 1 << 20).unwrap() {}
        }
        out
    }

    #[test]
    fn streams_round_trip_at_every_level_and_cut() {
        let text: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("RMSG $G foo.{} 5\r\nhello\r\n", i % 97).into_bytes())
            .collect();
        for level in [Level::Uncompressed, Level::Fast, Level::Better, Level::Best] {
            for cut in [1, 7, 4096, 1 << 22] {
                if cut == 1 && text.len() > 100_000 {
                    let small = &text[..5000];
                    let mut twice = small.to_vec();
                    twice.extend_from_slice(small);
                    assert_eq!(roundtrip(level, small, cut), twice);
                    continue;
                }
                let mut twice = text.clone();
                twice.extend_from_slice(&text);
                assert_eq!(roundtrip(level, &text, cut), twice, "{level:?} cut {cut}");
            }
        }
    }

    #[test]
    fn the_cpu_crc_is_the_tables() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for cut in [0, 1, 7, 8, 9, 4096, 9999] {
            let (a, b) = data.split_at(cut);
            assert_eq!(crc32c(&[a, b]), CRC32C.checksum(&data), "cut {cut}");
        }
        // The Snappy framing format's example: CRC-32C of "123456789".
        assert_eq!(crc32c(&[b"123456789"]), 0xe306_9283);
    }

    #[test]
    fn parts_frame_as_their_concatenation() {
        let parts: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8; 70_000 + i * 11]).collect();
        let slices: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
        let joined = parts.concat();
        for level in [Level::Uncompressed, Level::Fast] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            Framer::default().frame_parts(level, &slices, &mut a);
            Framer::default().frame(level, &joined, &mut b);
            assert_eq!(a, b, "{level:?}");
        }
    }

    #[test]
    fn matches_the_go_writer_byte_for_byte_for_a_small_flush() {
        // nats-server's writer, one flush of "PING\r\nPONG\r\n" (short
        // input: stored plain).
        let mut wire = Vec::new();
        Framer::default().frame(Level::Fast, b"PING\r\nPONG\r\n", &mut wire);
        assert_eq!(&wire[..14], b"\xff\x06\x00\x00S2sTwO\x01\x10\x00\x00");
        assert_eq!(&wire[18..], b"PING\r\nPONG\r\n");
        assert_eq!(wire.len(), 30);
    }

    fn decode_all(bytes: &[&[u8]]) -> Result<Vec<u8>, S2Error> {
        let mut d = Deframer::default();
        let mut out = Vec::new();
        for b in bytes {
            d.push(b);
            while d.decode(&mut out, 1 << 20)? {}
        }
        Ok(out)
    }

    #[test]
    fn bad_streams_are_refused() {
        assert_eq!(
            decode_all(&[b"\x01\x05\x00\x00\x00\x00\x00\x00x"]),
            Err(S2Error::NoStreamId)
        );
        let mut wire = Vec::new();
        Framer::default().frame(Level::Uncompressed, b"hello world", &mut wire);
        let last = wire.len() - 1;
        wire[last] ^= 1;
        assert_eq!(decode_all(&[&wire]), Err(S2Error::Crc));
        assert_eq!(
            decode_all(&[STREAM_ID, b"\x05\x01\x00\x00x"]),
            Err(S2Error::Unsupported(5))
        );
        // A block claiming 256 MiB is refused before anything is allocated.
        let chunk = [0u8, 10, 0, 0, 0, 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x01, 0];
        assert_eq!(decode_all(&[STREAM_ID, &chunk]), Err(S2Error::Corrupt));
        // Padding is skipped.
        assert_eq!(decode_all(&[STREAM_ID, b"\xfe\x02\x00\x00ab"]), Ok(Vec::new()));
    }

    #[test]
    fn a_bomb_is_inflated_a_step_at_a_time() {
        let zeros = vec![0u8; 4 << 20];
        let mut wire = Vec::new();
        Framer::default().frame(Level::Best, &zeros, &mut wire);
        assert!(wire.len() < 4 << 10, "{}", wire.len());
        let mut d = Deframer::default();
        d.push(&wire);
        let mut out = Vec::new();
        let mut steps = 0;
        while d.decode(&mut out, 1 << 20).unwrap() {
            assert!(out.len() <= 2 << 20, "bounded steps");
            out.clear();
            steps += 1;
        }
        assert!(steps >= 3, "{steps}");
    }
}
