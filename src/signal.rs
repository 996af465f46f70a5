//! `--signal <command>[=<pid or pid file>]`: sends a running server the
//! signal for a command, as `nats-server --signal` does.

use std::path::Path;

/// The signal for each `--signal` command.
pub fn signal_for(command: &str) -> Option<libc::c_int> {
    Some(match command {
        "stop" => libc::SIGKILL,
        "quit" => libc::SIGINT,
        "term" => libc::SIGTERM,
        "reopen" => libc::SIGUSR1,
        "reload" => libc::SIGHUP,
        "ldm" => libc::SIGUSR2,
        _ => return None,
    })
}

/// Processes other than this one whose executable name is `name`.
fn processes_named(name: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    // /proc/<pid>/comm holds at most 15 bytes of the name.
    let short: String = name.chars().take(15).collect();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == short))
        .collect()
}

/// Resolves the target: a pid, a pid file, or the one running server.
fn target_pid(target: Option<&str>) -> Result<i32, String> {
    match target {
        Some(t) if t.chars().all(|c| c.is_ascii_digit()) && !t.is_empty() => {
            t.parse().map_err(|_| format!("invalid pid: {t}"))
        }
        Some(path) => {
            let text =
                std::fs::read_to_string(Path::new(path)).map_err(|e| format!("could not read pid file {path}: {e}"))?;
            text.trim()
                .parse()
                .map_err(|_| format!("invalid pid in {path}: {:?}", text.trim()))
        }
        None => {
            let exe = own_name();
            let pids = processes_named(&exe);
            match pids.as_slice() {
                [pid] => Ok(*pid),
                [] => Err(format!("no {exe} processes running")),
                many => Err(format!(
                    "multiple {exe} processes running:\n{}",
                    many.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n")
                )),
            }
        }
    }
}

fn own_name() -> String {
    std::env::args()
        .next()
        .and_then(|a| Path::new(&a).file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "petrel".into())
}

/// Sends the signal `spec` (`command[=pid|pidfile|pid-prefix*]`) asks for.
pub fn send(spec: &str) -> Result<(), String> {
    let (command, target) = match spec.split_once('=') {
        Some((c, t)) => (c, Some(t)),
        None => (spec, None),
    };
    let sig = signal_for(command).ok_or_else(|| format!("unknown signal \"{command}\""))?;
    let pids = match target.and_then(|t| t.strip_suffix('*')) {
        // A glob: every running server whose pid starts with the prefix.
        Some(prefix) => {
            let exe = own_name();
            let pids: Vec<i32> = processes_named(&exe)
                .into_iter()
                .filter(|p| p.to_string().starts_with(prefix))
                .collect();
            if pids.is_empty() {
                return Err(format!("no {exe} processes matching {prefix}*"));
            }
            pids
        }
        None => vec![target_pid(target)?],
    };
    for pid in pids {
        // SAFETY: kill(2) with a pid and a signal number has no memory effects.
        if unsafe { libc::kill(pid, sig) } != 0 {
            return Err(format!(
                "could not signal process {pid}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_map_to_nats_server_signals() {
        assert_eq!(signal_for("ldm"), Some(libc::SIGUSR2));
        assert_eq!(signal_for("reload"), Some(libc::SIGHUP));
        assert_eq!(signal_for("reopen"), Some(libc::SIGUSR1));
        assert_eq!(signal_for("quit"), Some(libc::SIGINT));
        assert_eq!(signal_for("nope"), None);
        assert!(send("nope=1").unwrap_err().contains("unknown signal"));
        assert!(send("reload=/nonexistent/pid")
            .unwrap_err()
            .contains("could not read pid file"));
    }
}
