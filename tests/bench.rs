//! `petrel bench` against a petrel server: exact counts, JSON and CSV
//! output, request/reply latency, the subcommands, and a run that cannot
//! reach its counts failing with them.

mod common;

use std::process::{Command, Output};

use serde_json::Value;

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_petrel"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run petrel bench")
}

fn bench_json(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json", "--no-progress", "-s", url];
    all.extend_from_slice(args);
    let out = bench(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "petrel bench {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn help_and_server_flags_unchanged() {
    let out = bench(&["--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Usage: petrel bench"));
    let out = bench(&["--bogus-flag", "x"]);
    assert_eq!(out.status.code(), Some(2));
    // The server's own flags still parse as before.
    let out = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    // The server's usage (which names the subcommands), not bench's.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("Usage: petrel [options]"), "{text}");
    assert!(!text.contains("Usage: petrel bench"), "{text}");
}

#[test]
fn pub_sub_counts_are_exact() {
    let srv = common::petrel(&[]);
    let v = bench_json(
        &srv.url(),
        &[
            "bench.ps", "--pub", "2", "--sub", "3", "--msgs", "20000", "--size", "16",
        ],
    );
    assert_eq!(v["ok"], true);
    assert_eq!(v["published"], 20000);
    assert_eq!(v["received"], 60000);
    assert_eq!(v["pub"]["clients"].as_array().unwrap().len(), 2);
    assert_eq!(v["sub"]["clients"].as_array().unwrap().len(), 3);
    for c in v["sub"]["clients"].as_array().unwrap() {
        assert_eq!(c["msgs"], 20000);
        assert_eq!(c["bytes"], 20000 * 16);
    }
    assert!(v["sub"]["msgs_per_sec"].as_f64().unwrap() > 0.0);
    assert!(v["pub"]["min"].as_f64().unwrap() <= v["pub"]["max"].as_f64().unwrap());
    assert!(v["total"]["msgs_per_sec"].as_f64().unwrap() > 0.0);
}

#[test]
fn queue_group_gets_each_message_once() {
    let srv = common::petrel(&[]);
    let v = bench_json(
        &srv.url(),
        &["bench.q", "--pub", "1", "--sub", "3", "--queue", "q", "--msgs", "9000"],
    );
    assert_eq!(v["ok"], true);
    assert_eq!(v["received"], 9000);
}

#[test]
fn request_reply_latency() {
    let srv = common::petrel(&[]);
    let v = bench_json(
        &srv.url(),
        &[
            "bench.rr",
            "--pub",
            "2",
            "--sub",
            "2",
            "--request",
            "--reply",
            "--msgs",
            "2000",
            "--size",
            "16",
        ],
    );
    assert_eq!(v["ok"], true);
    assert_eq!(v["published"], 2000);
    assert_eq!(v["received"], 2000);
    let l = &v["latency_us"];
    assert_eq!(l["samples"], 2000);
    let (p50, p99, max) = (
        l["p50"].as_f64().unwrap(),
        l["p99"].as_f64().unwrap(),
        l["max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{l}");
    assert!(l["p90"].as_f64().unwrap() <= l["p99_9"].as_f64().unwrap());
}

#[test]
fn service_subcommands_and_rate() {
    let srv = common::petrel(&[]);
    let url = srv.url();
    let serve = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args([
            "bench",
            "service",
            "serve",
            "bench.svc",
            "--clients",
            "2",
            "--msgs",
            "301",
            "--json",
        ])
        .args(["--no-progress", "--timeout", "10s", "-s", &url])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Until the service is up a request gets no responders and fails; the
    // first one that succeeds is the service's 1st of 301 requests.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !bench(&[
        "service",
        "request",
        "bench.svc",
        "--msgs",
        "1",
        "--timeout",
        "1s",
        "--json",
        "-s",
        &url,
    ])
    .status
    .success()
    {
        assert!(std::time::Instant::now() < deadline, "the service never answered");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let v = bench_json(
        &url,
        &[
            "service",
            "request",
            "bench.svc",
            "--clients",
            "3",
            "--msgs",
            "300",
            "--rate",
            "2000",
        ],
    );
    assert_eq!(v["published"], 300);
    assert_eq!(v["latency_us"]["samples"], 300);
    let out = serve.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["received"], 301);
}

#[test]
fn csv_rows_per_client() {
    let srv = common::petrel(&[]);
    let url = srv.url();
    let out = bench(&[
        "pub",
        "bench.csv",
        "--clients",
        "2",
        "--msgs",
        "1000",
        "--csv",
        "-",
        "--no-progress",
        "-s",
        &url,
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("NATS") || text.contains("Pub stats"), "{text}");
    let rows: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("#RunID")).collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(rows[1].split(',').nth(2).unwrap().trim() == "500");
}

