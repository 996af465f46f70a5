//! The system account's internal client, on shard 0: its subscriptions are
//! ordinary ones in the system account's subject space (so they reach every
//! shard's index replica), and what they receive is handled here.
//!
//! It answers the `$SYS.REQ` services (`sys::services`, computed on a
//! blocking thread because they may wait for shard snapshots or a reload),
//! serves account claims updates in operator mode, sends the STATSZ
//! heartbeat (always when other servers can hear it, as nats-server;
//! alone, while someone listens), the accounts' SERVER.CONNS every 30 s,
//! and the SHUTDOWN event when the server exits. It keeps the other
//! servers it hears (`sys::remote_servers`) for STATSZ `active_servers`.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::state::Shard;
use crate::compress::encoding::{self, ContentEncoding};
use crate::core::InternalMsg;
use crate::core::ShardCore;
use crate::ids::ConnId;
use crate::sys::remote_servers::{self, Heard, RemoteServers};
use crate::sys::server_block;
use crate::sys::services::{self, Request};

const SID_NOTIFY: &[u8] = b"claims-notify";
const SID_REQUEST: &[u8] = b"claims-request";
const SID_SERVICE: &[u8] = b"service";
/// Other servers' account connection counts, and their shutdowns.
const SID_REMOTE_CONNS: &[u8] = b"remote-conns";
const SID_REMOTE_SHUTDOWN: &[u8] = b"remote-shutdown";
/// Other servers' STATSZ heartbeats.
const SID_REMOTE_STATSZ: &[u8] = b"remote-statsz";
const SID_CLAIMS: &[u8] = b"claims-";

/// The STATSZ heartbeat: first after 250 ms, doubling up to 10 s.
const STATSZ_FIRST: Duration = Duration::from_millis(250);
const STATSZ_MAX: Duration = Duration::from_secs(10);
/// The least time between two STATSZ heartbeats (nats-server's
/// `statszRateLimit`; less while the interval itself is less).
const STATSZ_RATE_LIMIT: Duration = Duration::from_secs(1);
/// Accounts with clients announce their connection counts this often.
const CONNS_EVERY: Duration = Duration::from_secs(30);

/// What this server knows of the others through the system account.
#[derive(Default)]
struct Remote {
    servers: RemoteServers,
    conns: RemoteConns,
    /// A server was heard for the first time: it is told this server's
    /// STATSZ at once (rate limits permitting), as nats-server does.
    announce: bool,
}

impl Remote {
    /// Forgets a server that shut down or went silent, with its counts.
    fn forget(&mut self, shard: &Shard, id: &str) {
        self.servers.gone(id);
        self.conns.forget_server(shard, id);
        publish_count(shard, &self.servers);
    }

    /// Takes an event from server `id` numbered `seq`.
    fn heard(&mut self, shard: &Shard, id: &str, seq: u64) {
        match self.servers.heard(id, seq, Instant::now()) {
            Heard::New => {
                self.announce = true;
                publish_count(shard, &self.servers);
            }
            Heard::Again => {}
            Heard::OutOfOrder => crate::debug!("out of order remote server update from {id:?}"),
        }
    }
}

fn publish_count(shard: &Shard, servers: &RemoteServers) {
    shard.shared.remote_servers.store(servers.len(), Relaxed);
}

/// Whether other servers can hear this one's heartbeat whatever the
/// interest (nats-server's test: a cluster, gateway or leaf node port, or
/// a leaf remote bound to the system account); alone, it is sent only
/// while someone listens.
fn heard_by_others(shard: &Shard) -> bool {
    if shard.shared.cluster.get().is_some() {
        return true;
    }
    let (opts, _) = shard.shared.current();
    let Some(leaf) = &opts.leaf else { return false };
    let system = shard.verifier.borrow().accounts().system().name.clone();
    leaf.port != 0
        || leaf
            .remotes
            .iter()
            .any(|r| r.account.as_deref() == Some(system.as_str()))
}

/// Where other servers' events can reach this one: in a cluster or over
/// leaf connections.
fn may_hear_others(shard: &Shard) -> bool {
    let (opts, _) = shard.shared.current();
    shard.shared.cluster.get().is_some() || opts.leaf.is_some()
}

