//! The NATS account resolver (what `nsc push` does over `$SYS`), and
//! `petrel account-server` (what `nsc push` does over HTTP): pushes, live
//! revocation, lookups, refusals that leave the store unchanged, deletes,
//! restarts, and the seed tutorial's account-server flow.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::jwt::*;
use common::raw::Raw;
use futures::StreamExt;
use petrel::auth::jwt;
use serde_json::{json, Value};

fn sys_account() -> (String, String) {
    let m = manifest();
    let key = m["system_account"].as_str().unwrap().to_string();
    let jwt = fixture(&format!("accounts/{key}.jwt")).trim().to_string();
    (key, jwt)
}

fn sys_creds() -> (String, String) {
    jwt::parse_creds(&fixture("creds/sys.creds")).unwrap()
}

/// An account signed by the operator's signing key at `iat`, with `extra`
/// nats fields.
fn signed_account(kp: &nkeys::KeyPair, iat: i64, extra: Value) -> String {
    let mut nats =
        json!({"type": "account", "version": 2, "limits": {"conn": -1, "subs": -1, "payload": -1, "data": -1}});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            nats[k] = v;
        }
    }
    let claims = json!({"sub": kp.public_key(), "name": "B", "iat": iat, "nats": nats});
    jwt::encode_signed(&claims, &seed("operator_sk")).unwrap()
}

/// Sends a request as the connected system user and returns every reply
/// payload that came back within a short quiet period.
fn sys_request(sys: &mut Raw, subject: &str, body: &str) -> Vec<String> {
    let text = sys
        .exchange(format!("PUB {subject} _INBOX.sys {}\r\n{body}\r\n", body.len()).as_bytes())
        .text();
    let mut out = Vec::new();
    let mut lines = text.split("\r\n");
    while let Some(l) = lines.next() {
        if l.starts_with("MSG _INBOX.sys") {
            out.push(lines.next().unwrap_or_default().to_string());
        }
    }
    out
}

fn sys_json(sys: &mut Raw, subject: &str, body: &str) -> Value {
    let r = sys_request(sys, subject, body);
    assert_eq!(r.len(), 1, "{subject}: one reply, got {r:?}");
    serde_json::from_str(&r[0]).unwrap()
}

fn sys_login(addr: &str) -> Raw {
    let (j, k) = sys_creds();
    let (mut r, t, c) = raw_jwt_connect(addr, &j, &k);
    assert!(!c && t.starts_with("PONG"), "{t}");
    r.exchange(b"SUB _INBOX.sys 1\r\nPING\r\n");
    r
}

fn accepted(text: &str, closed: bool) -> bool {
    !closed && text.starts_with("PONG\r\n") && !text.contains("-ERR")
}

fn full_resolver_conf(dir: &Path, preload_sys: bool) -> PathBuf {
    let (sys_key, sys_jwt) = sys_account();
    let preload = if preload_sys {
        format!("resolver_preload: {{ {sys_key}: \"{sys_jwt}\" }}\n")
    } else {
        String::new()
    };
    write_conf(&format!(
        "operator: \"{FIXTURES}operator.jwt\"\nsystem_account: {sys_key}\nresolver: {{ type: full, dir: \"{}\", allow_delete: true }}\n{preload}",
        dir.display()
    ))
}

