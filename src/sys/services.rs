//! The `$SYS.REQ` services the system account's internal client answers:
//! which subjects it subscribes to, and the reply to each request. Replies
//! are built here, off the shards (they may wait for shard snapshots or a
//! reload); the internal client only routes them.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::endpoints::{self, ConnzOpts, SubszOpts};
use super::{envelope, envelope_error, envelope_failed, server_block, Filter};
use crate::compress::encoding::ContentEncoding;
use crate::control::{ActionRefused, ClientAction, Shared};
use crate::timefmt::rfc3339;

/// Server-level service names (`$SYS.REQ.SERVER.PING.<X>`, `<id>.<X>`).
pub const SERVER_SERVICES: &[&str] = &[
    "IDZ",
    "STATSZ",
    "VARZ",
    "CONNZ",
    "SUBSZ",
    "ROUTEZ",
    "GATEWAYZ",
    "LEAFZ",
    "ACCOUNTZ",
    "JSZ",
    "HEALTHZ",
    "PROFILEZ",
    "IPQUEUESZ",
    "RAFTZ",
];

/// Services only a server's own subject has.
pub const SERVER_ONLY: &[&str] = &["RELOAD", "KICK", "LDM"];

/// Account-level service names (`$SYS.REQ.ACCOUNT.<acc>.<X>`).
pub const ACCOUNT_SERVICES: &[&str] = &["CONNZ", "SUBSZ", "INFO", "STATZ", "CONNS", "LEAFZ", "JSZ"];

/// Every subject the internal client subscribes to for services.
pub fn subjects(server_id: &str) -> Vec<String> {
    let mut v = vec!["$SYS.REQ.SERVER.PING".to_string()];
    for s in SERVER_SERVICES {
        v.push(format!("$SYS.REQ.SERVER.PING.{s}"));
        v.push(format!("$SYS.REQ.SERVER.{server_id}.{s}"));
    }
    for s in SERVER_ONLY {
        v.push(format!("$SYS.REQ.SERVER.{server_id}.{s}"));
    }
    for s in ACCOUNT_SERVICES {
        v.push(format!("$SYS.REQ.ACCOUNT.*.{s}"));
    }
    v
}

/// A request the internal client received.
#[derive(Debug, Clone)]
pub struct Request {
    /// Its subject.
    pub subject: String,
    /// Its body (headers removed).
    pub body: Vec<u8>,
    /// The encoding its headers accept for the reply.
    pub accept: Option<ContentEncoding>,
}

/// How the reply to a request on `subject` is encoded, given what the
/// request accepts: as nats-server, the monitoring replies (`*Z`, account
/// INFO, RELOAD, KICK, LDM) are compressed unless they carry an error;
/// PING, STATSZ, IDZ and account CONNS never are.
pub fn reply_encoding(subject: &str, reply: &Value, accept: Option<ContentEncoding>) -> Option<ContentEncoding> {
    let accept = accept?;
    (!servers_read_the_reply(subject) && reply.get("error").is_none()).then_some(accept)
}

/// Whether the reply to a request on `subject` is one servers read
/// (PING, STATSZ, IDZ, an account's CONNS): always plain JSON, small, and
/// (CONNS, which nats-server asks its peers for) checked for a rising
/// `seq`, so it takes its `seq` when it is sent.
pub fn servers_read_the_reply(subject: &str) -> bool {
    let last = subject.rsplit('.').next().unwrap_or_default();
    subject == "$SYS.REQ.SERVER.PING"
        || (subject.starts_with("$SYS.REQ.SERVER.") && matches!(last, "STATSZ" | "IDZ"))
        || (subject.starts_with("$SYS.REQ.ACCOUNT.") && last == "CONNS")
}

fn parse_body(body: &[u8]) -> Result<Value, ()> {
    let t = String::from_utf8_lossy(body);
    if t.trim().is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_str(&t).map_err(|_| ())
}

/// The reply to `req` (`None`: not answered, e.g. filtered out), and an
/// action on a client. `reload` re-reads the configuration; `act` carries
/// out a client action and says whether the client was found.
pub fn answer(
    shared: &Shared,
    req: &Request,
    reload: &dyn Fn() -> Result<crate::reload::ReloadOutcome, String>,
    act: &dyn Fn(ClientAction) -> Result<(), ActionRefused>,
) -> Option<Value> {
    let tokens: Vec<&str> = req.subject.split('.').collect();
    let body = match parse_body(&req.body) {
        Ok(b) => b,
        Err(()) => return Some(envelope_error(shared, 400, "bad request")),
    };
    let filter: Filter = serde_json::from_value(body.clone()).unwrap_or_default();
    match tokens.as_slice() {
        ["$SYS", "REQ", "SERVER", "PING"] => filter.selects(shared).then(|| endpoints::statsz(shared)),
        ["$SYS", "REQ", "SERVER", _, name] => {
            if !filter.selects(shared) {
                return None;
            }
            Some(server_service(shared, name, &body, reload, act))
        }
        ["$SYS", "REQ", "ACCOUNT", acc, name] => account_service(shared, acc, name, &body),
        _ => None,
    }
}

