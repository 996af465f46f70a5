//! Samples, their statistics (as nats.go's `bench` package computes them)
//! and the text, JSON and CSV reports.

use std::fmt::Write as _;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// What one client did.
#[derive(Debug, Clone)]
pub struct Sample {
    /// `P0`, `S3`, ...
    pub id: String,
    pub msgs: u64,
    pub bytes: u64,
    /// Messages it should have sent or received (`None` for a queue-group
    /// member, whose share is not fixed).
    pub expected: Option<u64>,
    pub start: Option<Instant>,
    pub end: Option<Instant>,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
}

impl Sample {
    pub fn seconds(&self) -> f64 {
        match (self.start, self.end) {
            (Some(s), Some(e)) => e.saturating_duration_since(s).as_secs_f64(),
            _ => 0.0,
        }
    }

    pub fn rate(&self) -> f64 {
        per_sec(self.msgs, self.seconds())
    }

    pub fn throughput(&self) -> f64 {
        per_sec(self.bytes, self.seconds())
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id, "msgs": self.msgs, "bytes": self.bytes, "seconds": self.seconds(),
            "msgs_per_sec": self.rate(), "bytes_per_sec": self.throughput(),
        })
    }
}

fn per_sec(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// Samples of one role, aggregated over the span from the earliest start
/// to the latest end.
pub struct Group<'a> {
    pub samples: &'a [Sample],
}

impl Group<'_> {
    pub fn msgs(&self) -> u64 {
        self.samples.iter().map(|s| s.msgs).sum()
    }
    pub fn bytes(&self) -> u64 {
        self.samples.iter().map(|s| s.bytes).sum()
    }
    pub fn seconds(&self) -> f64 {
        let start = self.samples.iter().filter_map(|s| s.start).min();
        let end = self.samples.iter().filter_map(|s| s.end).max();
        match (start, end) {
            (Some(s), Some(e)) => e.saturating_duration_since(s).as_secs_f64(),
            _ => 0.0,
        }
    }
    pub fn rate(&self) -> f64 {
        per_sec(self.msgs(), self.seconds())
    }
    pub fn throughput(&self) -> f64 {
        per_sec(self.bytes(), self.seconds())
    }
    /// min, avg, max, stddev of the per-client message rates.
    pub fn stats(&self) -> (f64, f64, f64, f64) {
        let rates: Vec<f64> = self.samples.iter().map(Sample::rate).collect();
        if rates.is_empty() {
            return (0.0, 0.0, 0.0, 0.0);
        }
        let n = rates.len() as f64;
        let avg = rates.iter().sum::<f64>() / n;
        let var = rates.iter().map(|r| (r - avg) * (r - avg)).sum::<f64>() / n;
        let min = rates.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = rates.iter().cloned().fold(0.0, f64::max);
        (min, avg, max, var.sqrt())
    }

    fn json(&self) -> Value {
        let (min, avg, max, stddev) = self.stats();
        json!({
            "msgs": self.msgs(), "bytes": self.bytes(), "seconds": self.seconds(),
            "msgs_per_sec": self.rate(), "bytes_per_sec": self.throughput(),
            "min": min, "avg": avg, "max": max, "stddev": stddev,
            "clients": self.samples.iter().map(Sample::json).collect::<Vec<_>>(),
        })
    }
}

/// The whole run.
pub struct Report {
    pub title: String,
    pub config: Value,
    pub pubs: Vec<Sample>,
    pub subs: Vec<Sample>,
    /// Labels for the two roles (`Pub`/`Sub`, `Req`/`Rep`).
    pub pub_label: &'static str,
    pub sub_label: &'static str,
    /// Round-trip latency in nanoseconds (request mode).
    pub latency: Option<Histogram<u64>>,
    /// Count problems; empty when every count is exact.
    pub problems: Vec<String>,
    /// Messages the client library dropped (its subscription buffer was full).
    pub client_drops: u64,
}

