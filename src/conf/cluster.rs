//! The `cluster` block onto [`ClusterOptions`], with nats-server's key
//! names, aliases and errors.

use super::parse::ConfError;
use super::read::{boolean, compression, duration, int, listen_value, string, type_err, Notices};
use super::tls::tls_block;
use super::units::seconds;
use super::value::{Item, Value};
use crate::compress::CompressionMode;
use crate::options::ClusterOptions;

fn at(v: &Item, msg: String) -> ConfError {
    ConfError {
        pos: v.pos.clone(),
        msg,
    }
}

/// Reads the block.
pub fn cluster_block(item: &Item, notices: &mut Notices) -> Result<ClusterOptions, ConfError> {
    let Value::Map(m) = &item.value else {
        return Err(type_err("cluster", item, "a map"));
    };
    let mut c = ClusterOptions::default();
    // The deprecated place; the block's own `permissions` wins.
    let mut auth_perms = None;
    for (k, key_pos, v) in &m.entries {
        let lower = k.to_ascii_lowercase();
        match lower.as_str() {
            "name" => {
                let name = string(k, v)?;
                if name.contains(' ') {
                    return Err(at(v, "cluster name cannot contain spaces or new lines".into()));
                }
                c.name = Some(name);
            }
            "listen" => {
                let (h, p) = listen_value(k, v)?;
                if let Some(h) = h {
                    c.host = h;
                }
                c.port = p;
            }
            "port" => c.port = int(k, v)? as i32,
            "host" | "net" => c.host = string(k, v)?,
            "advertise" | "cluster_advertise" => c.advertise = Some(string(k, v)?),
            "no_advertise" => c.no_advertise = boolean(k, v)?,
            "routes" => {
                let Value::Array(a) = &v.value else {
                    return Err(type_err(k, v, "a list of URLs"));
                };
                for r in a {
                    let url = string(k, r)?;
                    route_url(&url).map_err(|e| at(r, format!("error parsing route url [{url:?}]: {e}")))?;
                    c.routes.push(url);
                }
            }
            "connect_retries" => {
                c.connect_retries =
                    u32::try_from(int(k, v)?).map_err(|_| at(v, format!("{k}: must not be negative")))?
            }
            "connect_backoff" => c.connect_backoff = boolean(k, v)?,
            "authorization" | "authentication" => {
                let Value::Map(am) = &v.value else {
                    return Err(type_err(k, v, "a map"));
                };
                for (ak, _, av) in &am.entries {
                    match ak.to_ascii_lowercase().as_str() {
                        "user" | "username" => c.username = Some(string(ak, av)?),
                        "pass" | "password" => c.password = Some(string(ak, av)?),
                        "timeout" => c.auth_timeout = Some(seconds(ak, av)?),
                        // nats-server: routes authenticate with user and password only.
                        "token" | "users" | "nkeys" => {
                            return Err(at(av, "Cluster authorization does not allow token or users".into()))
                        }
                        "permissions" => {
                            notices.warnings.push(at(
                                av,
                                "setting \"permissions\" within cluster authorization block is deprecated".into(),
                            ));
                            auth_perms = Some(route_permissions(av)?);
                        }
                        other => return Err(at(av, format!("Unknown field \"{other}\" parsing authorization"))),
                    }
                }
            }
            "accounts" => {
                let Value::Array(a) = &v.value else {
                    return Err(type_err(k, v, "a list of account names"));
                };
                for acc in a {
                    c.pinned_accounts.push(string(k, acc)?);
                }
            }
            "pool_size" => {
                let n = int(k, v)?;
                c.pool_size = Some(match n {
                    // nats-server: 0 means the default, -1 no pooling.
                    0 => crate::options::DEFAULT_ROUTE_POOL_SIZE,
                    n if (-1..=i32::MAX as i64).contains(&n) => n as i32,
                    _ => return Err(at(v, format!("{k}: invalid value {n}"))),
                })
            }
            "compression" => c.compression = compression(k, v, CompressionMode::Fixed(crate::compress::Level::Fast))?,
            "tls" => c.tls = Some(route_tls(v)?),
            "permissions" => c.permissions = Some(route_permissions(v)?),
            "write_deadline" => c.write_deadline = Some(duration(k, v, notices)?),
            "write_timeout" => {
                c.write_timeout = match string(k, v)?.as_str() {
                    "default" => None,
                    "close" => Some(crate::options::WriteTimeoutPolicy::Close),
                    "retry" => Some(crate::options::WriteTimeoutPolicy::Retry),
                    _ => return Err(at(v, "write_timeout must be 'default', 'close' or 'retry'".into())),
                }
            }
            "ping_interval" => c.ping_interval = Some(duration(k, v, notices)?),
            "ping_max" => {
                c.ping_max = Some(u32::try_from(int(k, v)?).map_err(|_| at(v, format!("{k}: invalid value")))?)
            }
            _ => {
                return Err(ConfError {
                    pos: key_pos.clone(),
                    msg: format!("unknown field \"{k}\""),
                })
            }
        }
    }
    if c.permissions.is_none() {
        c.permissions = auth_perms;
    }
    // nats-server's cross-checks of the pool (at the block, as it has no
    // position of its own).
    if !c.pinned_accounts.is_empty() && c.pool_size.is_some_and(|n| n < 0) {
        return Err(at(
            item,
            "pool_size cannot be negative if pinned accounts are specified".into(),
        ));
    }
    for (i, a) in c.pinned_accounts.iter().enumerate() {
        if c.pinned_accounts[..i].contains(a) {
            return Err(at(
                item,
                format!(
                    "found duplicate account name {a:?} in pinned accounts list [{}]",
                    c.pinned_accounts.join(" ")
                ),
            ));
        }
    }
    Ok(c)
}

