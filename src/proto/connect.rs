//! The CONNECT options a client sends, with nats-server's defaults.

use serde::Deserialize;

/// nats-server's `ClientOpts`, laid over the defaults
/// `verbose: true, pedantic: true, echo: true`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ClientOpts {
    /// Acknowledge every protocol message with `+OK`.
    pub verbose: bool,
    /// Check publish subjects strictly.
    pub pedantic: bool,
    /// Deliver the client's own publishes to its own subscriptions.
    pub echo: bool,
    /// The client asked for TLS.
    pub tls_required: bool,
    /// User nkey (nkey auth).
    pub nkey: Option<String>,
    /// User JWT (operator mode).
    pub jwt: Option<String>,
    /// Signature over the nonce.
    pub sig: Option<String>,
    /// Token auth.
    pub auth_token: Option<String>,
    /// Username.
    pub user: Option<String>,
    /// Password.
    pub pass: Option<String>,
    /// Connection name.
    pub name: String,
    /// Client language.
    pub lang: String,
    /// Client library version.
    pub version: String,
    /// 0 = original, 1 = accepts async INFO.
    pub protocol: i64,
    /// Obsolete; rejected when set.
    pub account: Option<String>,
    /// Obsolete; rejected when set.
    pub new_account: Option<bool>,
    /// The client understands HMSG.
    pub headers: bool,
    /// Send 503 status messages when a request has no responder.
    pub no_responders: bool,
}

impl Default for ClientOpts {
    fn default() -> Self {
        ClientOpts {
            verbose: true,
            pedantic: true,
            echo: true,
            tls_required: false,
            nkey: None,
            jwt: None,
            sig: None,
            auth_token: None,
            user: None,
            pass: None,
            name: String::new(),
            lang: String::new(),
            version: String::new(),
            protocol: 0,
            account: None,
            new_account: None,
            headers: false,
            no_responders: false,
        }
    }
}

impl ClientOpts {
    /// Decodes a CONNECT argument. `None` when it is not valid JSON of the
    /// right shape (nats-server then closes without -ERR).
    pub fn from_json(json: &[u8]) -> Option<ClientOpts> {
        serde_json::from_slice(json).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_to_missing_fields() {
        let o = ClientOpts::from_json(b"{}").unwrap();
        assert!(o.verbose && o.pedantic && o.echo && !o.headers);
        let o = ClientOpts::from_json(br#"{"verbose":false,"echo":false,"headers":true,"x":1}"#).unwrap();
        assert!(!o.verbose && o.pedantic && !o.echo && o.headers);
        assert!(ClientOpts::from_json(b"{nope").is_none());
    }
}
