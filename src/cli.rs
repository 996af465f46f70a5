//! nats-server's command line, parsed with Go `flag` semantics: every flag
//! may be written with one or two dashes, values follow as the next argument
//! or after `=`, and boolean flags take a value only after `=`. (clap cannot
//! express multi-letter single-dash flags such as `-DV` or `-ms`, hence this
//! small parser.)

use std::path::PathBuf;

use thiserror::Error;

use crate::conf::{self, options::Notices, ConfError};
use crate::options::Options;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run the server with these options (and what the config file said).
    Serve(Box<Options>, Notices),
    /// `-t`: the configuration is valid; report and exit.
    ConfigValid(PathBuf),
    /// `--signal`: signal a running server and exit.
    Signal(String),
    /// Print the version and exit.
    Version,
    /// Print the usage text and exit.
    Help,
}

/// A command line that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CliError {
    /// The flag is not one nats-server knows.
    #[error("flag provided but not defined: -{0}")]
    UnknownFlag(String),
    /// A value flag came last without its value.
    #[error("flag needs an argument: -{0}")]
    MissingValue(String),
    /// The value does not parse.
    #[error("invalid value {value:?} for flag -{flag}: {why}")]
    BadValue {
        /// The flag.
        flag: String,
        /// The value given.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// The configuration file has errors.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Config(Vec<ConfError>),
    /// `-t` without `-c`.
    #[error("must specify [-c, --config] option to check configuration file syntax")]
    TestWithoutConfig,
    /// Options that do not go together, set by flags alone.
    #[error("{0}")]
    Invalid(String),
    /// A nats-server flag whose feature petrel does not have yet.
    #[error("flag -{flag} is not supported by petrel yet ({feature})")]
    NotYetSupported {
        /// The flag as written.
        flag: String,
        /// The feature it belongs to.
        feature: &'static str,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Value,
}

/// Flags petrel knows but whose features land in later work: accepted by
/// name so the message is clear, then refused.
const LATER: &[(&[&str], Kind, &str)] = &[(&["ms", "https_port"], Kind::Value, "HTTP monitoring")];

fn parse_bool(flag: &str, v: &str) -> Result<bool, CliError> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(CliError::BadValue {
            flag: flag.into(),
            value: v.into(),
            why: "parse error".into(),
        }),
    }
}

fn parse_num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, CliError> {
    v.parse().map_err(|_| CliError::BadValue {
        flag: flag.into(),
        value: v.into(),
        why: "parse error".into(),
    })
}