fn server_service(
    shared: &Shared,
    name: &str,
    body: &Value,
    reload: &dyn Fn() -> Result<crate::reload::ReloadOutcome, String>,
    act: &dyn Fn(ClientAction) -> Result<(), ActionRefused>,
) -> Value {
    match name {
        "IDZ" => endpoints::idz(shared),
        "STATSZ" => endpoints::statsz(shared),
        "VARZ" => envelope(shared, endpoints::varz(shared)),
        "CONNZ" => built(shared, endpoints::connz(shared, &ConnzOpts::from_json(body))),
        "SUBSZ" => built(shared, endpoints::subsz(shared, &SubszOpts::from_json(body))),
        "ROUTEZ" => envelope(shared, endpoints::routez(shared)),
        "GATEWAYZ" => envelope(shared, endpoints::gatewayz(shared)),
        "LEAFZ" => envelope(
            shared,
            endpoints::leafz(
                shared,
                body.get("subscriptions").and_then(Value::as_bool).unwrap_or(false),
                body.get("account").and_then(Value::as_str),
            ),
        ),
        "ACCOUNTZ" => built(
            shared,
            endpoints::accountz(shared, body.get("account").and_then(Value::as_str)),
        ),
        "JSZ" => envelope(shared, endpoints::jsz(shared)),
        // nats-server's internal queues (petrel has none of Go's) and
        // JetStream's Raft groups (petrel has no JetStream): none.
        "IPQUEUESZ" | "RAFTZ" => envelope(shared, json!({})),
        "HEALTHZ" => envelope(shared, endpoints::healthz(&endpoints::HealthzOpts::from_json(body))),
        "PROFILEZ" => {
            let name = body.get("name").and_then(Value::as_str).unwrap_or_default();
            let debug = body.get("debug").and_then(Value::as_i64).unwrap_or(0);
            let duration = Duration::from_nanos(body.get("duration").and_then(Value::as_u64).unwrap_or(0));
            // Go's []byte is standard base64 with padding in JSON; errors go
            // in `data.error`, as nats-server's ProfilezStatus.
            let data = match crate::profile::profile(name, debug, duration) {
                Ok(bytes) => {
                    use base64::Engine;
                    json!({"profile": base64::engine::general_purpose::STANDARD.encode(bytes), "error": ""})
                }
                Err(e) => json!({"profile": null, "error": e.to_string()}),
            };
            envelope(shared, data)
        }
        // nats-server answers a reload with the server block alone, or an
        // error; petrel adds (beyond nats-server) the options that changed
        // or were refused, when there are any.
        "RELOAD" => match reload() {
            Ok(o) if o.accepted() => {
                let mut v = json!({"server": server_block(shared)});
                if !o.changed.is_empty() {
                    v["data"] = json!({"changed": changes_json(&o.changed)});
                }
                v
            }
            Ok(o) => {
                let mut v = envelope_error(shared, 500, &o.error_text().unwrap_or_default());
                v["data"] = json!({"changed": changes_json(&o.changed), "rejected": changes_json(&o.rejected)});
                v
            }
            Err(e) => envelope_error(shared, 500, &e),
        },
        "KICK" | "LDM" => {
            let Some(cid) = body.get("cid").and_then(Value::as_u64) else {
                return envelope_error(shared, 400, "cid is required");
            };
            let (action, missing) = if name == "KICK" {
                (ClientAction::Kick(cid), "no such client or leafnode id")
            } else {
                (ClientAction::LameDuck(cid), "no such client id")
            };
            match act(action) {
                Ok(()) => json!({"server": server_block(shared)}),
                Err(ActionRefused::NoSuchClient) => envelope_error(shared, 500, missing),
                // nats-server's text for a client before its first PONG.
                Err(ActionRefused::NotReady) => envelope_error(
                    shared,
                    500,
                    "client does not support Lame Duck Mode or is not ready to receive the notification",
                ),
            }
        }
        other => envelope_error(shared, 400, &format!("unknown service {other}")),
    }
}

