//! `petrel account-server`: an HTTP account server with the API `nsc` and
//! the URL resolver use (nats-account-server's `/jwt/v1` routes). It
//! stores pushed account JWTs in a directory (atomic writes), checks them
//! against the operator, and tells running servers about updates on
//! `$SYS.ACCOUNT.<id>.CLAIMS.UPDATE` through a system user. With `--nsc` it
//! serves an `nsc` store directory read-only instead.

use std::io::{BufRead, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::jwt;
use crate::auth::store::DirStore;

/// The command's usage.
pub const USAGE: &str = "\
Usage: petrel account-server [options]

    --operator <file>   the operator JWT (accounts must be signed by it or its signing keys)
    --dir <dir>         where account JWTs are stored (writable mode)
    --nsc <dir>         serve an nsc operator directory read-only (~/.nsc/nats/<operator>)
    --hp <host:port>    listen address (default 127.0.0.1:9090; port 0 picks one)
    --nats <url>        notify this server of updates (nats://host:port)
    --creds <file>      system account user creds for the notifications
    -h, --help          this text
";

/// Settings.
#[derive(Debug, Clone, Default)]
pub struct Config {
    operator: Option<PathBuf>,
    dir: Option<PathBuf>,
    nsc: Option<PathBuf>,
    listen: String,
    nats: Option<String>,
    creds: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Option<Config>, String> {
    let mut c = Config {
        listen: "127.0.0.1:9090".into(),
        ..Default::default()
    };
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].trim_start_matches('-');
        if flag == "h" || flag == "help" {
            return Ok(None);
        }
        let v = args
            .get(i + 1)
            .cloned()
            .ok_or_else(|| format!("flag needs a value: {}", args[i]))?;
        match flag {
            "operator" => c.operator = Some(v.into()),
            "dir" => c.dir = Some(v.into()),
            "nsc" => c.nsc = Some(v.into()),
            "hp" => c.listen = v,
            "nats" => c.nats = Some(v),
            "creds" => c.creds = Some(v.into()),
            other => return Err(format!("unknown flag -{other}")),
        }
        i += 2;
    }
    Ok(Some(c))
}

/// Where the JWTs come from.
enum Source {
    /// A writable store checked against the operator.
    Store { store: DirStore, operator: String },
    /// An nsc operator directory, read-only.
    Nsc(PathBuf),
}

struct Server {
    source: Source,
    trusted: Vec<String>,
    nats: Option<String>,
    creds: Option<(String, String)>,
}

/// Runs the account server (until killed); returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let cfg = match parse(args) {
        Ok(Some(c)) => c,
        Ok(None) => {
            print!("{USAGE}");
            return 0;
        }
        Err(e) => {
            eprintln!("petrel account-server: {e}\n\n{USAGE}");
            return 2;
        }
    };
    match run(cfg) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("petrel account-server: {e}");
            1
        }
    }
}

fn read_jwt_file(p: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    jwt::extract_jwt(&text)
        .map(str::to_string)
        .ok_or_else(|| format!("{}: no JWT found", p.display()))
}

/// The operator JWT of an nsc operator directory (`<dir>/<name>.jwt`).
fn nsc_operator(dir: &Path) -> Result<String, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "jwt") {
            let t = read_jwt_file(&p)?;
            if jwt::decode_operator(&t).is_ok() {
                return Ok(t);
            }
        }
    }
    Err(format!("{}: no operator JWT", dir.display()))
}

/// The account JWTs of an nsc operator directory
/// (`<dir>/accounts/<name>/<name>.jwt`), read afresh each time.
fn nsc_accounts(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir.join("accounts")) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Ok(t) = read_jwt_file(&e.path().join(format!("{name}.jwt"))) {
            if let Ok(c) = jwt::decode_account(&t) {
                out.push((c.sub, t));
            }
        }
    }
    out
}

