//! WebSocket framing (RFC 6455), sans-IO: a [`Decoder`] turns masked client
//! frames into the NATS bytes they carry plus control events, and the
//! encoders write unmasked server frames.

use super::deflate;
use crate::proto::errors::CloseReason;

/// Continuation frame opcode.
pub const OP_CONTINUATION: u8 = 0;
/// Text frame opcode.
pub const OP_TEXT: u8 = 1;
/// Binary frame opcode.
pub const OP_BINARY: u8 = 2;
/// Close frame opcode.
pub const OP_CLOSE: u8 = 8;
/// Ping frame opcode.
pub const OP_PING: u8 = 9;
/// Pong frame opcode.
pub const OP_PONG: u8 = 10;

const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;
const RSV23: u8 = 0x30;
const MASK: u8 = 0x80;
/// Control frames carry at most this many payload bytes.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Close status: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close status: going away.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close status: protocol error.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close status: no status received (never sent on the wire).
pub const CLOSE_NO_STATUS: u16 = 1005;
/// Close status: invalid payload data.
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
/// Close status: policy violation.
pub const CLOSE_POLICY: u16 = 1008;
/// Close status: message too big.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close status: internal server error.
pub const CLOSE_INTERNAL: u16 = 1011;

/// A frame-level error: the close status and text the server answers with
/// before it closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("websocket: {text} (status {status})")]
pub struct FrameError {
    /// The close status sent to the client.
    pub status: u16,
    /// Why, as the close frame's body says it.
    pub text: String,
}

impl FrameError {
    fn protocol(text: impl Into<String>) -> FrameError {
        FrameError {
            status: CLOSE_PROTOCOL_ERROR,
            text: text.into(),
        }
    }
}

/// A control frame the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Answer with a pong carrying this payload.
    Ping(Vec<u8>),
    /// The client closes: answer with this close payload (empty when the
    /// client gave no status) and end the connection.
    Close(Vec<u8>),
}

#[derive(Debug, Clone, Copy)]
struct FrameHead {
    opcode: u8,
    fin: bool,
    remaining: u64,
    mask: [u8; 4],
    mask_pos: usize,
}

/// Decodes the frames a client sends.
#[derive(Debug)]
pub struct Decoder {
    compression: bool,
    /// Frames must be masked (unless the client asked `Nats-No-Masking`).
    require_mask: bool,
    max_message: usize,
    max_payload: usize,
    frame: Option<FrameHead>,
    /// Inside a data message (its final frame not seen yet).
    in_message: bool,
    /// The current message is compressed.
    compressed: bool,
    /// A compressed message's bytes so far.
    deflated: Vec<u8>,
    /// A control frame's payload so far.
    control: Vec<u8>,
    /// A close frame was seen: the rest of the input is ignored.
    closed: bool,
}

/// The largest message (compressed, or inflated) a connection may send in
/// one WebSocket message: room for several NATS operations of
/// `max_payload`, capped, as nats-server bounds it.
pub fn max_message_size(max_payload: usize) -> usize {
    max_payload.max(1).saturating_mul(8).min(64 << 20)
}

fn header_len(b: &[u8]) -> Option<usize> {
    let b1 = *b.get(1)?;
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    Some(2 + ext + if b1 & MASK != 0 { 4 } else { 0 })
}

impl Decoder {
    /// A decoder; `compression` when permessage-deflate was negotiated.
    pub fn new(compression: bool, max_payload: usize) -> Decoder {
        Decoder {
            compression,
            require_mask: true,
            max_message: max_message_size(max_payload),
            max_payload,
            frame: None,
            in_message: false,
            compressed: false,
            deflated: Vec::new(),
            control: Vec::new(),
            closed: false,
        }
    }

    /// Accepts unmasked frames (the client sent `Nats-No-Masking: true`).
    pub fn without_masking(mut self) -> Decoder {
        self.require_mask = false;
        self
    }