/// Runs the internal client until the process ends.
pub async fn run(shard: Rc<Shard>) {
    let verifier = shard.verifier.borrow().clone();
    let cid = shard.shared.next_cid();
    let sys = verifier.accounts().system();
    let server_id = shard.info.borrow().server_id.clone();
    {
        let mut core = shard.core.borrow_mut();
        core.add_link(cid, crate::ids::LinkKind::System, sys.id);
        if verifier.is_operator_mode() {
            let _ = core.subscribe(cid, b"$SYS.ACCOUNT.*.CLAIMS.UPDATE", None, SID_NOTIFY);
            let _ = core.subscribe(cid, b"$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE", None, SID_REQUEST);
        }
        if verifier.is_nats_resolver() {
            for (sid, subject) in [
                ("claims-update", "$SYS.REQ.CLAIMS.UPDATE"),
                ("claims-list", "$SYS.REQ.CLAIMS.LIST"),
                ("claims-delete", "$SYS.REQ.CLAIMS.DELETE"),
                ("claims-lookup", "$SYS.REQ.ACCOUNT.*.CLAIMS.LOOKUP"),
                ("claims-pack", "$SYS.REQ.CLAIMS.PACK"),
            ] {
                let _ = core.subscribe(cid, subject.as_bytes(), None, sid.as_bytes());
            }
        }
        if may_hear_others(&shard) {
            // nats-server's subject for these counts (it also sends the
            // newer `$SYS.ACCOUNT.<acc>.SERVER.CONNS`).
            let _ = core.subscribe(cid, b"$SYS.SERVER.ACCOUNT.*.CONNS", None, SID_REMOTE_CONNS);
            let _ = core.subscribe(cid, b"$SYS.SERVER.*.SHUTDOWN", None, SID_REMOTE_SHUTDOWN);
            let _ = core.subscribe(cid, b"$SYS.SERVER.*.STATSZ", None, SID_REMOTE_STATSZ);
        }
        for (i, subject) in services::subjects(&server_id).iter().enumerate() {
            let sid = format!("{}{i}", String::from_utf8_lossy(SID_SERVICE));
            let _ = core.subscribe(cid, subject.as_bytes(), None, sid.as_bytes());
        }
    }
    shard.flush().await;
    let remote = Rc::new(RefCell::new(Remote::default()));
    crate::rt::spawn_local(heartbeats(shard.clone(), server_id.clone(), remote.clone())).detach();
    let mut inbox: Vec<InternalMsg> = Vec::new();
    loop {
        shard.next_batch(&mut inbox, ShardCore::poll_internal).await;
        for m in inbox.drain(..) {
            if m.sid == SID_REMOTE_CONNS || m.sid == SID_REMOTE_SHUTDOWN || m.sid == SID_REMOTE_STATSZ {
                remote_event(&shard, &server_id, &mut remote.borrow_mut(), &m);
            } else if m.sid == SID_NOTIFY || m.sid == SID_REQUEST || m.sid == b"claims-update" {
                claims_update(&shard, cid, &m);
            } else if m.sid.starts_with(SID_CLAIMS) {
                claims_request(&shard, &m);
            } else if m.sid.starts_with(SID_SERVICE) {
                if let Some(reply) = m.reply.clone() {
                    crate::rt::spawn_local(service(shard.clone(), m, reply)).detach();
                }
            }
        }
        shard.flush().await;
    }
}

/// A message's header block (empty without one) and body.
fn parts(m: &InternalMsg) -> (&[u8], &[u8]) {
    m.message
        .split_at(m.header_len.filter(|&h| h <= m.message.len()).unwrap_or(0))
}

fn body_of(m: &InternalMsg) -> &[u8] {
    parts(m).1
}

/// A `$SYS.REQ` reply made on a blocking thread.
enum Answer {
    /// Encoded there (header length, bytes).
    Encoded(Option<usize>, Vec<u8>),
    /// A small document servers read, stamped and encoded where it is sent
    /// ([`services::servers_read_the_reply`]).
    ForServers(serde_json::Value),
}

