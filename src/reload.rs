//! Configuration reload: which options may change at run time, the diff
//! between the running options and a re-read configuration, and the
//! structured result (changed and rejected options) that SIGHUP, `--signal
//! reload` and, later, the system account's RELOAD request share.

use std::fmt;

use crate::options::Options;

/// One option whose value differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// nats-server's name of the option.
    pub option: &'static str,
    /// The running value.
    pub old: String,
    /// The value read from the configuration.
    pub new: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: old={}, new={}", self.option, self.old, self.new)
    }
}

/// The outcome of comparing running and new options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// Options that change and can change at run time.
    pub changed: Vec<Change>,
    /// Options that change but cannot: when any is here, nothing is applied.
    pub rejected: Vec<Change>,
}

impl ReloadOutcome {
    /// True when the new options may be applied.
    pub fn accepted(&self) -> bool {
        self.rejected.is_empty()
    }

    /// nats-server's error text for the rejected options.
    pub fn error_text(&self) -> Option<String> {
        if self.rejected.is_empty() {
            return None;
        }
        Some(
            self.rejected
                .iter()
                .map(|c| format!("config reload not supported for {c}"))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

type Getter = fn(&Options) -> String;

/// Every option petrel reads, whether a reload may change it, and how to
/// show its value. The README's reload table is generated from this list
/// (`reload_table_markdown`), and a test keeps the two equal.
pub const OPTIONS: &[(&str, bool, Getter)] = &[
    ("host", false, |o| o.host.clone()),
    ("port", false, |o| o.port.to_string()),
    ("server_name", false, |o| o.server_name.clone().unwrap_or_default()),
    ("shards", false, |o| o.shards.map(|s| s.to_string()).unwrap_or_default()),
    ("idle_spin", false, |o| o.idle_spin_us.to_string()),
    ("pin_shards", false, |o| o.pin_shards.to_string()),
    ("no_header_support", false, |o| o.no_header_support.to_string()),
    ("disable_sublist_cache", false, |o| o.disable_sublist_cache.to_string()),
    ("http_port", false, |o| {
        o.http_port.map(|p| p.to_string()).unwrap_or_default()
    }),
    ("http_host", false, |o| o.http_host.clone().unwrap_or_default()),
    ("prof_port", false, |o| {
        o.prof_port.map(|p| p.to_string()).unwrap_or_default()
    }),
    // Turning TLS on or off needs a restart; new certificates and TLS
    // settings apply to new connections (open ones keep their session).
    ("tls_enabled", false, |o| o.tls.is_some().to_string()),
    ("tls", true, |o| fingerprint(&o.tls)),
    // The WebSocket listener (port, origins, its own authorization, TLS on
    // or off) is set at start-up; new wss certificates and TLS settings
    // apply to new WebSocket connections, as for client TLS.
    ("websocket", false, |o| {
        fingerprint(
            &o.websocket
                .as_ref()
                .map(|w| crate::options::WebsocketOptions { tls: None, ..w.clone() }),
        )
    }),
    ("websocket_tls_enabled", false, |o| {
        o.websocket.as_ref().is_some_and(|w| w.tls.is_some()).to_string()
    }),
    ("websocket_tls", true, |o| {
        fingerprint(&o.websocket.as_ref().map(|w| &w.tls))
    }),
    ("allow_non_tls", false, |o| o.allow_non_tls.to_string()),
    ("client_advertise", true, |o| {
        o.client_advertise.clone().unwrap_or_default()
    }),
    ("max_payload", true, |o| o.max_payload.to_string()),
    ("max_pending", true, |o| o.max_pending.to_string()),
    ("max_control_line", true, |o| o.max_control_line.to_string()),
    ("max_connections", true, |o| o.max_connections.to_string()),
    ("max_subscriptions", true, |o| o.max_subscriptions.to_string()),
    ("max_closed_clients", false, |o| o.max_closed_clients.to_string()),
    ("no_fast_producer_stall", true, |o| o.no_fast_producer_stall.to_string()),
    ("http_base_path", false, |o| o.http_base_path.clone()),
    ("server_tags", true, |o| o.server_tags.join(",")),
    ("server_metadata", true, |o| format!("{:?}", o.server_metadata)),
    ("ping_interval", true, |o| format!("{:?}", o.ping_interval)),
    ("ping_max", true, |o| o.ping_max.to_string()),
    ("write_deadline", true, |o| format!("{:?}", o.write_deadline)),
    ("debug", true, |o| o.debug.to_string()),
    ("trace", true, |o| o.trace.to_string()),
    ("logtime", true, |o| o.logtime.to_string()),
    ("logtime_utc", true, |o| o.logtime_utc.to_string()),
    ("connect_error_reports", true, |o| o.connect_error_reports.to_string()),
    ("reconnect_error_reports", true, |o| {
        o.reconnect_error_reports.to_string()
    }),
    ("log_file", true, |o| {
        o.log_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
    }),
    ("log_size_limit", true, |o| o.log_size_limit.to_string()),
    ("log_max_num", true, |o| o.log_max_num.to_string()),
    ("syslog", true, |o| o.syslog.to_string()),
    ("remote_syslog", true, |o| o.remote_syslog.clone().unwrap_or_default()),
    ("pid_file", true, |o| {
        o.pid_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
    }),
    ("ports_file_dir", true, |o| {
        o.ports_file_dir
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }),
    ("lame_duck_duration", true, |o| format!("{:?}", o.lame_duck_duration)),
    ("lame_duck_grace_period", true, |o| {
        format!("{:?}", o.lame_duck_grace_period)
    }),
    // Credentials are shown as fingerprints so logs never carry secrets.
    ("authorization", true, |o| {
        let a = &o.auth;
        fingerprint(&(&a.token, &a.users, &a.default_permissions, &a.timeout, &a.no_auth_user))
    }),
    ("accounts", true, |o| fingerprint(&o.auth.accounts)),
    ("system_account", false, |o| {
        o.auth.system_account.clone().unwrap_or_default()
    }),
    ("operator", false, |o| {
        fingerprint(&(&o.auth.operator, &o.auth.trusted_keys))
    }),
    // The cluster's listener and name are fixed at start-up; routes come
    // and go (removed ones are closed), and the rest applies to new route
    // connections.
    ("cluster_enabled", false, |o| o.cluster.is_some().to_string()),
    ("cluster_listen", false, |o| {
        o.cluster
            .as_ref()
            .map(|c| format!("{}:{}", c.host, c.port))
            .unwrap_or_default()
    }),
    ("cluster_name", false, |o| {
        o.cluster.as_ref().and_then(|c| c.name.clone()).unwrap_or_default()
    }),
    ("cluster_routes", true, |o| {
        o.cluster.as_ref().map(|c| c.routes.join(",")).unwrap_or_default()
    }),
    ("cluster_authorization", true, |o| {
        fingerprint(&o.cluster.as_ref().map(|c| (&c.username, &c.password, &c.auth_timeout)))
    }),
    // Leaf nodes are set up at start-up (listener, remotes, accounts).
    ("leafnodes", false, |o| fingerprint(&o.leaf)),
    ("cluster", true, |o| {
        fingerprint(&o.cluster.as_ref().map(|c| crate::options::ClusterOptions {
            routes: Vec::new(),
            username: None,
            password: None,
            auth_timeout: None,
            ..c.clone()
        }))
    }),
];

/// A short stable digest of a value's debug form.
fn fingerprint<T: fmt::Debug>(v: &T) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    format!("{v:?}").hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Compares the running options with newly read ones.
pub fn diff(old: &Options, new: &Options) -> ReloadOutcome {
    let mut out = ReloadOutcome::default();
    for (name, reloadable, get) in OPTIONS {
        let (a, b) = (get(old), get(new));
        if a == b {
            continue;
        }
        // A random port (-1/0) keeps the port it was given.
        if *name == "port" && old.port <= 0 && new.port <= 0 {
            continue;
        }
        let change = Change {
            option: name,
            old: a,
            new: b,
        };
        if *reloadable {
            out.changed.push(change);
        } else {
            out.rejected.push(change);
        }
    }
    out
}

/// The README's table of reloadable options.
pub fn reload_table_markdown() -> String {
    let mut t = String::from("| option | reloadable |\n|---|---|\n");
    for (name, reloadable, _) in OPTIONS {
        t.push_str(&format!("| `{name}` | {} |\n", if *reloadable { "yes" } else { "no" }));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_op_reload_changes_nothing() {
        let o = Options::default();
        let d = diff(&o, &o.clone());
        assert!(d.accepted() && d.changed.is_empty());
    }

    #[test]
    fn reloadable_and_rejected() {
        let old = Options::default();
        let mut new = old.clone();
        new.max_payload = 2048;
        new.debug = true;
        let d = diff(&old, &new);
        assert!(d.accepted());
        assert_eq!(
            d.changed.iter().map(|c| c.option).collect::<Vec<_>>(),
            vec!["max_payload", "debug"]
        );
        new.server_name = Some("other".into());
        let d = diff(&old, &new);
        assert!(!d.accepted());
        assert_eq!(
            d.error_text().unwrap(),
            "config reload not supported for server_name: old=, new=other"
        );
    }

    /// `PETREL_UPDATE_README=1 cargo test --lib readme_reload_table` rewrites
    /// the table; otherwise the README must already match.
    #[test]
    fn readme_reload_table_is_generated_from_this_list() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let (open, close) = ("<!-- reload-table -->\n", "<!-- /reload-table -->");
        let start = readme.find(open).expect("README has the reload table marker") + open.len();
        let end = start + readme[start..].find(close).expect("end marker");
        if std::env::var_os("PETREL_UPDATE_README").is_some() {
            let updated = format!("{}{}{}", &readme[..start], reload_table_markdown(), &readme[end..]);
            std::fs::write(path, updated).unwrap();
            return;
        }
        assert_eq!(
            &readme[start..end],
            reload_table_markdown(),
            "run with PETREL_UPDATE_README=1 to regenerate"
        );
    }
}
