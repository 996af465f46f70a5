// The `websocket` fuzz target's property, shared with the corpus replay in
// tests/fuzz_corpus.rs (both `include!` this file): the first byte picks
// compression, masking and a cut size; the rest is fed to the frame decoder
// whole and in pieces (which must decode to the same bytes, and nothing may
// panic) and to the upgrade request parser.

use petrel::ws::frame::Decoder;
use petrel::ws::{handshake, WsSettings};

/// Decodes `data` fed in pieces of `step` bytes: the NATS bytes, and
/// whether the frames were valid.
fn ws_decode(data: &[u8], compression: bool, masked: bool, step: usize) -> (Vec<u8>, bool) {
    let mut d = Decoder::new(compression, 4096);
    if !masked {
        d = d.without_masking();
    }
    let (mut out, mut controls, mut pending) = (Vec::new(), Vec::new(), Vec::new());
    for piece in data.chunks(step.max(1)) {
        pending.extend_from_slice(piece);
        match d.decode(&mut pending, &mut out, &mut controls) {
            Ok(used) => {
                pending.drain(..used);
            }
            Err(_) => return (out, false),
        }
    }
    (out, true)
}

/// Checks one input, cutting it at the size its first byte names and at
/// each of `extra_steps`.
fn websocket_check(data: &[u8], extra_steps: &[usize]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let compression = flags & 1 != 0;
    let masked = flags & 2 == 0;
    let (whole, ok_whole) = ws_decode(rest, compression, masked, rest.len().max(1));
    for &step in std::iter::once(&((flags >> 2) as usize + 1)).chain(extra_steps) {
        let (cut, ok_cut) = ws_decode(rest, compression, masked, step);
        if ok_whole && ok_cut {
            assert_eq!(whole, cut, "cutting the input changed the decoded bytes");
        }
    }
    if let Ok(Some((req, _))) = handshake::parse_request(rest) {
        let s = WsSettings {
            compression,
            same_origin: masked,
            allowed_origins: vec![("http".into(), "example.com".into(), "80".into())],
            jwt_cookie: Some("jwt".into()),
            ..Default::default()
        };
        let _ = handshake::upgrade(&req, &s, false);
    }
}