    /// Decodes what `input` holds: application bytes are appended to `data`,
    /// control frames to `controls`. Returns how many input bytes were used
    /// (an incomplete frame header is left for the next call). After a
    /// close frame nothing more is decoded.
    pub fn decode(
        &mut self,
        input: &mut [u8],
        data: &mut Vec<u8>,
        controls: &mut Vec<Control>,
    ) -> Result<usize, FrameError> {
        if self.closed {
            return Ok(input.len());
        }
        let mut pos = 0;
        loop {
            let Some(mut f) = self.frame else {
                let rest = &input[pos..];
                let Some(need) = header_len(rest) else { return Ok(pos) };
                if rest.len() < need {
                    return Ok(pos);
                }
                self.frame = Some(self.head(&rest[..need])?);
                pos += need;
                continue;
            };
            let avail = (input.len() - pos) as u64;
            let control = f.opcode >= OP_CLOSE;
            if avail == 0 && f.remaining > 0 {
                return Ok(pos);
            }
            let take = f.remaining.min(avail) as usize;
            let chunk = &mut input[pos..pos + take];
            unmask(chunk, f.mask, f.mask_pos);
            f.mask_pos += take;
            pos += take;
            f.remaining -= take as u64;
            if control {
                self.control.extend_from_slice(chunk);
            } else if self.compressed {
                if self.deflated.len() + take > self.max_message {
                    return Err(too_big());
                }
                self.deflated.extend_from_slice(chunk);
            } else {
                data.extend_from_slice(chunk);
            }
            if f.remaining > 0 {
                self.frame = Some(f);
                return Ok(pos);
            }
            self.frame = None;
            if control {
                let payload = std::mem::take(&mut self.control);
                match f.opcode {
                    OP_PING => controls.push(Control::Ping(payload)),
                    OP_CLOSE => {
                        controls.push(Control::Close(close_reply(&payload)?));
                        self.closed = true;
                        return Ok(input.len());
                    }
                    _ => {} // pong: nothing to do
                }
            } else if f.fin {
                self.in_message = false;
                if self.compressed {
                    self.compressed = false;
                    let deflated = std::mem::take(&mut self.deflated);
                    deflate::inflate(&deflated, data, self.max_message.max(self.max_payload))
                        .map_err(|e| FrameError::protocol(e.to_string()))?;
                }
            }
        }
    }

    fn head(&mut self, h: &[u8]) -> Result<FrameHead, FrameError> {
        let (b0, b1) = (h[0], h[1]);
        let opcode = b0 & 0x0f;
        let fin = b0 & FIN != 0;
        let rsv1 = b0 & RSV1 != 0;
        if b0 & RSV23 != 0 {
            return Err(FrameError::protocol("RSV2 and RSV3 must be clear"));
        }
        if rsv1 && !self.compression {
            return Err(FrameError::protocol(
                "compressed frame received without negotiated permessage-deflate",
            ));
        }
        let masked = b1 & MASK != 0;
        if !masked && self.require_mask {
            return Err(FrameError::protocol("mask bit missing"));
        }
        let (len, rest) = match b1 & 0x7f {
            126 => (u16::from_be_bytes([h[2], h[3]]) as u64, &h[4..]),
            127 => {
                let l = u64::from_be_bytes(h[2..10].try_into().expect("8 bytes"));
                if l >> 63 != 0 {
                    return Err(FrameError::protocol("invalid 64-bit payload length"));
                }
                (l, &h[10..])
            }
            l => (l as u64, &h[2..]),
        };
        let mask = if masked {
            [rest[0], rest[1], rest[2], rest[3]]
        } else {
            [0; 4]
        };
        match opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if len > MAX_CONTROL_PAYLOAD as u64 {
                    return Err(FrameError::protocol(format!(
                        "control frame length bigger than maximum allowed of {MAX_CONTROL_PAYLOAD} bytes"
                    )));
                }
                if !fin {
                    return Err(FrameError::protocol("control frame does not have final bit set"));
                }
                if rsv1 {
                    return Err(FrameError::protocol("control frame must not be compressed"));
                }
            }
            OP_TEXT | OP_BINARY => {
                if self.in_message {
                    return Err(FrameError::protocol(
                        "new message started before final frame for previous message was received",
                    ));
                }
                self.in_message = !fin;
                self.compressed = rsv1;
            }
            OP_CONTINUATION => {
                if !self.in_message {
                    return Err(FrameError::protocol("invalid continuation frame"));
                }
                self.in_message = !fin;
            }
            other => return Err(FrameError::protocol(format!("unknown opcode {other}"))),
        }
        if opcode < OP_CLOSE && !self.compressed && len > self.max_message as u64 {
            return Err(too_big());
        }
        Ok(FrameHead {
            opcode,
            fin,
            remaining: len,
            mask,
            mask_pos: 0,
        })
    }
}

