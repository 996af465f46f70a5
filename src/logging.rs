//! Log lines in nats-server's format: `[pid] 2006/01/02 15:04:05.000000 [INF] text`
//! (the timestamp only with logtime). Client test harnesses and tools parse
//! these lines, so the format is part of the interface.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;

/// Log levels with nats-server's tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `[INF]`
    Info,
    /// `[WRN]`
    Warn,
    /// `[ERR]`
    Error,
    /// `[FTL]`: the server cannot go on.
    Fatal,
    /// `[DBG]`, only with `-D`.
    Debug,
    /// `[TRC]`, only with `-V`.
    Trace,
}

impl Level {
    fn tag(self) -> &'static str {
        match self {
            Level::Info => "[INF]",
            Level::Warn => "[WRN]",
            Level::Error => "[ERR]",
            Level::Fatal => "[FTL]",
            Level::Debug => "[DBG]",
            Level::Trace => "[TRC]",
        }
    }
}

/// Where log lines go and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogConfig {
    /// Append to this file instead of stderr.
    pub file: Option<PathBuf>,
    /// Rotate the file when it grows past this many bytes (0: never).
    pub size_limit: u64,
    /// Log files kept after a rotation, the current one among them
    /// (`log_max_num`; 0: all).
    pub max_files: usize,
    /// Timestamps on each line.
    pub logtime: bool,
    /// Timestamps in UTC rather than local time.
    pub logtime_utc: bool,
    /// `[DBG]` lines.
    pub debug: bool,
    /// `[TRC]` lines.
    pub trace: bool,
    /// Send lines to the local syslog (`/dev/log`).
    pub syslog: bool,
    /// Send lines to a remote syslog: `udp://host:port` (or `host:port`).
    pub remote_syslog: Option<String>,
}

enum Target {
    Stderr,
    File {
        path: PathBuf,
        file: File,
        written: u64,
        limit: u64,
        /// Files kept, the current one among them (0: every one).
        max_files: usize,
    },
    LocalSyslog(std::os::unix::net::UnixDatagram),
    RemoteSyslog(std::net::UdpSocket),
}

struct Sink {
    target: Target,
    logtime: bool,
}

static SINK: Mutex<Sink> = Mutex::new(Sink {
    target: Target::Stderr,
    logtime: true,
});
static DEBUG: AtomicBool = AtomicBool::new(false);
static TRACE: AtomicBool = AtomicBool::new(false);
static UTC: AtomicBool = AtomicBool::new(false);

fn open_append(p: &PathBuf) -> std::io::Result<(File, u64)> {
    let f = OpenOptions::new().create(true).append(true).open(p)?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((f, len))
}

/// Configures the logger (at start-up and on reload).
pub fn init_with(cfg: &LogConfig) -> std::io::Result<()> {
    let target = if let Some(remote) = &cfg.remote_syslog {
        let addr = remote.trim_start_matches("udp://").trim_start_matches("syslog://");
        let sock = std::net::UdpSocket::bind(if addr.starts_with('[') { "[::]:0" } else { "0.0.0.0:0" })?;
        sock.connect(addr)?;
        Target::RemoteSyslog(sock)
    } else if cfg.syslog {
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        sock.connect("/dev/log")?;
        Target::LocalSyslog(sock)
    } else if let Some(p) = &cfg.file {
        let (file, written) = open_append(p)?;
        Target::File {
            path: p.clone(),
            file,
            written,
            limit: cfg.size_limit,
            max_files: cfg.max_files,
        }
    } else {
        Target::Stderr
    };
    let mut s = SINK.lock().unwrap_or_else(|e| e.into_inner());
    s.target = target;
    s.logtime = cfg.logtime;
    DEBUG.store(cfg.debug, Relaxed);
    TRACE.store(cfg.trace, Relaxed);
    UTC.store(cfg.logtime_utc, Relaxed);
    Ok(())
}

/// Configures the logger for a file (or stderr) with the given levels.
pub fn init(file: Option<PathBuf>, logtime: bool, debug: bool, trace: bool) -> std::io::Result<()> {
    init_with(&LogConfig {
        file,
        logtime,
        debug,
        trace,
        ..Default::default()
    })
}

/// The syslog priority of a level (facility daemon).
fn syslog_priority(level: Level) -> u8 {
    let severity = match level {
        Level::Fatal => 2,
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    };
    3 * 8 + severity
}

/// The name a rotated log file gets: `<file>.<YYYY.MM.DD.HH.MM.SS.nnnnnnnnn>`.
fn rotated_name(path: &std::path::Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(
        ".{}",
        crate::timefmt::rotation_stamp(std::time::SystemTime::now())
    ));
    PathBuf::from(name)
}

