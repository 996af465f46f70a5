//! The `leafnodes` block onto [`LeafOptions`], with nats-server's key
//! names, aliases and errors. Keys whose features petrel does not have yet
//! are refused by name, never ignored.

use std::path::PathBuf;

use super::parse::ConfError;
use super::read::{boolean, compression, duration, int, listen_value, string, type_err, Notices};
use super::units::seconds;
use super::value::{Item, Value};
use crate::compress::CompressionMode;
use crate::options::{LeafOptions, LeafRemote, LeafUser};

/// Keys of the block whose features land later, with the feature's name.
const NOT_YET: &[(&str, &str)] = &[
    ("write_deadline", "leaf write deadlines"),
    ("write_timeout", "leaf write deadlines"),
];

/// Keys of a remote whose features land later.
const REMOTE_NOT_YET: &[(&str, &str)] = &[
    ("nkey", "nkey leaf authentication"),
    ("seed", "nkey leaf authentication"),
    ("jetstream_cluster_migrate", "JetStream"),
    ("js_cluster_migrate", "JetStream"),
    ("proxy", "leaf connections through a proxy"),
    ("ignore_discovered_servers", "leaf URL discovery"),
];

fn at(v: &Item, msg: String) -> ConfError {
    ConfError {
        pos: v.pos.clone(),
        msg,
    }
}

fn not_yet(list: &[(&str, &str)], block: &str, k: &str, key_pos: &super::value::Pos) -> Result<(), ConfError> {
    match list.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)) {
        Some((_, feature)) => Err(ConfError {
            pos: key_pos.clone(),
            msg: format!("{block}: \"{k}\" is not supported by petrel yet ({feature})"),
        }),
        None => Ok(()),
    }
}

/// Reads the block.
pub fn leaf_block(item: &Item, notices: &mut Notices) -> Result<LeafOptions, ConfError> {
    let Value::Map(m) = &item.value else {
        return Err(type_err("leafnodes", item, "a map"));
    };
    let mut l = LeafOptions::default();
    for (k, key_pos, v) in &m.entries {
        not_yet(NOT_YET, "leafnodes", k, key_pos)?;
        match k.to_ascii_lowercase().as_str() {
            "listen" => {
                let (h, p) = listen_value(k, v)?;
                if let Some(h) = h {
                    l.host = h;
                }
                l.port = p;
            }
            "port" => l.port = int(k, v)? as i32,
            "host" | "net" => l.host = string(k, v)?,
            "advertise" | "leafnode_advertise" => l.advertise = Some(string(k, v)?),
            "no_advertise" => l.no_advertise = boolean(k, v)?,
            "authorization" => authorization(&mut l, v)?,
            "remotes" => {
                let Value::Array(a) = &v.value else {
                    return Err(type_err(k, v, "a list of remotes"));
                };
                for r in a {
                    let remote = remote(r, notices)?;
                    if !remote.disabled {
                        l.remotes.push(remote);
                    }
                }
            }
            "reconnect" | "reconnect_delay" | "reconnect_interval" => l.reconnect = duration(k, v, notices)?,
            "dial_timeout" => l.dial_timeout = Some(duration(k, v, notices)?),
            "isolate_leafnode_interest" | "isolate" => l.isolate = boolean(k, v)?,
            "min_version" | "minimum_version" => {
                let text = string(k, v)?;
                let version =
                    semver(&text).ok_or_else(|| at(v, "invalid leafnode's minimum version: invalid semver".into()))?;
                if version < (2, 8, 0) {
                    return Err(at(v, "the minimum version should be at least 2.8.0".into()));
                }
                l.min_version = Some(text);
            }
            "compression" => l.compression = compression(k, v, CompressionMode::default_leaf())?,
            "tls" => {
                let t = super::tls::loaded_tls(v)?;
                if t.handshake_first {
                    return Err(at(
                        v,
                        "leafnodes: tls: \"handshake_first\" is not supported by petrel yet (TLS before INFO on leaf connections)".into(),
                    ));
                }
                l.tls = Some(t);
            }
            _ => {
                return Err(ConfError {
                    pos: key_pos.clone(),
                    msg: format!("unknown field \"{k}\""),
                })
            }
        }
    }
    Ok(l)
}

