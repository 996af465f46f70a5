//! Feeds arbitrary bytes to the WebSocket frame decoder (in pieces of
//! varying size, with and without compression and masking) and to the
//! upgrade request parser: errors are fine, panics are not, and the
//! decoder must give the same bytes however the input is cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use petrel::ws::frame::Decoder;
use petrel::ws::handshake;
use petrel::ws::WsSettings;

fn decode(data: &[u8], compression: bool, masked: bool, step: usize) -> (Vec<u8>, bool) {
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

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let compression = flags & 1 != 0;
    let masked = flags & 2 == 0;
    let step = (flags >> 2) as usize + 1;
    let (whole, ok_whole) = decode(rest, compression, masked, rest.len().max(1));
    let (cut, ok_cut) = decode(rest, compression, masked, step);
    if ok_whole && ok_cut {
        assert_eq!(whole, cut, "cutting the input changed the decoded bytes");
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
});
