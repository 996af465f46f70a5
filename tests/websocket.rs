//! WebSocket clients: async-nats over ws:// and wss://, raw frames (ping,
//! close, fragments, compression, masking errors), the HTTP upgrade's
//! refusals, the block's own authentication, and the same byte scripts
//! sent to nats-server and compared.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::ws::{client_frame, deflate, http_exchange, upgrade_request, Frame, WsRaw};
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(5);

/// The WebSocket port a server logged.
fn ws_port(p: &common::Proc) -> u16 {
    let line = p
        .log_lines("Listening for websocket clients on ")
        .pop()
        .expect("websocket listening line");
    line.rsplit(':').next().unwrap().trim().parse().unwrap()
}

fn ws_conf(block: &str, top: &str) -> PathBuf {
    common::jwt::write_conf(&format!(
        "{top}\nwebsocket {{\n  host: 127.0.0.1\n  port: -1\n  no_tls: true\n{block}\n}}\n"
    ))
}

fn start(block: &str, top: &str) -> (common::Proc, String) {
    let conf = ws_conf(block, top);
    let p = common::petrel(&["-c", conf.to_str().unwrap()]);
    let addr = format!("127.0.0.1:{}", ws_port(&p));
    (p, addr)
}

fn connected(addr: &str, connect: &str) -> WsRaw {
    let mut ws = WsRaw::open(addr, "");
    let info = ws.read_text_until("\r\n", WAIT);
    assert!(info.starts_with("INFO {"), "{info}");
    ws.send(format!("CONNECT {connect}\r\nPING\r\n").as_bytes());
    let reply = ws.read_text_until("PONG\r\n", WAIT);
    assert!(reply.ends_with("PONG\r\n"), "{reply}");
    ws
}

#[tokio::test]
async fn async_nats_over_websocket_pub_sub_and_request() {
    let (p, addr) = start("", "");
    let ws = async_nats::connect(format!("ws://{addr}")).await.unwrap();
    let tcp = async_nats::connect(p.url()).await.unwrap();
    let mut sub = ws.subscribe("greet.*").await.unwrap();
    ws.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    tcp.publish("greet.tcp", "from tcp".into()).await.unwrap();
    ws.publish("greet.ws", "from ws".into()).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = tokio::time::timeout(WAIT, sub.next()).await.unwrap().unwrap();
        got.push(String::from_utf8(m.payload.to_vec()).unwrap());
    }
    got.sort();
    assert_eq!(got, ["from tcp", "from ws"]);

    // A WebSocket service answering a TCP requester, and the other way round.
    let mut svc = ws.subscribe("svc.ws").await.unwrap();
    let responder = ws.clone();
    tokio::spawn(async move {
        while let Some(m) = svc.next().await {
            let mut body = b"ws:".to_vec();
            body.extend_from_slice(&m.payload);
            responder.publish(m.reply.unwrap(), body.into()).await.unwrap();
        }
    });
    let mut svc2 = tcp.subscribe("svc.tcp").await.unwrap();
    let responder2 = tcp.clone();
    tokio::spawn(async move {
        while let Some(m) = svc2.next().await {
            responder2.publish(m.reply.unwrap(), m.payload).await.unwrap();
        }
    });
    ws.flush().await.unwrap();
    tcp.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = tokio::time::timeout(WAIT, tcp.request("svc.ws", "hi".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&r.payload[..], b"ws:hi");
    let big = vec![b'z'; 200_000];
    let r = tokio::time::timeout(WAIT, ws.request("svc.tcp", big.clone().into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.payload.len(), big.len());

    // Monitoring tells WebSocket clients apart.
    let conf = ws_conf("", "http: 127.0.0.1:-1");
    drop(p);
    let p = common::petrel(&["-c", conf.to_str().unwrap()]);
    let http_port = p.monitor_port();
    let addr = format!("127.0.0.1:{}", ws_port(&p));
    let _c = async_nats::connect(format!("ws://{addr}")).await.unwrap();
    let connz: serde_json::Value = serde_json::from_str(&get(http_port, "/connz")).unwrap();
    assert_eq!(connz["connections"][0]["type"], "websocket", "{connz}");
    let varz: serde_json::Value = serde_json::from_str(&get(http_port, "/varz")).unwrap();
    assert_eq!(varz["websocket"]["port"], ws_port(&p), "{varz}");
    assert_eq!(varz["websocket"]["no_tls"], true);
}

fn get(port: u16, path: &str) -> String {
    let (status, body) = common::http_get(port, path);
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn info_names_the_websocket_listener_and_ports_file_lists_it() {
    let dir = common::jwt::temp_dir();
    let conf = ws_conf("", &format!("ports_file_dir: \"{}\"", dir.display()));
    let p = common::petrel(&["-c", conf.to_str().unwrap()]);
    let port = ws_port(&p);
    let addr = format!("127.0.0.1:{port}");
    let mut ws = WsRaw::open(&addr, "");
    let info = ws.read_text_until("\r\n", WAIT);
    let v: serde_json::Value = serde_json::from_str(info.trim_start_matches("INFO ").trim()).unwrap();
    assert_eq!(v["port"], port);
    assert_eq!(v["host"], "127.0.0.1");
    assert!(v.get("tls_required").is_none_or(|t| t == false));
    let ports = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().ends_with(".ports"))
        .expect("ports file");
    let body: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ports.path()).unwrap()).unwrap();
    assert_eq!(body["websocket"][0], format!("ws://127.0.0.1:{port}"));
}

