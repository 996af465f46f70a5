//! The NATS tools users already run, against petrel and nats-server side by
//! side: natscli's `nats` (v0.5.0, nats.go), nats-top (v0.6.3) and nsc (v2.15.0),
//! installed pinned into
//! `target/tools` by `scripts/tools.sh` (which `scripts/test.sh` runs; it
//! sets `PETREL_REQUIRE_TOOLS=1` so a missing tool fails there instead of
//! skipping). Every command must succeed on both servers and say the same
//! things of each.

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The accounts both servers run with: a system account and an
/// application account, one password user each.
const CONF: &str = r#"
accounts {
  SYS: { users: [{user: sys, password: sys}] }
  APP: { users: [{user: app, password: app}] }
}
system_account: SYS
"#;

/// `target/tools/<name>`, or `None` (test skipped) when it is not
/// installed and the run does not require it.
fn tool(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/tools")
        .join(name);
    if p.is_file() {
        return Some(p);
    }
    assert!(
        std::env::var("PETREL_REQUIRE_TOOLS").is_err(),
        "target/tools/{name} missing: run scripts/tools.sh"
    );
    eprintln!("{name} not installed (scripts/tools.sh): skipping");
    None
}

fn nats_cli() -> Option<PathBuf> {
    tool("nats")
}

/// One server under test and how to reach it.
struct Target {
    name: &'static str,
    proc_: common::Proc,
}

/// petrel (two shards) and nats-server with the same configuration.
fn both(extra_petrel: &[&str], extra_nats: &[&str]) -> Vec<Target> {
    let dir = common::jwt::temp_dir();
    let conf = dir.join("tools.conf");
    std::fs::write(&conf, CONF).unwrap();
    let c = conf.to_str().unwrap();
    let mut p = vec!["-c", c, "--shards", "2", "-n", "P1"];
    p.extend_from_slice(extra_petrel);
    let mut n = vec!["-c", c, "-n", "N1"];
    n.extend_from_slice(extra_nats);
    vec![
        Target {
            name: "P1",
            proc_: common::petrel(&p),
        },
        Target {
            name: "N1",
            proc_: common::nats_server(&n),
        },
    ]
}

/// A `nats` command as `user` (password = user name) against `t`.
fn cmd(cli: &PathBuf, t: &Target, user: &str, args: &[&str]) -> Command {
    let mut c = Command::new(cli);
    c.args([
        "-s",
        &t.proc_.url(),
        "--user",
        user,
        "--password",
        user,
        "--timeout",
        "5s",
    ])
    .args(args)
    .env("NO_COLOR", "1")
    .stdin(Stdio::null());
    c
}

/// Runs to completion (at most 30 s): exit success and stdout + stderr.
fn run(mut c: Command) -> (bool, String) {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().expect("nats runs");
    finish(Bg(child), Duration::from_secs(30))
}

/// A `nats` process of this test; killed (by its PID) if still running
/// when dropped.
struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (at most `limit`) for `bg` to exit: success and stdout + stderr.
fn finish(mut bg: Bg, limit: Duration) -> (bool, String) {
    let child = &mut bg.0;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut out).unwrap();
    (status.is_some_and(|s| s.success()), out)
}

/// Starts a command that runs in the background (a subscriber, a replier).
fn start(mut c: Command) -> Bg {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = Bg(c.spawn().expect("nats runs"));
    // Connected and subscribed by then (a PING round trip takes < 1 ms).
    std::thread::sleep(Duration::from_millis(700));
    child
}

/// The JSON document among a command's output lines.
fn json_line(out: &str) -> serde_json::Value {
    let line = out
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in {out}"));
    serde_json::from_str(line).unwrap()
}

