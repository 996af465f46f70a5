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

struct Sink {
    file: Option<(PathBuf, File)>,
    logtime: bool,
}

static SINK: Mutex<Sink> = Mutex::new(Sink {
    file: None,
    logtime: true,
});
static DEBUG: AtomicBool = AtomicBool::new(false);
static TRACE: AtomicBool = AtomicBool::new(false);

/// Configures the logger; opens `file` for appending when given.
pub fn init(file: Option<PathBuf>, logtime: bool, debug: bool, trace: bool) -> std::io::Result<()> {
    let file = match file {
        Some(p) => Some((p.clone(), OpenOptions::new().create(true).append(true).open(&p)?)),
        None => None,
    };
    let mut s = SINK.lock().unwrap_or_else(|e| e.into_inner());
    s.file = file;
    s.logtime = logtime;
    DEBUG.store(debug, Relaxed);
    TRACE.store(trace, Relaxed);
    Ok(())
}

/// Whether trace lines are wanted (checked before building them).
pub fn trace_enabled() -> bool {
    TRACE.load(Relaxed)
}

/// Whether debug lines are wanted.
pub fn debug_enabled() -> bool {
    DEBUG.load(Relaxed)
}

/// Local time as `2006/01/02 15:04:05.000000`.
fn timestamp() -> String {
    let mut tv = libc::timeval { tv_sec: 0, tv_usec: 0 };
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the calls.
    unsafe {
        libc::gettimeofday(&mut tv, std::ptr::null_mut());
        libc::localtime_r(&tv.tv_sec, &mut tm);
    }
    format!(
        "{:04}/{:02}/{:02} {:02}:{:02}:{:02}.{:06}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        tv.tv_usec
    )
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
    let line = format_line(level, msg, s.logtime);
    match s.file.as_mut() {
        Some((_, f)) => {
            let _ = writeln!(f, "{line}");
        }
        None => {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    }
}

/// Reopens the log file (after rotation by an outside tool).
pub fn reopen() -> std::io::Result<()> {
    let mut s = SINK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((p, f)) = s.file.as_mut() {
        *f = OpenOptions::new().create(true).append(true).open(&*p)?;
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
