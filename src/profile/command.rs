//! `petrel profile`: asks one server (`--id`) or every server (PING) for a
//! PROFILEZ profile over the system account, writes one `.pb.gz` per
//! server, and with `--flamegraph` an SVG flame graph beside each.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

/// The command's usage.
pub const USAGE: &str = "\
Usage: petrel profile [options]

    --server <url>       server to connect to (default nats://127.0.0.1:4222)
    --creds <file>       system account user creds
    --user <user>        system account user (with --password)
    --password <pass>
    --name <profile>     cpu, heap, allocs, goroutine, threadcreate (default cpu)
    --duration <secs>    cpu profile length in seconds, at most 15 (default 5)
    --id <server id>     ask this server only (default: every server, by PING)
    --out <dir>          where to write <server>.<name>.pb.gz (default .)
    --flamegraph         also write <server>.<name>.svg
    --timeout <secs>     how long to wait beyond the duration (default 5)
";

#[derive(Debug)]
struct Args {
    server: String,
    creds: Option<PathBuf>,
    user: Option<String>,
    password: Option<String>,
    name: String,
    duration: u64,
    id: Option<String>,
    out: PathBuf,
    flamegraph: bool,
    timeout: u64,
}

fn parse(argv: &[String]) -> Result<Option<Args>, String> {
    let mut a = Args {
        server: "nats://127.0.0.1:4222".into(),
        creds: None,
        user: None,
        password: None,
        name: "cpu".into(),
        duration: 5,
        id: None,
        out: PathBuf::from("."),
        flamegraph: false,
        timeout: 5,
    };
    let mut i = 0;
    while i < argv.len() {
        let flag = argv[i].trim_start_matches('-');
        match flag {
            "h" | "help" => return Ok(None),
            "flamegraph" => {
                a.flamegraph = true;
                i += 1;
                continue;
            }
            _ => {}
        }
        let v = argv
            .get(i + 1)
            .cloned()
            .ok_or_else(|| format!("flag needs a value: {}", argv[i]))?;
        let num = |v: &str| {
            v.trim_end_matches('s')
                .parse::<u64>()
                .map_err(|_| format!("not a number: {v}"))
        };
        match flag {
            "server" | "s" => a.server = v,
            "creds" => a.creds = Some(v.into()),
            "user" => a.user = Some(v),
            "password" => a.password = Some(v),
            "name" => a.name = v,
            "duration" => a.duration = num(&v)?,
            "id" => a.id = Some(v),
            "out" => a.out = v.into(),
            "timeout" => a.timeout = num(&v)?,
            other => return Err(format!("unknown flag -{other}")),
        }
        i += 2;
    }
    Ok(Some(a))
}

/// Runs the command; returns the exit code.
pub fn main(argv: &[String]) -> i32 {
    let a = match parse(argv) {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{USAGE}");
            return 0;
        }
        Err(e) => {
            eprintln!("petrel profile: {e}\n\n{USAGE}");
            return 2;
        }
    };
    match run(&a) {
        Ok(0) => {
            eprintln!("petrel profile: no server answered");
            1
        }
        Ok(_) => 0,
        Err(e) => {
            eprintln!("petrel profile: {e}");
            1
        }
    }
}

