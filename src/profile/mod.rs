//! Profiles in pprof's format, as nats-server's PROFILEZ and Go's
//! `/debug/pprof` handlers give them: `cpu` (pprof-rs, SIGPROF sampling of
//! every thread, shard threads named `petrel-shard-N`), `heap` and `allocs`
//! (our sampling allocator, `heap.rs`), `goroutine` and `threadcreate`
//! (petrel's threads, the closest thing it has to goroutines). `block` and
//! `mutex` get a clear error: petrel's data path takes no locks.

pub mod command;
pub mod heap;
pub mod http;

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use pprof::protos::{Function, Line, Location, Message, Profile, Sample, ValueType};

/// The longest CPU profile, as nats-server bounds it.
pub const MAX_CPU: Duration = Duration::from_secs(15);
/// Samples per second of CPU profiles (the kernel honours up to 250 here).
pub const CPU_HZ: i32 = 99;

/// Why a profile could not be made (texts as nats-server's where it has them).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    /// No name given.
    #[error("Profile name not specified")]
    NoName,
    /// A name nats-server knows nothing about.
    #[error("Profile \"{0}\" not found")]
    NotFound(String),
    /// CPU duration out of range.
    #[error("Duration {0:?} should be between 0s and 15s")]
    Duration(Duration),
    /// A Go profile petrel has no counterpart for.
    #[error("{0}")]
    Unsupported(String),
    /// The profiler failed.
    #[error("profiling failed: {0}")]
    Failed(String),
}

/// gzip of a profile's protobuf encoding, as Go writes `.pb.gz` files.
pub fn encode_gz(p: &Profile) -> Vec<u8> {
    heap::without_sampling(|| {
        let raw = p.encode_to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = gz.write_all(&raw);
        gz.finish().unwrap_or_default()
    })
}

/// Decodes a `.pb.gz` (or plain) pprof profile.
pub fn decode(bytes: &[u8]) -> Result<Profile, String> {
    let raw = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out).map_err(|e| e.to_string())?;
        out
    } else {
        bytes.to_vec()
    };
    Profile::decode(&raw[..]).map_err(|e| e.to_string())
}

/// Builds a profile's string, function and location tables.
struct Builder {
    strings: Vec<String>,
    index: HashMap<String, i64>,
    functions: Vec<Function>,
    locations: Vec<Location>,
    by_name: HashMap<String, u64>,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            strings: vec![String::new()],
            index: HashMap::from([(String::new(), 0)]),
            functions: Vec::new(),
            locations: Vec::new(),
            by_name: HashMap::new(),
        }
    }

    fn s(&mut self, v: &str) -> i64 {
        if let Some(i) = self.index.get(v) {
            return *i;
        }
        let i = self.strings.len() as i64;
        self.strings.push(v.to_string());
        self.index.insert(v.to_string(), i);
        i
    }

    /// The location of one (function, file, line), symbolized already, so
    /// viewers need not the binary.
    fn location(&mut self, name: &str, file: &str, line: i64) -> u64 {
        let key = format!("{name}\u{0}{file}\u{0}{line}");
        if let Some(id) = self.by_name.get(&key) {
            return *id;
        }
        let id = self.locations.len() as u64 + 1;
        let name_i = self.s(name);
        let file_i = self.s(file);
        self.functions.push(Function {
            id,
            name: name_i,
            system_name: name_i,
            filename: file_i,
            ..Default::default()
        });
        self.locations.push(Location {
            id,
            line: vec![Line { function_id: id, line }],
            ..Default::default()
        });
        self.by_name.insert(key, id);
        id
    }

    fn value_type(&mut self, ty: &str, unit: &str) -> ValueType {
        ValueType {
            ty: self.s(ty),
            unit: self.s(unit),
        }
    }

    fn finish(self, mut p: Profile) -> Profile {
        p.string_table = self.strings;
        p.function = self.functions;
        p.location = self.locations;
        p
    }
}

/// The frames of one instruction pointer (inlined frames first), as
/// (function, file, line).
fn symbolize(ip: usize) -> Vec<(String, String, i64)> {
    let mut out = Vec::new();
    backtrace::resolve(ip as *mut std::ffi::c_void, |sym| {
        let name = sym
            .name()
            .map(|n| format!("{n:#}"))
            .unwrap_or_else(|| format!("{ip:#x}"));
        let file = sym.filename().map(|f| f.display().to_string()).unwrap_or_default();
        out.push((name, file, sym.lineno().unwrap_or(0) as i64));
    });
    if out.is_empty() {
        out.push((format!("{ip:#x}"), String::new(), 0));
    }
    out
}