fn run(cfg: Config) -> Result<(), String> {
    let (source, operator) = match (&cfg.nsc, &cfg.dir) {
        (Some(nsc), _) => (Source::Nsc(nsc.clone()), nsc_operator(nsc)?),
        (None, Some(dir)) => {
            let op_path = cfg.operator.as_ref().ok_or("--operator is required with --dir")?;
            let operator = read_jwt_file(op_path)?;
            let store = DirStore::open(dir, 0).map_err(|e| format!("{}: {e}", dir.display()))?;
            (
                Source::Store {
                    store,
                    operator: operator.clone(),
                },
                operator,
            )
        }
        (None, None) => return Err("one of --dir or --nsc is required".into()),
    };
    let op = jwt::decode_operator(&operator).map_err(|e| format!("operator JWT: {e}"))?;
    let mut trusted = op.nats.signing_keys.clone();
    if !op.nats.strict_signing_key_usage {
        trusted.push(op.sub.clone());
    }
    if op.nats.account_server_url.is_empty() {
        eprintln!("[WRN] the operator JWT has no account_server_url: nsc needs --account-jwt-server-url");
    }
    let creds = match &cfg.creds {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            Some(jwt::parse_creds(&text).map_err(|e| format!("{}: {e}", p.display()))?)
        }
        None => None,
    };
    if cfg.nats.is_some() && creds.is_none() {
        eprintln!("[WRN] --nats without --creds: notifications are sent without credentials");
    }
    let listener = TcpListener::bind(&cfg.listen).map_err(|e| format!("listen {}: {e}", cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!("[INF] Listening on http://{addr}/jwt/v1");
    let server = Arc::new(Server {
        source,
        trusted,
        nats: cfg.nats.clone(),
        creds,
    });
    for conn in listener.incoming().flatten() {
        let s = server.clone();
        std::thread::spawn(move || {
            let _ = s.serve(conn);
        });
    }
    Ok(())
}

struct Response {
    status: &'static str,
    ctype: &'static str,
    body: String,
    etag: Option<String>,
}

fn text(status: &'static str, body: impl Into<String>) -> Response {
    Response {
        status,
        ctype: "text/plain; charset=utf-8",
        body: body.into(),
        etag: None,
    }
}

impl Server {
    fn serve(&self, mut s: TcpStream) -> std::io::Result<()> {
        let Some(req) = crate::http::read_request(&mut s, Duration::from_secs(10))? else {
            return Ok(());
        };
        let r = self.route(&req.method, &req.path, &req.body);
        let etag = r.etag.map(|e| format!("\"{e}\""));
        let headers: Vec<(&str, &str)> = etag.iter().map(|e| ("ETag", e.as_str())).collect();
        crate::http::respond(&mut s, &req.method, r.status, r.ctype, &headers, r.body.as_bytes())
    }

    fn operator_jwt(&self) -> Option<String> {
        match &self.source {
            Source::Store { operator, .. } => Some(operator.clone()),
            Source::Nsc(dir) => nsc_operator(dir).ok(),
        }
    }

    fn account(&self, key: &str) -> Option<String> {
        match &self.source {
            Source::Store { store, .. } => store.get(key),
            Source::Nsc(dir) => nsc_accounts(dir).into_iter().find(|(k, _)| k == key).map(|(_, j)| j),
        }
    }

    fn route(&self, method: &str, path: &str, body: &[u8]) -> Response {
        let path = path.trim_end_matches('/');
        match (method, path) {
            ("GET" | "HEAD", "/healthz") => Response {
                status: "200 OK",
                ctype: "application/json",
                body: "{\"status\":\"ok\"}".into(),
                etag: None,
            },
            ("GET" | "HEAD", "/jwt/v1/help") => text("200 OK", USAGE),
            // The start-up probe of nats-server's URL resolver.
            ("GET" | "HEAD", "/jwt/v1/accounts") => text("200 OK", ""),
            ("GET" | "HEAD", "/jwt/v1/operator") => match self.operator_jwt() {
                Some(j) => Response {
                    status: "200 OK",
                    ctype: "application/jwt",
                    body: j,
                    etag: None,
                },
                None => text("404 Not Found", "no operator"),
            },
            ("GET" | "HEAD", p) if p.starts_with("/jwt/v1/accounts/") => {
                let key = &p["/jwt/v1/accounts/".len()..];
                match self.account(key) {
                    Some(j) => Response {
                        status: "200 OK",
                        ctype: "application/jwt",
                        etag: jwt::decode_account(&j).ok().map(|c| c.jti),
                        body: j,
                    },
                    None => text("404 Not Found", format!("account {key} not found")),
                }
            }
            ("POST", p) if p.starts_with("/jwt/v1/accounts/") => {
                let key = &p["/jwt/v1/accounts/".len()..];
                self.push(key, &String::from_utf8_lossy(body))
            }
            ("GET" | "HEAD", _) => text("404 Not Found", "not found"),
            _ => text("405 Method Not Allowed", "method not allowed"),
        }
    }

    /// An `nsc push`: checks the JWT against the operator and the stored
    /// one, stores it and notifies the servers.
    fn push(&self, key: &str, body: &str) -> Response {
        let Source::Store { store, .. } = &self.source else {
            return text("405 Method Not Allowed", "this account server is read-only (--nsc)");
        };
        let token = body.trim();
        let claims = match jwt::decode_account(token) {
            Ok(c) => c,
            Err(e) => return text("400 Bad Request", format!("bad account JWT: {e}")),
        };
        if claims.sub != key {
            return text(
                "400 Bad Request",
                format!("JWT subject {} does not match {key}", claims.sub),
            );
        }
        if !self.trusted.contains(&claims.iss) {
            return text(
                "400 Bad Request",
                format!(
                    "account JWT issuer {} is not the operator or one of its signing keys",
                    claims.iss
                ),
            );
        }
        if let Err(e) = claims.check_time(unix_now()) {
            return text("400 Bad Request", format!("account JWT: {e}"));
        }
        if let Some(old) = store.get(key).and_then(|o| jwt::decode_account(&o).ok()) {
            if old.iat > claims.iat {
                return text("409 Conflict", "an account JWT newer than this one is stored");
            }
        }
        if let Err(e) = store.put(key, token) {
            return text("500 Internal Server Error", e.to_string());
        }
        if let Some(url) = &self.nats {
            if let Err(e) = notify(url, self.creds.as_ref(), key, token) {
                eprintln!("[WRN] could not notify {url} of {key}: {e}");
            }
        }
        text("200 OK", format!("Success! - updated {key}"))
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Publishes `$SYS.ACCOUNT.<key>.CLAIMS.UPDATE` on a NATS server as the
/// system user of `creds`, and waits for the server's PONG.
pub fn notify(url: &str, creds: Option<&(String, String)>, key: &str, token: &str) -> Result<(), String> {
    let creds = crate::tool_client::Credentials {
        jwt: creds.cloned(),
        user: None,
    };
    let c = crate::tool_client::connect(url, "petrel account-server", &creds)?;
    let (mut rd, mut w) = (c.reader, c.writer);
    let msg = format!(
        "PUB $SYS.ACCOUNT.{key}.CLAIMS.UPDATE {}\r\n{token}\r\nPING\r\n",
        token.len()
    );
    w.write_all(msg.as_bytes()).map_err(|e| e.to_string())?;
    loop {
        let mut line = String::new();
        if rd.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("connection closed".into());
        }
        if line.starts_with("PONG") {
            return Ok(());
        }
        if line.starts_with("-ERR") {
            return Err(line.trim().to_string());
        }
    }
}