/// Removes the oldest rotated copies of `path` (`<name>.<stamp>`) beyond
/// `keep`, as nats-server's `log_max_num` does; the names it removed.
fn purge_rotated(path: &std::path::Path, keep: usize) -> Vec<String> {
    let (Some(dir), Some(base)) = (path.parent(), path.file_name().and_then(|b| b.to_str())) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{base}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut rotated: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.strip_prefix(&prefix).is_some_and(is_rotation_stamp))
        .collect();
    // The stamp sorts oldest first.
    rotated.sort();
    let excess = rotated.len().saturating_sub(keep);
    rotated
        .into_iter()
        .take(excess)
        .filter(|n| std::fs::remove_file(dir.join(n)).is_ok())
        .collect()
}

/// `2006.01.02.15.04.05.000000000`: digits in nats-server's groups.
fn is_rotation_stamp(s: &str) -> bool {
    let groups: Vec<&str> = s.split('.').collect();
    let widths = [4, 2, 2, 2, 2, 2, 9];
    groups.len() == widths.len()
        && groups
            .iter()
            .zip(widths)
            .all(|(g, w)| g.len() == w && g.bytes().all(|b| b.is_ascii_digit()))
}

/// How long a rate-limited statement stays quiet after it was logged
/// (nats-server's default expiration of its rate-limited log lines).
const RATE_LIMIT_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// Statements logged lately through [`rate_limited`], with when.
static RECENT: Mutex<Option<std::collections::HashMap<String, (std::time::Instant, std::time::Duration)>>> =
    Mutex::new(None);

/// As nats-server's `RateLimitErrorf`: true when `statement` (the line
/// without what differs per client, e.g. `maximum connections exceeded`)
/// may be logged now, false when the same statement was logged within the
/// last second. A flood of refusals writes a line a second, not one each.
pub fn rate_limited(statement: &str, now: std::time::Instant) -> bool {
    rate_limited_for(statement, RATE_LIMIT_WINDOW, now)
}

/// As [`rate_limited`] with its own quiet period (nats-server reports an
/// account's subscription limit at most every 2 s).
pub fn rate_limited_for(statement: &str, window: std::time::Duration, now: std::time::Instant) -> bool {
    let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    let recent = recent.get_or_insert_with(Default::default);
    // Entries keep their own window: one that outlives RATE_LIMIT_WINDOW
    // is dropped only once its window is over.
    recent.retain(|_, (at, w)| now.saturating_duration_since(*at) < *w);
    if recent.contains_key(statement) {
        return false;
    }
    recent.insert(statement.to_string(), (now, window));
    true
}

/// Whether trace lines are wanted (checked before building them).
pub fn trace_enabled() -> bool {
    TRACE.load(Relaxed)
}

/// Whether debug lines are wanted.
pub fn debug_enabled() -> bool {
    DEBUG.load(Relaxed)
}

/// Local time (UTC with `logtime_utc`) as `2006/01/02 15:04:05.000000`.
fn timestamp() -> String {
    crate::timefmt::log_stamp(std::time::SystemTime::now(), UTC.load(Relaxed))
}

/// Formats one log line (without the newline).
pub fn format_line(level: Level, msg: &str, logtime: bool) -> String {
    let pid = std::process::id();
    if logtime {
        format!("[{pid}] {} {} {msg}", timestamp(), level.tag())
    } else {
        format!("[{pid}] {} {msg}", level.tag())
    }
}

/// Writes one line at `level`.
pub fn log(level: Level, msg: &str) {
    if (level == Level::Debug && !debug_enabled()) || (level == Level::Trace && !trace_enabled()) {
        return;
    }
    let mut s = SINK.lock().unwrap_or_else(|e| e.into_inner());
    let logtime = s.logtime;
    match &mut s.target {
        Target::Stderr => {
            let _ = writeln!(std::io::stderr(), "{}", format_line(level, msg, logtime));
        }
        Target::File {
            path,
            file,
            written,
            limit,
            max_files,
        } => {
            let line = format_line(level, msg, logtime);
            if writeln!(file, "{line}").is_ok() {
                *written += line.len() as u64 + 1;
            }
            if *limit > 0 && *written > *limit {
                let rotated = rotated_name(path);
                if std::fs::rename(&*path, &rotated).is_ok() {
                    if let Ok((f, len)) = open_append(path) {
                        *file = f;
                        *written = len;
                    }
                    if *max_files > 0 {
                        for purged in purge_rotated(path, *max_files - 1) {
                            // Written here: the logger is ours for the line.
                            let _ = writeln!(
                                file,
                                "{}",
                                format_line(Level::Info, &format!("Purged log file {purged:?}"), logtime)
                            );
                        }
                    }
                }
            }
        }
        Target::LocalSyslog(sock) => {
            let pid = std::process::id();
            let _ = sock.send(format!("<{}>petrel[{pid}]: {} {msg}", syslog_priority(level), level.tag()).as_bytes());
        }
        Target::RemoteSyslog(sock) => {
            let pid = std::process::id();
            let _ = sock.send(format!("<{}>petrel[{pid}]: {} {msg}", syslog_priority(level), level.tag()).as_bytes());
        }
    }
}

