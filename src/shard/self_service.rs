//! Each shard's self-service link: the `$SYS` requests a client makes about
//! itself (`$SYS.REQ.USER.INFO`) and, outside the system account, about its
//! own account (CONNZ, STATZ), as nats-server's automatic service imports
//! into every account allow. The core holds the link's subscriptions in
//! this shard's index replicas only (`ShardCore::add_self_service`), so a
//! request is matched like any publish and answered here, by the
//! requester's own shard, from the requester's identity; in a cluster the
//! account requests go to every server instead
//! (`core/account_requests.rs`).

use std::rc::Rc;

use super::state::Shard;
use crate::compress::encoding::{self, ContentEncoding};
use crate::core::ShardCore;
use crate::core::{SelfRequest, USER_INFO};
use crate::sys::services;

/// Registers the link now (before the shard accepts anyone) and spawns
/// the task that answers what it receives until the process ends.
pub fn start(shard: &Rc<Shard>) {
    let cid = shard.shared.next_cid();
    shard.core.borrow_mut().add_self_service(cid);
    crate::rt::spawn_local(run(shard.clone())).detach();
}

async fn run(shard: Rc<Shard>) {
    let mut inbox: Vec<SelfRequest> = Vec::new();
    loop {
        shard.next_batch(&mut inbox, ShardCore::poll_self_requests).await;
        for req in inbox.drain(..) {
            answer(&shard, req);
        }
        shard.flush().await;
    }
}

/// Answers one request; a requester that has gone gets nothing.
fn answer(shard: &Rc<Shard>, req: SelfRequest) {
    let Some(auth) = shard.conns.borrow().get(&req.from).map(|h| h.auth.clone()) else {
        return;
    };
    let auth = auth.borrow();
    let Some(id) = &auth.identity else { return };
    if &*req.subject == USER_INFO {
        let body = serde_json::to_vec(&crate::sys::user_info(&shard.shared, id)).unwrap_or_default();
        let mut core = shard.core.borrow_mut();
        core.inject(req.account, &req.reply, None, &body);
        core.wake(req.from);
        return;
    }
    let name = id.account().name.clone();
    // In a cluster every server answers, as with nats-server's system
    // imports (this one through its system client).
    if shard.core.borrow_mut().forward_account_request(&req, &name) {
        drop(auth);
        let shard = shard.clone();
        crate::rt::spawn_local(async move { shard.flush().await }).detach();
        return;
    }
    // Account-scoped CONNZ/STATZ may wait for shard snapshots: off the shard.
    let shard = shard.clone();
    crate::rt::spawn_local(async move {
        let shared = shard.shared.clone();
        let subject = req.subject.clone();
        let answer =
            crate::rt::spawn_blocking(move || services::account_request(&shared, &name, &subject, &req.body)).await;
        if let Some(v) = answer {
            // Compressed as the system client's replies are.
            let accept = ContentEncoding::accepted_by(&req.header);
            let encoding = services::reply_encoding(&String::from_utf8_lossy(&req.subject), &v, accept);
            let (header_len, bytes) = encoding::message(encoding, &serde_json::to_vec(&v).unwrap_or_default());
            shard
                .core
                .borrow_mut()
                .inject_msg(req.account, &req.reply, None, header_len, &bytes);
            shard.flush().await;
        }
    })
    .detach();
}