#[test]
fn unreachable_counts_fail_with_counts() {
    let srv = common::petrel(&[]);
    let url = srv.url();
    // Nobody publishes: the subscriber gives up after the timeout.
    let out = bench(&[
        "sub",
        "bench.none",
        "--msgs",
        "10",
        "--timeout",
        "300ms",
        "--json",
        "-s",
        &url,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["counts"]["sub"][0]["msgs"], 0);
    assert_eq!(v["counts"]["sub"][0]["expected"], 10);
    assert!(v.get("sub").is_none(), "no throughput on failure: {v}");
    // Text form: counts, no rate.
    let out = bench(&["sub", "bench.none", "--msgs", "10", "--timeout", "300ms", "-s", &url]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAILED") && text.contains("0 of 10"), "{text}");
    assert!(!text.contains("msgs/sec"), "{text}");
    // Requests nobody answers fail too, with the count reached.
    let out = bench(&[
        "service",
        "request",
        "bench.none",
        "--msgs",
        "5",
        "--timeout",
        "300ms",
        "-s",
        &url,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 of 5"));
}

#[test]
fn cannot_connect_is_an_error() {
    let out = bench(&["foo", "--msgs", "1", "-s", "nats://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

#[test]
fn both_clients_and_multisubject() {
    let srv = common::petrel(&[]);
    let url = srv.url();
    for client in ["raw", "async-nats"] {
        let v = bench_json(
            &url,
            &[
                "bench.both",
                "--pub",
                "1",
                "--sub",
                "2",
                "--msgs",
                "5000",
                "--size",
                "100",
                "--client",
                client,
            ],
        );
        assert_eq!(v["ok"], true, "{client}: {v}");
        assert_eq!(v["config"]["client"], client);
        assert_eq!(v["received"], 10000);
        for c in v["sub"]["clients"].as_array().unwrap() {
            assert_eq!(c["bytes"], 5000 * 100, "{client}");
        }
    }
    // Per-message subjects, a rate, and a payload bigger than the read buffer.
    let v = bench_json(
        &url,
        &[
            "bench.ms",
            "--pub",
            "2",
            "--sub",
            "1",
            "--msgs",
            "300",
            "--multisubject",
            "--rate",
            "3000",
        ],
    );
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["received"], 300);
    let v = bench_json(
        &url,
        &[
            "bench.big",
            "--pub",
            "1",
            "--sub",
            "1",
            "--msgs",
            "20",
            "--size",
            "600KiB",
        ],
    );
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["sub"]["clients"][0]["bytes"], 20 * 600 * 1024);
    // Request/reply stays on async-nats whatever --client says.
    let v = bench_json(
        &url,
        &[
            "bench.rrc",
            "--pub",
            "1",
            "--sub",
            "1",
            "--request",
            "--reply",
            "--msgs",
            "50",
        ],
    );
    assert_eq!(v["config"]["client"], "async-nats");
}

#[test]
fn extra_messages_fail_the_run() {
    // Another client publishes to the subject during the run: subscribers
    // get more than the publishers sent, and the run must fail.
    let srv = common::petrel(&[]);
    let url = srv.url();
    let addr = srv.addr();
    let noise = std::thread::spawn(move || {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"CONNECT {\"verbose\":false}\r\n").unwrap();
        for _ in 0..300 {
            let _ = s.write_all(b"PUB bench.extra 1\r\nx\r\n");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    });
    let out = bench(&[
        "bench.extra",
        "--pub",
        "1",
        "--sub",
        "1",
        "--msgs",
        "100",
        "--rate",
        "200",
        "--json",
        "-s",
        &url,
    ]);
    noise.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["counts"]["sub"][0]["msgs"].as_u64().unwrap() > 100, "{v}");
}

#[test]
fn auth_user_token_and_creds() {
    let srv = common::petrel(&["--user", "u", "--pass", "p"]);
    let url = srv.url();
    for client in ["raw", "async-nats"] {
        let v = bench_json(
            &url,
            &[
                "bench.auth",
                "--pub",
                "1",
                "--sub",
                "1",
                "--msgs",
                "1000",
                "--user",
                "u",
                "--password",
                "p",
                "--client",
                client,
            ],
        );
        assert_eq!(v["ok"], true, "{client}");
        let out = bench(&[
            "bench.auth",
            "--msgs",
            "10",
            "--user",
            "u",
            "--password",
            "x",
            "--client",
            client,
            "-s",
            &url,
        ]);
        assert_eq!(out.status.code(), Some(1), "{client}");
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(
            err.contains("cannot connect") && err.contains("authorization"),
            "{client}: {err}"
        );
    }
    // User in the URL.
    let with_user = url.replacen("nats://", "nats://u:p@", 1);
    assert_eq!(bench_json(&with_user, &["bench.auth", "--msgs", "100"])["ok"], true);

    let srv = common::petrel(&["--auth", "s3cr3t"]);
    for client in ["raw", "async-nats"] {
        let v = bench_json(
            &srv.url(),
            &[
                "bench.tok",
                "--pub",
                "1",
                "--sub",
                "1",
                "--msgs",
                "1000",
                "--token",
                "s3cr3t",
                "--client",
                client,
            ],
        );
        assert_eq!(v["ok"], true, "{client}");
    }

    let conf = common::jwt::memory_conf(&common::jwt::fixture_accounts());
    let srv = common::petrel(&["-c", conf.to_str().unwrap()]);
    let creds = format!("{}creds/a.creds", common::jwt::FIXTURES);
    for client in ["raw", "async-nats"] {
        let v = bench_json(
            &srv.url(),
            &[
                "bench.creds",
                "--pub",
                "1",
                "--sub",
                "2",
                "--msgs",
                "1000",
                "--creds",
                &creds,
                "--client",
                client,
            ],
        );
        assert_eq!(v["ok"], true, "{client}");
        assert_eq!(v["received"], 2000);
    }
    let expired = format!("{}creds/expired.creds", common::jwt::FIXTURES);
    let out = bench(&["bench.creds", "--msgs", "10", "--creds", &expired, "-s", &srv.url()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}
