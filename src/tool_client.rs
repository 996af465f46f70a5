//! The blocking NATS connection petrel's own commands use (`petrel
//! profile`, the account server's notifications): connect, read INFO,
//! authenticate in CONNECT. Raw protocol over std sockets; no runtime.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use serde_json::{json, Value};

/// How a tool authenticates.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// A user JWT and its seed (from a creds file).
    pub jwt: Option<(String, String)>,
    /// User and password.
    pub user: Option<(String, String)>,
}

/// An open connection: the reader, the writer, and the server's INFO.
pub struct ToolConn {
    /// Buffered reads of the server's lines.
    pub reader: BufReader<TcpStream>,
    /// Where the tool writes its protocol.
    pub writer: TcpStream,
    /// The INFO the server sent.
    pub info: Value,
}

/// Connects to `url` (`nats://host:port` or `host:port`), reads INFO and
/// sends CONNECT as `name` with `creds`. Reads time out after 5 s until
/// the caller sets otherwise. Nothing is awaited after CONNECT:
/// the caller's next PING round trip shows whether it was accepted.
pub fn connect(url: &str, name: &str, creds: &Credentials) -> Result<ToolConn, String> {
    let addr = url.trim_start_matches("nats://").trim_end_matches('/').to_string();
    let s = TcpStream::connect(&addr).map_err(|e| format!("{addr}: {e}"))?;
    // A server that accepts and says nothing must not hang a tool.
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    let info: Value =
        serde_json::from_str(line.trim_start_matches("INFO ").trim()).map_err(|e| format!("INFO: {e}"))?;
    let mut connect = json!({"verbose": false, "pedantic": false, "name": name, "protocol": 1});
    if let Some((jwt, seed)) = &creds.jwt {
        let nonce = info["nonce"].as_str().unwrap_or_default();
        connect["jwt"] = json!(jwt);
        connect["sig"] = json!(crate::auth::jwt::sign_nonce(seed, nonce.as_bytes()).map_err(|e| e.to_string())?);
    }
    if let Some((user, pass)) = &creds.user {
        connect["user"] = json!(user);
        connect["pass"] = json!(pass);
    }
    let mut writer = s;
    write!(writer, "CONNECT {connect}\r\n").map_err(|e| e.to_string())?;
    Ok(ToolConn { reader, writer, info })
}
