//! PROFILEZ over the system account, `prof_port`'s `/debug/pprof`, and
//! `petrel profile`: profiles decode as pprof, carry Go's sample types and
//! name petrel's own functions; a heap profile sees memory the test made
//! the server hold; `go tool pprof` opens them when Go is installed.

mod common;

use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use petrel::profile::decode;
use pprof::protos::Profile;
use serde_json::{json, Value};

const CONFIG: &str = r#"
accounts {
  SYS: { users: [{user: sys, password: sys}] }
  A: { users: [{user: a, password: a}] }
}
system_account: SYS
max_pending: 300MB
"#;

fn conf() -> std::path::PathBuf {
    common::jwt::write_conf(CONFIG)
}

async fn login(url: &str, user: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), user.into())
        .connect(url)
        .await
        .unwrap()
}

async fn profilez(sys: &async_nats::Client, body: Value) -> Result<Vec<u8>, String> {
    // 60 s, not async-nats' default 10 s: the first profile symbolizes the
    // debug binary, measured at 2-5 s here and once 15.6 s while the other
    // tests of this file load both cores.
    let request = async_nats::Request::new()
        .payload(body.to_string().into())
        .timeout(Some(Duration::from_secs(60)));
    let m = sys
        .send_request("$SYS.REQ.SERVER.PING.PROFILEZ", request)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&m.payload).unwrap();
    match v["data"]["error"].as_str() {
        Some("") => Ok(base64::engine::general_purpose::STANDARD
            .decode(v["data"]["profile"].as_str().unwrap())
            .unwrap()),
        Some(e) => Err(e.to_string()),
        None => panic!("no data.error: {v}"),
    }
}

fn names(p: &Profile) -> Vec<String> {
    p.function
        .iter()
        .map(|f| p.string_table[f.name as usize].clone())
        .collect()
}

fn sample_types(p: &Profile) -> Vec<String> {
    p.sample_type
        .iter()
        .map(|t| p.string_table[t.ty as usize].clone())
        .collect()
}

fn inuse_bytes(p: &Profile) -> i64 {
    p.sample.iter().map(|s| s.value[3]).sum()
}

