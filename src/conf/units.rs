//! Value forms shared by every part of the configuration: Go durations and
//! timeouts in seconds.

use std::time::Duration;

use super::parse::ConfError;
use super::value::{Item, Value};

/// A Go duration string: `300ms`, `2s`, `1h30m`, `1.5m`.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    // Go's durations are int64 nanoseconds (about 292 years); longer ones
    // are invalid there, so here.
    (total * 1e9 <= i64::MAX as f64).then(|| Duration::try_from_secs_f64(total).ok())?
}

/// A timeout in seconds, as nats-server reads `authorization { timeout }`
/// and the `tls` block's `timeout`: an integer or a float, without a
/// warning (a Go duration string is taken too).
pub fn seconds(key: &str, item: &Item) -> Result<Duration, ConfError> {
    let err = |msg: String| ConfError {
        pos: item.pos.clone(),
        msg,
    };
    let secs = match &item.value {
        Value::Int(n) => *n as f64,
        Value::Float(f) => *f,
        Value::Str(s) => return parse_go_duration(s).ok_or_else(|| err(format!("{key}: invalid duration {s:?}"))),
        _ => return Err(err(format!("{key}: expected seconds, got {}", item.value.kind()))),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| err(format!("{key}: invalid duration")))
}
