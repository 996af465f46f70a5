//! HTTP monitoring (`-m`, `http_port`, `http`): nats-server's endpoints
//! with its query parameters, built by `sys::endpoints` (the same documents
//! the `$SYS` services answer with), plus `/metrics` in Prometheus text.
//! Client test harnesses (nats-py) poll `/varz` to know the server is up.
//! It runs on its own thread, off the shards.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::control::Shared;
use crate::sys::endpoints::{self, ConnzOpts, SubszOpts};

/// The monitoring server.
pub struct Monitor {
    shared: Arc<Shared>,
}

/// Binds the monitoring listener and serves it on a thread.
pub fn start(shared: Arc<Shared>, host: &str, port: i32) -> std::io::Result<SocketAddr> {
    let port = if port < 0 { 0 } else { port as u16 };
    let listener = TcpListener::bind((host, port))?;
    let http = listener.local_addr()?;
    let m = Arc::new(Monitor { shared });
    std::thread::Builder::new()
        .name("petrel-monitor".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let m = m.clone();
                let _ = std::thread::Builder::new().name("petrel-http".into()).spawn(move || {
                    let _ = m.serve(conn);
                });
            }
        })?;
    Ok(http)
}

impl Monitor {
    fn serve(&self, mut s: TcpStream) -> std::io::Result<()> {
        let Some(req) = crate::http::read_request(&mut s, Duration::from_secs(5))? else {
            return Ok(());
        };
        let (method, query) = (req.method.as_str(), req.query.as_str());
        // Outside `http_base_path` nothing is served (an unknown path).
        let path = self
            .shared
            .current()
            .0
            .monitor_path(&req.path)
            .unwrap_or("\0")
            .to_string();
        let path = path.as_str();
        let json = |r: Result<serde_json::Value, String>| match r {
            Ok(v) => ("200 OK", "application/json", pretty(&v)),
            Err(e) => ("400 Bad Request", "text/plain; charset=utf-8", e),
        };
        let param = |k: &str| req.param(k).map(std::borrow::Cow::into_owned);
        let sh = &*self.shared;
        // Counted as nats-server counts them: once the query is understood,
        // before the document is built (so /varz sees its own request).
        let count = |endpoint: &'static str| {
            *sh.http_req_stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(endpoint)
                .or_insert(0) += 1;
        };
        let (status, ctype, body) = match (method, path) {
            ("GET" | "HEAD", "/connz") => json(ConnzOpts::from_query(query).and_then(|o| {
                count("/connz");
                endpoints::connz(sh, &o)
            })),
            ("GET" | "HEAD", "/varz") => {
                count("/varz");
                json(Ok(endpoints::varz(sh)))
            }
            ("GET" | "HEAD", "/subsz" | "/subscriptionsz") => json(SubszOpts::from_query(query).and_then(|o| {
                count("/subsz");
                endpoints::subsz(sh, &o)
            })),
            ("GET" | "HEAD", "/routez") => {
                count("/routez");
                json(Ok(endpoints::routez(sh)))
            }
            ("GET" | "HEAD", "/leafz") => {
                let subs = matches!(param("subs").as_deref(), Some("1" | "true" | "t" | "detail"));
                count("/leafz");
                json(Ok(endpoints::leafz(sh, subs, param("acc").as_deref())))
            }
            ("GET" | "HEAD", "/gatewayz") => {
                count("/gatewayz");
                json(Ok(endpoints::gatewayz(sh)))
            }
            ("GET" | "HEAD", "/jsz") => {
                count("/jsz");
                json(Ok(endpoints::jsz(sh)))
            }
            ("GET" | "HEAD", "/accountz") => {
                count("/accountz");
                json(endpoints::accountz(sh, param("acc").as_deref()))
            }
            ("GET" | "HEAD", "/accstatz") => {
                let unused = matches!(param("unused").as_deref(), Some("1" | "true" | "t"));
                let accs: Vec<String> = param("accounts")
                    .map(|a| a.split(',').map(str::to_string).collect())
                    .unwrap_or_default();
                count("/accstatz");
                json(Ok(endpoints::accstatz(sh, &accs, unused)))
            }
            ("GET" | "HEAD", "/healthz") => {
                count("/healthz");
                healthz(&req)
            }
            // nats-server's internal queues (petrel has none of Go's) and
            // JetStream's Raft groups (petrel has no JetStream).
            ("GET" | "HEAD", "/ipqueuesz") => ("200 OK", "application/json", "{}".to_string()),
            ("GET" | "HEAD", "/raftz") => (
                "404 Not Found",
                "text/plain; charset=utf-8",
                "No Raft nodes registered".to_string(),
            ),
            ("GET" | "HEAD", "/metrics") => ("200 OK", "text/plain; version=0.0.4", endpoints::metrics(sh)),
            ("GET" | "HEAD", "/") => {
                count("/");
                ("200 OK", "text/html; charset=utf-8", INDEX.to_string())
            }
            ("GET" | "HEAD", _) => (
                "404 Not Found",
                "text/plain; charset=utf-8",
                "404 page not found\n".to_string(),
            ),
            _ => (
                "405 Method Not Allowed",
                "text/plain; charset=utf-8",
                "method not allowed\n".to_string(),
            ),
        };
        crate::http::respond(
            &mut s,
            method,
            status,
            ctype,
            &[("Access-Control-Allow-Origin", "*")],
            body.as_bytes(),
        )
    }
}

