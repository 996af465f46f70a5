//! Configuration files: `-t` verdicts against nats-server on a corpus of
//! good and bad files, and a server started with `-c` using its values,
//! with command-line flags winning.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn corpus(kind: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conf").join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 5);
    files
}

fn verdict(bin: &str, file: &PathBuf) -> (bool, String) {
    let out = Command::new(bin).arg("-t").arg("-c").arg(file).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn test_flag_agrees_with_nats_server() {
    let nats = common::nats_server_bin();
    let mut wrong = Vec::new();
    for (kind, want) in [("good", true), ("bad", false)] {
        for f in corpus(kind) {
            let (theirs, their_msg) = verdict(nats.to_str().unwrap(), &f);
            let (ours, our_msg) = verdict(env!("CARGO_BIN_EXE_petrel"), &f);
            if theirs != want || ours != want {
                wrong.push(format!(
                    "{}: want {want}, nats-server {theirs} ({their_msg:?}), petrel {ours} ({our_msg:?})",
                    f.display()
                ));
            }
            if !ours {
                let name = f.file_name().unwrap().to_string_lossy().into_owned();
                assert!(our_msg.contains(&name), "error names the file: {our_msg}");
                assert!(our_msg.contains(".conf:"), "error has line and column: {our_msg}");
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn server_uses_the_file_and_flags_win() {
    let dir = std::env::temp_dir().join(format!("petrel-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("server.conf");
    std::fs::write(
        &conf,
        "listen: 127.0.0.1:1\nmax_payload: 2KB\nserver_name: from-file\nping_interval: \"150ms\"\nping_max: 1\n",
    )
    .unwrap();
    // `-p -1` overrides the file's port, as client harnesses rely on.
    let p = common::petrel(&["-c", conf.to_str().unwrap(), "-n", "from-flag"]);
    let mut c = common::raw::Raw::open(&p.addr());
    let info = c.info();
    assert_eq!(info["max_payload"], 2048);
    assert_eq!(info["server_name"], "from-flag");
    assert!(!p.log_lines("Using configuration file").is_empty());
    let r = c.read_until_quiet(std::time::Duration::from_secs(2), std::time::Duration::from_secs(5));
    assert_eq!(
        r.text(),
        "PING\r\n-ERR 'Stale Connection'\r\n",
        "ping_interval and ping_max came from the file"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Files in the syntax client harnesses use for features petrel has not
/// built yet: nats-server accepts them, petrel's parser reads them, and
/// petrel refuses only by naming the unbuilt feature.
#[test]
fn harness_style_files_parse() {
    let nats = common::nats_server_bin();
    for f in corpus_min("syntax", 3) {
        let parsed = petrel::conf::parse_file(&f);
        assert!(parsed.is_ok(), "{}: {:?}", f.display(), parsed.err());
        let (theirs, msg) = verdict(nats.to_str().unwrap(), &f);
        assert!(theirs, "nats-server accepts {}: {msg}", f.display());
        let (ours, msg) = verdict(env!("CARGO_BIN_EXE_petrel"), &f);
        assert!(
            ours || msg.contains("is not supported by petrel yet"),
            "{}: {msg}",
            f.display()
        );
    }
}

fn corpus_min(kind: &str, min: usize) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conf").join(kind);
    let files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(files.len() >= min);
    files
}

/// Limits given as 0 take nats-server's defaults (they used to close every
/// client, or refuse every CONNECT); max_payload above max_pending stops
/// the server from starting, naming the file and key, as nats-server does.
#[test]
fn zero_limits_mean_the_defaults_and_payload_must_fit_pending() {
    let dir = common::jwt::temp_dir();
    let conf = dir.join("zero.conf");
    std::fs::write(&conf, "max_pending: 0\nmax_control_line: 0\nwrite_deadline: \"0s\"\n").unwrap();
    let p = common::petrel(&["-c", conf.to_str().unwrap()]);
    let mut sub = common::raw::Raw::open(&p.addr());
    sub.send(b"CONNECT {\"verbose\":false}\r\nSUB foo 1\r\n");
    assert_eq!(sub.ping(), "");
    let mut publisher = common::raw::Raw::open(&p.addr());
    let long_subject = format!("foo.{}", "x".repeat(3000));
    publisher.send(
        format!("CONNECT {{\"verbose\":false}}\r\nPUB foo 5\r\nhello\r\nPUB {long_subject} 1\r\nx\r\n").as_bytes(),
    );
    assert_eq!(publisher.ping(), "", "a 3 KB control line fits the default 4 KB");
    // The publisher's PONG does not wait for deliveries on other shards:
    // the subscriber may need another round trip to see the message.
    let got = (0..20).map(|_| sub.ping()).find(|t| !t.is_empty()).unwrap_or_default();
    assert_eq!(got, "MSG foo 1 5\r\nhello\r\n");

    let bad = dir.join("pending.conf");
    std::fs::write(&bad, "max_payload: 2MB\nmax_pending: 1MB\n").unwrap();
    for bin in [
        env!("CARGO_BIN_EXE_petrel").to_string(),
        common::nats_server_bin().display().to_string(),
    ] {
        let out = Command::new(&bin).args(["-p", "-1", "-c"]).arg(&bad).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bin}: {err}");
        assert!(
            err.contains("max_payload (2097152) cannot be higher than max_pending (1048576)"),
            "{bin}: {err}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(["-p", "-1", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pending.conf:2:1: max_pending: "), "{err}");
    // `-t` checks the file alone on both servers: it passes.
    for bin in [
        env!("CARGO_BIN_EXE_petrel").to_string(),
        common::nats_server_bin().display().to_string(),
    ] {
        assert!(verdict(&bin, &bad).0, "{bin} -t");
    }
}

/// The first line of a `-t` verdict without the program's name and the
/// configuration's digest.
fn first_line(verdict: &str) -> String {
    verdict
        .lines()
        .next()
        .unwrap_or_default()
        .split_once(": ")
        .map(|(_, rest)| rest.split(" (sha256:").next().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// Each `(case, file text)` under `-t` on both servers: the cases whose
/// verdict or first line differ. `text_only` cases compare the message
/// without its position.
fn verdict_mismatches(cases: &[(String, String)], text_only: impl Fn(&str, &str) -> bool) -> Vec<String> {
    let nats = common::nats_server_bin();
    let dir = common::jwt::temp_dir();
    let mut wrong = Vec::new();
    for (i, (case, text)) in cases.iter().enumerate() {
        let file = dir.join(format!("case{i}.conf"));
        std::fs::write(&file, text).unwrap();
        let (theirs_ok, theirs) = verdict(nats.to_str().unwrap(), &file);
        let (ours_ok, ours) = verdict(env!("CARGO_BIN_EXE_petrel"), &file);
        let message = |t: &str| first_line(t).rsplit(": ").next().unwrap_or_default().to_string();
        let same = if text_only(case, &theirs) {
            message(&theirs) == message(&ours)
        } else {
            first_line(&theirs) == first_line(&ours)
        };
        if theirs_ok != ours_ok || !same {
            wrong.push(format!("{case}\n  nats-server: {theirs}  petrel: {ours}"));
        }
    }
    wrong
}

/// Errors in accounts' exports and imports, text and position, as
/// nats-server gives them under `-t` (a duplicate key is left out:
/// nats-server reads a block as a Go map, so which of the two it blames
/// changes from run to run; so is a stream export with a `threshold`,
/// which nats-server 2.15.1 refuses or accepts from run to run, by the
/// order it meets the keys in: petrel always refuses it, as
/// `Detected response directive on non-service`).
#[test]
fn export_and_import_errors_match_nats_server() {
    let exports = [
        "{service: s, response: forever}",
        "{stream: s, response: stream}",
        "{response: stream, stream: s}",
        "{service: s, threshold: \"soon\"}",
        "{service: s, threshold: 5}",
        "{service: s, response: 1}",
        "{service: s, foo: 1}",
        "{service: s, response: single, threshold: \"1m30s\"}",
        "{service: s, response: Chunk, response_time: \"5s\"}",
        "{service: s, latency: 5}",
        "{service: s, latency: {sampling: 50}}",
        "{service: s, latency: {sampling: 150, subject: l}}",
        "{service: s, latency: {sampling: \"x%\", subject: l}}",
        "{service: s, latency: {sampling: true, subject: l}}",
        "{service: s, latency: {subject: 5}}",
        "{service: s, latency: {sampling: headers, subject: l}}",
        "{service: s, response: stream, latency: l}",
        "{service: s, latency: \"l.*\"}",
        "{service: s}",
    ];
    let cases: Vec<(String, String)> = exports
        .iter()
        .enumerate()
        .map(|(i, export)| {
            // The last case's error is in the import (nats-server reports
            // import errors before export errors).
            let extra = if i == exports.len() - 1 { ", bar: 2" } else { "" };
            // A stream export is imported as a stream: a service import of
            // it would be a second error, and nats-server, reading the
            // accounts as a Go map, blames either from run to run.
            let kind = if export.contains("stream: s") { "stream" } else { "service" };
            let text = format!(
                "accounts {{\n  A: {{\n    users: [{{user: a, password: a}}]\n    exports: [\n      {export}\n    ]\n  }}\n  B: {{\n    imports: [\n      {{{kind}: {{account: A, subject: s}}{extra}}}\n    ]\n  }}\n}}\n"
            );
            (export.to_string(), text)
        })
        .collect();
    // nats-server blames line 1, column 0 for an export its account
    // refuses; petrel the export: compare the text.
    let wrong = verdict_mismatches(&cases, |case, theirs| {
        case.contains("latency") && theirs.contains(":1:0: ")
    });
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let file = common::jwt::temp_dir().join("stream-threshold.conf");
    std::fs::write(
        &file,
        "accounts {\n  A: {\n    exports: [\n      {stream: s, threshold: \"1s\"}\n    ]\n  }\n}\n",
    )
    .unwrap();
    let (ok, ours) = verdict(env!("CARGO_BIN_EXE_petrel"), &file);
    assert!(
        !ok && ours.contains(":4:19: Detected response directive on non-service"),
        "{ours}"
    );
}

/// An account's `msg_trace` / `trace_dest`, `allow_trace` on exports and
/// imports, and an account's `limits`: accepted and refused as
/// nats-server does, with its texts.
#[test]
fn trace_options_match_nats_server() {
    let lines = [
        "msg_trace: \"trace.dest\"",
        "trace_dest: \"trace.dest\"",
        "msg_trace: {dest: \"trace.dest\", sampling: 50}",
        "msg_trace: {dest: \"trace.dest\", sampling: \"25%\"}",
        "msg_trace: {dest: \"trace.*\"}",
        "msg_trace: {dest: 5}",
        "msg_trace: {dest: \"t\", sampling: 0}",
        "msg_trace: {dest: \"t\", sampling: 101}",
        "msg_trace: {dest: \"t\", sampling: \"lots\"}",
        "msg_trace: {dest: \"t\", sampling: true}",
        "msg_trace: {dest: \"t\", sample: 5}",
        "msg_trace: 5",
        "exports: [{stream: s, allow_trace: true}]",
        "exports: [{allow_trace: true, stream: s}]",
        "exports: [{service: s, allow_trace: true}]",
        "imports: [{service: {account: B, subject: s}, allow_trace: true}]",
        "imports: [{allow_trace: true, service: {account: B, subject: s}}]",
        "imports: [{stream: {account: B, subject: s}, allow_trace: true}]",
        "exports: [{stream: s, latency: {sampling: 100%, subject: lat}}]",
        "limits: {max_connections: 5, max_subs: 2, max_pay: 100, max_leafs: 1}",
        "limits: {max_conns: 5}",
        "limits: 5",
    ];
    let cases: Vec<(String, String)> = lines
        .iter()
        .map(|line| {
            let text = format!(
                "accounts {{\n  A: {{\n    users: [{{user: a, password: a}}]\n    {line}\n  }}\n  B: {{\n    exports: [{{stream: s}}, {{service: s}}]\n  }}\n}}\n"
            );
            (line.to_string(), text)
        })
        .collect();
    let wrong = verdict_mismatches(&cases, |_, _| false);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
