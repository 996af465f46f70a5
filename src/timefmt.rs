//! The three timestamp forms petrel writes, from one calendar conversion:
//! log lines (local, `2006/01/02 15:04:05.000000`), rotated log file names
//! (local, `2006.01.02.15.04.05.000000000`) and monitoring JSON (UTC
//! RFC 3339 with nanoseconds); and durations as Go writes them.

use std::time::SystemTime;

/// A moment broken down into calendar fields.
struct Civil {
    year: i32,
    month: i32,
    day: i32,
    hour: i32,
    min: i32,
    sec: i32,
    nanos: u32,
}

fn civil(t: SystemTime, utc: bool) -> Civil {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value to be overwritten.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call.
    unsafe {
        if utc {
            libc::gmtime_r(&secs, &mut tm);
        } else {
            libc::localtime_r(&secs, &mut tm);
        }
    }
    Civil {
        year: tm.tm_year + 1900,
        month: tm.tm_mon + 1,
        day: tm.tm_mday,
        hour: tm.tm_hour,
        min: tm.tm_min,
        sec: tm.tm_sec,
        nanos: d.subsec_nanos(),
    }
}

/// `2006/01/02 15:04:05.000000` in local time, or UTC with `utc`
/// (nats-server's log lines, `logtime_utc`).
pub fn log_stamp(t: SystemTime, utc: bool) -> String {
    let c = civil(t, utc);
    format!(
        "{:04}/{:02}/{:02} {:02}:{:02}:{:02}.{:06}",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.min,
        c.sec,
        c.nanos / 1000
    )
}

/// `2006.01.02.15.04.05.000000000` in local time (rotated log files).
pub fn rotation_stamp(t: SystemTime) -> String {
    let c = civil(t, false);
    format!(
        "{:04}.{:02}.{:02}.{:02}.{:02}.{:02}.{:09}",
        c.year, c.month, c.day, c.hour, c.min, c.sec, c.nanos
    )
}

/// RFC 3339 in UTC with nanoseconds (monitoring JSON).
pub fn rfc3339(t: SystemTime) -> String {
    let c = civil(t, true);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        c.year, c.month, c.day, c.hour, c.min, c.sec, c.nanos
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn forms() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(86400 + 3661, 123_456_789);
        assert_eq!(rfc3339(t), "1970-01-02T01:01:01.123456789Z");
        assert_eq!(log_stamp(t, false).len(), "2006/01/02 15:04:05.000000".len());
        assert_eq!(rotation_stamp(t).len(), "2006.01.02.15.04.05.000000000".len());
    }
}

/// A duration as Go's `time.Duration.String` writes it (`5ms`, `1.5s`,
/// `1m30s`), for error texts that quote configured values.
pub fn go_duration(d: std::time::Duration) -> String {
    fn frac(whole: u128, part: u128, digits: u32) -> String {
        let mut s = whole.to_string();
        if part > 0 {
            let p = format!("{part:0width$}", width = digits as usize);
            s.push('.');
            s.push_str(p.trim_end_matches('0'));
        }
        s
    }
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", frac(ns / 1_000, ns % 1_000, 3));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns / 1_000_000, ns % 1_000_000, 6));
    }
    let secs = ns / 1_000_000_000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{}s", frac(s, ns % 1_000_000_000, 9)));
    out
}

#[cfg(test)]
mod go_duration_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn written_as_go_writes_them() {
        let cases = [
            (0, "0s"),
            (5_000_000, "5ms"),
            (1_500_000_000, "1.5s"),
            (90_000_000_000, "1m30s"),
            (2_500, "2.5µs"),
        ];
        for (ns, text) in cases {
            assert_eq!(go_duration(Duration::from_nanos(ns)), text);
        }
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
    }
}