/// XORs `buf` with the 4-byte `mask` starting at mask position `pos`,
/// eight bytes at a time (the per-byte loop cost more than the rest of the
/// frame decoding in a profile of WebSocket pub/sub).
fn unmask(buf: &mut [u8], mask: [u8; 4], pos: usize) {
    let m = [
        mask[pos & 3],
        mask[(pos + 1) & 3],
        mask[(pos + 2) & 3],
        mask[(pos + 3) & 3],
    ];
    let wide = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut words = buf.chunks_exact_mut(8);
    for w in &mut words {
        let v = u64::from_ne_bytes((&*w).try_into().expect("8 bytes")) ^ wide;
        w.copy_from_slice(&v.to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the mask phase is unchanged.
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= m[i & 3];
    }
}

fn too_big() -> FrameError {
    FrameError {
        status: CLOSE_TOO_BIG,
        text: "Maximum Message Payload Exceeded".into(),
    }
}

fn valid_close_status(code: u16) -> bool {
    !matches!(code, 1004..=1006 | 1015 | 1016..=2999) && (1000..5000).contains(&code)
}

/// The close payload the server answers a client's close frame with: its
/// status echoed (an invalid UTF-8 reason becomes 1007), or nothing when
/// it gave none.
fn close_reply(payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    match payload.len() {
        0 => Ok(Vec::new()),
        1 => Err(FrameError::protocol("close frame payload cannot be 1 byte")),
        _ => {
            let status = u16::from_be_bytes([payload[0], payload[1]]);
            if !valid_close_status(status) {
                return Err(FrameError::protocol(format!("invalid close status code {status}")));
            }
            let body = &payload[2..];
            if std::str::from_utf8(body).is_err() {
                return Ok(close_payload(CLOSE_INVALID_PAYLOAD, "invalid utf8 body in close frame"));
            }
            let mut p = Vec::with_capacity(payload.len());
            p.extend_from_slice(&status.to_be_bytes());
            p.extend_from_slice(body);
            Ok(p)
        }
    }
}

/// A close frame's payload: the status, then the text cut to fit a control
/// frame (with "..." when cut).
pub fn close_payload(status: u16, text: &str) -> Vec<u8> {
    let mut body = text;
    let mut cut = false;
    if body.len() > MAX_CONTROL_PAYLOAD - 2 {
        let mut end = MAX_CONTROL_PAYLOAD - 5;
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        body = &body[..end];
        cut = true;
    }
    let mut p = Vec::with_capacity(2 + body.len() + 3);
    p.extend_from_slice(&status.to_be_bytes());
    p.extend_from_slice(body.as_bytes());
    if cut {
        p.extend_from_slice(b"...");
    }
    p
}

/// The close status for a connection the server closes, as nats-server
/// maps its closed states.
pub fn close_status(reason: CloseReason) -> u16 {
    use CloseReason::*;
    match reason {
        ClientClosed => CLOSE_NORMAL,
        AuthenticationTimeout
        | AuthenticationViolation
        | SlowConsumerPendingBytes
        | SlowConsumerWriteDeadline
        | MaxAccountConnectionsExceeded
        | MaxConnectionsExceeded
        | MaxSubscriptionsExceeded
        | AuthenticationExpired
        | CredentialsRevoked => CLOSE_POLICY,
        ParseError | ProtocolViolation | BadClientProtocolVersion => CLOSE_PROTOCOL_ERROR,
        MaxPayloadExceeded => CLOSE_TOO_BIG,
        WriteError | ReadError | StaleConnection | ServerShutdown => CLOSE_GOING_AWAY,
        Kicked => CLOSE_INTERNAL,
        // Route closes; a WebSocket client never gets them.
        DuplicateRoute | ClusterNameConflict | DuplicateServerName | IncorrectPort | RouteRemoved => CLOSE_POLICY,
    }
}

/// Appends an unmasked server frame header for a payload of `len` bytes.
pub fn put_header(out: &mut Vec<u8>, opcode: u8, first: bool, fin: bool, compressed: bool, len: usize) {
    let mut b0 = if first { opcode } else { OP_CONTINUATION };
    if fin {
        b0 |= FIN;
    }
    if compressed && first {
        b0 |= RSV1;
    }
    out.push(b0);
    if len <= 125 {
        out.push(len as u8);
    } else if len <= u16::MAX as usize {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Appends one whole unmasked frame.
pub fn put_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    put_header(out, opcode, true, true, false, payload.len());
    out.extend_from_slice(payload);
}

/// Below this many bytes a write is not worth compressing (nats-server's
/// threshold).
pub const COMPRESS_THRESHOLD: usize = 64;
/// Browsers get frames of at most this many payload bytes.
pub const BROWSER_FRAME: usize = 4096;

/// Appends one whole masked frame, as a WebSocket client writes it (a
/// leaf dialing a hub's WebSocket port), with a fresh random key.
pub fn put_masked_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    put_masked(out, opcode, false, payload);
}

fn put_masked(out: &mut Vec<u8>, opcode: u8, compressed: bool, payload: &[u8]) {
    let start = out.len();
    put_header(out, opcode, true, true, compressed, payload.len());
    out[start + 1] |= MASK;
    let key = fastrand::u32(..).to_ne_bytes();
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i & 3]));
}