/// Answers one `$SYS.REQ` request on a blocking thread and routes the reply.
async fn service(shard: Rc<Shard>, m: InternalMsg, reply: Vec<u8>) {
    let shared = shard.shared.clone();
    let req = Request {
        subject: String::from_utf8_lossy(&m.subject).into_owned(),
        body: body_of(&m).to_vec(),
        accept: ContentEncoding::accepted_by(parts(&m).0),
    };
    let answer = crate::rt::spawn_blocking(move || {
        let reload = || shared.reload();
        let act = |a| shared.client_action(a);
        services::answer(&shared, &req, &reload, &act).map(|v| {
            if services::servers_read_the_reply(&req.subject) {
                return Answer::ForServers(v);
            }
            let encoding = services::reply_encoding(&req.subject, &v, req.accept);
            let (header_len, bytes) = encoding::message(encoding, &serde_json::to_vec(&v).unwrap_or_default());
            Answer::Encoded(header_len, bytes)
        })
    })
    .await;
    let _ = match answer {
        Some(Answer::Encoded(header_len, bytes)) => shard.emit_message(&reply, header_len, &bytes),
        Some(Answer::ForServers(doc)) => shard.emit(&String::from_utf8_lossy(&reply), doc),
        None => return,
    };
    shard.flush().await;
}

/// An event from another server: a STATSZ heartbeat, an account's
/// connection count, or its SHUTDOWN.
fn remote_event(shard: &Shard, own_id: &str, remote: &mut Remote, m: &InternalMsg) {
    if m.sid == SID_REMOTE_SHUTDOWN {
        // `$SYS.SERVER.<id>.SHUTDOWN`, its body the server block itself:
        // the id is taken from the subject, as nats-server takes it.
        let id = crate::subject::tokens(&m.subject).nth(2).unwrap_or_default();
        let id = String::from_utf8_lossy(id).into_owned();
        if !id.is_empty() && id != own_id {
            remote.forget(shard, &id);
        }
        return;
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body_of(m)) else {
        return;
    };
    let server = v["server"]["id"].as_str().unwrap_or_default();
    if server.is_empty() || server == own_id {
        return;
    }
    remote.heard(shard, server, v["server"]["seq"].as_u64().unwrap_or(0));
    if m.sid == SID_REMOTE_CONNS {
        remote.conns.update(shard, server, &v);
    }
}

/// Sends `$SYS.SERVER.<id>.SHUTDOWN` once (shard 0's poll loop calls it
/// as soon as the exit rings it; the heartbeat loop as a fallback), then
/// tells the exiting main thread whether anyone was to receive it.
pub async fn send_shutdown(shard: Rc<Shard>) {
    if shard.shared.shutdown_claimed.swap(true, Relaxed) {
        return;
    }
    let id = shard.info.borrow().server_id.clone();
    let block = serde_json::to_value(server_block(&shard.shared)).unwrap_or_default();
    let heard = shard.emit(&format!("$SYS.SERVER.{id}.SHUTDOWN"), block);
    shard.flush().await;
    shard.shared.shutdown_heard.store(heard, Relaxed);
    shard.shared.shutdown_sent.store(true, Relaxed);
}

/// How soon after a server joins the cluster it is told this server's
/// account connection counts.
const CONNS_AFTER_JOIN: Duration = Duration::from_millis(250);

