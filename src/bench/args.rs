//! `petrel bench` command line: the nats CLI's flag names, parsed by hand
//! (`--flag value`, `--flag=value`, repeated positional subject).

use std::time::Duration;

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `petrel bench SUBJECT --pub N --sub N ...` (nats CLI 0.1 form).
    Combined,
    /// `petrel bench pub SUBJECT`
    Pub,
    /// `petrel bench sub SUBJECT`
    Sub,
    /// `petrel bench service serve SUBJECT`
    Serve,
    /// `petrel bench service request SUBJECT`
    Request,
}

/// Which client library runs plain publishers and subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// The raw-protocol client in `raw.rs` (default).
    Raw,
    /// async-nats 0.38.
    AsyncNats,
}

/// Every option; unused ones keep their defaults.
#[derive(Debug, Clone)]
pub struct Opts {
    pub mode: Mode,
    pub subject: String,
    pub server: String,
    pub creds: Option<String>,
    /// CA certificate (PEM) that a tls:// server's certificate chains to.
    pub tlsca: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub pubs: usize,
    pub subs: usize,
    /// Total messages (split over publishers; each subscriber expects all).
    pub msgs: u64,
    pub size: usize,
    pub request: bool,
    pub reply: bool,
    pub queue: Option<String>,
    pub multisubject: bool,
    /// Messages (or requests) per second per client; 0 = as fast as possible.
    pub rate: f64,
    /// Give up when nothing moves for this long (and request timeout).
    pub timeout: Duration,
    /// `--timeout` given explicitly (standalone `sub` otherwise waits for the first message).
    pub timeout_set: bool,
    pub progress: bool,
    pub json: bool,
    pub csv: Option<String>,
    pub client: ClientKind,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            mode: Mode::Combined,
            subject: String::new(),
            server: std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
            creds: None,
            tlsca: None,
            user: None,
            password: None,
            token: None,
            pubs: 0,
            subs: 0,
            msgs: 100_000,
            size: 128,
            request: false,
            reply: false,
            queue: None,
            multisubject: false,
            rate: 0.0,
            timeout: Duration::from_secs(10),
            timeout_set: false,
            progress: true,
            json: false,
            csv: None,
            client: ClientKind::Raw,
        }
    }
}

pub const USAGE: &str = "\
Usage: petrel bench SUBJECT [--pub N] [--sub N] [--msgs N] [--size SIZE] [--request] [--reply] [options]
       petrel bench pub SUBJECT [--clients N] [--msgs N] [--size SIZE] [options]
       petrel bench sub SUBJECT [--clients N] [--msgs N] [options]
       petrel bench service serve SUBJECT [--clients N] [--msgs N] [options]
       petrel bench service request SUBJECT [--clients N] [--msgs N] [--size SIZE] [options]

Measures a NATS server the way `nats bench` does: each publisher and
subscriber has its own connection; subscribers are in
place (a round trip through the server) before publishers start; every
count is checked exactly, and a lost or extra message fails the run (exit 1)
with the counts instead of a throughput.

Shape:
  --pub N             publishers (combined form; default 0, or 1 when --sub is 0)
  --sub N             subscribers (combined form; default 0)
  --clients N         clients of a subcommand (default 1)
  --msgs N            messages in total, split over publishers/requesters;
                      each subscriber expects all of them (default 100000;
                      `service serve`: stop after N requests, 0 = never)
  --size SIZE         payload size: 16, 256B, 8KiB, 64KiB, 1KB=1000 (default 128)
  --request           publishers send requests one at a time and wait for
                      each reply (closed loop: no coordinated omission)
  --reply             subscribers answer requests (queue group bench-reply)
  --queue NAME        subscribers join queue group NAME (the group gets
                      each message once)
  --multisubject      publish to SUBJECT.<seq>, subscribe to SUBJECT.*
  --rate N            messages or requests per second per client (default:
                      as fast as possible); request latency is then measured
                      from each request's scheduled send time
  --timeout DUR       give up when no message moves for DUR; also the
                      request timeout (default 10s; `sub` and `service
                      serve` wait as long as it takes unless --timeout is given)

