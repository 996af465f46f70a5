//! The exchange part of an account's detail (`/accountz?acc=`,
//! `$SYS.REQ.ACCOUNT.<acc>.INFO`): its subject mappings, exports and
//! imports in nats-server's `ExtMap`, `ExtExport` and `ExtImport` shapes.
//!
//! Imports include the service imports every account gets from the system
//! account (`$SYS.REQ.USER.INFO` and the account's CONNZ and STATZ), which
//! petrel answers as nats-server does; the system account lists the
//! services it exports for them.

use serde_json::{json, Map, Value};

use crate::auth::config::{AccountConfig, ExchangeKind};
use crate::mapping::Mappings;

/// `mappings`: each source with its destinations (cumulative weights).
pub fn mappings(m: &Mappings) -> Value {
    let mut out = Map::new();
    for mapping in m.iter() {
        let dests: Vec<Value> = mapping
            .describe()
            .into_iter()
            .map(|d| {
                let mut v = json!({"subject": d.subject, "weight": d.weight});
                if !d.cluster.is_empty() {
                    v["cluster"] = json!(d.cluster);
                }
                v
            })
            .collect();
        out.insert(
            String::from_utf8_lossy(mapping.source()).into_owned(),
            Value::Array(dests),
        );
    }
    Value::Object(out)
}

/// `exports`: the account's own, plus the system services the system
/// account exports to every account. In operator mode (`jwt`) an export
/// limited to some accounts is one that requires activation tokens
/// (`token_req`; nats-server lists no approved accounts for it).
pub fn exports(cfg: Option<&AccountConfig>, is_system: bool, jwt: bool) -> Vec<Value> {
    let mut out: Vec<Value> = cfg
        .map(|c| &c.exports[..])
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let mut v = json!({"subject": e.subject, "type": kind(e.kind)});
            if e.kind == ExchangeKind::Service {
                v["response_type"] = json!(e.response.kind.name());
            }
            match e.accounts.as_ref() {
                // Importers holding a valid token are not listed as
                // approved: nats-server lists none for a JWT export.
                Some(_) if jwt => v["token_req"] = json!(true),
                Some(accounts) if !accounts.is_empty() => v["approved_accounts"] = json!(accounts),
                _ => {}
            }
            v
        })
        .collect();
    if is_system {
        // CONNZ and STATZ answer once per server: streamed responses.
        for (subject, responses) in [
            ("$SYS.REQ.ACCOUNT.*.CONNZ", "Streamed"),
            ("$SYS.REQ.ACCOUNT.*.STATZ", "Streamed"),
            ("$SYS.REQ.USER.*.INFO", "Singleton"),
        ] {
            out.push(json!({"subject": subject, "type": "service", "response_type": responses}));
        }
    }
    out
}

/// `imports`: the account's own, plus the system services every account
/// imports (the system account only its own USER.INFO).
pub fn imports(cfg: Option<&AccountConfig>, name: &str, is_system: bool, system: &str) -> Vec<Value> {
    let mut out: Vec<Value> = cfg
        .map(|c| &c.imports[..])
        .unwrap_or_default()
        .iter()
        .map(|i| {
            let local = i.local.clone().unwrap_or_else(|| i.subject.clone());
            match i.kind {
                ExchangeKind::Stream => import_json(&i.subject, &i.account, None, &local, "stream", false),
                ExchangeKind::Service => import_json(&i.subject, &i.account, Some(&local), &local, "service", false),
            }
        })
        .collect();
    let service =
        |remote: String, local: &str, share: bool| import_json(&remote, system, Some(local), local, "service", share);
    out.push(service(
        format!("$SYS.REQ.USER.{name}.INFO"),
        "$SYS.REQ.USER.INFO",
        true,
    ));
    if !is_system {
        let connz = format!("$SYS.REQ.ACCOUNT.{name}.CONNZ");
        out.push(service(
            format!("$SYS.REQ.ACCOUNT.{name}.STATZ"),
            "$SYS.REQ.ACCOUNT.PING.STATZ",
            false,
        ));
        out.push(service(connz.clone(), "$SYS.REQ.ACCOUNT.PING.CONNZ", false));
        out.push(service(connz, "$SYS.REQ.SERVER.PING.CONNZ", false));
    }
    out
}