/// A duration as Go writes it (`100ms`, `2s`, `1m`) or plain seconds.
fn parse_duration(flag: &str, v: &str) -> Result<std::time::Duration, CliError> {
    let bad = || CliError::BadValue {
        flag: flag.into(),
        value: v.into(),
        why: "not a duration".into(),
    };
    let split = v.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "ns" => n / 1e9,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    std::time::Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

fn kind_of(name: &str) -> Option<Kind> {
    let value = [
        "p",
        "port",
        "a",
        "addr",
        "net",
        "n",
        "name",
        "server_name",
        "l",
        "log",
        "P",
        "pid",
        "ports_file_dir",
        "shards",
        "idle_spin",
        "max_payload",
        "max_connections",
        "max_pending",
        "ping_interval",
        "ping_max",
        "c",
        "config",
        "sl",
        "signal",
        "user",
        "pass",
        "auth",
        "profile",
        "tlscert",
        "tlskey",
        "tlscacert",
        "sd",
        "store_dir",
        "m",
        "http_port",
        "r",
        "remote_syslog",
        "log_size_limit",
        "client_advertise",
        "routes",
        "cluster",
        "cluster_listen",
        "cluster_name",
        "cluster_advertise",
        "connect_retries",
    ];
    let boolean = [
        "D",
        "debug",
        "V",
        "trace",
        "DV",
        "VV",
        "DVV",
        "T",
        "t",
        "js",
        "jetstream",
        "s",
        "syslog",
        "logtime",
        "v",
        "version",
        "h",
        "help",
        "logtime_utc",
        "pin_shards",
        "tls",
        "tlsverify",
        "no_advertise",
    ];
    if value.contains(&name) {
        Some(Kind::Value)
    } else if boolean.contains(&name) {
        Some(Kind::Bool)
    } else {
        LATER
            .iter()
            .find(|(names, _, _)| names.contains(&name))
            .map(|(_, k, _)| *k)
    }
}

/// Parses the arguments after the program name: the configuration file
/// named by `-c` first, then every flag over it (flags win, as in
/// nats-server).
pub fn parse(args: &[String]) -> Result<Command, CliError> {
    let mut probe = Options::default();
    let mut test = false;
    if let Some(cmd) = overlay(&mut probe, args, &mut test)? {
        return Ok(cmd);
    }
    let mut notices = Notices::default();
    let mut o = Options::default();
    let mut parsed = None;
    if let Some(path) = &probe.config_file {
        let p = conf::parse_file(path).map_err(|e| CliError::Config(vec![e]))?;
        notices = conf::options::apply(&mut o, &p).map_err(CliError::Config)?;
        o.config_file = Some(path.clone());
        o.config_digest = conf::digest::config_digest(&p.map);
        parsed = Some(p);
    } else if test {
        return Err(CliError::TestWithoutConfig);
    }
    overlay(&mut o, args, &mut test)?;
    o.apply_baseline();
    // As in nats-server, `-t` checks the file alone; these rules are
    // checked before a server starts (and on reload).
    if let (false, Err((key, msg))) = (test, o.cross_check()) {
        // Named where the file set it, when it did.
        let key_pos = |k: &str| {
            let p = parsed.as_ref()?;
            let entry = p.map.entries.iter().rev().find(|(n, _, _)| n.eq_ignore_ascii_case(k))?;
            Some(entry.1.clone())
        };
        let at = key_pos(key).or_else(|| key_pos("max_payload"));
        return Err(match at {
            Some(pos) => CliError::Config(vec![ConfError {
                pos,
                msg: format!("{key}: {msg}"),
            }]),
            None => CliError::Invalid(msg),
        });
    }
    if test {
        if !notices.warnings.is_empty() {
            return Err(CliError::Config(notices.warnings));
        }
        return Ok(Command::ConfigValid(o.config_file.clone().expect("checked above")));
    }
    Ok(Command::Serve(Box::new(o), notices))
}

/// Applies the flags in `args` to `o`; returns a command that ends parsing
/// (`-v`, `-h`).
fn overlay(o: &mut Options, args: &[String], test: &mut bool) -> Result<Option<Command>, CliError> {
    let mut i = 0;
    let (mut user, mut pass) = (None, None);
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" || !arg.starts_with('-') || arg == "-" {
            break; // Go's flag package stops at the first non-flag.
        }
        let body = arg.trim_start_matches('-');
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let kind = kind_of(name).ok_or_else(|| CliError::UnknownFlag(name.to_string()))?;
        let value = match (kind, inline) {
            (Kind::Bool, v) => v.unwrap_or_else(|| "true".to_string()),
            (Kind::Value, Some(v)) => v,
            (Kind::Value, None) => {
                let v = args
                    .get(i)
                    .cloned()
                    .ok_or_else(|| CliError::MissingValue(name.to_string()))?;
                i += 1;
                v
            }
        };
        match name {
            "p" | "port" => o.port = parse_num(name, &value)?,
            "a" | "addr" | "net" => o.host = value,
            "n" | "name" | "server_name" => o.server_name = Some(value),
            "l" | "log" => o.log_file = Some(PathBuf::from(value)),
            "P" | "pid" => o.pid_file = Some(PathBuf::from(value)),
            "ports_file_dir" => o.ports_file_dir = Some(PathBuf::from(value)),
            "shards" => {
                let n: usize = parse_num(name, &value)?;
                if n == 0 {
                    return Err(CliError::BadValue {
                        flag: name.into(),
                        value,
                        why: "must be at least 1".into(),
                    });
                }
                o.shards = Some(n)
            }
            "idle_spin" => o.idle_spin_us = parse_num(name, &value)?,
            "max_payload" => o.max_payload = parse_num(name, &value)?,
            "max_connections" => o.max_connections = parse_num(name, &value)?,
            "max_pending" => o.max_pending = parse_num(name, &value)?,
            "ping_max" => o.ping_max = parse_num(name, &value)?,
            "ping_interval" => o.ping_interval = parse_duration(name, &value)?,
            "D" | "debug" => o.debug = parse_bool(name, &value)?,
            "V" | "trace" => o.trace = parse_bool(name, &value)?,
            "DV" | "DVV" => {
                let b = parse_bool(name, &value)?;
                o.debug = b;
                o.trace = b;
            }
            "VV" => o.trace = parse_bool(name, &value)?,
            "T" | "logtime" => o.logtime = parse_bool(name, &value)?,
            "logtime_utc" => o.logtime_utc = parse_bool(name, &value)?,
            "pin_shards" => o.pin_shards = parse_bool(name, &value)?,
            "v" | "version" => {
                if parse_bool(name, &value)? {
                    return Ok(Some(Command::Version));
                }
            }
            "h" | "help" => {
                if parse_bool(name, &value)? {
                    return Ok(Some(Command::Help));
                }
            }
            "c" | "config" => o.config_file = Some(PathBuf::from(value)),
            "sl" | "signal" => return Ok(Some(Command::Signal(value))),
            // Client test harnesses pass these on every launch (async-nats:
            // --store_dir); petrel has no JetStream, says so, and serves on.
            "m" | "http_port" => o.http_port = Some(parse_num(name, &value)?),
            "s" | "syslog" => o.syslog = parse_bool(name, &value)?,
            "r" | "remote_syslog" => o.remote_syslog = Some(value),
            "log_size_limit" => o.log_size_limit = parse_num(name, &value)?,
            "js" | "jetstream" => o.jetstream_requested |= parse_bool(name, &value)?,
            "sd" | "store_dir" => o.jetstream_requested = true,
            "t" => *test = parse_bool(name, &value)?,
            "client_advertise" => o.client_advertise = Some(value),
            "cluster" | "cluster_listen" => {
                // A port of -1 picks a free one, as for the client port.
                let (text, random) = match value.strip_suffix(":-1") {
                    Some(rest) => (format!("{rest}:0"), true),
                    None => (value.clone(), false),
                };
                let u = crate::conf::cluster::route_url(&text).map_err(|why| CliError::BadValue {
                    flag: name.into(),
                    value: value.clone(),
                    why,
                })?;
                let c = o.cluster.get_or_insert_with(Default::default);
                (c.host, c.port) = (u.host, if random { -1 } else { i32::from(u.port) });
                if u.user.is_some() {
                    (c.username, c.password) = (u.user, u.pass);
                }
            }
            "routes" => {
                let mut routes = Vec::new();
                for r in value.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                    crate::conf::cluster::route_url(r).map_err(|why| CliError::BadValue {
                        flag: name.into(),
                        value: r.into(),
                        why,
                    })?;
                    routes.push(r.to_string());
                }
                o.cluster.get_or_insert_with(Default::default).routes = routes;
            }
            "cluster_name" => o.cluster.get_or_insert_with(Default::default).name = Some(value),
            "cluster_advertise" => o.cluster.get_or_insert_with(Default::default).advertise = Some(value),
            "no_advertise" => {
                let b = parse_bool(name, &value)?;
                o.cluster.get_or_insert_with(Default::default).no_advertise = b;
            }
            "connect_retries" => {
                o.cluster.get_or_insert_with(Default::default).connect_retries = parse_num(name, &value)?
            }
            "user" => user = Some(value),
            "pass" => pass = Some(value),
            "auth" => o.auth.token = Some(value),
            "profile" => o.prof_port = Some(parse_num(name, &value)?),
            "tls" => {
                if parse_bool(name, &value)? {
                    o.tls.get_or_insert_with(Default::default);
                }
            }
            "tlscert" => o.tls.get_or_insert_with(Default::default).cert_file = Some(value.into()),
            "tlskey" => o.tls.get_or_insert_with(Default::default).key_file = Some(value.into()),
            "tlscacert" => o.tls.get_or_insert_with(Default::default).ca_file = Some(value.into()),
            "tlsverify" => {
                if parse_bool(name, &value)? {
                    o.tls.get_or_insert_with(Default::default).verify = true;
                }
            }
            _ => {
                let (_, _, feature) = LATER
                    .iter()
                    .find(|(names, _, _)| names.contains(&name))
                    .expect("known flag");
                if kind == Kind::Bool && !parse_bool(name, &value)? {
                    continue; // `-js=false` asks for nothing
                }
                return Err(CliError::NotYetSupported {
                    flag: name.to_string(),
                    feature,
                });
            }
        }
    }
    apply_user_flags(o, user, pass);
    Ok(None)
}

