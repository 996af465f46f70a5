//! The command line and process lifecycle as scripts and client test
//! harnesses use them: pid file, ports file, log file, readiness lines,
//! version/help, refused flags, SIGTERM.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_petrel")
}

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("petrel-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn pid_ports_and_log_files() {
    let dir = tmpdir("files");
    let pid_file = dir.join("petrel.pid");
    let log_file = dir.join("petrel.log");
    let mut child = Command::new(bin())
        .args(["-p", "-1", "-a", "127.0.0.1", "-P"])
        .arg(&pid_file)
        .arg("--ports_file_dir")
        .arg(&dir)
        .arg("-l")
        .arg(&log_file)
        .spawn()
        .unwrap();
    let pid = child.id();
    let ports_file = dir.join(format!("petrel_{pid}.ports"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(ports_file.exists()
        && std::fs::read_to_string(&log_file)
            .unwrap_or_default()
            .contains("Server is ready"))
    {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), pid.to_string());
    let log = std::fs::read_to_string(&log_file).unwrap();
    // async-nats' harness: `\sclient connections on\s+(\S+)` in the log file.
    let line = log
        .lines()
        .find(|l| l.contains("Listening for client connections on "))
        .unwrap();
    let port: u16 = line.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        line.starts_with(&format!("[{pid}] ")) && line.contains(" [INF] "),
        "{line}"
    );
    let ports: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ports_file).unwrap()).unwrap();
    assert_eq!(ports["nats"][0], format!("nats://127.0.0.1:{port}"));
    let mut c = common::raw::Raw::open(&format!("127.0.0.1:{port}"));
    assert_eq!(c.ping(), "");

    // SIGTERM: clean exit, ports file removed.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!ports_file.exists(), "ports file is removed on exit");
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(log.contains("Server Exiting.."), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn version_help_and_bad_flags() {
    let out = Command::new(bin()).arg("-v").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nats-server: v2."));
    let out = Command::new(bin()).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--port"));
    let out = Command::new(bin()).arg("--no_such_flag").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("flag provided but not defined: -no_such_flag"));
    let out = Command::new(bin()).args(["--https_port", "8443"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("flag -https_port is not supported by petrel yet (HTTP monitoring)"));
    // TLS without a certificate cannot start.
    let out = Command::new(bin()).args(["-p", "-1", "--tls"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cert_file is required"));
}

/// A stopped server's ports are free at once, as nats-server's are:
/// harnesses restart a server on the same port right after SIGTERM
/// (nats.js) or SIGKILL (nats-py, async-nats). Nothing accepts once the
/// process is gone (the io_uring runtime petrel had before kept an accept
/// in flight that lived on for a few ms after the exit; the restart still
/// waits such a dying listener out instead of calling the port busy).
#[test]
fn a_stopped_server_frees_its_ports_for_a_restart() {
    let dir = tmpdir("restart");
    let conf = dir.join("leaf.conf");
    let [client, route, leaf] = [common::free_port(), common::free_port(), common::free_port()];
    std::fs::write(&conf, format!("leafnodes {{ listen: 127.0.0.1:{leaf} }}\n")).unwrap();
    let argv = [
        "-p".to_string(),
        client.to_string(),
        "--cluster".to_string(),
        format!("nats://127.0.0.1:{route}"),
        "-c".to_string(),
        conf.display().to_string(),
    ];
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    // A dropped Proc waits for its ports to refuse: the stopped one is
    // dropped only once the next has started.
    let mut stopped = None;
    for signal in [libc::SIGTERM, libc::SIGKILL, libc::SIGTERM] {
        let mut p = common::petrel(&argv);
        drop(stopped.take());
        unsafe { libc::kill(p.pid() as i32, signal) };
        p.wait_exit(Duration::from_secs(5)).expect("exits");
        if signal == libc::SIGTERM {
            for port in [client, route, leaf] {
                assert!(
                    std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
                    "port {port} accepts after the exit"
                );
            }
        }
        // The next round restarts on the same ports at once.
        stopped = Some(p);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn listen_failure_is_fatal_and_logged() {
    // A port another server holds: petrel's shards share their port through
    // SO_REUSEPORT, but a second process must not join it silently.
    for other in [common::petrel(&[]), common::nats_server(&[])] {
        let out = Command::new(bin())
            .args(["-p", &other.port.to_string(), "-a", "127.0.0.1"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("[FTL]") && err.contains("Error listening on port"),
            "{err}"
        );
        assert!(
            err.contains("address already in use") || err.contains("Address in use"),
            "{err}"
        );
    }
}

#[test]
fn remote_syslog_receives_the_log() {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let target = format!("udp://{}", sock.local_addr().unwrap());
    let mut child = Command::new(bin())
        .args(["-p", "-1", "-a", "127.0.0.1", "-r", &target])
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = Vec::new();
    let mut buf = [0u8; 4096];
    while !lines.iter().any(|l: &String| l.contains("Server is ready")) {
        let n = sock.recv(&mut buf).expect("syslog datagram");
        lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let _ = child.kill();
    let _ = child.wait();
    let ready = lines.iter().find(|l| l.contains("Server is ready")).unwrap();
    // Facility daemon (3), severity info (6): priority 30.
    assert_eq!(ready, &format!("<30>petrel[{pid}]: [INF] Server is ready"));
    assert!(lines
        .iter()
        .any(|l| l.contains("Listening for client connections on 127.0.0.1:")));
}

#[test]
fn signal_by_pid_glob_reaches_the_server() {
    let p = common::petrel(&[]);
    let glob = format!("reload={}*", p.pid());
    let out = Command::new(bin()).args(["--signal", &glob]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.log_lines("Failed to reload server configuration").is_empty() {
        assert!(Instant::now() < deadline, "SIGHUP was not delivered");
        std::thread::sleep(Duration::from_millis(20));
    }
    let line = &p.log_lines("Failed to reload server configuration")[0];
    assert!(
        line.contains("can only reload config when a file is provided"),
        "{line}"
    );
    let out = Command::new(bin()).args(["--signal", "bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown signal \"bogus\""));
}

/// The runtime locks no memory and needs no io_uring, so petrel serves
/// under a locked-memory limit of zero, as a container gets by default
/// (the io_uring runtime before needed 512 KiB a shard and refused to start).
#[test]
fn serves_with_no_locked_memory() {
    use std::io::Read;
    let port = common::free_port();
    let mut child = Command::new("bash")
        .args([
            "-c",
            &format!("ulimit -l 0 && exec \"$0\" -p {port} -a 127.0.0.1"),
            bin(),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let info = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let mut buf = [0u8; 5];
            s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
            if s.read_exact(&mut buf).is_ok() {
                break buf;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no INFO within 10 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(&info, b"INFO ");
}

/// `logtime_utc` (file or flag) writes log times in UTC; without it they
/// are local (a POSIX `TZ` nine hours east of UTC, which needs no tzdata).
#[test]
fn logtime_utc_writes_utc_times() {
    let hour_of = |p: &common::Proc| -> i64 {
        let line = p.log_lines("Server is ready").pop().expect("ready line");
        // `[pid] 2006/01/02 15:04:05.000000 [INF] ...`
        let time = line.split(' ').nth(2).expect("a time");
        time[..2].parse().expect("an hour")
    };
    let utc_hour = || {
        (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            / 3600
            % 24) as i64
    };
    let dir = common::jwt::temp_dir();
    let conf = dir.join("utc.conf");
    std::fs::write(&conf, "logtime_utc: true\n").unwrap();
    for (args, offset) in [
        (vec![], 9),
        (vec!["--logtime_utc"], 0),
        (vec!["-c", conf.to_str().unwrap()], 0),
    ] {
        let before = utc_hour();
        let p = common::petrel_env(&args, &[("TZ", "XST-9")]);
        let after = utc_hour();
        let got = hour_of(&p);
        assert!(
            [before, after].iter().any(|h| (h + offset) % 24 == got),
            "{args:?}: log hour {got}, UTC hour {before}"
        );
    }
}
