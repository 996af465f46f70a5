//! The three timestamp forms petrel writes, from one calendar conversion:
//! log lines (local, `2006/01/02 15:04:05.000000`), rotated log file names
//! (local, `2006.01.02.15.04.05.000000000`) and monitoring JSON (UTC
//! RFC 3339 with nanoseconds).

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

/// `2006/01/02 15:04:05.000000` in local time (nats-server's log lines).
pub fn log_stamp(t: SystemTime) -> String {
    let c = civil(t, false);
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
        assert_eq!(log_stamp(t).len(), "2006/01/02 15:04:05.000000".len());
        assert_eq!(rotation_stamp(t).len(), "2006.01.02.15.04.05.000000000".len());
    }
}