#[test]
fn nats_resolver_push_revoke_lookup_delete_and_restart() {
    let dir = temp_dir().join("jwt");
    let conf = full_resolver_conf(&dir, true);
    let server = common::petrel(&["-c", conf.to_str().unwrap()]);
    let addr = server.addr();
    let mut sys = sys_login(&addr);

    // nsc push: the account JWT as a request on $SYS.REQ.CLAIMS.UPDATE.
    let b = nkeys::KeyPair::new_account();
    let v1 = signed_account(&b, now() - 100, json!({}));
    let r = sys_json(&mut sys, "$SYS.REQ.CLAIMS.UPDATE", &v1);
    assert_eq!(
        r["data"],
        json!({"account": b.public_key(), "code": 200, "message": "jwt updated"}),
        "{r}"
    );
    assert!(
        dir.join(format!("{}.jwt", b.public_key())).exists(),
        "stored as <key>.jwt"
    );

    // A user of the new account connects.
    let (uj, us) = user(&b.seed().unwrap(), "u", user_nats(), json!({"iat": now() - 50}));
    let upub = jwt::decode_user(&uj).unwrap().sub;
    let (mut u, t, c) = raw_jwt_connect(&addr, &uj, &us);
    assert!(accepted(&t, c), "{t}");

    // An update that revokes the user disconnects it.
    let v2 = signed_account(&b, now() - 10, json!({"revocations": {upub: now() - 20}}));
    let r = sys_json(
        &mut sys,
        &format!("$SYS.REQ.ACCOUNT.{}.CLAIMS.UPDATE", b.public_key()),
        &v2,
    );
    assert_eq!(r["data"]["message"], json!("jwt updated"), "{r}");
    let reply = u.read_until_quiet(Duration::from_secs(2), Duration::from_secs(3));
    assert!(reply.closed);
    assert!(
        reply.text().contains("-ERR 'User Authentication Revoked'"),
        "{}",
        reply.text()
    );

    // nsc pull: LOOKUP returns the stored JWT; LIST names the accounts.
    let lookup = format!("$SYS.REQ.ACCOUNT.{}.CLAIMS.LOOKUP", b.public_key());
    assert_eq!(sys_request(&mut sys, &lookup, ""), vec![v2.clone()]);
    let list = sys_json(&mut sys, "$SYS.REQ.CLAIMS.LIST", "");
    let keys = list["data"].as_array().unwrap();
    assert!(
        keys.contains(&json!(b.public_key())) && keys.contains(&json!(sys_account().0)),
        "{list}"
    );

    // Refused: stale, forged (unknown operator), wrong subject, garbage.
    let stale = signed_account(&b, now() - 500, json!({}));
    let r = sys_json(&mut sys, "$SYS.REQ.CLAIMS.UPDATE", &stale);
    assert_eq!(r["error"]["code"], json!(500), "{r}");
    assert_eq!(r["error"]["account"], json!(b.public_key()));
    let rogue = nkeys::KeyPair::new_operator();
    let forged_claims =
        json!({"sub": b.public_key(), "name": "B", "iat": now(), "nats": {"type": "account", "version": 2}});
    let forged = jwt::encode_signed(&forged_claims, &rogue.seed().unwrap()).unwrap();
    let r = sys_json(&mut sys, "$SYS.REQ.CLAIMS.UPDATE", &forged);
    assert_eq!(r["error"]["code"], json!(500), "{r}");
    let other = nkeys::KeyPair::new_account().public_key();
    let r = sys_json(&mut sys, &format!("$SYS.REQ.ACCOUNT.{other}.CLAIMS.UPDATE"), &v2);
    assert_eq!(
        r["error"]["description"],
        json!("subject does not match jwt content"),
        "{r}"
    );
    let r = sys_json(&mut sys, "$SYS.REQ.CLAIMS.UPDATE", "not a jwt");
    assert!(
        r["error"]["description"]
            .as_str()
            .unwrap()
            .starts_with("jwt validation failed"),
        "{r}"
    );
    assert_eq!(
        sys_request(&mut sys, &lookup, ""),
        vec![v2.clone()],
        "refusals left the store unchanged"
    );

    // PACK: every stored JWT as `key|jwt`, then an empty message.
    let pack = sys_request(&mut sys, "$SYS.REQ.CLAIMS.PACK", "");
    assert_eq!(pack.last().map(String::as_str), Some(""));
    assert!(pack.contains(&format!("{}|{v2}", b.public_key())), "{pack:?}");

    // DELETE: an operator-signed generic JWT naming the accounts.
    let c_kp = nkeys::KeyPair::new_account();
    sys_json(
        &mut sys,
        "$SYS.REQ.CLAIMS.UPDATE",
        &signed_account(&c_kp, now() - 5, json!({})),
    );
    let (cj, cs) = user(&c_kp.seed().unwrap(), "c", user_nats(), json!({}));
    let (mut cu, t, c) = raw_jwt_connect(&addr, &cj, &cs);
    assert!(accepted(&t, c), "{t}");
    let op_kp = nkeys::KeyPair::from_seed(&seed("operator")).unwrap();
    let delete = |accounts: Vec<String>| {
        let claims = json!({"sub": op_kp.public_key(), "iat": now(), "nats": {"type": "generic", "version": 2, "accounts": accounts}});
        jwt::encode_signed(&claims, &seed("operator")).unwrap()
    };
    let r = sys_json(&mut sys, "$SYS.REQ.CLAIMS.DELETE", &delete(vec![sys_account().0]));
    assert_eq!(
        r["error"]["description"],
        json!("not allowed to delete system account"),
        "{r}"
    );
    let r = sys_json(&mut sys, "$SYS.REQ.CLAIMS.DELETE", &delete(vec![c_kp.public_key()]));
    assert_eq!(r["data"], json!({"code": 200, "message": "deleted 1 accounts"}), "{r}");
    let reply = cu.read_until_quiet(Duration::from_secs(2), Duration::from_secs(3));
    assert!(reply.closed, "the deleted account's client is closed");
    assert!(
        reply.text().contains("Account Authentication Expired"),
        "{}",
        reply.text()
    );
    let (_, t, c) = raw_jwt_connect(&addr, &cj, &cs);
    assert!(!accepted(&t, c), "deleted accounts are unknown: {t}");
    assert!(dir.join(format!("{}.jwt.deleted", c_kp.public_key())).exists());

    // Restart on the same directory: pushed accounts are still served.
    drop(u);
    drop(sys);
    drop(server);
    let conf = full_resolver_conf(&dir, false);
    let server = common::petrel(&["-c", conf.to_str().unwrap()]);
    let (uj2, us2) = user(&b.seed().unwrap(), "u2", user_nats(), json!({}));
    let (_, t, c) = raw_jwt_connect(&server.addr(), &uj2, &us2);
    assert!(accepted(&t, c), "after restart: {t}");
    let (_, t, c) = raw_jwt_connect(&server.addr(), &uj, &us);
    assert!(!accepted(&t, c), "the revocation survived the restart: {t}");
}

