//! WebSocket client transport, sans-IO: the opening handshake
//! ([`handshake`]), framing ([`frame`]) and per-message compression
//! ([`deflate`]). The shard's connection code (`shard::websocket`) puts
//! these between the socket (or TLS) and the same NATS session every client
//! has, so a WebSocket client costs no extra hop per message.

pub mod deflate;
pub mod frame;
pub mod handshake;

use std::time::Duration;

use crate::options::WebsocketOptions;

/// What the handshake needs from the `websocket` block, prepared once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WsSettings {
    /// permessage-deflate offered to clients that ask.
    pub compression: bool,
    /// The Origin must be the request's own host.
    pub same_origin: bool,
    /// Origins allowed, as (scheme, lower-case host, port).
    pub allowed_origins: Vec<(String, String, String)>,
    /// Cookie carrying a user JWT.
    pub jwt_cookie: Option<String>,
    /// Cookie carrying a user name.
    pub user_cookie: Option<String>,
    /// Cookie carrying a password.
    pub pass_cookie: Option<String>,
    /// Cookie carrying a token.
    pub token_cookie: Option<String>,
    /// Extra headers for the `101` answer.
    pub headers: Vec<(String, String)>,
    /// Deadline for the TLS and HTTP handshake (none when unset, as nats-server).
    pub handshake_timeout: Option<Duration>,
}

impl WsSettings {
    /// The settings of a `websocket` block (its origins were checked when
    /// the configuration was read).
    pub fn new(o: &WebsocketOptions) -> WsSettings {
        WsSettings {
            compression: o.compression,
            same_origin: o.same_origin,
            allowed_origins: o
                .allowed_origins
                .iter()
                .filter_map(|u| handshake::parse_origin(u))
                .collect(),
            jwt_cookie: o.jwt_cookie.clone(),
            user_cookie: o.user_cookie.clone(),
            pass_cookie: o.pass_cookie.clone(),
            token_cookie: o.token_cookie.clone(),
            headers: o.headers.clone(),
            handshake_timeout: o.handshake_timeout,
        }
    }
}