fn is_allocator_frame(name: &str) -> bool {
    [
        "petrel::profile::heap",
        "SamplingAlloc",
        "__rust_alloc",
        "__rust_realloc",
        "__rdl_",
        "__rustc::",
        "alloc::alloc::",
        "<alloc::alloc::Global",
        "backtrace::",
    ]
    .iter()
    .any(|p| name.contains(p))
}

/// Heap (`inuse_space` by default) or allocs (`alloc_space` by default)
/// profile with Go's four sample types.
pub fn heap_profile(allocs: bool) -> Profile {
    heap::without_sampling(|| {
        let stacks = heap::snapshot();
        let mut b = Builder::new();
        let types = vec![
            b.value_type("alloc_objects", "count"),
            b.value_type("alloc_space", "bytes"),
            b.value_type("inuse_objects", "count"),
            b.value_type("inuse_space", "bytes"),
        ];
        let mut cache: HashMap<usize, Vec<u64>> = HashMap::new();
        let mut samples = Vec::new();
        for (stack, t) in stacks {
            if !allocs && t.inuse_objects < 0.5 && t.alloc_objects < 0.5 {
                continue;
            }
            let mut locs = Vec::new();
            let mut leading = true;
            for ip in stack {
                // The sampler's and the allocator's own frames lead every
                // stack; the profile starts at the allocating code.
                if leading {
                    let frames = symbolize(ip.saturating_sub(1));
                    if frames.iter().all(|(n, _, _)| is_allocator_frame(n)) {
                        continue;
                    }
                    leading = false;
                }
                let ids = match cache.get(&ip) {
                    Some(ids) => ids.clone(),
                    None => {
                        let ids: Vec<u64> = symbolize(ip.saturating_sub(1))
                            .into_iter()
                            .map(|(n, f, l)| b.location(&n, &f, l))
                            .collect();
                        cache.insert(ip, ids.clone());
                        ids
                    }
                };
                locs.extend(ids);
            }
            samples.push(Sample {
                location_id: locs,
                value: vec![
                    t.alloc_objects.round() as i64,
                    t.alloc_bytes.round() as i64,
                    t.inuse_objects.round().max(0.0) as i64,
                    t.inuse_bytes.round().max(0.0) as i64,
                ],
                ..Default::default()
            });
        }
        let period_type = b.value_type("space", "bytes");
        let default = b.s(if allocs { "alloc_space" } else { "inuse_space" });
        let p = Profile {
            sample_type: types,
            sample: samples,
            period_type: Some(period_type),
            period: heap::rate() as i64,
            default_sample_type: default,
            time_nanos: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0),
            ..Default::default()
        };
        b.finish(p)
    })
}

/// Go's legacy text heap profile (`debug=1`).
pub fn heap_text(p: &Profile) -> String {
    let name = |id: u64| {
        p.location
            .iter()
            .find(|l| l.id == id)
            .and_then(|l| l.line.first())
            .and_then(|ln| p.function.iter().find(|f| f.id == ln.function_id))
            .map(|f| p.string_table[f.name as usize].clone())
            .unwrap_or_default()
    };
    let total = p.sample.iter().fold([0i64; 4], |mut a, s| {
        for (x, v) in a.iter_mut().zip(&s.value) {
            *x += v;
        }
        a
    });
    let mut out = format!(
        "heap profile: {}: {} [{}: {}] @ heap/{}\n",
        total[2], total[3], total[0], total[1], p.period
    );
    for s in &p.sample {
        out.push_str(&format!(
            "{}: {} [{}: {}] @\n",
            s.value[2], s.value[3], s.value[0], s.value[1]
        ));
        for l in &s.location_id {
            out.push_str(&format!("#\t{}\n", name(*l)));
        }
        out.push('\n');
    }
    out
}

/// A CPU profile of `duration`, covering every thread.
pub fn cpu_profile(duration: Duration) -> Result<Profile, ProfileError> {
    if duration.is_zero() || duration > MAX_CPU {
        return Err(ProfileError::Duration(duration));
    }
    record_cpu(duration)
}

/// Samples every thread's CPU for `duration` (bounds checked by callers).
pub(super) fn record_cpu(duration: Duration) -> Result<Profile, ProfileError> {
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(CPU_HZ)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| ProfileError::Failed(e.to_string()))?;
    std::thread::sleep(duration);
    let report = guard
        .report()
        .build()
        .map_err(|e| ProfileError::Failed(e.to_string()))?;
    report.pprof().map_err(|e| ProfileError::Failed(e.to_string()))
}