/// `permissions { import, export }` (also read as `publish`/`subscribe`,
/// as nats-server reads them); responses make no sense on routes.
fn route_permissions(v: &Item) -> Result<crate::options::RoutePermissions, ConfError> {
    let p = crate::auth::config::permissions(v)?;
    if p.response.is_some() {
        return Err(at(v, "Cluster permissions do not support dynamic responses".into()));
    }
    Ok(crate::options::RoutePermissions {
        import: p.publish,
        export: p.subscribe,
    })
}

/// The route `tls` block: the client block's keys, with certificates that
/// load. Routes always verify their peers (nats-server forces it too) and
/// always start with the handshake, so `verify` and `handshake_first` do
/// not change what a route does; `verify_and_map` (route user from the
/// certificate) is not implemented and refused.
fn route_tls(v: &Item) -> Result<crate::options::TlsOptions, ConfError> {
    let t = tls_block(v)?;
    if t.map {
        return Err(at(
            v,
            "cluster: tls: \"verify_and_map\" is not supported by petrel yet (route user from the certificate)".into(),
        ));
    }
    crate::route_tls::RouteTls::new(&t).map_err(|msg| at(v, msg))?;
    Ok(t)
}

/// A route URL as nats-server takes it: `nats://[user:pass@]host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteUrl {
    /// Host (name or address, brackets removed).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Credentials to give in CONNECT.
    pub user: Option<String>,
    /// Password to give in CONNECT.
    pub pass: Option<String>,
}