/// `/healthz`: nats-server's checks of its query (booleans as Go's
/// `strconv.ParseBool` reads them, the error as its text), the document in
/// one line as nats-server writes it, `status_code` as the HTTP status,
/// and a warning for a failed check.
fn healthz(req: &crate::http::Request) -> (&'static str, &'static str, String) {
    let mut details = false;
    for key in [
        "js-enabled",
        "js-enabled-only",
        "js-server-only",
        "js-meta-only",
        "details",
    ] {
        let Some(v) = req.param(key) else { continue };
        let b = match crate::sys::go_query::boolean(key, &v) {
            Ok(b) => b,
            Err(text) => return ("400 Bad Request", "text/plain; charset=utf-8", text),
        };
        if key == "js-enabled" && b {
            crate::warn!("Healthcheck: js-enabled deprecated, use js-enabled-only instead");
        }
        if key == "details" {
            details = b;
        }
    }
    let text = |k: &str| req.param(k).map(|v| v.into_owned()).unwrap_or_default();
    let opts = endpoints::HealthzOpts {
        details,
        account: text("account"),
        stream: text("stream"),
        consumer: text("consumer"),
    };
    let mut v = endpoints::healthz(&opts);
    let code = v
        .as_object_mut()
        .and_then(|m| m.remove("status_code"))
        .and_then(|c| c.as_u64());
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        crate::warn!("Healthcheck failed: {e:?}");
    } else if let Some(n) = v.get("errors").and_then(|e| e.as_array()).map(Vec::len) {
        crate::warn!("Healthcheck failed: {n} errors");
    }
    let status = if code == Some(400) { "400 Bad Request" } else { "200 OK" };
    (status, "application/json", v.to_string())
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

const INDEX: &str = "<html><body><h1>petrel monitoring</h1>\
<a href=\"/varz\">/varz</a><br/><a href=\"/connz\">/connz</a><br/><a href=\"/subsz\">/subsz</a><br/>\
<a href=\"/routez\">/routez</a><br/><a href=\"/gatewayz\">/gatewayz</a><br/><a href=\"/leafz\">/leafz</a><br/>\
<a href=\"/accountz\">/accountz</a><br/><a href=\"/accstatz\">/accstatz</a><br/><a href=\"/jsz\">/jsz</a><br/>\
<a href=\"/healthz\">/healthz</a><br/><a href=\"/metrics\">/metrics</a></body></html>\n";