fn run(a: &Args) -> Result<usize, String> {
    let mut creds = crate::tool_client::Credentials::default();
    if let Some(p) = &a.creds {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        creds.jwt = Some(crate::auth::jwt::parse_creds(&text).map_err(|e| e.to_string())?);
    }
    if let Some(u) = &a.user {
        creds.user = Some((u.clone(), a.password.clone().unwrap_or_default()));
    }
    let c = crate::tool_client::connect(&a.server, "petrel profile", &creds)?;
    let (mut rd, mut w) = (c.reader, c.writer);
    let subject = match &a.id {
        Some(id) => format!("$SYS.REQ.SERVER.{id}.PROFILEZ"),
        None => "$SYS.REQ.SERVER.PING.PROFILEZ".to_string(),
    };
    let body =
        json!({"name": a.name, "debug": 0, "duration": Duration::from_secs(a.duration).as_nanos() as u64}).to_string();
    let inbox = format!("_INBOX.profile.{}", crate::sys::event_id());
    write!(
        w,
        "SUB {inbox} 1\r\nPUB {subject} {inbox} {}\r\n{body}\r\nPING\r\n",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let wait = Duration::from_secs(a.duration * u64::from(a.name == "cpu") + a.timeout);
    let deadline = Instant::now() + wait;
    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let mut answered = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || (a.id.is_some() && answered > 0) {
            return Ok(answered);
        }
        w.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        let mut line = String::new();
        match rd.read_line(&mut line) {
            Ok(0) => return Ok(answered),
            Ok(_) => {}
            Err(_) => return Ok(answered),
        }
        if line.starts_with("-ERR") {
            return Err(line.trim().to_string());
        }
        if line.starts_with("PING") {
            let _ = w.write_all(b"PONG\r\n");
            continue;
        }
        let Some(rest) = line.strip_prefix("MSG ") else {
            continue;
        };
        let size: usize = rest.split_whitespace().last().and_then(|n| n.parse().ok()).unwrap_or(0);
        let mut payload = vec![0u8; size + 2];
        rd.read_exact(&mut payload).map_err(|e| e.to_string())?;
        payload.truncate(size);
        answered += save(a, &payload)?;
    }
}

/// Writes one server's answer; returns 1 when it held a profile.
fn save(a: &Args, payload: &[u8]) -> Result<usize, String> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| format!("reply: {e}"))?;
    let server = v["server"]["name"]
        .as_str()
        .or(v["server"]["id"].as_str())
        .unwrap_or("server")
        .to_string();
    if let Some(e) = v["data"]["error"].as_str().filter(|e| !e.is_empty()) {
        eprintln!("{server}: {e}");
        return Ok(0);
    }
    if let Some(e) = v["error"]["description"].as_str() {
        eprintln!("{server}: {e}");
        return Ok(0);
    }
    let b64 = v["data"]["profile"].as_str().ok_or("reply without a profile")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("profile: {e}"))?;
    let path = a.out.join(format!("{server}.{}.pb.gz", a.name));
    std::fs::write(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("{}", path.display());
    if a.flamegraph {
        let svg = a.out.join(format!("{server}.{}.svg", a.name));
        flamegraph(&bytes, &svg)?;
        println!("{}", svg.display());
    }
    Ok(1)
}

/// Renders a pprof profile as an SVG flame graph (inferno), weighing each
/// stack by the profile's default (or last) sample type.
pub fn flamegraph(profile: &[u8], out: &Path) -> Result<(), String> {
    let p = super::decode(profile)?;
    let value_index = p
        .sample_type
        .iter()
        .position(|t| t.ty == p.default_sample_type && p.default_sample_type != 0)
        .unwrap_or(p.sample_type.len().saturating_sub(1));
    let name_of = |loc: u64| -> String {
        p.location
            .iter()
            .find(|l| l.id == loc)
            .and_then(|l| l.line.first())
            .and_then(|ln| p.function.iter().find(|f| f.id == ln.function_id))
            .map(|f| p.string_table[f.name as usize].replace(';', ":"))
            .unwrap_or_else(|| format!("{loc:#x}"))
    };
    let mut lines = Vec::new();
    for s in &p.sample {
        let v = s.value.get(value_index).copied().unwrap_or(0);
        if v <= 0 {
            continue;
        }
        // pprof lists leaf first; flame graphs read root first.
        let stack: Vec<String> = s.location_id.iter().rev().map(|l| name_of(*l)).collect();
        lines.push(format!("{} {v}", stack.join(";")));
    }
    if lines.is_empty() {
        return Err("the profile has no samples".into());
    }
    let mut opts = inferno::flamegraph::Options::default();
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), &mut svg)
        .map_err(|e| e.to_string())?;
    std::fs::write(out, svg).map_err(|e| format!("{}: {e}", out.display()))
}