/// `authorization`: one user (`user`, `password`, `account`) or `users`,
/// each bound to an account, and `timeout`.
fn authorization(l: &mut LeafOptions, v: &Item) -> Result<(), ConfError> {
    let Value::Map(m) = &v.value else {
        return Err(type_err("authorization", v, "a map"));
    };
    for (k, key_pos, av) in &m.entries {
        match k.to_ascii_lowercase().as_str() {
            "user" | "username" => l.username = Some(string(k, av)?),
            "pass" | "password" => l.password = Some(string(k, av)?),
            "account" => l.account = Some(string(k, av)?),
            "timeout" => l.auth_timeout = Some(seconds(k, av)?),
            "users" => {
                let Value::Array(a) = &av.value else {
                    return Err(at(
                        av,
                        format!("Expected users field to be an array, got {:?}", av.value),
                    ));
                };
                for u in a {
                    let Value::Map(um) = &u.value else {
                        return Err(at(
                            u,
                            format!("Expected user entry to be a map/struct, got {:?}", u.value),
                        ));
                    };
                    let mut user = LeafUser {
                        user: String::new(),
                        password: String::new(),
                        account: None,
                    };
                    for (uk, upos, uv) in &um.entries {
                        match uk.to_ascii_lowercase().as_str() {
                            "user" | "username" => user.user = string(uk, uv)?,
                            "pass" | "password" => user.password = string(uk, uv)?,
                            "account" => user.account = Some(string(uk, uv)?),
                            _ => {
                                return Err(ConfError {
                                    pos: upos.clone(),
                                    msg: format!("unknown field \"{uk}\""),
                                })
                            }
                        }
                    }
                    l.users.push(user);
                }
            }
            "nkey" | "proxy_required" => {
                return Err(ConfError {
                    pos: key_pos.clone(),
                    msg: format!("leafnodes: authorization: \"{k}\" is not supported by petrel yet"),
                })
            }
            _ => {
                return Err(ConfError {
                    pos: key_pos.clone(),
                    msg: format!("unknown field \"{k}\""),
                })
            }
        }
    }
    // nats-server: a single user and a users list do not mix.
    if l.username.is_some() && !l.users.is_empty() {
        return Err(at(v, "can not have a single user/pass and a users array".into()));
    }
    Ok(())
}

/// One `remotes` entry.
fn remote(item: &Item, notices: &mut Notices) -> Result<LeafRemote, ConfError> {
    let Value::Map(m) = &item.value else {
        return Err(type_err("remotes", item, "a map"));
    };
    let mut r = LeafRemote::default();
    for (k, key_pos, v) in &m.entries {
        not_yet(REMOTE_NOT_YET, "leafnodes: remotes", k, key_pos)?;
        match k.to_ascii_lowercase().as_str() {
            "url" | "urls" => {
                let urls = match &v.value {
                    Value::Array(a) => a
                        .iter()
                        .map(|u| string(k, u).map(|s| (s, u)))
                        .collect::<Result<Vec<_>, _>>()?,
                    _ => vec![(string(k, v)?, v)],
                };
                for (u, pos) in urls {
                    leaf_url(&u).map_err(|e| at(pos, format!("error parsing remote leafnode url [{u:?}]: {e}")))?;
                    r.urls.push(u);
                }
            }
            "account" | "local" => r.account = Some(string(k, v)?),
            "creds" | "credentials" => r.credentials = Some(PathBuf::from(string(k, v)?)),
            "no_randomize" | "dont_randomize" => r.no_randomize = boolean(k, v)?,
            "deny_imports" | "deny_import" => r.deny_imports = subjects(k, v)?,
            "deny_exports" | "deny_export" => r.deny_exports = subjects(k, v)?,
            "first_info_timeout" => r.first_info_timeout = Some(duration(k, v, notices)?),
            "dial_timeout" => {
                duration(k, v, notices)?;
            }
            "compression" => r.compression = compression(k, v, CompressionMode::default_leaf())?,
            "disabled" => r.disabled = boolean(k, v)?,
            "hub" => r.hub = boolean(k, v)?,
            "ws_no_masking" | "websocket_no_masking" => r.ws_no_masking = boolean(k, v)?,
            "ws_compress" | "ws_compression" | "websocket_compress" | "websocket_compression" => {
                r.ws_compression = boolean(k, v)?
            }
            "isolate_leafnode_interest" | "isolate" => r.isolate = boolean(k, v)?,
            "request_isolation" => r.request_isolation = boolean(k, v)?,
            "tls" => {
                let t = super::tls::dial_tls_block(v)?;
                if t.handshake_first {
                    return Err(at(
                        v,
                        "leafnodes: remotes: tls: \"handshake_first\" is not supported by petrel yet (TLS before INFO on leaf connections)".into(),
                    ));
                }
                r.tls = Some(t);
            }
            _ => {
                return Err(ConfError {
                    pos: key_pos.clone(),
                    msg: format!("unknown field \"{k}\""),
                })
            }
        }
    }
    if r.urls.is_empty() {
        return Err(at(
            item,
            "leafnodes: remotes: an entry needs \"url\" or \"urls\"".into(),
        ));
    }
    // nats-server's rule: a remote's URLs are all WebSocket or none.
    if r.urls
        .iter()
        .any(|u| leaf_ws(u).is_some() != leaf_ws(&r.urls[0]).is_some())
    {
        let shown: Vec<String> = r.urls.iter().map(|u| format!("{:?}", redact(u))).collect();
        return Err(at(
            item,
            format!(
                "remote leaf node configuration cannot have a mix of websocket and non-websocket urls: [{}]",
                shown.join(" ")
            ),
        ));
    }
    Ok(r)
}