#[test]
fn nats_pub_sub_request_reply() {
    let Some(cli) = nats_cli() else { return };
    for t in both(&[], &[]) {
        let sub = start(cmd(&cli, &t, "app", &["sub", "greet", "--count", "1"]));
        let (ok, out) = run(cmd(&cli, &t, "app", &["pub", "greet", "hello from the cli"]));
        assert!(ok, "{}: pub: {out}", t.name);
        let (ok, out) = finish(sub, Duration::from_secs(10));
        assert!(ok && out.contains("hello from the cli"), "{}: sub: {out}", t.name);

        let replier = start(cmd(&cli, &t, "app", &["reply", "svc.time", "it is now"]));
        let (ok, out) = run(cmd(&cli, &t, "app", &["req", "svc.time", "what time"]));
        assert!(ok && out.contains("it is now"), "{}: req: {out}", t.name);
        // Accounts are apart: SYS has no responder on that subject.
        let (_, out) = run(cmd(&cli, &t, "sys", &["req", "svc.time", "x"]));
        assert!(out.contains("No responders"), "{}: {out}", t.name);
        let (_, out) = finish(replier, Duration::from_millis(100));
        assert!(out.contains("what time"), "{}: reply: {out}", t.name);
    }
}

#[test]
fn nats_server_commands_with_the_system_user() {
    let Some(cli) = nats_cli() else { return };
    let targets = both(&[], &[]);
    let mut cores = Vec::new();
    for t in &targets {
        let n = t.name;
        let check = |args: &[&str], user: &str, needles: &[&str]| {
            let (ok, out) = run(cmd(&cli, t, user, args));
            assert!(ok, "{n}: nats {}: {out}", args.join(" "));
            for needle in needles {
                assert!(
                    out.contains(needle),
                    "{n}: nats {}: no {needle:?} in {out}",
                    args.join(" ")
                );
            }
            out
        };
        check(&["server", "ping", "1"], "sys", &[n, "1 replies"]);
        check(
            &["server", "info"],
            "sys",
            &[&format!("Server information for {n}"), "Connection Details"],
        );
        check(&["server", "list"], "sys", &["Server Overview", n]);
        check(
            &["server", "report", "connections"],
            "sys",
            &["NATS CLI Version", "SYS"],
        );
        check(&["server", "report", "accounts"], "sys", &["Accounts Overview", "SYS"]);
        let subs = check(&["server", "request", "subscriptions"], "sys", &["num_subscriptions"]);
        let v = json_line(&subs);
        assert_eq!(v["server"]["name"], n);
        let conns = check(&["server", "request", "connections"], "sys", &["connections"]);
        let v = json_line(&conns);
        let c = &v["data"]["connections"][0];
        assert_eq!(
            (c["account"].as_str(), c["authorized_user"].as_str()),
            (Some("SYS"), Some("sys")),
            "{n}"
        );
        assert_eq!(c["name"], "NATS CLI Version v0.5.0", "{n}");
        check(&["server", "check", "connection"], "app", &["OK Connection OK"]);
        check(
            &["account", "info"],
            "app",
            &["Account: APP", &format!("Connected Server Name: {n}")],
        );
        let ping = check(&["req", "$SYS.REQ.SERVER.PING", "", "--raw"], "sys", &["statsz"]);
        let v = json_line(&ping);
        cores.push(v["statsz"]["cores"].as_u64());
    }
    // Both count the machine's cores (petrel's $SYS threads are pinned to
    // one core each; it counts the process's, as nats-server does).
    assert_eq!(cores[0], cores[1], "STATSZ cores");
}

#[test]
fn nats_sub_to_system_events() {
    let Some(cli) = nats_cli() else { return };
    for t in both(&[], &[]) {
        // CONNECT, DISCONNECT and two SERVER.CONNS (the account's count
        // going to 1 and back), in an order that differs between servers.
        let events = start(cmd(&cli, &t, "sys", &["sub", "$SYS.ACCOUNT.APP.>", "--count", "4"]));
        let (ok, out) = run(cmd(&cli, &t, "app", &["pub", "x", "y"]));
        assert!(ok, "{}: {out}", t.name);
        let (ok, out) = finish(events, Duration::from_secs(10));
        assert!(ok, "{}: {out}", t.name);
        assert!(out.contains("$SYS.ACCOUNT.APP.CONNECT"), "{}: {out}", t.name);
        assert!(out.contains("$SYS.ACCOUNT.APP.DISCONNECT"), "{}: {out}", t.name);
        assert_eq!(
            out.matches("$SYS.ACCOUNT.APP.SERVER.CONNS").count(),
            2,
            "{}: {out}",
            t.name
        );
    }
}