#[test]
fn control_frames_fragments_and_text_frames() {
    let (_p, addr) = start("", "");
    let mut ws = connected(&addr, "{\"verbose\":false}");
    // Ping with a payload: a pong with the same payload.
    ws.send_raw(&client_frame(0x89, b"are you there"));
    let f = ws.frame(WAIT).unwrap();
    assert_eq!((f.opcode, f.payload.as_slice()), (10, &b"are you there"[..]));
    // A SUB and a PUB split over a text frame and continuation frames, a
    // ping in between.
    let mut bytes = client_frame(0x01, b"SUB frag 1\r\nPUB frag 5\r\nhel");
    bytes.extend(client_frame(0x89, b""));
    bytes.extend(client_frame(0x00, b"lo\r\n"));
    bytes.extend(client_frame(0x80, b"PING\r\n"));
    ws.send_raw(&bytes);
    let mut text = String::new();
    let mut pong_frames = 0;
    while !text.contains("PONG\r\n") {
        let f = ws.frame(WAIT).expect("frames");
        if f.opcode == 10 {
            pong_frames += 1;
        } else {
            text.push_str(&String::from_utf8_lossy(&f.payload));
        }
    }
    assert_eq!(pong_frames, 1);
    assert_eq!(text, "MSG frag 1 5\r\nhello\r\nPONG\r\n");
    // The client closes: the status is echoed and the connection ends.
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    ws.send_raw(&client_frame(0x88, &close));
    let frames = ws.frames_until_closed(WAIT);
    assert_eq!(frames.last().and_then(Frame::close), Some((1000, "bye".into())));
}

#[test]
fn compression_both_ways() {
    let (_p, addr) = start("compression: true", "");
    let mut ws = WsRaw::open(&addr, "Sec-WebSocket-Extensions: permessage-deflate\r\n");
    assert!(
        ws.response.contains(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        ),
        "{}",
        ws.response
    );
    ws.read_text_until("\r\n", WAIT);
    let payload = "compressible ".repeat(20);
    let ops = format!(
        "CONNECT {{\"verbose\":false}}\r\nSUB z 1\r\nPUB z {}\r\n{payload}\r\nPING\r\n",
        payload.len()
    );
    // A compressed message split over two frames (RSV1 on the first only).
    let z = deflate(ops.as_bytes());
    let (a, b) = z.split_at(z.len() / 2);
    let mut bytes = client_frame(0x42, a);
    bytes.extend(client_frame(0x80, b));
    ws.send_raw(&bytes);
    let mut compressed_seen = false;
    let mut text = String::new();
    while !text.contains("PONG\r\n") {
        let f = ws.frame(WAIT).expect("frames");
        compressed_seen |= f.rsv1;
        let p = if f.rsv1 {
            common::ws::inflate(&f.payload)
        } else {
            f.payload
        };
        text.push_str(&String::from_utf8_lossy(&p));
    }
    assert_eq!(text, format!("MSG z 1 {}\r\n{payload}\r\nPONG\r\n", payload.len()));
    assert!(compressed_seen, "a write above 64 bytes is compressed");

    // Not negotiated: a compressed frame is a protocol error.
    let mut plain = WsRaw::open(&addr, "");
    plain.read_text_until("\r\n", WAIT);
    plain.send_raw(&client_frame(0xc2, &deflate(b"PING\r\n")));
    let frames = plain.frames_until_closed(WAIT);
    assert_eq!(
        frames.last().and_then(Frame::close),
        Some((
            1002,
            "compressed frame received without negotiated permessage-deflate".into()
        ))
    );
}