/// `go tool pprof -top` on a profile, when Go is installed (scripts/test.sh
/// installs it and sets PETREL_REQUIRE_GO=1 so a missing Go fails there).
fn go_pprof_top(bytes: &[u8], must_mention: &str) {
    let have_go = std::process::Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_go {
        assert!(
            std::env::var("PETREL_REQUIRE_GO").is_err(),
            "go is required (PETREL_REQUIRE_GO)"
        );
        eprintln!("go not installed: skipping go tool pprof");
        return;
    }
    let path = common::jwt::temp_dir().join("profile.pb.gz");
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new("go")
        .args(["tool", "pprof", "-top", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(must_mention), "{text}");
}

#[tokio::test]
async fn cpu_profile_over_sys_names_shards_and_functions() {
    let s = common::petrel(&["-c", conf().to_str().unwrap(), "--shards", "2"]);
    let sys = login(&s.url(), "sys").await;
    let a = login(&s.url(), "a").await;
    let mut sub = a.subscribe("load").await.unwrap();
    a.flush().await.unwrap();
    let publisher = login(&s.url(), "a").await;
    let load = tokio::spawn(async move {
        loop {
            for _ in 0..1000 {
                if publisher.publish("load", "0123456789abcdef".into()).await.is_err() {
                    return;
                }
            }
            let _ = publisher.flush().await;
        }
    });
    let drain = tokio::spawn(async move { while sub.next().await.is_some() {} });
    let bytes = profilez(&sys, json!({"name": "cpu", "duration": 1_000_000_000u64}))
        .await
        .unwrap();
    load.abort();
    drain.abort();
    let p = decode(&bytes).unwrap();
    assert_eq!(sample_types(&p), ["samples", "cpu"]);
    assert!(!p.sample.is_empty());
    let fns = names(&p);
    assert!(
        fns.iter().any(|n| n.contains("petrel::")),
        "petrel's functions: {fns:?}"
    );
    let threads: Vec<&String> = p
        .sample
        .iter()
        .flat_map(|s| &s.label)
        .filter(|l| p.string_table[l.key as usize] == "thread")
        .map(|l| &p.string_table[l.str as usize])
        .collect();
    assert!(threads.iter().any(|t| t.starts_with("petrel-shard-")), "{threads:?}");
    go_pprof_top(&bytes, "petrel");

    // nats-server's bounds and names.
    let e = profilez(&sys, json!({"name": "cpu", "duration": 16_000_000_000u64}))
        .await
        .unwrap_err();
    assert_eq!(e, "Duration 16s should be between 0s and 15s");
    assert_eq!(
        profilez(&sys, json!({})).await.unwrap_err(),
        "Profile name not specified"
    );
    assert_eq!(
        profilez(&sys, json!({"name": "nope"})).await.unwrap_err(),
        "Profile \"nope\" not found"
    );
    assert!(profilez(&sys, json!({"name": "mutex"}))
        .await
        .unwrap_err()
        .contains("no locks"));
    let g = decode(&profilez(&sys, json!({"name": "goroutine"})).await.unwrap()).unwrap();
    assert!(
        names(&g).iter().any(|n| n.contains("petrel-shard-0")),
        "{:?}",
        names(&g)
    );
    let text = profilez(&sys, json!({"name": "goroutine", "debug": 1})).await.unwrap();
    assert!(String::from_utf8(text)
        .unwrap()
        .starts_with("goroutine profile: total "));
}

#[tokio::test]
async fn heap_profile_sees_what_the_server_holds() {
    let s = common::petrel_env(&["-c", conf().to_str().unwrap()], &[("PETREL_HEAP_RATE", "65536")]);
    let sys = login(&s.url(), "sys").await;
    let before = decode(&profilez(&sys, json!({"name": "heap"})).await.unwrap()).unwrap();
    assert_eq!(
        sample_types(&before),
        ["alloc_objects", "alloc_space", "inuse_objects", "inuse_space"]
    );
    // A subscriber that never reads makes the server hold what is published to it.
    let mut stuck = common::raw::Raw::open(&s.addr());
    stuck.exchange(b"CONNECT {\"user\":\"a\",\"pass\":\"a\",\"verbose\":false}\r\nSUB hold 1\r\nPING\r\n");
    let publisher = login(&s.url(), "a").await;
    let (n, size) = (3072usize, 32 * 1024usize);
    let body = bytes::Bytes::from(vec![b'x'; size]);
    for _ in 0..n {
        publisher.publish("hold", body.clone()).await.unwrap();
    }
    publisher.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bytes = profilez(&sys, json!({"name": "heap"})).await.unwrap();
    let after = decode(&bytes).unwrap();
    // The payloads sit in the stuck client's outbound chunks, which carry
    // their own slack (a chunk grows past 64 KiB to take a second 32 KiB
    // message); the sampler's own accuracy is checked in-process in
    // tests/heap_sampler.rs.
    let held = (n * size) as f64;
    let delta = (inuse_bytes(&after) - inuse_bytes(&before)) as f64;
    assert!(
        delta > held * 0.8 && delta < held * 2.5,
        "in-use grew by {delta:.0} bytes for {held:.0} held"
    );
    assert!(
        names(&after).iter().any(|n| n.contains("petrel::")),
        "{:?}",
        names(&after)
    );
    go_pprof_top(&bytes, "inuse_space");
    let allocs = decode(&profilez(&sys, json!({"name": "allocs"})).await.unwrap()).unwrap();
    assert_eq!(allocs.string_table[allocs.default_sample_type as usize], "alloc_space");
    let text = String::from_utf8(profilez(&sys, json!({"name": "heap", "debug": 1})).await.unwrap()).unwrap();
    assert!(text.starts_with("heap profile: "), "{text:.200}");
    drop(stuck);
}

#[test]
fn prof_port_and_petrel_profile_command() {
    let s = common::petrel(&["-c", conf().to_str().unwrap(), "--profile", "-1"]);
    let port: u16 = s
        .log_lines("Starting profiling on http://")
        .first()
        .and_then(|l| l.rsplit(':').next().and_then(|p| p.trim().parse().ok()))
        .expect("profiling port in the log");
    let get = |path: &str| -> Vec<u8> {
        let r = ureq::get(&format!("http://127.0.0.1:{port}{path}")).call().unwrap();
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut r.into_reader(), &mut v).unwrap();
        v
    };
    let heap = decode(&get("/debug/pprof/heap")).unwrap();
    assert_eq!(sample_types(&heap).len(), 4);
    let cpu = decode(&get("/debug/pprof/profile?seconds=1")).unwrap();
    assert_eq!(sample_types(&cpu), ["samples", "cpu"]);
    assert!(String::from_utf8(get("/debug/pprof/goroutine?debug=2"))
        .unwrap()
        .contains("petrel-shard-0"));

    let out = common::jwt::temp_dir();
    let r = std::process::Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(["profile", "--server", &s.url(), "--user", "sys", "--password", "sys"])
        .args(["--name", "heap", "--flamegraph", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.iter().any(|f| f.ends_with(".heap.pb.gz")), "{files:?}");
    let svg = files.iter().find(|f| f.ends_with(".heap.svg")).expect("flame graph");
    assert!(std::fs::read_to_string(out.join(svg)).unwrap().contains("<svg"));
}