/// A `major.minor.patch` version (a leading `v` and a `-pre` tail are
/// allowed, as nats-server's semver reading allows them).
pub fn semver(text: &str) -> Option<(u64, u64, u64)> {
    let t = text.trim().trim_start_matches('v');
    let t = t.split(['-', '+']).next()?;
    let mut parts = t.split('.').map(|p| p.parse::<u64>().ok());
    let v = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(v)
}

/// A subject or a list of them.
fn subjects(k: &str, v: &Item) -> Result<Vec<String>, ConfError> {
    let list = match &v.value {
        Value::Array(a) => a.iter().map(|s| string(k, s)).collect::<Result<Vec<_>, _>>()?,
        _ => vec![string(k, v)?],
    };
    for s in &list {
        if !crate::subject::is_valid_subject(s.as_bytes()) {
            return Err(at(v, format!("{k}: invalid subject {s:?}")));
        }
    }
    Ok(list)
}

/// A remote's URL: `nats-leaf://`, `nats://`, `leafnode://` or `tls://`
/// (TLS required), with optional credentials and nats-server's default
/// port 7422; `ws://` and `wss://` are refused for now.
pub fn leaf_url(s: &str) -> Result<crate::conf::cluster::RouteUrl, String> {
    if let Some((scheme, _)) = s.split_once("://") {
        match scheme.to_ascii_lowercase().as_str() {
            "nats" | "nats-leaf" | "leafnode" | "tls" | "ws" | "wss" => {}
            other => return Err(format!("unsupported scheme {other:?}")),
        }
    }
    let rest = s.split_once("://").map_or(s, |(_, r)| r);
    // The authority: a path (WebSocket remotes) goes to the upgrade.
    let rest = rest.split_once('/').map_or(rest, |(a, _)| a);
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let has_port = hostport.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']'));
    let with_port = if has_port {
        rest.to_string()
    } else {
        // nats-server's default for every scheme, wss included.
        format!("{rest}:7422")
    };
    crate::conf::cluster::route_url(&format!("nats://{with_port}"))
}

/// Where a WebSocket remote upgrades: `ws://` or `wss://` (TLS), and the
/// URL's path; `None` for other remotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsTarget {
    /// `wss://`.
    pub tls: bool,
    /// The URL's path (`/leafnode` is added to it).
    pub path: String,
}

/// A remote URL's WebSocket target, if it is one (nats-server: a scheme
/// starting with `ws`).
pub fn leaf_ws(s: &str) -> Option<WsTarget> {
    let (scheme, rest) = s.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if !scheme.starts_with("ws") {
        return None;
    }
    let path = rest.split_once('/').map_or(String::new(), |(_, p)| {
        format!("/{}", p.split(['?', '#']).next().unwrap_or_default())
    });
    Some(WsTarget {
        tls: scheme.starts_with("wss"),
        path,
    })
}

/// A URL with its password shown as `xxxxx`, as nats-server shows it.
fn redact(u: &str) -> String {
    let Some((scheme, rest)) = u.split_once("://") else {
        return u.to_string();
    };
    match rest.split_once('@') {
        Some((cred, host)) => match cred.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:xxxxx@{host}"),
            None => u.to_string(),
        },
        None => u.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::tests::refusal;

    #[test]
    fn websocket_remotes_as_nats_server_reads_them() {
        assert_eq!(
            leaf_ws("wss://u:p@hub.example/some/path"),
            Some(WsTarget {
                tls: true,
                path: "/some/path".into()
            })
        );
        assert_eq!(leaf_ws("ws://127.0.0.1:8080").map(|t| t.tls), Some(false));
        assert_eq!(leaf_ws("nats://127.0.0.1:8080"), None);
        let u = leaf_url("wss://u:p@hub.example/some/path").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.user.as_deref()),
            ("hub.example", 7422, Some("u"))
        );
        assert_eq!(leaf_url("ws://h:8080/x").unwrap().port, 8080);
        let e = refusal("leafnodes { remotes [ { urls: [\"nats://a:p@h:1\", \"ws://h:2\"] } ] }");
        assert!(
            e.contains(
                "remote leaf node configuration cannot have a mix of websocket and non-websocket urls: [\"nats://a:xxxxx@h:1\" \"ws://h:2\"]"
            ),
            "{e}"
        );
    }

    #[test]
    fn minimum_versions_as_nats_server_checks_them() {
        assert_eq!(semver("v2.10.3-beta"), Some((2, 10, 3)));
        assert_eq!(semver("2.10"), None);
        let e = refusal("leafnodes { min_version: \"2.7.9\" }");
        assert!(e.contains("the minimum version should be at least 2.8.0"), "{e}");
        let e = refusal("leafnodes { min_version: \"two\" }");
        assert!(e.contains("invalid leafnode's minimum version: invalid semver"), "{e}");
        let e = refusal("leafnodes {\n remotes [ { urls: [] } ] }");
        assert!(e.contains("t.conf:2") && e.contains("\"url\" or \"urls\""), "{e}");
    }
}