#[test]
fn delete_needs_allow_delete_and_the_operator() {
    let dir = temp_dir().join("jwt");
    let (sys_key, sys_jwt) = sys_account();
    let conf = write_conf(&format!(
        "operator: \"{FIXTURES}operator.jwt\"\nsystem_account: {sys_key}\nresolver: {{ type: full, dir: \"{}\" }}\nresolver_preload: {{ {sys_key}: \"{sys_jwt}\" }}\n",
        dir.display()
    ));
    let server = common::petrel(&["-c", conf.to_str().unwrap()]);
    let mut sys = sys_login(&server.addr());
    let op_kp = nkeys::KeyPair::from_seed(&seed("operator")).unwrap();
    let claims =
        json!({"sub": op_kp.public_key(), "iat": now(), "nats": {"type": "generic", "version": 2, "accounts": []}});
    let token = jwt::encode_signed(&claims, &seed("operator")).unwrap();
    let r = sys_json(&mut sys, "$SYS.REQ.CLAIMS.DELETE", &token);
    assert_eq!(
        r["error"]["description"],
        json!("delete must be enabled in server config"),
        "{r}"
    );
}

/// A running `petrel account-server`, stopped on drop.
struct AccountServer {
    child: Child,
    url: String,
}

impl Drop for AccountServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn account_server(args: &[&str]) -> AccountServer {
    let mut child = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .arg("account-server")
        .args(["--hp", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut rd = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let url = loop {
        line.clear();
        if rd.read_line(&mut line).unwrap() == 0 {
            panic!("account server exited before listening");
        }
        if let Some(rest) = line.trim().strip_prefix("[INF] Listening on ") {
            break rest.to_string();
        }
    };
    std::thread::spawn(move || for _ in rd.lines() {});
    AccountServer { child, url }
}

fn http(method: &str, url: &str, body: &str) -> (u16, String) {
    let r = match method {
        "POST" => ureq::post(url).set("Content-Type", "application/jwt").send_string(body),
        _ => ureq::get(url).call(),
    };
    match r {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("{url}: {e}"),
    }
}

/// The seed tutorial: an account server holds the operator's accounts,
/// petrel resolves them over HTTP, a system user subscribed to `>` sees a
/// user connect and leave; pushes go through the account server, which
/// notifies petrel, and pulls come back from it.
#[tokio::test]
async fn account_server_push_notify_pull_and_tutorial() {
    let dir = temp_dir().join("as");
    let port = common::free_port();
    let creds_path = format!("{FIXTURES}creds/sys.creds");
    let asrv = account_server(&[
        "--operator",
        &format!("{FIXTURES}operator.jwt"),
        "--dir",
        dir.to_str().unwrap(),
        "--nats",
        &format!("nats://127.0.0.1:{port}"),
        "--creds",
        &creds_path,
    ]);
    let accounts_url = format!("{}/accounts/", asrv.url);
    for (key, token) in fixture_accounts() {
        let (code, body) = http("POST", &format!("{accounts_url}{key}"), &token);
        assert_eq!(code, 200, "{body}");
    }
    let (code, op) = http("GET", &format!("{}/operator", asrv.url), "");
    assert_eq!((code, op.trim()), (200, fixture("operator.jwt").trim()));

    let (sys_key, _) = sys_account();
    let conf = write_conf(&format!(
        "operator: \"{FIXTURES}operator.jwt\"\nsystem_account: {sys_key}\nresolver: URL({accounts_url})\n"
    ));
    let server = common::petrel(&["-c", conf.to_str().unwrap(), "-p", &port.to_string()]);
    let url = server.url();

    // The tutorial: SYS subscribed to `>` sees A's user connect and leave.
    let sys = async_nats::ConnectOptions::with_credentials_file(creds_path.clone())
        .await
        .unwrap()
        .connect(&url)
        .await
        .unwrap();
    let mut all = sys.subscribe(">").await.unwrap();
    sys.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let a = async_nats::ConnectOptions::with_credentials_file(format!("{FIXTURES}creds/a.creds"))
        .await
        .unwrap()
        .connect(&url)
        .await
        .unwrap();
    a.flush().await.unwrap();
    drop(a);
    let a_key = manifest()["accounts"][1]["pub"].as_str().unwrap().to_string();
    let mut seen = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), all.next()).await {
        seen.push(m.subject.to_string());
        if m.subject.ends_with(".DISCONNECT") {
            break;
        }
    }
    assert!(seen.contains(&format!("$SYS.ACCOUNT.{a_key}.CONNECT")), "{seen:?}");
    assert!(seen.contains(&format!("$SYS.ACCOUNT.{a_key}.DISCONNECT")), "{seen:?}");