#[test]
fn nats_server_request_profile_writes_a_pprof_file() {
    let Some(cli) = nats_cli() else { return };
    let dir = common::jwt::temp_dir();
    for t in both(&["--profile", "0"], &["--profile", "0"]) {
        let out_dir = dir.join(t.name);
        std::fs::create_dir_all(&out_dir).unwrap();
        let (ok, out) = run(cmd(
            &cli,
            &t,
            "sys",
            &["server", "request", "profile", "heap", out_dir.to_str().unwrap()],
        ));
        assert!(ok && out.contains("profile written"), "{}: {out}", t.name);
        let file = std::fs::read_dir(&out_dir).unwrap().next().unwrap().unwrap().path();
        let bytes = std::fs::read(&file).unwrap();
        assert!(bytes.len() > 20, "{}: empty profile", t.name);
        // pprof files are gzipped protobuf.
        assert_eq!(&bytes[..2], &[0x1f, 0x8b], "{}: not gzip", t.name);
    }
}

#[test]
fn nats_bench_core_modes() {
    let Some(cli) = nats_cli() else { return };
    for t in both(&[], &[]) {
        let n = t.name;
        let bench = |args: &[&str]| {
            let mut a = vec!["bench"];
            a.extend_from_slice(args);
            a.extend_from_slice(&["--msgs", "2000", "--size", "16", "--no-progress"]);
            cmd(&cli, &t, "app", &a)
        };
        let (ok, out) = run(bench(&["pub", "b.pub", "--clients", "2"]));
        assert!(ok && out.contains("stats:"), "{n}: bench pub: {out}");

        let subs = start(bench(&["sub", "b.ps", "--clients", "2"]));
        let (ok, out) = run(bench(&["pub", "b.ps"]));
        assert!(ok, "{n}: bench pub: {out}");
        let (ok, out) = finish(subs, Duration::from_secs(30));
        assert!(ok && out.contains("aggregated stats"), "{n}: bench sub: {out}");

        let service = start(bench(&["service", "serve", "b.svc"]));
        let (ok, out) = run(bench(&["service", "request", "b.svc", "--clients", "2"]));
        assert!(
            ok && out.contains("stats:") && out.contains("P99"),
            "{n}: bench service request: {out}"
        );
        drop(service); // killed
    }
}

#[test]
fn nats_top_reads_the_monitoring_port() {
    let (Some(top), Some(cli)) = (tool("nats-top"), nats_cli()) else {
        return;
    };
    for t in both(&["-m", "-1"], &["-m", "-1"]) {
        let sub = start(cmd(&cli, &t, "app", &["sub", "watched"]));
        let mut c = Command::new(&top);
        c.args([
            "-s",
            "127.0.0.1",
            "-m",
            &t.proc_.monitor_port().to_string(),
            "-o",
            "-",
            "-r",
            "1",
        ])
        .stdin(Stdio::null());
        let (ok, out) = run(c);
        assert!(ok, "{}: nats-top: {out}", t.name);
        for needle in [
            "NATS server version",
            "Connections Polled: 1",
            "NATS CLI Version v0.5.0",
            "Memory:",
        ] {
            assert!(out.contains(needle), "{}: no {needle:?} in {out}", t.name);
        }
        drop(sub);
    }
}

