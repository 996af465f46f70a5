//! The CONNECT options a client sends, with nats-server's defaults.

use serde::Deserialize;

/// nats-server's `ClientOpts`, laid over the defaults
/// `verbose: true, pedantic: true, echo: true`.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// The CONNECT JSON as sent: every field optional, since clients send
/// `null` for values they leave unset (Go's decoder leaves those alone).
#[derive(Deserialize)]
struct RawOpts {
    verbose: Option<bool>,
    pedantic: Option<bool>,
    echo: Option<bool>,
    tls_required: Option<bool>,
    nkey: Option<String>,
    jwt: Option<String>,
    sig: Option<String>,
    auth_token: Option<String>,
    user: Option<String>,
    pass: Option<String>,
    name: Option<String>,
    lang: Option<String>,
    version: Option<String>,
    protocol: Option<i64>,
    account: Option<String>,
    new_account: Option<bool>,
    headers: Option<bool>,
    no_responders: Option<bool>,
}

impl ClientOpts {
    /// Decodes a CONNECT argument laid over the defaults. `None` when it is
    /// not valid JSON of the right shape (nats-server then closes without -ERR).
    ///
    /// Read as Go's decoder reads it: invalid UTF-8 inside a string becomes
    /// U+FFFD, and a key given twice keeps its last value (through a
    /// `Value`, whose maps keep the last insert, where the derived decoder
    /// would refuse a duplicate field).
    pub fn from_json(json: &[u8]) -> Option<ClientOpts> {
        // Go also matches keys without regard to case (`"Verbose"`); a
        // CONNECT with an upper-case letter anywhere takes the slow path.
        let fast = if json.iter().any(u8::is_ascii_uppercase) {
            None
        } else {
            serde_json::from_slice(json).ok()
        };
        let r: RawOpts = match fast {
            Some(r) => r,
            None => {
                let text = String::from_utf8_lossy(json);
                let v: serde_json::Value = serde_json::from_str(&text).ok()?;
                serde_json::from_value(fold_keys(v)).ok()?
            }
        };
        let d = ClientOpts::default();
        Some(ClientOpts {
            verbose: r.verbose.unwrap_or(d.verbose),
            pedantic: r.pedantic.unwrap_or(d.pedantic),
            echo: r.echo.unwrap_or(d.echo),
            tls_required: r.tls_required.unwrap_or(d.tls_required),
            nkey: r.nkey,
            jwt: r.jwt,
            sig: r.sig,
            auth_token: r.auth_token,
            user: r.user,
            pass: r.pass,
            name: r.name.unwrap_or_default(),
            lang: r.lang.unwrap_or_default(),
            version: r.version.unwrap_or_default(),
            protocol: r.protocol.unwrap_or(d.protocol),
            account: r.account,
            new_account: r.new_account,
            headers: r.headers.unwrap_or(d.headers),
            no_responders: r.no_responders.unwrap_or(d.no_responders),
        })
    }
}

/// CONNECT's field names, as `RawOpts` reads them.
const FIELDS: [&str; 18] = [
    "verbose",
    "pedantic",
    "echo",
    "tls_required",
    "nkey",
    "jwt",
    "sig",
    "auth_token",
    "user",
    "pass",
    "name",
    "lang",
    "version",
    "protocol",
    "account",
    "new_account",
    "headers",
    "no_responders",
];

/// Renames keys that name a field in another case to the field's name,
/// in order, so that the last of them wins (Go's decoder assigns each in
/// turn).
fn fold_keys(v: serde_json::Value) -> serde_json::Value {
    let serde_json::Value::Object(m) = v else { return v };
    let mut out = serde_json::Map::new();
    for (k, val) in m {
        let key = FIELDS
            .iter()
            .find(|f| f.eq_ignore_ascii_case(&k))
            .map_or(k, |f| f.to_string());
        out.remove(&key);
        out.insert(key, val);
    }
    serde_json::Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_fields_in_any_case_as_in_go() {
        let o = ClientOpts::from_json(br#"{"Verbose":false,"PEDANTIC":false,"Name":"App"}"#).unwrap();
        assert!(!o.verbose && !o.pedantic);
        assert_eq!(o.name, "App");
        let o = ClientOpts::from_json(br#"{"verbose":true,"VERBOSE":false}"#).unwrap();
        assert!(!o.verbose, "the last wins");
    }

    #[test]
    fn duplicate_keys_and_invalid_utf8_read_as_go_reads_them() {
        let o = ClientOpts::from_json(br#"{"verbose":true,"verbose":false,"name":"a"}"#).unwrap();
        assert!(!o.verbose);
        let o = ClientOpts::from_json(b"{\"name\":\"a\xffb\"}").unwrap();
        assert_eq!(o.name, "a\u{fffd}b");
        assert!(ClientOpts::from_json(br#"{"verbose":"yes"}"#).is_none());
        assert!(ClientOpts::from_json(b"{").is_none());
    }

    #[test]
    fn defaults_apply_to_missing_fields() {
        let o = ClientOpts::from_json(b"{}").unwrap();
        assert!(o.verbose && o.pedantic && o.echo && !o.headers);
        let o = ClientOpts::from_json(br#"{"verbose":false,"echo":false,"headers":true,"x":1}"#).unwrap();
        assert!(!o.verbose && o.pedantic && !o.echo && o.headers);
        assert!(ClientOpts::from_json(b"{nope").is_none());
        let o = ClientOpts::from_json(br#"{"name":null,"verbose":null,"sig":null,"protocol":1}"#).unwrap();
        assert!(o.verbose && o.name.is_empty() && o.protocol == 1);
    }
}