    // nsc push over HTTP, a user of the new account connects.
    let b = nkeys::KeyPair::new_account();
    let v1 = signed_account(&b, now() - 100, json!({}));
    let (code, body) = http("POST", &format!("{accounts_url}{}", b.public_key()), &v1);
    assert_eq!(code, 200, "{body}");
    let (uj, us) = user(&b.seed().unwrap(), "u", user_nats(), json!({"iat": now() - 50}));
    let upub = jwt::decode_user(&uj).unwrap().sub;
    let (mut u, t, c) = raw_jwt_connect(&server.addr(), &uj, &us);
    assert!(accepted(&t, c), "{t}");

    // A revoking update through the account server reaches petrel.
    let v2 = signed_account(&b, now() - 10, json!({"revocations": {upub: now() - 20}}));
    let (code, body) = http("POST", &format!("{accounts_url}{}", b.public_key()), &v2);
    assert_eq!(code, 200, "{body}");
    let reply = u.read_until_quiet(Duration::from_secs(3), Duration::from_secs(4));
    assert!(
        reply.closed,
        "revoked user disconnected after the account server's notice"
    );
    assert!(reply.text().contains("User Authentication Revoked"), "{}", reply.text());

    // nsc pull.
    let (code, got) = http("GET", &format!("{accounts_url}{}", b.public_key()), "");
    assert_eq!((code, got.as_str()), (200, v2.as_str()));

