//! permessage-deflate (RFC 7692) without context takeover: every message is
//! compressed and inflated on its own, so a connection keeps no
//! compression state between messages (as nats-server negotiates it).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The empty stored block a sender strips from each message's end and a
/// receiver appends back before inflating.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Why a compressed message could not be inflated.
#[derive(Debug, thiserror::Error)]
pub enum InflateError {
    /// The deflate stream is corrupt.
    #[error("invalid compressed data: {0}")]
    Corrupt(String),
    /// It inflates past the limit.
    #[error("Maximum Message Payload Exceeded")]
    TooBig,
}

/// Inflates one compressed message, appending at most `limit` bytes to `out`.
pub fn inflate(deflated: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
    let mut d = Decompress::new(false);
    let start = out.len();
    let inputs: [&[u8]; 2] = [deflated, &TAIL];
    for input in inputs {
        let mut pos = 0;
        loop {
            if out.len() - start > limit {
                return Err(InflateError::TooBig);
            }
            out.reserve((input.len() * 4).clamp(256, 64 * 1024));
            let (before_in, before_out) = (d.total_in(), d.total_out());
            let status = d
                .decompress_vec(&input[pos..], out, FlushDecompress::Sync)
                .map_err(|e| InflateError::Corrupt(e.to_string()))?;
            let consumed = (d.total_in() - before_in) as usize;
            let produced = d.total_out() - before_out;
            pos += consumed;
            let full = out.len() == out.capacity();
            if matches!(status, Status::StreamEnd)
                || (!full && (pos >= input.len() || (consumed == 0 && produced == 0)))
            {
                break;
            }
        }
    }
    if out.len() - start > limit {
        return Err(InflateError::TooBig);
    }
    Ok(())
}

/// A reusable compressor for server frames (reset for each message).
pub struct Deflater {
    c: Compress,
}

impl Default for Deflater {
    fn default() -> Self {
        Deflater {
            c: Compress::new(Compression::fast(), false),
        }
    }
}

impl Deflater {
    /// Compresses `msg` as one message, appending to `out` without the
    /// trailing empty block.
    pub fn compress(&mut self, msg: &[u8], out: &mut Vec<u8>) {
        self.c.reset();
        let start = out.len();
        let mut pos = 0;
        loop {
            out.reserve(msg.len() / 2 + 64);
            let before = self.c.total_in();
            let _ = self.c.compress_vec(&msg[pos..], out, FlushCompress::Sync);
            pos += (self.c.total_in() - before) as usize;
            // Done once all input is in and the flush did not fill the buffer.
            if pos >= msg.len() && out.len() < out.capacity() {
                break;
            }
        }
        if out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for msg in [
            b"".to_vec(),
            b"MSG foo 1 5\r\nhello\r\n".to_vec(),
            (0..200_000u32).map(|i| (i % 251) as u8).collect(),
        ] {
            let mut z2 = Vec::new();
            Deflater::default().compress(&msg, &mut z2);
            let mut back2 = Vec::new();
            inflate(&z2, &mut back2, 1 << 20).unwrap();
            assert_eq!(back2, msg);
        }
    }

    #[test]
    fn limit_and_corruption() {
        let msg = vec![b'a'; 100_000];
        let mut z = Vec::new();
        Deflater::default().compress(&msg, &mut z);
        assert!(matches!(inflate(&z, &mut Vec::new(), 1000), Err(InflateError::TooBig)));
        assert!(matches!(
            inflate(&[0xff, 0xff, 0xff], &mut Vec::new(), 1000),
            Err(InflateError::Corrupt(_))
        ));
    }
}
