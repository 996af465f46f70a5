//! A client's requests about its own account in a cluster, as
//! nats-server's automatic system imports send them: the account CONNZ
//! (`$SYS.REQ.ACCOUNT.PING.CONNZ`, `$SYS.REQ.SERVER.PING.CONNZ`) and STATZ
//! (`$SYS.REQ.ACCOUNT.PING.STATZ`) go to every server as
//! `$SYS.REQ.ACCOUNT.<account>.<CONNZ|STATZ>` in the system account, so
//! the client gets one answer per server. The reply is held in this
//! shard's reply space (`responses.rs`) as a streamed response to the
//! client's reply subject; every server's system client (this one's too)
//! answers into it. Alone, the self-service link answers at once
//! (`ShardCore::add_self_service`).

use super::{Msg, Origin, SelfRequest, ShardCore};
use crate::auth::config::{ResponseRule, ResponseType};
use crate::ids::LinkKind;

impl ShardCore {
    /// Sends `req`, made by a client of account `name`, to every server of
    /// the cluster: whether it went (`false`: not clustered, or the client
    /// is gone; the runtime answers it alone).
    pub fn forward_account_request(&mut self, req: &SelfRequest, name: &str) -> bool {
        let Some(sys) = self.system_account.filter(|_| self.routes.clustered) else {
            return false;
        };
        if !self.conns.contains_key(&req.from) {
            return false;
        }
        let service = if req.subject.ends_with(b".STATZ") {
            "STATZ"
        } else {
            "CONNZ"
        };
        let subject = format!("$SYS.REQ.ACCOUNT.{name}.{service}");
        let rule = ResponseRule {
            kind: ResponseType::Stream,
            ..ResponseRule::default()
        };
        let Some((held, token)) = self.hold_request(req.account, sys, &req.reply, rule, None) else {
            return false;
        };
        let message: Vec<u8> = [&req.header[..], &req.body[..]].concat();
        let msg = Msg {
            subject: subject.as_bytes(),
            reply: Some(&held),
            header_len: (!req.header.is_empty()).then_some(req.header.len()),
            message: &message,
            queues: None,
            origin_cluster: None,
            responder: None,
        };
        let origin = Origin {
            conn: req.from,
            echo: true,
            link: LinkKind::Client,
        };
        if !self.route_in(sys, &msg, Some(origin)) {
            self.drop_request(token);
        }
        self.serve_responses();
        true
    }
}