/// Reopens the log file (after rotation by an outside tool).
pub fn reopen() -> std::io::Result<()> {
    let mut s = SINK.lock().unwrap_or_else(|e| e.into_inner());
    if let Target::File {
        path, file, written, ..
    } = &mut s.target
    {
        let (f, len) = open_append(path)?;
        *file = f;
        *written = len;
    }
    Ok(())
}

/// `[INF]` line.
#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::logging::log($crate::logging::Level::Info, &format!($($t)*)) } }
/// `[WRN]` line.
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::logging::log($crate::logging::Level::Warn, &format!($($t)*)) } }
/// `[ERR]` line.
#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::logging::log($crate::logging::Level::Error, &format!($($t)*)) } }
/// `[FTL]` line.
#[macro_export]
macro_rules! fatal { ($($t:tt)*) => { $crate::logging::log($crate::logging::Level::Fatal, &format!($($t)*)) } }
/// `[DBG]` line, built only when debug is on.
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { if $crate::logging::debug_enabled() { $crate::logging::log($crate::logging::Level::Debug, &format!($($t)*)) } } }
/// `[TRC]` line, built only when trace is on.
#[macro_export]
macro_rules! trace { ($($t:tt)*) => { if $crate::logging::trace_enabled() { $crate::logging::log($crate::logging::Level::Trace, &format!($($t)*)) } } }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_is_logged_once_a_second() {
        let t0 = std::time::Instant::now();
        let later = |ms| t0 + std::time::Duration::from_millis(ms);
        assert!(rate_limited("test: flood one", t0));
        assert!(!rate_limited("test: flood one", later(500)));
        assert!(
            rate_limited("test: flood two", later(500)),
            "another statement is not held back"
        );
        assert!(!rate_limited("test: flood one", later(999)));
        assert!(rate_limited("test: flood one", later(1000)));
    }

    #[test]
    fn rotates_past_the_size_limit() {
        let dir = std::env::temp_dir().join(format!("petrel-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("petrel.log");
        init_with(&LogConfig {
            file: Some(path.clone()),
            size_limit: 200,
            logtime: true,
            ..Default::default()
        })
        .unwrap();
        for i in 0..20 {
            log(Level::Info, &format!("line {i}"));
        }
        let rotated: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("petrel.log."))
            .collect();
        assert!(!rotated.is_empty(), "rotated files exist");
        assert!(
            std::fs::metadata(&path).unwrap().len() <= 300,
            "the live file stays small"
        );
        init(None, true, false, false).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn log_max_num_keeps_the_newest_rotated_files() {
        let dir = std::env::temp_dir().join(format!("petrel-purge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("srv.log");
        for stamp in [
            "2026.01.01.00.00.00.000000001",
            "2026.01.01.00.00.00.000000003",
            "2026.01.01.00.00.00.000000002",
        ] {
            std::fs::write(dir.join(format!("srv.log.{stamp}")), "x").unwrap();
        }
        std::fs::write(dir.join("srv.log.notes"), "not a rotation").unwrap();
        std::fs::write(&path, "live").unwrap();
        let purged = purge_rotated(&path, 1);
        assert_eq!(
            purged,
            [
                "srv.log.2026.01.01.00.00.00.000000001",
                "srv.log.2026.01.01.00.00.00.000000002"
            ]
        );
        assert!(dir.join("srv.log.2026.01.01.00.00.00.000000003").exists());
        assert!(dir.join("srv.log.notes").exists() && path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn line_format() {
        let l = format_line(Level::Info, "Server is ready", true);
        let pid = std::process::id();
        assert!(l.starts_with(&format!("[{pid}] ")));
        assert!(l.ends_with(" [INF] Server is ready"));
        // [pid] YYYY/MM/DD HH:MM:SS.uuuuuu [INF]
        let ts = &l[format!("[{pid}] ").len()..][..26];
        assert_eq!(ts.as_bytes()[4], b'/');
        assert_eq!(ts.as_bytes()[19], b'.');
        assert_eq!(format_line(Level::Fatal, "x", false), format!("[{pid}] [FTL] x"));
    }
}