/// Frames what the server writes to one client: each write becomes binary
/// frames, compressed when permessage-deflate was negotiated.
#[derive(Default)]
pub struct Encoder {
    deflater: Option<deflate::Deflater>,
    browser: bool,
    scratch: Vec<u8>,
}

impl Encoder {
    /// An encoder; `compress` when permessage-deflate was negotiated,
    /// `browser` to cut frames to [`BROWSER_FRAME`] bytes.
    pub fn new(compress: bool, browser: bool) -> Encoder {
        Encoder {
            deflater: compress.then(deflate::Deflater::default),
            browser,
            scratch: Vec::new(),
        }
    }

    /// Appends `data` to `out` as one masked binary frame, as a client
    /// writes it, compressed past the threshold when negotiated (as
    /// nats-server's leaf does).
    pub fn frame_masked(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if let Some(d) = self.deflater.as_mut().filter(|_| data.len() > COMPRESS_THRESHOLD) {
            self.scratch.clear();
            d.compress(data, &mut self.scratch);
            put_masked(out, OP_BINARY, true, &self.scratch);
            return;
        }
        put_masked(out, OP_BINARY, false, data);
    }

    /// Appends `data` to `out` as one or more frames.
    pub fn frame(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if let Some(d) = self.deflater.as_mut().filter(|_| data.len() > COMPRESS_THRESHOLD) {
            self.scratch.clear();
            d.compress(data, &mut self.scratch);
            // One frame even for browsers: some (Safari) mishandle fragmented compressed messages.
            put_header(out, OP_BINARY, true, true, true, self.scratch.len());
            out.extend_from_slice(&self.scratch);
            return;
        }
        let max = if self.browser { BROWSER_FRAME } else { usize::MAX };
        for piece in data.chunks(max.min(data.len().max(1))) {
            put_frame(out, OP_BINARY, piece);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    pub fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut f = vec![b0];
        match payload.len() {
            l if l <= 125 => f.push(MASK | l as u8),
            l if l <= 65535 => {
                f.push(MASK | 126);
                f.extend_from_slice(&(l as u16).to_be_bytes());
            }
            l => {
                f.push(MASK | 127);
                f.extend_from_slice(&(l as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    fn decode_all(d: &mut Decoder, bytes: &[u8]) -> Result<(Vec<u8>, Vec<Control>), FrameError> {
        let mut input = bytes.to_vec();
        let (mut data, mut ctl) = (Vec::new(), Vec::new());
        let used = d.decode(&mut input, &mut data, &mut ctl)?;
        assert_eq!(used, input.len(), "whole input used");
        Ok((data, ctl))
    }

    #[test]
    fn compressed_masked_frames_inflate() {
        let data = "compress me ".repeat(100);
        let mut out = Vec::new();
        Encoder::new(true, false).frame_masked(data.as_bytes(), &mut out);
        assert_eq!(out[0] & RSV1, RSV1);
        let mut d = Decoder::new(true, 1 << 20);
        let (got, _) = decode_all(&mut d, &out).unwrap();
        assert_eq!(got, data.as_bytes());
    }

    #[test]
    fn masked_frames_decode_as_a_servers_do() {
        let mut out = Vec::new();
        put_masked_frame(&mut out, OP_BINARY, b"CONNECT {}\r\n");
        put_masked_frame(&mut out, OP_PONG, b"p");
        assert_eq!(out[1] & MASK, MASK);
        let mut d = Decoder::new(false, 1 << 20);
        let (data, ctl) = decode_all(&mut d, &out).unwrap();
        assert_eq!(data, b"CONNECT {}\r\n");
        assert!(ctl.is_empty(), "a pong asks for nothing");
    }

    #[test]
    fn binary_and_text_frames_carry_bytes() {
        let mut d = Decoder::new(false, 1 << 20);
        let mut bytes = client_frame(FIN | OP_BINARY, b"PING\r\n");
        bytes.extend(client_frame(FIN | OP_TEXT, b"PONG\r\n"));
        let (data, ctl) = decode_all(&mut d, &bytes).unwrap();
        assert_eq!(data, b"PING\r\nPONG\r\n");
        assert!(ctl.is_empty());
    }

    #[test]
    fn fragments_and_interleaved_ping() {
        let mut d = Decoder::new(false, 1 << 20);
        let mut bytes = client_frame(OP_BINARY, b"PUB a 2\r\n");
        bytes.extend(client_frame(FIN | OP_PING, b"hi"));
        bytes.extend(client_frame(FIN | OP_CONTINUATION, b"ok\r\n"));
        let (data, ctl) = decode_all(&mut d, &bytes).unwrap();
        assert_eq!(data, b"PUB a 2\r\nok\r\n");
        assert_eq!(ctl, vec![Control::Ping(b"hi".to_vec())]);
    }

    #[test]
    fn byte_by_byte_and_long_lengths() {
        for len in [0usize, 125, 126, 65535, 65536, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let bytes = client_frame(FIN | OP_BINARY, &payload);
            let mut d = Decoder::new(false, 1 << 20);
            let (mut data, mut ctl) = (Vec::new(), Vec::new());
            let mut pending: Vec<u8> = Vec::new();
            let step = if len > 1000 { 997 } else { 1 };
            for piece in bytes.chunks(step) {
                pending.extend_from_slice(piece);
                let used = d.decode(&mut pending, &mut data, &mut ctl).unwrap();
                pending.drain(..used);
            }
            assert!(pending.is_empty());
            assert_eq!(data, payload, "len {len}");
        }
    }

    #[test]
    fn compressed_message_inflates() {
        let msg = b"PUB compressed 26\r\nabcdefghijklmnopqrstuvwxyz\r\n".repeat(4);
        let mut deflated = Vec::new();
        deflate::Deflater::default().compress(&msg, &mut deflated);
        let (a, b) = deflated.split_at(deflated.len() / 2);
        let mut bytes = client_frame(RSV1 | OP_BINARY, a);
        bytes.extend(client_frame(FIN | OP_CONTINUATION, b));
        let mut d = Decoder::new(true, 1 << 20);
        let (data, _) = decode_all(&mut d, &bytes).unwrap();
        assert_eq!(data, msg);
        // Without negotiation the same frame is a protocol error.
        let mut d = Decoder::new(false, 1 << 20);
        let e = decode_all(&mut d, &bytes).unwrap_err();
        assert_eq!(e.status, CLOSE_PROTOCOL_ERROR);
    }

    #[test]
    fn protocol_errors() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![FIN | OP_BINARY, 2, b'h', b'i'], "mask bit missing"),
            (
                client_frame(FIN | 0x20 | OP_BINARY, b"x"),
                "RSV2 and RSV3 must be clear",
            ),
            (client_frame(FIN | OP_CONTINUATION, b"x"), "invalid continuation frame"),
            (client_frame(FIN | 3, b"x"), "unknown opcode 3"),
            (client_frame(OP_PING, b"x"), "control frame does not have final bit set"),
            (
                client_frame(FIN | OP_PING, &[b'x'; 126]),
                "control frame length bigger than maximum allowed of 125 bytes",
            ),
            (
                [client_frame(OP_BINARY, b"x"), client_frame(FIN | OP_BINARY, b"y")].concat(),
                "new message started before final frame for previous message was received",
            ),
            (
                client_frame(FIN | OP_CLOSE, b"x"),
                "close frame payload cannot be 1 byte",
            ),
            (
                client_frame(FIN | OP_CLOSE, &1005u16.to_be_bytes()),
                "invalid close status code 1005",
            ),
        ];
        for (bytes, want) in cases {
            let mut d = Decoder::new(false, 1 << 20);
            let e = decode_all(&mut d, &bytes).unwrap_err();
            assert_eq!(e.text, want);
            assert_eq!(e.status, CLOSE_PROTOCOL_ERROR);
        }
    }

    #[test]
    fn close_is_echoed() {
        let mut d = Decoder::new(false, 1 << 20);
        let (_, ctl) = decode_all(&mut d, &client_frame(FIN | OP_CLOSE, &close_payload(1000, "bye"))).unwrap();
        assert_eq!(ctl, vec![Control::Close(close_payload(1000, "bye"))]);
        let mut d = Decoder::new(false, 1 << 20);
        let (_, ctl) = decode_all(&mut d, &client_frame(FIN | OP_CLOSE, b"")).unwrap();
        assert_eq!(ctl, vec![Control::Close(Vec::new())]);
        let mut bad = 1000u16.to_be_bytes().to_vec();
        bad.push(0xff);
        let mut d = Decoder::new(false, 1 << 20);
        let (_, ctl) = decode_all(&mut d, &client_frame(FIN | OP_CLOSE, &bad)).unwrap();
        assert_eq!(
            ctl,
            vec![Control::Close(close_payload(
                CLOSE_INVALID_PAYLOAD,
                "invalid utf8 body in close frame"
            ))]
        );
    }

    #[test]
    fn too_big_message() {
        let mut d = Decoder::new(false, 16);
        let e = decode_all(&mut d, &client_frame(FIN | OP_BINARY, &[b'x'; 200])).unwrap_err();
        assert_eq!(e.status, CLOSE_TOO_BIG);
    }

    #[test]
    fn close_payload_is_cut_to_fit() {
        let p = close_payload(1008, &"x".repeat(300));
        assert_eq!(p.len(), MAX_CONTROL_PAYLOAD);
        assert!(p.ends_with(b"..."));
    }

    #[test]
    fn encoder_frames_and_compresses() {
        let data = b"MSG a 1 40\r\n0123456789012345678901234567890123456789\r\n".repeat(3);
        let mut out = Vec::new();
        Encoder::new(false, false).frame(&data, &mut out);
        assert_eq!(out[0], FIN | OP_BINARY);
        assert_eq!(&out[4..], &data[..]);
        let mut out = Vec::new();
        Encoder::new(false, true).frame(&[b'x'; 10_000], &mut out);
        assert_eq!(out.len(), 10_000 + 3 * 4, "three frames of at most 4 KiB");
        let mut out = Vec::new();
        Encoder::new(true, false).frame(&data, &mut out);
        assert_eq!(out[0], FIN | RSV1 | OP_BINARY);
        let mut back = Vec::new();
        deflate::inflate(&out[2..], &mut back, 1 << 20).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn unmask_matches_the_byte_loop_at_every_phase() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let data: Vec<u8> = (0..37u8).collect();
        for pos in 0..4 {
            for len in 0..data.len() {
                let mut fast = data[..len].to_vec();
                unmask(&mut fast, mask, pos);
                let slow: Vec<u8> = data[..len]
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ mask[(pos + i) & 3])
                    .collect();
                assert_eq!(fast, slow, "pos {pos} len {len}");
            }
        }
    }

    #[test]
    fn server_headers() {
        for (len, hl) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let mut out = Vec::new();
            put_header(&mut out, OP_BINARY, true, true, false, len);
            assert_eq!(out.len(), hl);
            assert_eq!(out[0], FIN | OP_BINARY);
        }
    }
}
