//! Lame-duck mode with real clients, entered through `--signal ldm=<pid
//! file>`: clients see `ldm: true` in an INFO, new connections are refused,
//! open ones are closed within the lame-duck duration, and the server exits.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::raw::Raw;

#[tokio::test]
async fn lame_duck_informs_then_closes_clients_and_exits() {
    let dir = std::env::temp_dir().join(format!("petrel-ldm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("ldm.conf");
    std::fs::write(&conf, "lame_duck_duration: \"30s\"\nlame_duck_grace_period: \"1s\"\n").unwrap();
    let pid_file = dir.join("petrel.pid");
    let mut p = common::petrel(&[
        "--shards",
        "2",
        "-c",
        conf.to_str().unwrap(),
        "-P",
        pid_file.to_str().unwrap(),
    ]);

    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .event_callback(move |e| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(e);
            }
        })
        .connect(p.url())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let mut raw = Raw::open(&p.addr());
    raw.send(b"CONNECT {\"verbose\":false,\"protocol\":1}\r\n");
    assert_eq!(raw.ping(), "");
    // The second ping follows the connect_info INFO of the first.
    let _ = raw.ping();

    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .arg("--signal")
        .arg(format!("ldm={}", pid_file.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The async-nats client is told.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(async_nats::Event::LameDuckMode)) => break,
            Ok(Some(_)) => continue,
            other => panic!("no lame duck event: {other:?}"),
        }
    }
    // The raw client sees the INFO with ldm, then the close.
    let line = raw.read_line(Duration::from_secs(5)).expect("INFO with ldm");
    assert!(line.starts_with("INFO ") && line.contains("\"ldm\":true"), "{line}");
    // New connections are refused once the listeners are closed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        std::net::TcpStream::connect(p.addr()).is_err(),
        "listener closed in lame duck mode"
    );
    let r = raw.read_until_quiet(Duration::from_secs(10), Duration::from_secs(15));
    assert!(r.closed, "closed within the duration");
    let status = p
        .wait_exit(Duration::from_secs(20))
        .expect("server exits after lame duck");
    assert!(status.success());
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "grace 1s plus at most 1s per client: {:?}",
        start.elapsed()
    );
    assert!(!p.log_lines("Entering lame duck mode").is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
