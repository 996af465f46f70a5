//! Reading one value of the configuration tree as a setting: integers,
//! sizes, booleans, strings, durations, `host:port` addresses, with
//! nats-server's error texts; and the notices a file leaves (warnings).
//! Shared by every block's mapping (`options.rs`, `cluster.rs`).

use std::time::Duration;

use super::parse::ConfError;
use super::units::parse_go_duration;
use super::value::{Item, Value};

/// What applying a file produced besides the options: warnings to log at
/// start-up. `-t` treats them as errors, as nats-server's check does.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Notices {
    /// Warnings (deprecated forms, ignored settings), with positions.
    pub warnings: Vec<ConfError>,
    /// Informational lines (not errors under `-t`).
    pub info: Vec<String>,
    /// Keys petrel accepts without acting on them, with why (logged as
    /// warnings, not errors under `-t`).
    pub without_effect: Vec<ConfError>,
}

pub(super) fn type_err(key: &str, item: &Item, want: &str) -> ConfError {
    ConfError {
        pos: item.pos.clone(),
        msg: format!("{key}: expected {want}, got {} ({:?})", item.value.kind(), item.value),
    }
}

pub(super) fn int(key: &str, item: &Item) -> Result<i64, ConfError> {
    match item.value {
        Value::Int(n) => Ok(n),
        _ => Err(type_err(key, item, "an integer")),
    }
}

pub(super) fn size(key: &str, item: &Item) -> Result<usize, ConfError> {
    let n = int(key, item)?;
    usize::try_from(n).map_err(|_| ConfError {
        pos: item.pos.clone(),
        msg: format!("{key}: must not be negative, got {n}"),
    })
}

pub(super) fn boolean(key: &str, item: &Item) -> Result<bool, ConfError> {
    match item.value {
        Value::Bool(b) => Ok(b),
        _ => Err(type_err(key, item, "a boolean")),
    }
}

pub(super) fn string(key: &str, item: &Item) -> Result<String, ConfError> {
    match &item.value {
        Value::Str(s) => Ok(s.clone()),
        _ => Err(type_err(key, item, "a string")),
    }
}

/// A duration: a Go duration string, or a plain number of seconds (which
/// nats-server accepts with a deprecation warning).
pub(super) fn duration(key: &str, item: &Item, notices: &mut Notices) -> Result<Duration, ConfError> {
    match &item.value {
        Value::Str(s) => parse_go_duration(s).ok_or_else(|| ConfError {
            pos: item.pos.clone(),
            msg: format!("{key}: invalid duration {s:?}"),
        }),
        Value::Int(n) if *n >= 0 => {
            notices.warnings.push(ConfError {
                pos: item.pos.clone(),
                msg: format!("invalid use of field \"{key}\": {key} should be converted to a duration"),
            });
            Ok(Duration::from_secs(*n as u64))
        }
        Value::Float(f) => Duration::try_from_secs_f64(*f).map_err(|_| type_err(key, item, "a duration")),
        _ => Err(type_err(key, item, "a duration")),
    }
}

pub(super) fn listen_value(key: &str, item: &Item) -> Result<(Option<String>, i32), ConfError> {
    match &item.value {
        Value::Int(p) => Ok((None, *p as i32)),
        Value::Str(s) => {
            let (h, p) = s.rsplit_once(':').ok_or_else(|| ConfError {
                pos: item.pos.clone(),
                msg: format!("{key}: could not parse address string {s:?}"),
            })?;
            let port = p.parse().map_err(|_| ConfError {
                pos: item.pos.clone(),
                msg: format!("{key}: could not parse port {p:?}"),
            })?;
            Ok((Some(h.trim_start_matches('[').trim_end_matches(']').to_string()), port))
        }
        _ => Err(type_err(key, item, "\"host:port\" or a port")),
    }
}

/// A `compression` setting of a server link (route, leaf): petrel sends
/// them uncompressed. Modes that ask for nothing (`off`, `accept`, the
/// default) are taken; s2 modes are refused by name (`feature`).
/// A `compression` setting as nats-server reads it: a boolean (`true`:
/// `on`, the place's own "on" mode), a mode name, or `{ mode,
/// rtt_thresholds }`.
pub(super) fn compression(
    k: &str,
    v: &Item,
    on: crate::compress::CompressionMode,
) -> Result<crate::compress::CompressionMode, ConfError> {
    use crate::compress::CompressionMode;
    let err = |item: &Item, msg: String| ConfError {
        pos: item.pos.clone(),
        msg,
    };
    let (mode, thresholds) = match &v.value {
        Value::Bool(true) => return Ok(on),
        Value::Bool(false) => return Ok(CompressionMode::Off),
        Value::Str(s) => (s.clone(), Vec::new()),
        Value::Map(m) => {
            let mut mode = String::new();
            let mut thresholds = Vec::new();
            for (key, pos, item) in &m.entries {
                match key.to_ascii_lowercase().as_str() {
                    "mode" => mode = string(key, item)?,
                    "rtt_thresholds" | "thresholds" | "rtts" | "rtt" => {
                        let Value::Array(a) = &item.value else {
                            return Err(type_err(key, item, "a list of durations"));
                        };
                        for t in a {
                            let text = string(key, t)?;
                            let d = parse_go_duration(&text)
                                .ok_or_else(|| err(t, format!("time: invalid duration {text:?}")))?;
                            thresholds.push(d);
                        }
                    }
                    _ => {
                        return Err(ConfError {
                            pos: pos.clone(),
                            msg: format!("unknown field {key:?}"),
                        })
                    }
                }
            }
            (mode, thresholds)
        }
        other => {
            let go = match other {
                Value::Int(_) => "int64",
                Value::Float(_) => "float64",
                _ => "[]interface {}",
            };
            return Err(err(
                v,
                format!("field {k:?} should be a boolean or a structure, got {go}"),
            ));
        }
    };
    match mode.to_ascii_lowercase().as_str() {
        "on" | "enabled" | "true" => Ok(on),
        "" => Ok(CompressionMode::Accept),
        _ => CompressionMode::parse(&mode, thresholds).map_err(|e| err(v, e)),
    }
}
