//! Differential tests: the same byte streams go to petrel and to the
//! official nats-server, and the replies must match byte for byte, except
//! for values that differ by nature (ids, ports, versions) and INFO fields
//! for features petrel does not have (see `common::normalize_info`).

mod common;

use std::time::Duration;

use common::raw::{Raw, Reply};

use common::normalize_info;

/// Replaces every INFO line's JSON with its comparable form.
fn normalize(r: &Reply) -> String {
    let text = r.text();
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        if line.starts_with("INFO ") {
            out.push_str(&normalize_info(line));
        } else {
            out.push_str(line);
        }
    }
    if r.closed {
        out.push_str("<closed>");
    }
    out
}

fn run(addr: &str, chunks: &[Vec<u8>]) -> (String, String) {
    let mut c = Raw::open(addr);
    let info = normalize_info(&c.info_line);
    for (i, ch) in chunks.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(30));
        }
        c.send(ch);
    }
    let r = c.read_until_quiet(Duration::from_millis(400), Duration::from_secs(5));
    (info, normalize(&r))
}

fn cases() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let one = |name: &'static str, b: &[u8]| (name, vec![b.to_vec()]);
    let long_subject = format!("PUB {} 1\r\nx\r\n", "a".repeat(5000));
    vec![
        one("ping before connect", b"PING\r\n"),
        one("connect defaults", b"CONNECT {}\r\nPING\r\n"),
        // Go's decoder: a repeated key's last value wins, invalid UTF-8 in
        // a string becomes U+FFFD; neither closes the connection.
        one("connect duplicate keys", b"CONNECT {\"verbose\":true,\"verbose\":false}\r\nPING\r\n"),
        one("connect non-utf8 name", b"CONNECT {\"verbose\":false,\"name\":\"a\xff\xfeb\"}\r\nPING\r\n"),
        one("protocol 1 first ping info", b"CONNECT {\"protocol\":1}\r\nPING\r\nPING\r\n"),
        // Odd but valid (or not) CONNECTs, as Go's decoder reads them.
        one(
            "connect unknown fields",
            b"CONNECT {\"verbose\":false,\"foo\":1,\"bar\":{\"x\":[1,{\"y\":null}]}}\r\nPING\r\n",
        ),
        one("connect nulls keep defaults", b"CONNECT {\"verbose\":null,\"pedantic\":null,\"name\":null}\r\nPING\r\n"),
        one("connect key case", b"CONNECT {\"Verbose\":false,\"PEDANTIC\":false}\r\nPING\r\n"),
        one("connect float protocol", b"CONNECT {\"verbose\":false,\"protocol\":1.0}\r\nPING\r\n"),
        one("connect exponent protocol", b"CONNECT {\"verbose\":false,\"protocol\":1e0}\r\nPING\r\n"),
        one("connect huge protocol", b"CONNECT {\"verbose\":false,\"protocol\":99999999999999999999}\r\nPING\r\n"),
        one("connect spaces around json", b"CONNECT    {\"verbose\":false}   \r\nPING\r\n"),
        one("connect tab before json", b"CONNECT\t{\"verbose\":false}\r\nPING\r\n"),
        one("connect text after json", b"CONNECT {\"verbose\":false} x\r\nPING\r\n"),
        one("connect array", b"CONNECT []\r\nPING\r\n"),
        one("connect string headers", b"CONNECT {\"verbose\":false,\"headers\":\"true\"}\r\nPING\r\n"),
        one(
            "connect unicode escapes",
            b"CONNECT {\"verbose\":false,\"name\":\"\\u00e9\\u0000\\ud83d\\ude00\",\"lang\":\"\\\"q\"}\r\nPING\r\n",
        ),
        one("connect empty user and pass", b"CONNECT {\"verbose\":false,\"user\":\"\",\"pass\":\"\"}\r\nPING\r\n"),
        one(
            "no responders",
            b"CONNECT {\"verbose\":false,\"protocol\":1,\"headers\":true,\"no_responders\":true}\r\nSUB r 1\r\nPUB foo r 2\r\nhi\r\nPING\r\n",
        ),
        one("pub too few args", b"PUB foo\r\n"),
        one("pub bad size", b"PUB foo bar\r\n"),
        one("pub negative size", b"PUB foo -1\r\n"),
        one("pub too many args", b"PUB a b c 1\r\n"),
        one("unknown op", b"FOO\r\n"),
        one("empty line", b"\r\n"),
        one("connect without space", b"CONNECT{}\r\n"),
        one("info without space", b"INFO{}\r\nPING\r\n"),
        one("err without space", b"-ERR'x'\r\n"),
        one("sub without space", b"SUBfoo 1\r\n"),
        one("pub without space", b"PUBfoo 1\r\nx\r\n"),
        one("connect then empty args", b"CONNECT \r\n"),
        one("invalid sub subject", b"SUB foo..bar 1\r\nPING\r\n"),
        one("invalid sub wildcard position", b"SUB >.foo 1\r\nPING\r\n"),
        one("pedantic wildcard publish", b"PUB foo.* 2\r\nhi\r\n"),
        one("pedantic trailing dot publish", b"PUB foo.bar. 1\r\nx\r\n"),
        one("verbose pub sub", b"SUB foo 1\r\nPUB foo 2\r\nhi\r\n"),
        one("bad payload trailer", b"PUB foo 2\r\nhiX\r\n"),
        one("sub too few args", b"SUB foo\r\n"),
        one("sub too many args", b"SUB foo bar baz 1\r\n"),
        one("queue sub", b"SUB foo q 1\r\nPUB foo 0\r\n\r\nPING\r\n"),
        one("tabs as separators", b"SUB\tfoo\tq\t1\r\nPUB\tfoo\t2\r\nhi\r\nPING\r\n"),
        one("unknown sid unsub", b"UNSUB 99\r\nPING\r\n"),
        one("unsub without sid", b"UNSUB\r\n"),
        one("unsub too many args", b"UNSUB 1 2 3\r\n"),
        one(
            "auto unsubscribe",
            b"SUB foo 1\r\nUNSUB 1 2\r\nPUB foo 1\r\na\r\nPUB foo 1\r\nb\r\nPUB foo 1\r\nc\r\nPING\r\n",
        ),
        one("unsub max not a number", b"SUB foo 1\r\nUNSUB 1 x\r\nPUB foo 1\r\na\r\nPING\r\n"),
        one("duplicate sid", b"SUB foo 1\r\nSUB foo 1\r\nPUB foo 1\r\nx\r\nPING\r\n"),
        one("client -ERR closes", b"-ERR 'x'\r\n"),
        one("client +OK ignored", b"+OK\r\nPING\r\n"),
        one("client INFO ignored", b"INFO {}\r\nPING\r\n"),
        one("bad connect json", b"CONNECT {bad\r\n"),
        one("bad connect type", b"CONNECT {\"verbose\":\"yes\"}\r\n"),
        one("bad protocol", b"CONNECT {\"protocol\":2}\r\n"),
        one("no responders needs headers", b"CONNECT {\"no_responders\":true}\r\n"),
        one("obsolete account field", b"CONNECT {\"account\":\"x\"}\r\n"),
        one("hpub without headers", b"HPUB foo 0 0\r\n\r\n"),
        one(
            "hpub to self",
            b"CONNECT {\"verbose\":false,\"headers\":true}\r\nSUB h 1\r\nHPUB h 26 30\r\nNATS/1.0\r\nX-Trace: abc\r\n\r\nbody\r\nPING\r\n",
        ),
        one("hpub header bigger than total", b"CONNECT {\"headers\":true}\r\nHPUB foo 5 2\r\n"),
        one("max payload", b"PUB foo 2000000\r\n"),
        one("max control line", long_subject.as_bytes()),
        one("lower and mixed case ops", b"ping\r\nPiNg\r\nsub a 1\r\npub a 1\r\nx\r\n"),
        one("ping with trailing text", b"PING foo\r\n"),
        one("bare newline terminators", b"SUB a 1\nPUB a 2\nhi\r\nPING\n"),
        one("full wildcard", b"SUB foo.> 1\r\nPUB foo 1\r\nx\r\nPUB foo.bar.baz 1\r\ny\r\nPING\r\n"),
        one("partial wildcard", b"SUB * 1\r\nPUB a.b 0\r\n\r\nPUB a 0\r\n\r\nPING\r\n"),
        one("echo off", b"CONNECT {\"verbose\":false,\"echo\":false}\r\nSUB a 1\r\nPUB a 1\r\nx\r\nPING\r\n"),
        one("reply subject", b"CONNECT {\"verbose\":false}\r\nSUB a 1\r\nPUB a inbox.1 1\r\nx\r\nPING\r\n"),
        (
            "payload split across reads",
            vec![b"CONNECT {\"verbose\":false}\r\nSUB s 1\r\nPUB s 5\r\nhe".to_vec(), b"llo\r\nPI".to_vec(), b"NG\r\n".to_vec()],
        ),
        ("control line split", vec![b"SU".to_vec(), b"B s 1\r\nPU".to_vec(), b"B s 1\r\nz\r\nPING\r\n".to_vec()]),
    ]
}

#[test]
fn byte_streams_match_nats_server() {
    // Cases run in parallel on separate server pairs so they cannot see
    // each other's messages.
    const PAIRS: usize = 4;
    let pairs: Vec<_> = (0..PAIRS)
        .map(|_| (common::petrel(&["--shards", "2"]), common::nats_server(&[])))
        .collect();
    let cases = cases();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..PAIRS)
            .map(|i| {
                let (pa, na) = (pairs[i].0.addr(), pairs[i].1.addr());
                let mine: Vec<_> = cases.iter().skip(i).step_by(PAIRS).collect();
                s.spawn(move || {
                    mine.into_iter()
                        .map(|(name, chunks)| {
                            let theirs = std::thread::scope(|s2| {
                                let t = s2.spawn(|| run(&na, chunks));
                                let ours = run(&pa, chunks);
                                (ours, t.join().unwrap())
                            });
                            (*name, theirs.0, theirs.1)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut failures = Vec::new();
    for (name, ours, theirs) in &results {
        if ours != theirs {
            failures.push(format!("{name}:\n  petrel:      {ours:?}\n  nats-server: {theirs:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        results.len(),
        failures.join("\n")
    );
}
