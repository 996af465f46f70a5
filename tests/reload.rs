//! Configuration reload on SIGHUP, under load: changed options apply to new
//! and open connections without dropping anything; a change that cannot be
//! applied is rejected by name and nothing changes.

mod common;

use std::time::{Duration, Instant};

use common::raw::Raw;

fn sighup(pid: u32) {
    // SAFETY: signalling a child process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
}

fn wait_for_log(p: &common::Proc, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.log_lines(needle).len() < count {
        assert!(Instant::now() < deadline, "no log line {needle:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn reload_under_load_applies_reloadable_options_and_rejects_the_rest() {
    let dir = std::env::temp_dir().join(format!("petrel-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("petrel.conf");
    std::fs::write(&conf, "max_payload: 1KB\nping_interval: \"2m\"\n").unwrap();
    let p = common::petrel(&["--shards", "2", "-c", conf.to_str().unwrap()]);

    let mut sub = Raw::open(&p.addr());
    sub.send(b"CONNECT {\"verbose\":false}\r\nSUB load 1\r\n");
    assert_eq!(sub.ping(), "");
    let mut publisher = Raw::open(&p.addr());
    assert_eq!(publisher.info()["max_payload"], 1024);
    publisher.send(b"CONNECT {\"verbose\":false}\r\n");

    // Publish steadily while the configuration is reloaded.
    let total = 3000;
    let body = vec![b'x'; 900];
    let addr = p.addr();
    let pid = p.pid();
    let conf2 = conf.clone();
    let reloader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        std::fs::write(&conf2, "max_payload: 2KB\nping_interval: \"1m\"\ndebug: true\n").unwrap();
        sighup(pid);
        addr
    });
    for i in 0..total {
        let mut frame = format!("PUB load {}\r\n", body.len()).into_bytes();
        frame.extend_from_slice(&body);
        frame.extend_from_slice(b"\r\n");
        publisher.send(&frame);
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert_eq!(publisher.ping(), "", "publisher kept its connection");
    reloader.join().unwrap();
    wait_for_log(&p, "Reloaded server configuration", 1);
    assert_eq!(p.log_lines("Reloaded: max_payload = 2048").len(), 1);
    assert_eq!(p.log_lines("Reloaded: debug = true").len(), 1);

    // Nothing was dropped.
    let mut got = 0usize;
    let frame_len = b"MSG load 1 900\r\n".len() + 900 + 2;
    while got < total * frame_len {
        let r = sub.read_until_quiet(Duration::from_secs(2), Duration::from_secs(10));
        assert!(!r.bytes.is_empty(), "received {} of {total}", got / frame_len);
        // Server PINGs may come in between (the first after about 2 s).
        let pings = r.bytes.windows(6).filter(|w| w == b"PING\r\n").count();
        for _ in 0..pings {
            sub.send(b"PONG\r\n");
        }
        got += r.bytes.len() - 6 * pings;
    }
    assert_eq!(got, total * frame_len);

    // New connections see the new limit; the open one may use it too.
    let fresh = Raw::open(&p.addr());
    assert_eq!(fresh.info()["max_payload"], 2048);
    let big = vec![b'y'; 1500];
    let mut frame = b"PUB load 1500\r\n".to_vec();
    frame.extend_from_slice(&big);
    frame.extend_from_slice(b"\r\n");
    publisher.send(&frame);
    assert_eq!(publisher.ping(), "", "1500 bytes now fit the open connection's limit");
    let mut line = sub.read_line(Duration::from_secs(5)).unwrap();
    while line == "PING\r\n" {
        sub.send(b"PONG\r\n");
        line = sub.read_line(Duration::from_secs(5)).unwrap();
    }
    assert_eq!(line, "MSG load 1 1500\r\n");

    // A change that cannot happen at run time: rejected by name, nothing applied.
    std::fs::write(
        &conf,
        "max_payload: 4KB\nserver_name: renamed\nping_interval: \"1m\"\ndebug: true\n",
    )
    .unwrap();
    sighup(p.pid());
    wait_for_log(&p, "Failed to reload server configuration", 1);
    let line = &p.log_lines("Failed to reload server configuration")[0];
    assert!(
        line.contains("config reload not supported for server_name: old=, new=renamed"),
        "{line}"
    );
    assert_eq!(
        Raw::open(&p.addr()).info()["max_payload"],
        2048,
        "max_payload was not applied either"
    );

    // A no-op reload always succeeds.
    std::fs::write(&conf, "max_payload: 2KB\nping_interval: \"1m\"\ndebug: true\n").unwrap();
    sighup(p.pid());
    wait_for_log(&p, "Reloaded server configuration", 2);
    let _ = std::fs::remove_dir_all(&dir);
}
