//! The system account's internal client, on shard 0: its subscriptions are
//! ordinary ones in the system account's subject space (so they reach every
//! shard's index replica), and what they receive is handled here.
//!
//! Today it serves account claims updates in operator mode
//! (`$SYS.ACCOUNT.<id>.CLAIMS.UPDATE` and `$SYS.REQ.ACCOUNT.<id>.CLAIMS.UPDATE`):
//! the new JWT is checked and installed, and every shard re-checks its
//! clients of that account.

use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::SystemTime;

use serde::Serialize;

use super::Shard;
use crate::core::InternalMsg;
use crate::ids::ConnId;
use crate::proto::info::COMPAT_VERSION;

const SID_NOTIFY: &[u8] = b"claims-notify";
const SID_REQUEST: &[u8] = b"claims-request";

/// nats-server's `server` block in system replies.
#[derive(Debug, Serialize)]
pub struct ServerBlock {
    /// Server name.
    pub name: String,
    /// Listen host.
    pub host: String,
    /// Server id.
    pub id: String,
    /// Version.
    pub ver: String,
    /// JetStream enabled (never, in petrel).
    pub jetstream: bool,
    /// Capability bits.
    pub flags: u64,
    /// Per-server message counter.
    pub seq: u64,
    /// RFC 3339 time.
    pub time: String,
}

#[derive(Debug, Serialize)]
struct ClaimsData<'a> {
    account: &'a str,
    code: u16,
    message: &'a str,
}

#[derive(Debug, Serialize)]
struct ClaimsError<'a> {
    account: &'a str,
    code: u16,
    description: &'a str,
}

#[derive(Debug, Serialize)]
struct Reply<'a> {
    server: ServerBlock,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<ClaimsData<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ClaimsError<'a>>,
}

/// Runs the internal client until the process ends.
pub async fn run(shard: Rc<Shard>) {
    let verifier = shard.verifier.borrow().clone();
    if !verifier.is_operator_mode() {
        return;
    }
    let cid = shard.shared.next_cid();
    let sys = verifier.accounts().system();
    {
        let mut core = shard.core.borrow_mut();
        core.add_internal_conn(cid, sys.id);
        let _ = core.subscribe(cid, b"$SYS.ACCOUNT.*.CLAIMS.UPDATE", None, SID_NOTIFY);
        let _ = core.subscribe(cid, b"$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE", None, SID_REQUEST);
    }
    shard.flush().await;
    let mut seq = 0u64;
    let mut inbox: Vec<InternalMsg> = Vec::new();
    loop {
        poll_fn(|cx| {
            if shard.core.borrow_mut().poll_internal(&mut inbox, cx.waker()) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        for m in inbox.drain(..) {
            seq += 1;
            if m.sid == SID_NOTIFY || m.sid == SID_REQUEST {
                claims_update(&shard, cid, &m, seq);
            }
        }
        shard.flush().await;
    }
}

fn server_block(shard: &Shard, seq: u64) -> ServerBlock {
    let info = shard.info.borrow();
    ServerBlock {
        name: info.server_name.clone(),
        host: info.host.clone(),
        id: info.server_id.clone(),
        ver: COMPAT_VERSION.to_string(),
        jetstream: false,
        flags: 0,
        seq,
        time: crate::timefmt::rfc3339(SystemTime::now()),
    }
}

fn claims_update(shard: &Shard, cid: ConnId, m: &InternalMsg, seq: u64) {
    let body = match m.header_len {
        Some(h) if h <= m.message.len() => &m.message[h..],
        _ => &m.message[..],
    };
    let token = String::from_utf8_lossy(body).trim().to_string();
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
    let doc = match &outcome {
        Ok(msg) => Reply {
            server: server_block(shard, seq),
            data: Some(ClaimsData {
                account: &account,
                code: 200,
                message: msg,
            }),
            error: None,
        },
        Err(e) => Reply {
            server: server_block(shard, seq),
            data: None,
            error: Some(ClaimsError {
                account: &account,
                code: 500,
                description: e,
            }),
        },
    };
    let json = serde_json::to_vec(&doc).expect("reply serializes");
    let mut core = shard.core.borrow_mut();
    core.set_now(std::time::Instant::now());
    core.publish(cid, reply, None, None, &json);
}