/// `--user`/`--pass` replace the configuration's single user, as in nats-server.
fn apply_user_flags(o: &mut Options, user: Option<String>, pass: Option<String>) {
    use crate::auth::config::{Credential, UserConfig, GLOBAL_ACCOUNT};
    if user.is_none() && pass.is_none() {
        return;
    }
    let existing = o.auth.users.iter_mut().find(|u| {
        u.account == GLOBAL_ACCOUNT
            && matches!(&u.credential, Credential::Password { user: n, .. } if user.as_ref().is_none_or(|x| x == n))
    });
    match existing {
        Some(u) => {
            if let (Credential::Password { password, .. }, Some(p)) = (&mut u.credential, pass) {
                *password = p;
            }
        }
        None => {
            if let Some(user) = user {
                o.auth.users.push(UserConfig {
                    credential: Credential::Password {
                        user,
                        password: pass.unwrap_or_default(),
                    },
                    account: GLOBAL_ACCOUNT.to_string(),
                    permissions: None,
                    connection_types: Vec::new(),
                });
            }
        }
    }
}

/// The usage text printed by `-h`.
pub const USAGE: &str = "\
Usage: petrel [options]
       petrel bench|profile|account-server [options]   (see `petrel <command> --help`)

Server Options:
    -a, --addr, --net <host>         Bind to host address (default: 0.0.0.0)
    -p, --port <port>                Use port for clients (default: 4222, -1 for random)
    -n, --name
        --server_name <server_name>  Server name (default: auto)
    -P, --pid <file>                 File to store PID
    -m, --http_port <port>           Use port for http monitoring
    -c, --config <file>              Configuration file
    -t                               Test configuration and exit
    -sl,--signal <signal>[=<pid>]    Send signal to petrel process (ldm, stop, quit, term, reopen, reload)
                                     pid can be either a PID (e.g. 1) or the path to a PID file (e.g. /var/run/petrel.pid)
        --client_advertise <string>  Client URL to advertise to other servers
        --ports_file_dir <dir>       Creates a ports file in the specified directory (<executable_name>_<pid>.ports)
        --max_payload <bytes>        Maximum message payload (default: 1MB)
        --shards <n>                 Number of shards, one per core (default: all cores)
        --idle_spin <us>             Microseconds an idle shard spins before it sleeps (default: 0)
        --pin_shards                 Pin each shard to its own core (default: false; for hosts petrel has to itself)