/// What a server answers a script: the HTTP status line, then each frame
/// as text (data frames' NATS lines with INFO reduced to its name, close
/// frames as status and text).
fn script(addr: &str, extra_headers: &str, frames: &[Vec<u8>]) -> Vec<String> {
    let (head, sock) = http_exchange(addr, &upgrade_request(addr, extra_headers));
    let mut out = vec![head.lines().next().unwrap_or_default().to_string()];
    if !head.starts_with("HTTP/1.1 101") {
        return out;
    }
    let mut ws = WsRaw::from_parts(sock, head);
    for f in frames {
        ws.send_raw(f);
        std::thread::sleep(Duration::from_millis(30));
    }
    for f in ws.frames_until_closed(Duration::from_millis(800)) {
        match f.close() {
            Some((status, text)) => out.push(format!("CLOSE {status} {text}")),
            None if f.opcode == 10 => out.push(format!("PONG-FRAME {}", String::from_utf8_lossy(&f.payload))),
            None => {
                for line in String::from_utf8_lossy(&f.payload).split_inclusive("\r\n") {
                    out.push(if line.starts_with("INFO ") {
                        "INFO".into()
                    } else {
                        line.to_string()
                    });
                }
            }
        }
    }
    out
}

#[test]
fn same_scripts_as_nats_server() {
    let conf = ws_conf("", "");
    let petrel = common::petrel(&["-c", conf.to_str().unwrap()]);
    let nats = common::nats_server(&["-c", conf.to_str().unwrap()]);
    let p_addr = format!("127.0.0.1:{}", ws_port(&petrel));
    let n_addr = format!("127.0.0.1:{}", ws_port(&nats));
    let mut close_1001 = 1001u16.to_be_bytes().to_vec();
    close_1001.extend_from_slice(b"going");
    let mut bad_utf8 = 1000u16.to_be_bytes().to_vec();
    bad_utf8.push(0xff);
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "ping pong",
            vec![client_frame(0x82, b"CONNECT {}\r\nPING\r\n"), client_frame(0x89, b"x")],
        ),
        ("close echo", vec![client_frame(0x88, &close_1001)]),
        ("close without status", vec![client_frame(0x88, b"")]),
        ("close bad utf8", vec![client_frame(0x88, &bad_utf8)]),
        ("close one byte", vec![client_frame(0x88, b"x")]),
        ("unmasked", vec![vec![0x82, 0x06, b'P', b'I', b'N', b'G', b'\r', b'\n']]),
        ("rsv2", vec![client_frame(0xa2, b"PING\r\n")]),
        ("bad opcode", vec![client_frame(0x83, b"PING\r\n")]),
        ("stray continuation", vec![client_frame(0x80, b"PING\r\n")]),
        ("fragmented ping", vec![client_frame(0x09, b"")]),
        ("long ping", vec![client_frame(0x89, &[b'p'; 126])]),
        (
            "two starts",
            vec![client_frame(0x02, b"PI"), client_frame(0x82, b"NG\r\n")],
        ),
        ("parse error", vec![client_frame(0x82, b"CONNECT {}\r\nBOGUS\r\n")]),
        (
            "max payload",
            vec![client_frame(0x82, b"CONNECT {\"verbose\":false}\r\nPUB x 2000000\r\n")],
        ),
        (
            "verbose pub sub",
            vec![client_frame(
                0x81,
                b"CONNECT {\"verbose\":true}\r\nSUB a 1\r\nPUB a 2\r\nok\r\nPING\r\n",
            )],
        ),
    ];
    for (name, frames) in &cases {
        let a = script(&p_addr, "", frames);
        // nats-server queues its last -ERR and close frame when it closes a
        // WebSocket client but may shut the socket before they are written
        // (seen in about 1 run in 3 for each such case here); petrel always
        // sends them (RFC 6455 section 7.1.7). Take nats-server's fullest
        // answer of up to 4 tries; if it is still cut short, petrel's must
        // extend it and end in a close frame.
        let mut b = script(&n_addr, "", frames);
        for _ in 0..3 {
            if b == a || !a.last().is_some_and(|l| l.starts_with("CLOSE ")) {
                break;
            }
            let again = script(&n_addr, "", frames);
            if again.len() > b.len() {
                b = again;
            }
        }
        if b != a && a.last().is_some_and(|l| l.starts_with("CLOSE ")) && a.starts_with(&b) && b.len() >= 2 {
            eprintln!("case {name}: nats-server's answer was cut short (its close race): {b:?} vs {a:?}");
            continue;
        }
        assert_eq!(a, b, "case {name}: petrel (left) vs nats-server (right)");
    }
    // The leaf node endpoint without leaf nodes: upgraded, then closed.
    let leaf = |addr: &str| {
        let req = upgrade_request(addr, "").replacen("GET / ", "GET /leafnode ", 1);
        let (head, sock) = http_exchange(addr, &req);
        let mut ws = WsRaw::from_parts(sock, head.clone());
        let frames: Vec<String> = ws
            .frames_until_closed(Duration::from_millis(800))
            .iter()
            .map(|f| format!("{} {:?}", f.opcode, f.close()))
            .collect();
        (head.lines().next().unwrap_or_default().to_string(), frames)
    };
    assert_eq!(leaf(&p_addr), leaf(&n_addr), "leafnode endpoint");
    // Upgrade refusals: same status lines.
    let refusals = [
        "POST / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
    ];
    let mqtt = "GET /mqtt HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let mut refusals = refusals.to_vec();
    refusals.push(mqtt);
    for r in refusals {
        let (a, _) = http_exchange(&p_addr, r);
        let (b, _) = http_exchange(&n_addr, r);
        assert_eq!(a.lines().next(), b.lines().next(), "request {r:?}");
        assert!(a.contains("Sec-Websocket-Version: 13"), "{a}");
    }
}