/// STATSZ heartbeats, SERVER.CONNS for accounts with clients, the
/// SHUTDOWN event at exit, and the sweep for servers gone silent.
async fn heartbeats(shard: Rc<Shard>, server_id: String, remote: Rc<RefCell<Remote>>) {
    let statsz_subject = format!("$SYS.SERVER.{server_id}.STATSZ");
    let mut statsz_every = STATSZ_FIRST;
    let mut next_statsz = Instant::now() + statsz_every;
    let mut last_statsz: Option<Instant> = None;
    let mut next_conns = Instant::now() + CONNS_EVERY;
    let mut next_orphan_check = Instant::now() + remote_servers::ORPHAN_CHECK_EVERY;
    let mut peers_seen = 0;
    loop {
        // Clustered, a joining server is noticed within 20 ms; alone, the
        // next event is a heartbeat or the SHUTDOWN (the exit waits 300 ms
        // for it), so waking 10 times a second is enough.
        let tick = if shard.shared.cluster.get().is_some() {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(100)
        };
        crate::rt::timer::sleep(tick.min(next_statsz.min(next_conns).saturating_duration_since(Instant::now()))).await;
        let now = Instant::now();
        // A server that joins the cluster hears this one's account
        // connection counts soon (once its route has exchanged interest),
        // not at the next heartbeat: limits hold cluster-wide from the start.
        if let Some(c) = shard.shared.cluster.get() {
            let peers = c.route_count();
            if peers > peers_seen {
                next_conns = next_conns.min(now + CONNS_AFTER_JOIN);
            }
            peers_seen = peers;
        }
        if shard.shared.shutting_down.load(Relaxed) {
            send_shutdown(shard.clone()).await;
        }
        if now >= next_orphan_check {
            next_orphan_check = now + remote_servers::ORPHAN_CHECK_EVERY;
            let mut remote = remote.borrow_mut();
            for id in remote.servers.orphans(now) {
                crate::debug!("detected orphan remote server: {id:?}");
                remote.forget(&shard, &id);
            }
        }
        let announce = std::mem::take(&mut remote.borrow_mut().announce);
        if now >= next_statsz || announce {
            if now >= next_statsz {
                statsz_every = (statsz_every * 2).min(STATSZ_MAX);
                next_statsz = now + statsz_every;
            }
            let limit = STATSZ_RATE_LIMIT.min(statsz_every);
            let sys = shard.verifier.borrow().accounts().system().id;
            let listening = || {
                shard
                    .core
                    .borrow_mut()
                    .has_external_interest(sys, statsz_subject.as_bytes())
            };
            if let Some(allowed) = last_statsz.map(|t| t + limit).filter(|&t| t > now) {
                // Too soon after the last one: sent when the limit allows.
                if announce {
                    remote.borrow_mut().announce = true;
                } else {
                    next_statsz = allowed;
                }
            } else if heard_by_others(&shard) || listening() {
                last_statsz = Some(now);
                let doc = crate::sys::endpoints::statsz(&shard.shared);
                shard.emit(&statsz_subject, doc);
                shard.flush().await;
            }
        }
        if now >= next_conns {
            next_conns = now + CONNS_EVERY;
            let accounts: Vec<String> = shard
                .verifier
                .borrow()
                .accounts()
                .all()
                .iter()
                .filter(|a| a.connections() > 0 && a.name != crate::auth::config::GLOBAL_ACCOUNT)
                .map(|a| a.name.clone())
                .collect();
            for acc in accounts {
                announce_conns(shard.clone(), acc).await;
            }
        }
    }
}

/// What the other servers of the cluster report of their clients per
/// account, so that account connection limits hold cluster-wide.
#[derive(Default)]
struct RemoteConns {
    /// (server id, account) to that server's client connections.
    counts: std::collections::HashMap<(String, String), i64>,
}

impl RemoteConns {
    /// Takes server `server`'s SERVER.CONNS event and sets the account's
    /// remote total.
    fn update(&mut self, shard: &Shard, server: &str, v: &serde_json::Value) {
        let Some(acc) = v["acc"].as_str() else { return };
        let conns = v["conns"].as_i64().unwrap_or(0);
        self.counts.insert((server.to_string(), acc.to_string()), conns);
        self.set_totals(shard, vec![acc.to_string()]);
    }

    /// Drops the counts of a server that is gone.
    fn forget_server(&mut self, shard: &Shard, server: &str) {
        let gone: Vec<String> = self
            .counts
            .keys()
            .filter(|(s, _)| s == server)
            .map(|(_, a)| a.clone())
            .collect();
        self.counts.retain(|(s, _), _| s != server);
        self.set_totals(shard, gone);
    }

    /// Sets the remote totals of the `touched` accounts.
    fn set_totals(&self, shard: &Shard, touched: Vec<String>) {
        let verifier = shard.verifier.borrow().clone();
        for acc in touched {
            let total: i64 = self
                .counts
                .iter()
                .filter(|((_, a), _)| *a == acc)
                .map(|(_, n)| *n)
                .sum();
            // In operator mode the account may have no client here yet: its
            // entry is made now so the count is in place when one connects.
            let account = if verifier.is_operator_mode() && acc.len() == 56 && acc.starts_with('A') {
                Some(verifier.accounts().get_or_create(&acc))
            } else {
                verifier.accounts().get(&acc)
            };
            if let Some(a) = account {
                a.set_remote_connections(total);
            }
        }
    }
}