fn kind(k: ExchangeKind) -> &'static str {
    match k {
        ExchangeKind::Stream => "stream",
        ExchangeKind::Service => "service",
    }
}

/// One `ExtImport`: `to` (deprecated, a service's local subject) before
/// `local_subject`, as nats-server writes them.
fn import_json(subject: &str, account: &str, to: Option<&str>, local: &str, kind: &str, share: bool) -> Value {
    let mut v = Map::new();
    v.insert("subject".into(), json!(subject));
    v.insert("account".into(), json!(account));
    if let Some(to) = to {
        v.insert("to".into(), json!(to));
    }
    v.insert("local_subject".into(), json!(local));
    v.insert("type".into(), json!(kind));
    v.insert("invalid".into(), json!(false));
    v.insert("share".into(), json!(share));
    v.insert("tracking".into(), json!(false));
    Value::Object(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::config::{ExportConfig, ImportConfig};
    use crate::mapping::{MapDest, Mapping};

    #[test]
    fn imports_and_exports_in_nats_servers_shapes() {
        let cfg = AccountConfig {
            name: "B".into(),
            exports: vec![ExportConfig {
                kind: ExchangeKind::Stream,
                subject: "priv.>".into(),
                accounts: Some(vec!["C".into()]),
                response: Default::default(),
                allow_trace: false,
                latency: None,
            }],
            imports: vec![
                ImportConfig {
                    kind: ExchangeKind::Stream,
                    account: "A".into(),
                    subject: "s.>".into(),
                    local: Some("fromA.s.>".into()),
                    allow_trace: false,
                    share: false,
                },
                ImportConfig {
                    kind: ExchangeKind::Service,
                    account: "A".into(),
                    subject: "svc.x".into(),
                    local: Some("local.x".into()),
                    allow_trace: false,
                    share: false,
                },
            ],
            mappings: vec![],
            trace_dest: None,
            limits: Default::default(),
        };
        let ex = exports(Some(&cfg), false, false);
        assert_eq!(
            ex,
            vec![json!({"subject": "priv.>", "type": "stream", "approved_accounts": ["C"]})]
        );
        let im = imports(Some(&cfg), "B", false, "$SYS");
        assert_eq!(im.len(), 6);
        assert_eq!(
            serde_json::to_string(&im[0]).unwrap(),
            r#"{"subject":"s.>","account":"A","local_subject":"fromA.s.>","type":"stream","invalid":false,"share":false,"tracking":false}"#
        );
        assert_eq!(im[1]["to"], "local.x");
        assert_eq!(im[2]["subject"], "$SYS.REQ.USER.B.INFO");
        assert_eq!(im[2]["share"], true);
        assert_eq!(imports(None, "$SYS", true, "$SYS").len(), 1);
        assert_eq!(exports(None, true, false).len(), 3);
        let jwt = exports(Some(&cfg), false, true);
        assert_eq!(jwt[0]["token_req"], true);
        assert!(jwt[0].get("approved_accounts").is_none(), "{}", jwt[0]);
    }

    #[test]
    fn mapping_weights_add_up_as_nats_server_shows_them() {
        let mut m = Mappings::default();
        let d = |s: &str, w: u8| MapDest {
            subject: s.into(),
            weight: w,
            cluster: String::new(),
        };
        m.add(Mapping::new("w.*", &[d("w.a.$1", 40), d("w.b.$1", 60)]).unwrap());
        m.add(Mapping::new("half", &[d("other", 50)]).unwrap());
        assert_eq!(
            mappings(&m),
            json!({
                "w.*": [{"subject": "w.a.$1", "weight": 40}, {"subject": "w.b.$1", "weight": 100}],
                "half": [{"subject": "other", "weight": 50}, {"subject": "half", "weight": 100}],
            })
        );
    }
}