Connection (as the nats CLI):
  -s, --server URL    server URL(s), comma separated (default $NATS_URL or
                      nats://127.0.0.1:4222)
  --client KIND       raw (default): publishers and subscribers speak the
                      protocol directly (each PUB encoded into a 32 KiB
                      write buffer; each MSG handed to a handler task as a
                      message), doing what nats.go's bench does; or
                      async-nats. Request/reply, the service and tls://,
                      ws:// and wss:// servers always use async-nats
  --creds FILE        user credentials (JWT + seed) file
  --tlsca FILE        CA certificate (PEM) to trust for tls:// servers
  --user USER         user name (or token when --password is not given)
  --password PASS     password
  --token TOKEN       authentication token

Output:
  --json              one JSON document on stdout instead of text
  --csv FILE          per-client rows (RunID, ClientID, MsgCount, MsgBytes,
                      MsgsPerSec, BytesPerSec, DurationSecs) to FILE (- = stdout)
  --no-progress       no progress bars (they are off when stderr is not a tty)
  -h, --help          this text
";

/// Parses `args` (after `bench`). `Ok(None)` means help was asked for.
pub fn parse(args: &[String]) -> Result<Option<Opts>, String> {
    let mut o = Opts::default();
    let mut positional = Vec::new();
    let mut pub_set = false;
    let mut clients: Option<usize> = None;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if !arg.starts_with('-') || arg == "-" {
            positional.push(arg.clone());
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let name = name.trim_start_matches('-').to_string();
        let flag = |o: bool| -> Result<bool, String> {
            match inline.as_deref() {
                None => Ok(o),
                Some("true") | Some("1") => Ok(true),
                Some("false") | Some("0") => Ok(false),
                Some(v) => Err(format!("--{name}: expected a boolean, got {v:?}")),
            }
        };
        match name.as_str() {
            "h" | "help" => return Ok(None),
            "request" => o.request = flag(true)?,
            "reply" => o.reply = flag(true)?,
            "multisubject" => o.multisubject = flag(true)?,
            "json" => o.json = flag(true)?,
            "no-progress" => o.progress = !flag(true)?,
            "progress" => o.progress = flag(true)?,
            _ => {
                let value = match inline {
                    Some(v) => v,
                    None => {
                        let v = args.get(i).cloned().ok_or_else(|| format!("--{name} needs a value"))?;
                        i += 1;
                        v
                    }
                };
                match name.as_str() {
                    "s" | "server" => o.server = value,
                    "creds" => o.creds = Some(value),
                    "tlsca" => o.tlsca = Some(value),
                    "user" => o.user = Some(value),
                    "password" => o.password = Some(value),
                    "token" => o.token = Some(value),
                    "pub" => {
                        o.pubs = count(&name, &value)?;
                        pub_set = true;
                    }
                    "sub" => o.subs = count(&name, &value)?,
                    "clients" => clients = Some(count(&name, &value)?),
                    "msgs" => o.msgs = count(&name, &value)? as u64,
                    "size" => o.size = parse_size(&value)?,
                    "queue" => o.queue = Some(value),
                    "rate" => {
                        o.rate = value
                            .parse::<f64>()
                            .ok()
                            .filter(|r| *r >= 0.0 && r.is_finite())
                            .ok_or_else(|| format!("--rate: not a rate: {value:?}"))?
                    }
                    "timeout" => {
                        o.timeout = parse_duration(&value)?;
                        o.timeout_set = true;
                    }
                    "csv" => o.csv = Some(value),
                    "client" => {
                        o.client = match value.as_str() {
                            "raw" => ClientKind::Raw,
                            "async-nats" | "async_nats" => ClientKind::AsyncNats,
                            _ => return Err(format!("--client: expected raw or async-nats, got {value:?}")),
                        }
                    }
                    _ => return Err(format!("unknown flag --{name}")),
                }
            }
        }
    }
    let mut pos = positional.into_iter();
    let first = pos.next().ok_or("missing SUBJECT")?;
    o.mode = match first.as_str() {
        "pub" => Mode::Pub,
        "sub" => Mode::Sub,
        "service" => match pos.next().as_deref() {
            Some("serve") => Mode::Serve,
            Some("request") => Mode::Request,
            other => return Err(format!("service: expected serve or request, got {other:?}")),
        },
        _ => {
            o.subject = first;
            Mode::Combined
        }
    };
    if o.mode != Mode::Combined {
        o.subject = pos.next().ok_or("missing SUBJECT")?;
    }
    if let Some(extra) = pos.next() {
        return Err(format!("unexpected argument {extra:?}"));
    }
    if o.subject.is_empty() || o.subject.contains(char::is_whitespace) {
        return Err(format!("invalid subject {:?}", o.subject));
    }
    let n = clients.unwrap_or(1);
    match o.mode {
        Mode::Combined => {
            if clients.is_some() {
                return Err("--clients belongs to the subcommands; use --pub and --sub".into());
            }
            if !pub_set && o.subs == 0 {
                o.pubs = 1;
            }
        }
        Mode::Pub => (o.pubs, o.subs) = (n, 0),
        Mode::Sub => (o.pubs, o.subs) = (0, n),
        Mode::Serve => (o.pubs, o.subs, o.reply) = (0, n, true),
        Mode::Request => (o.pubs, o.subs, o.request) = (n, 0, true),
    }
    if o.pubs == 0 && o.subs == 0 {
        return Err("nothing to run: no publishers and no subscribers".into());
    }
    if o.pubs > 0 && o.msgs < o.pubs as u64 {
        return Err(format!("--msgs {} is fewer than one per publisher", o.msgs));
    }
    if matches!(o.mode, Mode::Sub | Mode::Serve) && !o.timeout_set {
        o.timeout = Duration::ZERO; // wait for the first message as long as it takes
    }
    Ok(Some(o))
}

fn count(name: &str, v: &str) -> Result<usize, String> {
    let clean: String = v.chars().filter(|c| *c != '_' && *c != ',').collect();
    clean.parse().map_err(|_| format!("--{name}: not a count: {v:?}"))
}

/// `16`, `16B`, `1KB` (1000), `1KiB` (1024), `1K` (1000), `2MiB`, ...
pub fn parse_size(v: &str) -> Result<usize, String> {
    let t = v.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: usize = num.parse().map_err(|_| format!("--size: not a size: {v:?}"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1024,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        _ => return Err(format!("--size: unknown unit in {v:?}")),
    };
    Ok(n * mult)
}

/// `10s`, `500ms`, `2m`, `1.5s`, or a number of seconds.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let t = v.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("--timeout: not a duration: {v:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("--timeout: unknown unit in {v:?}")),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Opts {
        let args: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse(&args).unwrap().unwrap()
    }

    #[test]
    fn forms() {
        let o = p("foo --pub 2 --sub 3 --msgs 1_000 --size 8KiB --request --reply");
        assert_eq!(
            (o.mode, o.pubs, o.subs, o.msgs, o.size),
            (Mode::Combined, 2, 3, 1000, 8192)
        );
        assert!(o.request && o.reply);
        let o = p("pub foo --clients 4 --size=16");
        assert_eq!((o.mode, o.pubs, o.subs, o.size), (Mode::Pub, 4, 0, 16));
        let o = p("service request foo --clients 2");
        assert_eq!((o.mode, o.pubs, o.request), (Mode::Request, 2, true));
        assert_eq!(p("sub foo").timeout, Duration::ZERO);
        assert_eq!(p("foo --sub 1").pubs, 0);
        assert_eq!(p("foo").pubs, 1);
        assert_eq!(parse_size("1KB").unwrap(), 1000);
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse(&["foo".into(), "--bogus".into()]).is_err());
        assert!(parse(&["--help".into()]).unwrap().is_none());
        assert_eq!(p("foo").client, ClientKind::Raw);
        assert_eq!(p("foo --client async-nats").client, ClientKind::AsyncNats);
        assert_eq!(p("foo --tlsca ca.pem").tlsca.as_deref(), Some("ca.pem"));
        assert!(parse(&["foo".into(), "--client=go".into()]).is_err());
    }
}
