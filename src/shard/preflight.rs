//! What the io_uring runtime needs from the host, checked before any shard
//! starts, so a machine that cannot run petrel gets one clear `[FTL]` line
//! saying what is wrong and how to fix it (rather than a panic deep in the
//! executor, or its bare `MemLockLimit(...)`).

/// Locked memory one shard's executor needs for its io_uring buffers
/// (what glommio asks for with the settings `shard::start` uses).
pub const MEMLOCK_PER_SHARD: u64 = 512 * 1024;

/// Why this host cannot run petrel's shards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unfit {
    /// `io_uring_setup` fails: an old kernel, a seccomp profile that
    /// blocks it, or `kernel.io_uring_disabled`.
    #[error(
        "io_uring is not available here (io_uring_setup: {0}): petrel needs Linux 5.8 or later with io_uring \
         allowed; a container's seccomp profile must allow io_uring_setup, io_uring_enter and io_uring_register \
         (docker: --security-opt seccomp=unconfined, or a profile listing them), and the sysctl \
         kernel.io_uring_disabled must be 0"
    )]
    NoIoUring(String),
    /// The locked-memory limit is below what one shard needs.
    #[error(
        "the locked memory limit is {have_kib} KiB; each shard needs {need_kib} KiB for its io_uring buffers: \
         raise it (ulimit -l unlimited; LimitMEMLOCK=infinity in a systemd unit; docker: --ulimit memlock=-1) \
         or run fewer shards with --shards"
    )]
    MemLock {
        /// The limit now.
        have_kib: u64,
        /// What one shard needs.
        need_kib: u64,
    },
}

/// Checks io_uring and the locked-memory limit.
pub fn check() -> Result<(), Unfit> {
    io_uring()?;
    memlock(memlock_limit())
}

/// Whether an io_uring can be set up (one is made and closed again).
fn io_uring() -> Result<(), Unfit> {
    // io_uring_params is 120 bytes; zeroed asks for nothing special.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes `params` (120 bytes, ours)
    // and returns a file descriptor we close at once.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(Unfit::NoIoUring(std::io::Error::last_os_error().to_string()));
    }
    // SAFETY: `fd` is the descriptor io_uring_setup just returned.
    unsafe {
        libc::close(fd as libc::c_int);
    }
    Ok(())
}

/// The soft locked-memory limit in bytes (`None`: unlimited).
fn memlock_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we own.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } == 0;
    (ok && r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur)
}

/// Whether a locked-memory limit of `limit` bytes lets a shard start.
fn memlock(limit: Option<u64>) -> Result<(), Unfit> {
    match limit {
        Some(have) if have < MEMLOCK_PER_SHARD => Err(Unfit::MemLock {
            have_kib: have / 1024,
            need_kib: MEMLOCK_PER_SHARD / 1024,
        }),
        _ => Ok(()),
    }
}

/// An executor's start error, said as [`Unfit`] says it when it is the
/// locked-memory limit (which may bite past the first shard).
pub fn explain(why: &str) -> String {
    match memlock_limit() {
        Some(have) if why.contains("MemLockLimit") => Unfit::MemLock {
            have_kib: have / 1024,
            need_kib: MEMLOCK_PER_SHARD / 1024,
        }
        .to_string(),
        _ => why.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_low_memlock_limit_is_explained() {
        assert!(memlock(None).is_ok());
        assert!(memlock(Some(8 << 20)).is_ok());
        let e = memlock(Some(64 * 1024)).unwrap_err().to_string();
        assert!(
            e.starts_with("the locked memory limit is 64 KiB; each shard needs 512 KiB"),
            "{e}"
        );
        assert!(e.contains("ulimit -l") && e.contains("--shards"), "{e}");
    }

    #[test]
    fn this_machine_has_io_uring() {
        // The test machine runs the shards; the probe must agree.
        assert_eq!(io_uring(), Ok(()));
    }
}