#[test]
fn origins_are_checked() {
    let (_p, addr) = start("same_origin: true\n  allowed_origins: [\"http://127.0.0.1\"]", "");
    let (head, _) = http_exchange(&addr, &upgrade_request(&addr, "Origin: http://evil.example\r\n"));
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let port = addr.rsplit(':').next().unwrap();
    // Same origin but not in the list (the list names port 80).
    let (head, _) = http_exchange(
        &addr,
        &upgrade_request(&addr, &format!("Origin: http://127.0.0.1:{port}\r\n")),
    );
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    // No Origin at all (not a browser): accepted.
    WsRaw::open(&addr, "");
}

#[test]
fn websocket_block_authorization_cookies_and_no_auth_user() {
    // The block's token applies to WebSocket clients only.
    let (p, addr) = start(
        "authorization { token: \"ws-secret\" }\n  token_cookie: \"nats_token\"",
        "",
    );
    let mut ws = WsRaw::open(&addr, "");
    let info = ws.read_text_until("\r\n", WAIT);
    assert!(info.contains("\"auth_required\":true"), "{info}");
    ws.send(b"CONNECT {\"verbose\":false}\r\nPING\r\n");
    let reply = ws.read_text_until("Authorization Violation", WAIT);
    assert!(reply.contains("-ERR 'Authorization Violation'"), "{reply}");
    connected(&addr, "{\"verbose\":false,\"auth_token\":\"ws-secret\"}");
    // The cookie stands in for a token CONNECT leaves out.
    let mut ws = WsRaw::open(&addr, "Cookie: other=1; nats_token=ws-secret\r\n");
    ws.read_text_until("\r\n", WAIT);
    ws.send(b"CONNECT {\"verbose\":false}\r\nPING\r\n");
    assert!(ws.read_text_until("PONG\r\n", WAIT).ends_with("PONG\r\n"));
    // Plain NATS clients are not asked for it.
    let mut raw = common::raw::Raw::open(&p.addr());
    assert!(raw.exchange(b"CONNECT {}\r\nPING\r\n").text().contains("PONG"));

    // no_auth_user in the block: WebSocket clients without credentials are
    // that user (with its permissions); NATS clients must log in.
    let (p, addr) = start(
        "no_auth_user: web",
        "authorization { users: [ {user: web, password: pw, permissions: {publish: \"web.>\"}}, {user: admin, password: apw} ] }",
    );
    let mut ws = connected(&addr, "{\"verbose\":false}");
    ws.send(b"PUB admin.x 1\r\nx\r\nPING\r\n");
    let reply = ws.read_text_until("PONG\r\n", WAIT);
    assert!(
        reply.contains("Permissions Violation for Publish to \"admin.x\""),
        "{reply}"
    );
    let mut raw = common::raw::Raw::open(&p.addr());
    assert!(raw
        .exchange(b"CONNECT {}\r\nPING\r\n")
        .text()
        .contains("Authorization Violation"));
}