    // Refusals leave the stored JWT unchanged.
    let stale = signed_account(&b, now() - 500, json!({}));
    assert_eq!(
        http("POST", &format!("{accounts_url}{}", b.public_key()), &stale).0,
        409
    );
    let rogue = nkeys::KeyPair::new_operator();
    let forged_claims = json!({"sub": b.public_key(), "iat": now(), "nats": {"type": "account", "version": 2}});
    let forged = jwt::encode_signed(&forged_claims, &rogue.seed().unwrap()).unwrap();
    assert_eq!(
        http("POST", &format!("{accounts_url}{}", b.public_key()), &forged).0,
        400
    );
    let other = nkeys::KeyPair::new_account().public_key();
    assert_eq!(
        http("POST", &format!("{accounts_url}{other}"), &v2).0,
        400,
        "subject mismatch"
    );
    assert_eq!(http("GET", &format!("{accounts_url}{}", b.public_key()), "").1, v2);
    assert_eq!(http("GET", &format!("{accounts_url}{other}"), "").0, 404);
}

/// Read-only hosting of an nsc operator directory.
#[test]
fn account_server_serves_an_nsc_store() {
    let root = temp_dir().join("OP");
    std::fs::create_dir_all(root.join("accounts")).unwrap();
    std::fs::write(root.join("OP.jwt"), fixture("operator.jwt")).unwrap();
    for (i, (_, token)) in fixture_accounts().into_iter().enumerate() {
        let name = format!("ACC{i}");
        std::fs::create_dir_all(root.join("accounts").join(&name)).unwrap();
        std::fs::write(root.join("accounts").join(&name).join(format!("{name}.jwt")), token).unwrap();
    }
    let asrv = account_server(&["--nsc", root.to_str().unwrap()]);
    let accounts_url = format!("{}/accounts/", asrv.url);
    assert_eq!(http("GET", &accounts_url, "").0, 200, "the resolver's start-up probe");
    let (sys_key, _) = sys_account();
    let conf = write_conf(&format!(
        "operator: \"{FIXTURES}operator.jwt\"\nsystem_account: {sys_key}\nresolver: URL({accounts_url})\n"
    ));
    let server = common::petrel(&["-c", conf.to_str().unwrap()]);
    let (aj, as_) = jwt::parse_creds(&fixture("creds/a.creds")).unwrap();
    let (_, t, c) = raw_jwt_connect(&server.addr(), &aj, &as_);
    assert!(accepted(&t, c), "{t}");
    let b = nkeys::KeyPair::new_account();
    assert_eq!(
        http(
            "POST",
            &format!("{accounts_url}{}", b.public_key()),
            &signed_account(&b, now(), json!({}))
        )
        .0,
        405,
        "read-only"
    );
}

