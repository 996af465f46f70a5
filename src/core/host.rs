//! The bridge between one connection's [`Session`](crate::proto::session::Session)
//! and its shard's [`ShardCore`].

use super::ShardCore;
use crate::ids::ConnId;
use crate::proto::connect::ClientOpts;
use crate::proto::errors::WireError;
use crate::proto::info::ServerInfo;
use crate::proto::session::{Publish, SessionHost};

/// Decides whether a CONNECT may proceed. The auth issue replaces the open
/// policy with real checks; the core only needs the verdict.
pub trait Authenticator {
    /// Checks the CONNECT credentials.
    fn check(&self, opts: &ClientOpts) -> Result<(), WireError>;
}

/// No authentication configured: every CONNECT is accepted.
#[derive(Debug, Default, Clone, Copy)]
pub struct OpenAccess;

impl Authenticator for OpenAccess {
    fn check(&self, _: &ClientOpts) -> Result<(), WireError> {
        Ok(())
    }
}

/// A [`SessionHost`] for connection `cid` on `core`.
pub struct CoreHost<'a, A: Authenticator> {
    /// The shard's core.
    pub core: &'a mut ShardCore,
    /// The connection.
    pub cid: ConnId,
    /// INFO fields shared by the server's connections.
    pub info: &'a ServerInfo,
    /// The client's address, for INFO.
    pub client_ip: &'a str,
    /// Whether the server supports headers.
    pub headers_supported: bool,
    /// The CONNECT check.
    pub auth: &'a A,
}

/// The INFO a connection gets: the server's fields plus its own.
pub fn client_info(template: &ServerInfo, cid: ConnId, client_ip: &str) -> ServerInfo {
    ServerInfo {
        client_id: cid.0,
        client_ip: client_ip.to_string(),
        ..template.clone()
    }
}

impl<A: Authenticator> SessionHost for CoreHost<'_, A> {
    fn out(&mut self) -> &mut Vec<u8> {
        self.core
            .conn_mut(self.cid)
            .expect("connection is registered while its session runs")
            .out
            .tail()
    }

    fn connect(&mut self, opts: &ClientOpts) -> Result<(), WireError> {
        self.auth.check(opts)?;
        self.core
            .set_conn_opts(self.cid, opts.echo, opts.headers && self.headers_supported);
        Ok(())
    }

    fn publish(&mut self, msg: &Publish<'_>) -> bool {
        self.core
            .publish(self.cid, msg.subject, msg.reply, msg.header_len, msg.message)
    }

    fn subscribe(&mut self, subject: &[u8], queue: Option<&[u8]>, sid: &[u8]) -> Result<(), WireError> {
        self.core.subscribe(self.cid, subject, queue, sid)
    }

    fn unsubscribe(&mut self, sid: &[u8], max: Option<u64>) {
        self.core.unsubscribe(self.cid, sid, max)
    }

    fn no_responders(&mut self, reply: &[u8], subject: &[u8]) {
        self.core.no_responders(self.cid, reply, subject)
    }

    fn pong(&mut self, then: Option<Vec<u8>>) {
        self.core.pong(self.cid, then)
    }

    fn connect_info_json(&mut self) -> Vec<u8> {
        let mut info = client_info(self.info, self.cid, self.client_ip);
        info.connect_info = true;
        info.remote_account = "$G".to_string();
        info.to_json()
    }
}