Logging Options:
    -l, --log <file>                 File to redirect log output
    -T, --logtime                    Timestamp log entries (default: true)
        --logtime_utc                Timestamps in UTC
    -s, --syslog                     Log to syslog
    -r, --remote_syslog <addr>       Syslog server addr (udp://localhost:514)
    -D, --debug                      Enable debugging output
    -V, --trace                      Trace the raw protocol
    -VV                              Verbose trace (traces system account as well)
    -DV                              Debug and trace
    -DVV                             Debug and verbose trace (traces system account as well)
        --log_size_limit <limit>     Logfile size limit (default: auto)

JetStream Options (accepted and logged as not supported: petrel has no JetStream):
    -js, --jetstream                 Enable JetStream functionality
    -sd, --store_dir <dir>           Set the storage directory

Authorization Options:
        --user <user>                User required for connections
        --pass <password>            Password required for connections
        --auth <token>               Authorization token required for connections

TLS Options:
        --tls                        Enable TLS, do not verify clients (default: false)
        --tlscert <file>             Server certificate file
        --tlskey <file>              Private key for server certificate
        --tlsverify                  Enable TLS, verify client certificates
        --tlscacert <file>           Client certificate CA for verification

Cluster Options:
        --routes <rurl-1, rurl-2>    Routes to solicit and connect
        --cluster <cluster-url>      Cluster URL for solicited routes
        --cluster_name <string>      Cluster Name, if not set one will be dynamically generated
        --no_advertise <bool>        Do not advertise known cluster information to clients
        --cluster_advertise <string> Cluster URL to advertise to other servers
        --connect_retries <number>   For implicit routes, number of connect retries
        --cluster_listen <url>       Cluster url from which members can solicit routes

Profiling Options:
        --profile <port>             Profiling HTTP port

petrel extensions (nats-server sets these in its config file):
        --max_connections <n>        Maximum client connections (default: 65536)
        --max_pending <bytes>        Slow-consumer limit per client (default: 64MB)
        --ping_interval <duration>   Server PING interval (default: 2m)
        --ping_max <n>               Unanswered PINGs before closing (default: 2)

Subcommands:
    bench                            Benchmark a NATS server (publishers, subscribers, request/reply)
    profile                          Fetch pprof profiles from a server and draw flame graphs
    account-server                   Serve account JWTs over HTTP (the nats-account-server API)

Common Options:
    -h, --help                       Show this message
    -v, --version                    Show version

Accepted nats-server flags whose features petrel does not have yet are
refused with a message that names the feature.
";

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn the_usage_names_only_flags_petrel_takes() {
        for line in USAGE.lines() {
            let t = line.trim_start();
            if !t.starts_with('-') {
                continue;
            }
            // The flag names before the argument and the description.
            let names = t.split("  ").next().unwrap_or_default();
            for f in names.split([',', ' ']).filter(|f| f.starts_with('-')) {
                let name = f.trim_start_matches('-');
                assert!(kind_of(name).is_some(), "{f} in the usage is not a flag");
            }
        }
        for word in [
            "--config",
            "--signal",
            "--http_port",
            "--tlscert",
            "--user",
            "--profile",
            "account-server",
        ] {
            assert!(USAGE.contains(word), "{word}");
        }
    }

    fn serve(s: &str) -> Options {
        match parse(&args(s)).unwrap() {
            Command::Serve(o, _) => *o,
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn go_flag_forms() {
        let o = serve("-p -1 --addr=127.0.0.1 -n srv -DV -T=false --pid /tmp/x.pid -l /tmp/l.log");
        assert_eq!(o.port, -1);
        assert_eq!(o.host, "127.0.0.1");
        assert_eq!(o.server_name.as_deref(), Some("srv"));
        assert!(o.debug && o.trace && !o.logtime);
        assert_eq!(o.pid_file, Some(PathBuf::from("/tmp/x.pid")));
        assert_eq!(serve("--port=5000").port, 5000);
        assert_eq!(serve("-port 5000").port, 5000);
        assert_eq!(serve("--idle_spin 40").idle_spin_us, 40);
        assert_eq!(serve("-p 1").idle_spin_us, 0, "parks at once by default");
        assert!(serve("--pin_shards").pin_shards);
        assert!(!serve("-p 1").pin_shards, "unpinned by default");
        assert_eq!(parse(&args("-v")).unwrap(), Command::Version);
        assert_eq!(parse(&args("--help")).unwrap(), Command::Help);
        assert_eq!(
            serve("--ping_interval 250ms").ping_interval,
            std::time::Duration::from_millis(250)
        );
        assert_eq!(
            serve("--ping_interval=3").ping_interval,
            std::time::Duration::from_secs(3)
        );
    }

    #[test]
    fn errors() {
        assert_eq!(parse(&args("-zz")), Err(CliError::UnknownFlag("zz".into())));
        assert_eq!(parse(&args("-p")), Err(CliError::MissingValue("p".into())));
        assert!(matches!(parse(&args("-p x")), Err(CliError::BadValue { .. })));
        assert!(matches!(
            parse(&args("-c /nonexistent/f.conf")),
            Err(CliError::Config(_))
        ));
        assert_eq!(parse(&args("-t")), Err(CliError::TestWithoutConfig));
        let c = serve("--cluster nats://u:p@127.0.0.1:6222 --routes nats://h:1,nats://g:2 --cluster_name c1")
            .cluster
            .unwrap();
        assert_eq!((c.port, c.username.as_deref(), c.routes.len()), (6222, Some("u"), 2));
        assert_eq!(c.name.as_deref(), Some("c1"));
        assert!(matches!(parse(&args("--routes h")), Err(CliError::BadValue { .. })));
        assert!(serve("--tls --tlscert c.pem --tlskey k.pem --tlsverify")
            .tls
            .is_some_and(|t| t.verify));
        assert!(parse(&args("-js=false")).is_ok());
        assert!(serve("-js --store_dir /tmp/x").jetstream_requested);
    }
}
