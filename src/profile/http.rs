//! `prof_port` / `--profile`: Go's `/debug/pprof` handlers, so
//! `go tool pprof http://host:port/debug/pprof/heap` works against petrel.
//! Its own thread, off the shards.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// The longest `/debug/pprof/profile?seconds=N` (Go's default is 30).
const MAX_HTTP_CPU: Duration = Duration::from_secs(120);

/// Binds the listener and serves it on a thread.
pub fn start(host: &str, port: i32) -> std::io::Result<SocketAddr> {
    let port = if port < 0 { 0 } else { port as u16 };
    let listener = TcpListener::bind((host, port))?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new().name("petrel-pprof".into()).spawn(move || {
        for conn in listener.incoming().flatten() {
            let _ = std::thread::Builder::new()
                .name("petrel-pprof-req".into())
                .spawn(move || serve(conn));
        }
    })?;
    Ok(addr)
}

fn serve(mut s: TcpStream) -> std::io::Result<()> {
    let Some(req) = crate::http::read_request(&mut s, Duration::from_secs(5))? else {
        return Ok(());
    };
    let path = req.path.as_str();
    let param = |k: &str| req.param(k).and_then(|v| v.parse::<i64>().ok());
    let debug = param("debug").unwrap_or(0);
    let (status, ctype, body): (&str, &str, Vec<u8>) = match path.trim_end_matches('/') {
        "/debug/pprof" => (
            "200 OK",
            "text/html; charset=utf-8",
            b"<html><body>/debug/pprof/: <a href=heap>heap</a> <a href=allocs>allocs</a> \
              <a href=profile>profile</a> <a href=goroutine>goroutine</a> <a href=threadcreate>threadcreate</a>\
              </body></html>\n"
                .to_vec(),
        ),
        "/debug/pprof/profile" => {
            let secs = param("seconds").unwrap_or(30).max(1) as u64;
            let d = Duration::from_secs(secs).min(MAX_HTTP_CPU);
            let profile = super::record_cpu(d).map(|p| super::encode_gz(&p));
            super::release_memory();
            match profile {
                Ok(b) => ("200 OK", "application/octet-stream", b),
                Err(e) => (
                    "500 Internal Server Error",
                    "text/plain; charset=utf-8",
                    e.to_string().into_bytes(),
                ),
            }
        }
        p if p.starts_with("/debug/pprof/") => {
            let name = &p["/debug/pprof/".len()..];
            match super::profile(name, debug, Duration::ZERO) {
                Ok(b) if debug > 0 => ("200 OK", "text/plain; charset=utf-8", b),
                Ok(b) => ("200 OK", "application/octet-stream", b),
                Err(super::ProfileError::NotFound(_)) => (
                    "404 Not Found",
                    "text/plain; charset=utf-8",
                    b"Unknown profile\n".to_vec(),
                ),
                Err(e) => (
                    "500 Internal Server Error",
                    "text/plain; charset=utf-8",
                    e.to_string().into_bytes(),
                ),
            }
        }
        _ => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            b"404 page not found\n".to_vec(),
        ),
    };
    crate::http::respond(&mut s, &req.method, status, ctype, &[], &body)
}