/// A monitoring document in its envelope, or nats-server's failure reply
/// when it could not be built.
fn built(shared: &Shared, doc: Result<Value, String>) -> Value {
    match doc {
        Ok(v) => envelope(shared, v),
        Err(e) => envelope_failed(shared, &e),
    }
}

fn changes_json(c: &[crate::reload::Change]) -> Value {
    json!(c
        .iter()
        .map(|c| json!({"option": c.option, "old": c.old, "new": c.new}))
        .collect::<Vec<_>>())
}

fn account_service(shared: &Shared, acc: &str, name: &str, body: &Value) -> Option<Value> {
    let v = shared.verifier();
    let table = v.accounts();
    // `$SYS.REQ.ACCOUNT.PING.STATZ`: every account asked about (the other
    // services take `PING` for an account's name, as nats-server's do).
    if acc == "PING" && name == "STATZ" {
        let filter: Filter = serde_json::from_value(body.clone()).unwrap_or_default();
        if !filter.selects(shared) {
            return None;
        }
        let names: Vec<String> = body
            .get("accounts")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let unused = body.get("include_unused").and_then(Value::as_bool).unwrap_or(false);
        let statz = endpoints::accstatz(shared, &names, unused);
        let empty = statz["account_statz"].as_array().is_none_or(|a| a.is_empty());
        return (!empty || unused).then(|| envelope(shared, statz));
    }
    let account = table.get(acc);
    match name {
        "CONNZ" => {
            let mut o = ConnzOpts::from_json(body);
            o.account = Some(acc.to_string());
            Some(built(shared, endpoints::connz(shared, &o)))
        }
        "SUBSZ" => {
            let mut o = SubszOpts::from_json(body);
            o.account = Some(acc.to_string());
            Some(built(shared, endpoints::subsz(shared, &o)))
        }
        "INFO" => Some(match account {
            Some(a) => envelope(shared, endpoints::account_info(shared, &a)),
            None => envelope_failed(shared, &format!("Account {acc} does not exist")),
        }),
        "STATZ" => {
            let unused = body.get("include_unused").and_then(Value::as_bool).unwrap_or(false);
            let active = account.as_ref().is_some_and(|a| a.connections() > 0);
            (active || unused).then(|| envelope(shared, endpoints::accstatz(shared, &[acc.to_string()], true)))
        }
        "CONNS" => {
            let a = account?;
            (a.connections() > 0).then(|| account_conns_event(shared, &a.name))
        }
        "LEAFZ" => Some(envelope(
            shared,
            endpoints::leafz(shared, false, account.as_ref().map(|a| a.name.as_str())),
        )),
        // An account's JetStream: nats-server answers so without it.
        "JSZ" => Some(envelope_failed(shared, "jetstream not enabled")),
        _ => None,
    }
}

/// A client's request about its own account (nats-server's automatic
/// imports): `$SYS.REQ.ACCOUNT.PING.CONNZ` and `$SYS.REQ.SERVER.PING.CONNZ`
/// give the account's CONNZ, `$SYS.REQ.ACCOUNT.PING.STATZ` its STATZ.
pub fn account_request(shared: &Shared, account: &str, subject: &[u8], body: &[u8]) -> Option<Value> {
    let body = parse_body(body).unwrap_or_else(|()| json!({}));
    let name = if subject.ends_with(b".STATZ") { "STATZ" } else { "CONNZ" };
    account_service(shared, account, name, &body)
}

/// The `AccountNumConns` event (`$SYS.ACCOUNT.<acc>.SERVER.CONNS`).
pub fn account_conns_event(shared: &Shared, acc: &str) -> Value {
    let snaps = shared.snapshot(Duration::from_millis(500));
    let stat = endpoints::account_stat(shared, acc, &snaps);
    let mut v = json!({
        "type": "io.nats.server.advisory.v1.account_connections",
        "id": super::event_id(),
        "timestamp": rfc3339(SystemTime::now()),
        "server": server_block(shared),
    });
    if let (Some(m), Some(s)) = (v.as_object_mut(), stat.as_object()) {
        for (k, val) in s {
            m.insert(k.clone(), val.clone());
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_cover_ping_and_own_id() {
        let s = subjects("NID");
        assert!(s.contains(&"$SYS.REQ.SERVER.PING".to_string()));
        assert!(s.contains(&"$SYS.REQ.SERVER.PING.STATSZ".to_string()));
        assert!(s.contains(&"$SYS.REQ.SERVER.NID.RELOAD".to_string()));
        assert!(!s.contains(&"$SYS.REQ.SERVER.PING.RELOAD".to_string()));
        assert!(s.contains(&"$SYS.REQ.ACCOUNT.*.CONNZ".to_string()));
    }
}