/// The process's threads as (tid, name).
fn threads() -> Vec<(u64, String)> {
    let mut out: Vec<(u64, String)> = std::fs::read_dir("/proc/self/task")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let tid: u64 = e.file_name().to_string_lossy().parse().ok()?;
                    let name = std::fs::read_to_string(e.path().join("comm")).ok()?;
                    Some((tid, name.trim().to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// `goroutine` and `threadcreate`: petrel's threads (shard executors,
/// blocking pool, monitor), one sample each, named by thread.
pub fn threads_profile(kind: &str) -> Profile {
    heap::without_sampling(|| {
        let mut b = Builder::new();
        let ty = b.value_type(kind, "count");
        let samples = threads()
            .into_iter()
            .map(|(tid, name)| Sample {
                location_id: vec![b.location(&format!("thread {name} ({tid})"), "", 0)],
                value: vec![1],
                ..Default::default()
            })
            .collect();
        let p = Profile {
            sample_type: vec![ty.clone()],
            sample: samples,
            period_type: Some(ty),
            period: 1,
            ..Default::default()
        };
        b.finish(p)
    })
}

/// Go's text form of the thread list (`debug=1`, `debug=2`).
pub fn threads_text(kind: &str) -> String {
    let t = threads();
    let mut out = format!("{kind} profile: total {}\n", t.len());
    for (tid, name) in t {
        out.push_str(&format!("1 @ thread {name} ({tid})\n"));
    }
    out
}

/// One profile as PROFILEZ and `/debug/pprof` give it: gzip'd protobuf at
/// `debug` 0, text where Go gives text.
pub fn profile(name: &str, debug: i64, duration: Duration) -> Result<Vec<u8>, ProfileError> {
    let out = build(name, debug, duration);
    release_memory();
    out
}

/// Gives back what building a profile took. Symbolizing parsed the
/// binary's debug information (up to 150 MiB for a release build with
/// line tables); it is not kept between profiles, so a server that was
/// profiled returns to its size. (pprof-rs keeps its sample table, about
/// 75 MiB, from the first CPU profile on.)
pub(super) fn release_memory() {
    backtrace::clear_symbol_cache();
    // mimalloc keeps freed pages for reuse and purges them only once a
    // short delay has passed since they were freed; this thread just
    // freed that much at once and may then sit idle, so hand it back
    // after the delay.
    std::thread::sleep(Duration::from_millis(50));
    heap::give_back_freed();
}

fn build(name: &str, debug: i64, duration: Duration) -> Result<Vec<u8>, ProfileError> {
    match name {
        "" => Err(ProfileError::NoName),
        "cpu" | "profile" => Ok(encode_gz(&cpu_profile(duration)?)),
        "heap" | "allocs" => {
            if !heap::enabled() {
                return Err(ProfileError::Unsupported(
                    "heap sampling is off (PETREL_HEAP_SAMPLING=0)".into(),
                ));
            }
            let p = heap_profile(name == "allocs");
            Ok(if debug > 0 {
                heap_text(&p).into_bytes()
            } else {
                encode_gz(&p)
            })
        }
        "goroutine" | "threadcreate" => Ok(if debug > 0 {
            threads_text(name).into_bytes()
        } else {
            encode_gz(&threads_profile(name))
        }),
        "block" | "mutex" => Err(ProfileError::Unsupported(format!(
            "petrel has no {name} profile: its data path takes no locks (shards own their state)"
        ))),
        other => Err(ProfileError::NotFound(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_durations() {
        assert_eq!(profile("", 0, Duration::ZERO), Err(ProfileError::NoName));
        assert_eq!(
            profile("nope", 0, Duration::ZERO).unwrap_err().to_string(),
            "Profile \"nope\" not found"
        );
        assert_eq!(
            profile("cpu", 0, Duration::from_secs(16)).unwrap_err().to_string(),
            "Duration 16s should be between 0s and 15s"
        );
        assert!(profile("mutex", 0, Duration::ZERO).is_err());
        let t = decode(&profile("goroutine", 0, Duration::ZERO).unwrap()).unwrap();
        assert!(!t.sample.is_empty(), "at least this thread");
        assert!(String::from_utf8(profile("threadcreate", 1, Duration::ZERO).unwrap())
            .unwrap()
            .starts_with("threadcreate profile: total "));
    }

    #[test]
    fn heap_profile_has_go_sample_types() {
        let p = heap_profile(false);
        let types: Vec<&str> = p
            .sample_type
            .iter()
            .map(|t| p.string_table[t.ty as usize].as_str())
            .collect();
        assert_eq!(types, ["alloc_objects", "alloc_space", "inuse_objects", "inuse_space"]);
        assert_eq!(p.string_table[p.default_sample_type as usize], "inuse_space");
        let round = decode(&encode_gz(&p)).unwrap();
        assert_eq!(round.sample_type.len(), 4);
    }
}