/// The same pushes and pulls against nats-server's full resolver: replies
/// have the same shape and messages (stale and forged pushes excepted,
/// which petrel refuses on purpose).
#[test]
fn nats_resolver_replies_match_nats_server() {
    let run = |start: &dyn Fn(&str) -> common::Proc| {
        let dir = temp_dir().join("jwt");
        let conf = full_resolver_conf(&dir, true);
        let server = start(conf.to_str().unwrap());
        let mut sys = sys_login(&server.addr());
        let b = nkeys::KeyPair::new_account();
        let v1 = signed_account(&b, now() - 100, json!({}));
        let update = sys_json(&mut sys, "$SYS.REQ.CLAIMS.UPDATE", &v1);
        let again = sys_json(
            &mut sys,
            &format!("$SYS.REQ.ACCOUNT.{}.CLAIMS.UPDATE", b.public_key()),
            &v1,
        );
        let lookup = sys_request(
            &mut sys,
            &format!("$SYS.REQ.ACCOUNT.{}.CLAIMS.LOOKUP", b.public_key()),
            "",
        );
        let unknown = sys_request(
            &mut sys,
            &format!(
                "$SYS.REQ.ACCOUNT.{}.CLAIMS.LOOKUP",
                nkeys::KeyPair::new_account().public_key()
            ),
            "",
        );
        let list = sys_json(&mut sys, "$SYS.REQ.CLAIMS.LIST", "");
        (b.public_key(), v1, update, again, lookup, unknown, list)
    };
    let ours = run(&|c| common::petrel(&["-c", c]));
    let theirs = run(&|c| common::nats_server(&["-c", c]));
    for (name, o, t) in [("update", &ours.2, &theirs.2), ("again", &ours.3, &theirs.3)] {
        assert_eq!(o["data"]["code"], t["data"]["code"], "{name}: {o} vs {t}");
        assert_eq!(o["data"]["message"], t["data"]["message"], "{name}: {o} vs {t}");
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(o), keys(t), "{name}");
    }
    assert_eq!(ours.4, vec![ours.1.clone()]);
    assert_eq!(theirs.4, vec![theirs.1.clone()]);
    assert_eq!(ours.5, theirs.5, "an unknown account's lookup: {:?}", theirs.5);
    let has = |l: &Value, k: &str| l["data"].as_array().unwrap().contains(&json!(k));
    assert!(has(&ours.6, &ours.0) && has(&theirs.6, &theirs.0));
}

#[test]
fn warns_when_the_system_account_points_at_nothing() {
    let (sys_key, _) = sys_account();
    let (a_key, a_jwt) = fixture_accounts().into_iter().find(|(k, _)| *k != sys_key).unwrap();
    let conf = write_conf(&format!(
        "operator: \"{FIXTURES}operator.jwt\"\nsystem_account: {sys_key}\nresolver: MEMORY\nresolver_preload: {{ {a_key}: \"{a_jwt}\" }}\n"
    ));
    let server = common::petrel(&["-c", conf.to_str().unwrap()]);
    let lines = server.log_lines("is not known to the account resolver");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("[WRN]") && lines[0].contains(&sys_key));
}

/// A cache resolver only refreshes accounts it holds.
#[test]
fn cache_resolver_skips_accounts_it_does_not_hold() {
    let dir = temp_dir().join("jwt");
    let (sys_key, sys_jwt) = sys_account();
    let conf = write_conf(&format!(
        "operator: \"{FIXTURES}operator.jwt\"\nsystem_account: {sys_key}\nresolver: {{ type: cache, dir: \"{}\" }}\nresolver_preload: {{ {sys_key}: \"{sys_jwt}\" }}\n",
        dir.display()
    ));
    let server = common::petrel(&["-c", conf.to_str().unwrap()]);
    let mut sys = sys_login(&server.addr());
    let b = nkeys::KeyPair::new_account();
    let r = sys_json(
        &mut sys,
        "$SYS.REQ.CLAIMS.UPDATE",
        &signed_account(&b, now() - 10, json!({})),
    );
    assert_eq!(r["data"]["message"], json!("jwt update cache skipped"), "{r}");
    let r = sys_json(&mut sys, "$SYS.REQ.CLAIMS.UPDATE", &sys_jwt);
    assert_eq!(r["data"]["message"], json!("jwt updated cache"), "{r}");
}