const PCTS: [(&str, f64); 4] = [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9)];

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn counts_json(samples: &[Sample]) -> Vec<Value> {
        samples
            .iter()
            .map(|s| json!({"id": s.id, "msgs": s.msgs, "expected": s.expected, "error": s.error}))
            .collect()
    }

    pub fn json(&self) -> Value {
        let mut v = json!({
            "ok": self.ok(),
            "config": self.config,
            "published": self.pubs.iter().map(|s| s.msgs).sum::<u64>(),
            "received": self.subs.iter().map(|s| s.msgs).sum::<u64>(),
            "client_drops": self.client_drops,
        });
        if !self.ok() {
            v["problems"] = json!(self.problems);
            v["counts"] = json!({"pub": Self::counts_json(&self.pubs), "sub": Self::counts_json(&self.subs)});
            return v;
        }
        if !self.pubs.is_empty() {
            v["pub"] = Group { samples: &self.pubs }.json();
        }
        if !self.subs.is_empty() {
            v["sub"] = Group { samples: &self.subs }.json();
        }
        if !self.pubs.is_empty() && !self.subs.is_empty() {
            let all: Vec<Sample> = self.pubs.iter().chain(&self.subs).cloned().collect();
            let g = Group { samples: &all };
            v["total"] = json!({"msgs": g.msgs(), "bytes": g.bytes(), "seconds": g.seconds(),
                "msgs_per_sec": g.rate(), "bytes_per_sec": g.throughput()});
        }
        if let Some(h) = &self.latency {
            let mut l = json!({"samples": h.len(), "min": us(h.min()), "mean": h.mean() / 1e3, "max": us(h.max())});
            for (name, q) in PCTS {
                l[name] = json!(us(h.value_at_percentile(q)));
            }
            v["latency_us"] = l;
        }
        v
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        if !self.ok() {
            let _ = writeln!(
                out,
                "{} FAILED: counts are not exact, no throughput reported",
                self.title
            );
            for p in &self.problems {
                let _ = writeln!(out, "  {p}");
            }
            for (label, samples) in [(self.pub_label, &self.pubs), (self.sub_label, &self.subs)] {
                for s in samples.iter() {
                    let exp = s.expected.map(|e| format!(" of {}", commas(e))).unwrap_or_default();
                    let err = s.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default();
                    let _ = writeln!(out, "  {label} [{}] {}{exp} msgs{err}", s.id, commas(s.msgs));
                }
            }
            return out;
        }
        let _ = writeln!(out);
        if !self.pubs.is_empty() && !self.subs.is_empty() {
            let all: Vec<Sample> = self.pubs.iter().chain(&self.subs).cloned().collect();
            let g = Group { samples: &all };
            let _ = writeln!(
                out,
                "NATS {} stats: {}",
                self.title,
                rate_line(g.rate(), g.throughput())
            );
        }
        for (label, samples) in [(self.pub_label, &self.pubs), (self.sub_label, &self.subs)] {
            if samples.is_empty() {
                continue;
            }
            let g = Group { samples };
            let _ = writeln!(out, " {label} stats: {}", rate_line(g.rate(), g.throughput()));
            if samples.len() > 1 {
                for (i, s) in samples.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "  [{}] {} ({} msgs)",
                        i + 1,
                        rate_line(s.rate(), s.throughput()),
                        commas(s.msgs)
                    );
                }
                let (min, avg, max, sd) = g.stats();
                let _ = writeln!(
                    out,
                    "  min {} | avg {} | max {} | stddev {} msgs",
                    commas(min as u64),
                    commas(avg as u64),
                    commas(max as u64),
                    commas(sd as u64)
                );
            }
        }
        if let Some(h) = &self.latency {
            let mut line = format!(" Latency ({} requests):", commas(h.len()));
            for (name, q) in PCTS {
                let _ = write!(
                    line,
                    " {} {} |",
                    name.replace('_', "."),
                    fmt_us(us(h.value_at_percentile(q)))
                );
            }
            let _ = write!(line, " max {}", fmt_us(us(h.max())));
            let _ = writeln!(out, "{line}");
        }
        out
    }

    /// nats.go bench's CSV: one row per client.
    pub fn csv(&self, run_id: &str) -> String {
        let mut out = String::from("#RunID, ClientID, MsgCount, MsgBytes, MsgsPerSec, BytesPerSec, DurationSecs\n");
        for s in self.pubs.iter().chain(&self.subs) {
            let _ = writeln!(
                out,
                "{run_id},{},{},{},{:.0},{:.2},{:.6}",
                s.id,
                s.msgs,
                s.bytes,
                s.rate(),
                s.throughput(),
                s.seconds()
            );
        }
        out
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

fn fmt_us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.2} ms", v / 1e3)
    } else {
        format!("{v:.1} us")
    }
}

fn rate_line(rate: f64, bytes: f64) -> String {
    format!("{} msgs/sec ~ {}/sec", commas(rate as u64), human_bytes(bytes))
}

/// `1,234,567`
pub fn commas(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Binary units, as the nats CLI prints them (`187.17 MiB`).
pub fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.2} {}", UNITS[i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn numbers() {
        assert_eq!(commas(1234567), "1,234,567");
        assert_eq!(commas(12), "12");
        assert_eq!(human_bytes(2048.0), "2.00 KiB");
        let t = Instant::now();
        let s = |n, secs| Sample {
            id: "P0".into(),
            msgs: n,
            bytes: n * 10,
            expected: Some(n),
            start: Some(t),
            end: Some(t + Duration::from_secs(secs)),
            error: None,
        };
        let samples = [s(100, 1), s(300, 2)];
        let g = Group { samples: &samples };
        assert_eq!(g.rate(), 200.0);
        let (min, avg, max, sd) = g.stats();
        assert_eq!((min, avg, max, sd), (100.0, 125.0, 150.0, 25.0));
    }
}