/// Sends `$SYS.ACCOUNT.<acc>.SERVER.CONNS`, and nats-server's older
/// `$SYS.SERVER.ACCOUNT.<acc>.CONNS` that servers of a cluster count
/// account connections by (never for `$G`, as nats-server).
pub async fn announce_conns(shard: Rc<Shard>, acc: String) {
    if acc == crate::auth::config::GLOBAL_ACCOUNT {
        return;
    }
    let shared = shard.shared.clone();
    let a = acc.clone();
    let doc = crate::rt::spawn_blocking(move || services::account_conns_event(&shared, &a)).await;
    shard.emit(&format!("$SYS.ACCOUNT.{acc}.SERVER.CONNS"), doc.clone());
    shard.emit(&format!("$SYS.SERVER.ACCOUNT.{acc}.CONNS"), doc);
    shard.flush().await;
}

/// The NATS resolver's LIST, DELETE, LOOKUP and PACK requests.
fn claims_request(shard: &Shard, m: &InternalMsg) {
    let Some(reply) = &m.reply else { return };
    let verifier = shard.verifier.borrow().clone();
    let body = body_of(m);
    let replies: Vec<Vec<u8>> = match &m.sid[..] {
        b"claims-list" => {
            let doc = serde_json::json!({"server": server_block(&shard.shared), "data": verifier.claims_list()});
            vec![serde_json::to_vec(&doc).unwrap_or_default()]
        }
        b"claims-delete" => {
            let token = String::from_utf8_lossy(body).trim().to_string();
            let doc = match verifier.claims_delete(&token) {
                Ok((message, deleted)) => {
                    for k in deleted {
                        if let Some(acc) = verifier.accounts().get(&k) {
                            shard.shared.account_updated(acc.id);
                        }
                    }
                    serde_json::json!({"server": server_block(&shard.shared), "data": {"code": 200, "message": message}})
                }
                Err(e) => {
                    serde_json::json!({"server": server_block(&shard.shared), "error": {"code": 500, "description": e}})
                }
            };
            vec![serde_json::to_vec(&doc).unwrap_or_default()]
        }
        b"claims-lookup" => {
            // `$SYS.REQ.ACCOUNT.<id>.CLAIMS.LOOKUP`: the JWT, or an empty message.
            let key = String::from_utf8_lossy(&m.subject)
                .split('.')
                .nth(3)
                .unwrap_or_default()
                .to_string();
            vec![verifier.claims_lookup(&key).unwrap_or_default().into_bytes()]
        }
        b"claims-pack" => verifier.claims_pack(body).into_iter().map(String::into_bytes).collect(),
        _ => return,
    };
    for r in replies {
        shard.emit_bytes(reply, &r);
    }
}

fn claims_update(shard: &Shard, cid: ConnId, m: &InternalMsg) {
    let token = String::from_utf8_lossy(body_of(m)).trim().to_string();
    // `$SYS.ACCOUNT.<id>.CLAIMS.UPDATE` / `$SYS.REQ.ACCOUNT.<id>.CLAIMS.UPDATE`
    let tokens: Vec<&[u8]> = crate::subject::tokens(&m.subject).collect();
    let subject_account = tokens
        .iter()
        .position(|t| *t == b"ACCOUNT")
        .and_then(|i| tokens.get(i + 1))
        .map(|t| String::from_utf8_lossy(t).into_owned());
    let verifier = shard.verifier.borrow().clone();
    let (account, outcome) = verifier.claims_update(&token, subject_account.as_deref());
    match &outcome {
        Ok(msg) => {
            crate::debug!("claims update for {account}: {msg}");
            if *msg == "jwt updated" {
                if let Some(acc) = verifier.accounts().get(&account) {
                    shard.shared.account_updated(acc.id);
                }
            }
        }
        Err(e) => crate::warn!("claims update for {account} refused: {e}"),
    }
    let Some(reply) = &m.reply else { return };
    // nats-server's claims replies: the account in `data`, or in `error`.
    let doc = match &outcome {
        Ok(msg) => crate::sys::envelope(
            &shard.shared,
            serde_json::json!({"account": account, "code": 200, "message": msg}),
        ),
        Err(e) => serde_json::json!({
            "server": server_block(&shard.shared),
            "error": {"account": account, "code": 500, "description": e},
        }),
    };
    // Published as the internal client, so it counts as a message in.
    let json = serde_json::to_vec(&doc).unwrap_or_default();
    let mut core = shard.core.borrow_mut();
    core.set_now(Instant::now());
    core.publish(cid, reply, None, None, &json);
}