/// nsc's managed-operator flow with the NATS resolver, as its docs walk
/// it: an operator with a system account, `nsc generate config
/// --nats-resolver`, accounts pushed over NATS and pulled back (`nsc
/// pull -A` replacing a local edit), a user's creds connecting, a
/// revocation pushed and enforced.
#[test]
fn nsc_operator_flow_with_the_nats_resolver() {
    let (Some(nsc), Some(cli)) = (tool("nsc"), nats_cli()) else {
        return;
    };
    let dir = common::jwt::temp_dir();
    let (home, keys, store) = (dir.join("nsc-home"), dir.join("nkeys"), dir.join("store"));
    let nsc_run = |args: &[&str]| {
        let mut c = Command::new(&nsc);
        c.args(args)
            .env("NSC_HOME", &home)
            .env("NKEYS_PATH", &keys)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        let (ok, out) = run(c);
        assert!(ok, "nsc {}: {out}", args.join(" "));
        out
    };
    nsc_run(&["env", "-s", store.to_str().unwrap()]);
    nsc_run(&["add", "operator", "--sys", "--name", "OP"]);
    nsc_run(&["add", "account", "A"]);
    nsc_run(&["add", "user", "-a", "A", "u"]);
    let generated = nsc_run(&["generate", "config", "--nats-resolver", "--sys-account", "SYS"]);
    let creds = keys.join("creds/OP/A/u.creds");
    let user_pub = |url: &str| {
        let mut c = Command::new(&cli);
        c.args([
            "-s",
            url,
            "--creds",
            creds.to_str().unwrap(),
            "--timeout",
            "5s",
            "pub",
            "x",
            "y",
        ])
        .stdin(Stdio::null());
        run(c)
    };
    for (name, petrel) in [("petrel", true), ("nats-server", false)] {
        // The resolver's directory, the generated './jwt', made absolute.
        let jwt_dir = dir.join(format!("jwt-{name}"));
        let conf = dir.join(format!("{name}.conf"));
        std::fs::write(&conf, generated.replace("'./jwt'", &format!("'{}'", jwt_dir.display()))).unwrap();
        let args = ["-c", conf.to_str().unwrap()];
        let server = if petrel {
            common::petrel(&args)
        } else {
            common::nats_server(&args)
        };
        let url = server.url();
        let out = nsc_run(&["push", "-A", "-u", &url]);
        assert!(out.contains("pushed to a total of 1 nats-server"), "{name}: {out}");
        // Pulled back (the operator names this server for nsc pull): a
        // local edit not pushed is replaced by the server's JWT.
        nsc_run(&["edit", "operator", "--account-jwt-server-url", &url]);
        nsc_run(&["edit", "account", "A", "--tag", "local-only"]);
        let out = nsc_run(&["pull", "-A", "-F"]);
        assert!(
            out.contains("stored account \"A\"") && out.contains("stored account \"SYS\""),
            "{name}: {out}"
        );
        let described = nsc_run(&["describe", "account", "A", "--json"]);
        assert!(
            !described.contains("local-only"),
            "{name}: the server's JWT replaced the local one: {described}"
        );
        let (ok, out) = user_pub(&url);
        assert!(ok, "{name}: the user's creds connect: {out}");
        nsc_run(&["revocations", "add-user", "-a", "A", "-n", "u"]);
        nsc_run(&["push", "-a", "A", "-u", &url]);
        let (ok, out) = user_pub(&url);
        assert!(!ok && out.contains("Authorization Violation"), "{name}: revoked: {out}");
        nsc_run(&["revocations", "delete-user", "-a", "A", "-n", "u"]);
        assert!(
            jwt_dir.read_dir().unwrap().count() >= 2,
            "{name}: the resolver stored SYS and A"
        );
    }

    // The same accounts pushed over HTTP to `petrel account-server`, which
    // both servers' URL resolvers read.
    let as_dir = dir.join("account-server");
    std::fs::create_dir_all(&as_dir).unwrap();
    let operator_jwt = store.join("OP/OP.jwt");
    let mut account_server = Command::new(env!("CARGO_BIN_EXE_petrel"));
    account_server
        .args(["account-server", "--operator", operator_jwt.to_str().unwrap()])
        .args(["--dir", as_dir.to_str().unwrap(), "--hp", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut account_server = Bg(account_server.spawn().unwrap());
    // Its log is read to the end (a closed pipe would fail its writes).
    let err = std::io::BufReader::new(account_server.0.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(err).map_while(Result::ok) {
            if let Some(addr) = line.split("Listening on ").nth(1) {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the account server's address");
    let out = nsc_run(&["push", "-A", "-u", &base]);
    assert!(out.contains("pushed account jwt to the account server"), "{out}");
    let system_account = generated
        .lines()
        .find_map(|l| l.strip_prefix("system_account: "))
        .expect("system_account in the generated config");
    let conf = dir.join("url-resolver.conf");
    std::fs::write(
        &conf,
        format!(
            "operator: {}\nsystem_account: {system_account}\nresolver: URL({base}/accounts/)\n",
            operator_jwt.display()
        ),
    )
    .unwrap();
    for (name, petrel) in [("petrel", true), ("nats-server", false)] {
        let args = ["-c", conf.to_str().unwrap()];
        let server = if petrel {
            common::petrel(&args)
        } else {
            common::nats_server(&args)
        };
        let (ok, out) = user_pub(&server.url());
        assert!(ok, "{name} with the URL resolver: {out}");
    }
    drop(account_server);
}
