//! Feeds arbitrary bytes to the parser, whole and split at every tenth byte,
//! and checks that it never panics and that splitting changes nothing; reads
//! the bytes as a header block for a trace request and an
//! `Accept-Encoding` too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use petrel::proto::parser::{parse, ParseLimits, Parsed};

fn ops(buf: &[u8], limits: &ParseLimits) -> (Vec<String>, Option<String>) {
    let mut used = 0;
    let mut out = Vec::new();
    loop {
        match parse(&buf[used..], limits) {
            Ok(Parsed::Op(op, n)) => {
                assert!(n > 0 && used + n <= buf.len());
                out.push(format!("{op:?}"));
                used += n;
            }
            Ok(Parsed::Incomplete { .. }) => return (out, None),
            Err(e) => return (out, Some(e.to_string())),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = ParseLimits { max_control_line: 256, max_payload: 1024, headers: data.first().is_some_and(|b| b & 1 == 1) };
    let whole = ops(data, &limits);
    // Header blocks: reading a trace request and setting a header never
    // panic, and a set header reads back.
    let _ = petrel::proto::trace::read(data);
    // What a header block accepts for a compressed reply, and the reply
    // encoded that way, never panic.
    if let Some(e) = petrel::compress::encoding::ContentEncoding::accepted_by(data) {
        let _ = petrel::compress::encoding::message(Some(e), data);
    }
    let set = petrel::proto::trace::set_header(data, "Nats-Trace-Hop", "1.2");
    assert!(set.ends_with(b"Nats-Trace-Hop: 1.2\r\n\r\n"));
    // Parsing a prefix must give a prefix of the same operations.
    let cut = data.len() / 2;
    let (first, err) = ops(&data[..cut], &limits);
    if err.is_none() {
        assert!(whole.0.len() >= first.len());
        assert_eq!(&whole.0[..first.len()], &first[..]);
    }
});
