//! Replays the kept fuzz corpus (fuzz/corpus/*) through the parser and a
//! whole session on every test run, so inputs the fuzzer once found
//! interesting stay covered without a nightly toolchain.

use std::time::{Duration, Instant};

use petrel::core::{CoreConfig, ShardCore};
use petrel::ids::{ConnId, ShardId};
use petrel::proto::info::ServerInfo;
use petrel::proto::parser::{parse, ParseLimits, Parsed};
use petrel::proto::session::{Session, SessionConfig};
use petrel::shard::host::{ConnAuth, CoreHost};

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .collect();
    let out: Vec<Vec<u8>> = files
        .into_iter()
        .map(|f| std::fs::read(f.unwrap().path()).unwrap())
        .collect();
    assert!(out.len() >= 10, "corpus {name} is kept in the repository");
    out
}

#[test]
fn parser_corpus_never_panics_and_prefixes_agree() {
    let limits = ParseLimits {
        max_control_line: 256,
        max_payload: 1024,
        headers: true,
    };
    for data in corpus("parser") {
        let mut used = 0;
        while let Ok(Parsed::Op(_, n)) = parse(&data[used..], &limits) {
            assert!(n > 0);
            used += n;
        }
    }
}

include!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fuzz/fuzz_targets/config_check.rs"
));

/// The config target's check (the same code as the fuzz target): parse,
/// map, and a reload's decision; nothing panics.
#[test]
fn config_corpus_never_panics() {
    for data in corpus("config") {
        config_check(&data);
    }
}

include!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fuzz/fuzz_targets/transform_check.rs"
));

/// The transform target's check: compile, apply, map, identity.
#[test]
fn transform_corpus_never_panics_and_identity_holds() {
    for data in corpus("transform") {
        transform_check(&data);
    }
}

include!(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/fuzz_targets/route_check.rs"));

/// The route target's check: parse in both forms, re-encode, re-parse.
#[test]
fn route_corpus_never_panics_and_round_trips() {
    for data in corpus("route") {
        route_check(&data);
    }
}

#[test]
fn session_corpus_never_panics() {
    let info = ServerInfo {
        proto: 1,
        headers: true,
        max_payload: 1024,
        ..Default::default()
    };
    for data in corpus("session") {
        let now = Instant::now();
        let mut core = ShardCore::new(
            ShardId(0),
            2,
            CoreConfig {
                max_pending: 1 << 16,
                ..Default::default()
            },
            now,
        );
        let cid = ConnId(1);
        core.add_conn(cid);
        let cfg = SessionConfig {
            max_payload: 1024,
            ..Default::default()
        };
        let mut s = Session::new(cfg, now, Duration::from_secs(1));
        let mut auth = ConnAuth::open();
        let mut buf = Vec::new();
        for chunk in data.chunks(7) {
            buf.extend_from_slice(chunk);
            let mut host = CoreHost {
                core: &mut core,
                cid,
                info: &info,
                client_ip: "127.0.0.1",
                headers_supported: true,
                auth: &mut auth,
            };
            match s.receive(&buf, now, &mut host) {
                Ok(used) => {
                    buf.drain(..used);
                }
                Err(_) => break,
            }
            let _ = core.take_batches();
        }
    }
}

#[test]
fn jwt_connect_corpus_never_panics() {
    use petrel::auth::jwt;
    use petrel::proto::connect::ClientOpts;

    fn tokens(text: &str) {
        let _ = jwt::decode_user(text);
        let _ = jwt::decode_account(text);
        let _ = jwt::decode_operator(text);
        let _ = jwt::decode_generic(text);
    }
    let mut decoded = 0;
    for data in corpus("jwt_connect") {
        if let Some(opts) = ClientOpts::from_json(&data) {
            if let Some(token) = opts.jwt.as_deref() {
                tokens(token);
            }
            if let (Some(nkey), Some(sig)) = (opts.nkey.as_deref(), opts.sig.as_deref()) {
                let _ = jwt::verify_nonce(nkey, b"nonce-from-info", sig);
            }
        }
        let Ok(text) = std::str::from_utf8(&data) else { continue };
        tokens(text);
        if let Some(token) = jwt::extract_jwt(text) {
            tokens(token);
            decoded += usize::from(jwt::decode_generic(token).is_ok());
        }
        if let Ok((token, seed)) = jwt::parse_creds(text) {
            tokens(&token);
            let _ = jwt::verify_nonce(&seed, text.as_bytes(), &token);
        }
    }
    // The seeds include the fixture JWTs, which must still decode.
    assert!(decoded >= 10, "only {decoded} corpus entries held a valid JWT");
}

include!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fuzz/fuzz_targets/websocket_check.rs"
));

/// The websocket target's check (the same code as the fuzz target): decoding
/// the same bytes whole or cut in pieces gives the same NATS bytes, and
/// nothing panics.
#[test]
fn websocket_corpus_never_panics_and_cuts_agree() {
    for data in corpus("websocket") {
        websocket_check(&data, &[1, 3]);
    }
}

include!(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/fuzz_targets/s2_check.rs"));

/// The s2 target's check (the same code as the fuzz target) over its kept
/// corpus.
#[test]
fn s2_corpus_never_panics_and_cuts_agree() {
    for data in corpus("s2") {
        s2_check(&data);
    }
}