#[test]
fn bad_websocket_config_names_file_line_and_key() {
    let conf = common::jwt::write_conf("port: 4222\nwebsocket {\n  port: 8080\n}\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(["-t", "-c", conf.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("websocket requires TLS configuration"), "{err}");
    assert!(err.contains(&format!("{}:2", conf.display())), "{err}");
    let conf = common::jwt::write_conf("websocket {\n  no_tls: true\n  allowed_origins: [\"ftp://x\"]\n}\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(["-t", "-c", conf.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("allowed origins must be absolute URLs with http or https scheme"),
        "{err}"
    );
    // An integer authorization timeout is seconds, without a warning (which
    // `-t` would count as an error), on both servers.
    let conf = common::jwt::write_conf(
        "websocket {\n  no_tls: true\n  port: -1\n  authorization { token: x, timeout: 2 }\n}\n",
    );
    for bin in [env!("CARGO_BIN_EXE_petrel").into(), common::nats_server_bin()] {
        let out = std::process::Command::new(&bin)
            .args(["-t", "-c", conf.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{bin:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A fresh CA and a server certificate for 127.0.0.1 in `dir` (ca.pem,
/// server.pem, server-key.pem), made by rcgen here.
fn wss_pki(dir: &std::path::Path) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server-key.pem"), key.serialize_pem()).unwrap();
}

fn wss_conf_text(dir: &std::path::Path) -> String {
    format!(
        "websocket {{\n  host: 127.0.0.1\n  port: -1\n  tls {{ cert_file: \"{}\", key_file: \"{}\" }}\n}}\n",
        dir.join("server.pem").display(),
        dir.join("server-key.pem").display()
    )
}

async fn wss_client(dir: &std::path::Path, port: u16) -> Result<async_nats::Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::new()
        .add_root_certificates(dir.join("ca.pem"))
        .connection_timeout(Duration::from_secs(2))
        .connect(format!("wss://127.0.0.1:{port}"))
        .await
}

#[tokio::test]
async fn wss_certificate_reload_keeps_open_connections() {
    let (a, b) = (common::jwt::temp_dir(), common::jwt::temp_dir());
    wss_pki(&a);
    wss_pki(&b);
    let conf = common::jwt::write_conf(&wss_conf_text(&a));
    let p = common::petrel(&["-c", conf.to_str().unwrap()]);
    let port = ws_port(&p);
    let old = wss_client(&a, port).await.unwrap();
    std::fs::write(&conf, wss_conf_text(&b)).unwrap();
    unsafe { libc::kill(p.pid() as i32, libc::SIGHUP) };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let new = wss_client(&b, port)
        .await
        .expect("new connections get the new certificate");
    let mut sub = old.subscribe("reloaded").await.unwrap();
    old.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    new.publish("reloaded", "still here".into()).await.unwrap();
    let m = tokio::time::timeout(WAIT, sub.next()).await.unwrap().unwrap();
    assert_eq!(&m.payload[..], b"still here");
    assert!(
        wss_client(&a, port).await.is_err(),
        "the old CA no longer verifies the server"
    );
    // Turning wss off is not a reload.
    std::fs::write(&conf, "websocket {\n  host: 127.0.0.1\n  port: -1\n  no_tls: true\n}\n").unwrap();
    unsafe { libc::kill(p.pid() as i32, libc::SIGHUP) };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!p.log_lines("websocket_tls_enabled").is_empty(), "refused by name");
    assert!(wss_client(&b, port).await.is_ok());
}

#[tokio::test]
async fn wss_with_async_nats() {
    let dir = common::jwt::temp_dir();
    wss_pki(&dir);
    let conf = common::jwt::write_conf(&wss_conf_text(&dir));
    let p = common::petrel(&["-c", conf.to_str().unwrap()]);
    let line = p.log_lines("Listening for websocket clients on ").pop().unwrap();
    assert!(line.contains("wss://127.0.0.1:"), "{line}");
    let port = ws_port(&p);
    let c = async_nats::ConnectOptions::new()
        .add_root_certificates(dir.join("ca.pem"))
        .connect(format!("wss://127.0.0.1:{port}"))
        .await
        .unwrap();
    let mut sub = c.subscribe("secure.ws").await.unwrap();
    c.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.publish("secure.ws", "over wss".into()).await.unwrap();
    let m = tokio::time::timeout(WAIT, sub.next()).await.unwrap().unwrap();
    assert_eq!(&m.payload[..], b"over wss");
    // A plain ws client on the wss port never gets an INFO.
    let (head, _) = http_exchange(&format!("127.0.0.1:{port}"), &upgrade_request("127.0.0.1", ""));
    assert!(!head.starts_with("HTTP/1.1 101"), "{head}");
}

#[test]
fn jwt_connection_types_and_jwt_cookie() {
    use common::jwt::{fixture_accounts, memory_conf, raw_jwt_connect, user, user_nats};
    let b = nkeys::KeyPair::new_account();
    let b_seed = b.seed().unwrap();
    let claims = serde_json::json!({"sub": b.public_key(), "name": "B", "iat": common::jwt::now() - 10,
        "nats": {"type": "account", "version": 2, "limits": {"conn": -1, "subs": -1, "payload": -1}}});
    let b_jwt = petrel::auth::jwt::encode_signed(&claims, &common::jwt::seed("operator_sk")).unwrap();
    let mut accounts = fixture_accounts();
    accounts.push((b.public_key(), b_jwt));
    let base = std::fs::read_to_string(memory_conf(&accounts)).unwrap();
    let conf = common::jwt::write_conf(&format!(
        "{base}\nwebsocket {{\n  host: 127.0.0.1\n  port: -1\n  no_tls: true\n  jwt_cookie: \"jwt\"\n}}\n"
    ));
    let p = common::petrel(&["-c", conf.to_str().unwrap()]);
    let addr = format!("127.0.0.1:{}", ws_port(&p));
    let mut n = user_nats();
    n["allowed_connection_types"] = serde_json::json!(["WEBSOCKET"]);
    n["bearer_token"] = serde_json::json!(true);
    let (j, k) = user(&b_seed, "web-only", n, serde_json::json!({}));
    let (_, text, closed) = raw_jwt_connect(&p.addr(), &j, &k);
    assert!(closed && text.contains("Authorization Violation"), "over TCP: {text}");
    // Over WebSocket, with the JWT in the cookie only (a bearer token: no
    // signature needed).
    let mut ws = WsRaw::open(&addr, &format!("Cookie: jwt={j}\r\n"));
    ws.read_text_until("\r\n", WAIT);
    ws.send(b"CONNECT {\"verbose\":false}\r\nPING\r\n");
    let reply = ws.read_text_until("PONG\r\n", WAIT);
    assert!(reply.ends_with("PONG\r\n") && !reply.contains("-ERR"), "{reply}");
}

/// A configured user's `allowed_connection_types` tell the listeners apart.
#[test]
fn config_users_connection_types() {
    let (p, addr) = start(
        "",
        "authorization { users: [ {user: web, password: pw, allowed_connection_types: [\"WEBSOCKET\"]}, {user: tcp, password: pw, allowed_connection_types: [\"STANDARD\"]} ] }",
    );
    connected(&addr, "{\"verbose\":false,\"user\":\"web\",\"pass\":\"pw\"}");
    let mut ws = WsRaw::open(&addr, "");
    ws.read_text_until("\r\n", WAIT);
    ws.send(b"CONNECT {\"verbose\":false,\"user\":\"tcp\",\"pass\":\"pw\"}\r\nPING\r\n");
    assert!(ws
        .read_text_until("Authorization Violation", WAIT)
        .contains("Authorization Violation"));
    let mut raw = common::raw::Raw::open(&p.addr());
    let t = raw
        .exchange(b"CONNECT {\"verbose\":false,\"user\":\"web\",\"pass\":\"pw\"}\r\nPING\r\n")
        .text();
    assert!(t.contains("Authorization Violation"), "{t}");
    let mut raw = common::raw::Raw::open(&p.addr());
    let t = raw
        .exchange(b"CONNECT {\"verbose\":false,\"user\":\"tcp\",\"pass\":\"pw\"}\r\nPING\r\n")
        .text();
    assert!(t.contains("PONG"), "{t}");
    let bad = common::jwt::write_conf(
        "authorization { users: [ {user: a, password: b, allowed_connection_types: [\"CARRIER_PIGEON\"]} ] }\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(["-t", "-c", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown connection type \"CARRIER_PIGEON\""));
}