/// Parses a route URL (also used by `--routes`).
pub fn route_url(s: &str) -> Result<RouteUrl, String> {
    let rest = s
        .split_once("://")
        .map(|(scheme, rest)| {
            if matches!(
                scheme.to_ascii_lowercase().as_str(),
                "nats" | "tls" | "nats-route" | "route"
            ) {
                Ok(rest)
            } else {
                Err(format!("unsupported scheme {scheme:?}"))
            }
        })
        .unwrap_or(Ok(s))?;
    let rest = rest.trim_end_matches('/');
    let (auth, hostport) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let (host, port) = hostport.rsplit_once(':').ok_or_else(|| "missing port".to_string())?;
    let port: u16 = port.parse().map_err(|_| format!("invalid port {port:?}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    if host.is_empty() {
        return Err("missing host".into());
    }
    let (user, pass) = match auth.map(|a| a.split_once(':').unwrap_or((a, ""))) {
        Some((u, p)) => (Some(percent_decode(u)), Some(percent_decode(p))),
        None => (None, None),
    };
    Ok(RouteUrl { host, port, user, pass })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::tests::refusal;

    #[test]
    fn route_urls() {
        let u = route_url("nats://ruser:p%40ss@127.0.0.1:6222").unwrap();
        assert_eq!(
            u,
            RouteUrl {
                host: "127.0.0.1".into(),
                port: 6222,
                user: Some("ruser".into()),
                pass: Some("p@ss".into())
            }
        );
        assert_eq!(route_url("nats-route://[::1]:7").unwrap().host, "::1");
        assert!(route_url("nats://host").is_err());
        assert!(route_url("http://h:1").is_err());
    }

    #[test]
    fn route_permissions_as_nats_server_reads_them() {
        let parsed = crate::conf::parse::parse_str(
            "cluster {\n permissions { import: [\"a.>\"], export: { allow: \"b.>\", deny: [\"b.x\"] } }\n \
             authorization { permissions { publish: \"z\" } }\n}",
            std::path::Path::new("t.conf"),
        )
        .unwrap();
        let mut o = crate::options::Options::default();
        let notices = crate::conf::options::apply(&mut o, &parsed).unwrap();
        let p = o.cluster.unwrap().permissions.unwrap();
        assert!(
            p.may_import(b"a.1") && !p.may_import(b"z"),
            "the block's own permissions win"
        );
        assert!(p.may_export(b"b.1") && !p.may_export(b"b.x") && !p.may_export(b"c"));
        assert!(notices.warnings[0].to_string().contains("deprecated"));
        let e = refusal("cluster { permissions { import: \"a\", allow_responses: true } }");
        assert!(
            e.contains("Cluster permissions do not support dynamic responses"),
            "{e}"
        );
    }

    #[test]
    fn pinned_accounts_are_read() {
        let parsed = crate::conf::parse::parse_str(
            "cluster { accounts: [A, B], pool_size: 3 }",
            std::path::Path::new("t.conf"),
        )
        .unwrap();
        let mut o = crate::options::Options::default();
        crate::conf::options::apply(&mut o, &parsed).unwrap();
        assert_eq!(o.cluster.unwrap().pinned_accounts, ["A", "B"]);
        let e = refusal("cluster { accounts: A }");
        assert!(e.contains("a list of account names"), "{e}");
        let e = refusal("cluster { accounts: [A], pool_size: -1 }");
        assert!(
            e.contains("pool_size cannot be negative if pinned accounts are specified"),
            "{e}"
        );
        let e = refusal("cluster { accounts: [A, B, A] }");
        assert!(
            e.contains("found duplicate account name \"A\" in pinned accounts list [A B A]"),
            "{e}"
        );
    }

    #[test]
    fn route_write_deadline_and_policy() {
        let parsed = crate::conf::parse::parse_str(
            "cluster { write_deadline: \"3s\", write_timeout: close }",
            std::path::Path::new("t.conf"),
        )
        .unwrap();
        let mut o = crate::options::Options::default();
        crate::conf::options::apply(&mut o, &parsed).unwrap();
        let c = o.cluster.unwrap();
        assert_eq!(c.write_deadline, Some(std::time::Duration::from_secs(3)));
        assert_eq!(c.write_timeout, Some(crate::options::WriteTimeoutPolicy::Close));
        let e = refusal("cluster {\n write_timeout: sometimes }");
        assert!(
            e.contains("t.conf:2") && e.contains("write_timeout must be 'default', 'close' or 'retry'"),
            "{e}"
        );
    }

    #[test]
    fn route_tls_needs_a_ca_and_does_not_map_users() {
        let e = refusal("cluster { tls { cert_file: c.pem, key_file: k.pem } }");
        assert!(
            e.contains("ca_file is required on routes") && e.contains("t.conf:1"),
            "{e}"
        );
        let e =
            refusal("cluster {\n tls { cert_file: c.pem, key_file: k.pem, ca_file: a.pem, verify_and_map: true } }");
        assert!(e.contains("verify_and_map") && e.contains("t.conf:2"), "{e}");
        let e = refusal("cluster { tls { cert_file: /nonexistent/c.pem, key_file: k.pem, ca_file: a.pem } }");
        assert!(e.contains("No such file"), "{e}");
    }
}
