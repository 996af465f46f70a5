//! Client TLS: async-nats over TLS (server-only, mutual, handshake_first),
//! INFO's TLS fields, and a plain client on a TLS server. Certificates are
//! made by the test (rcgen) and never checked in.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;

use common::pki::Pki;

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate.
fn pki() -> Pki {
    let p = Pki::new();
    p.issue(&["127.0.0.1", "localhost"], "petrel", "server");
    p.issue(&["client"], "client", "client");
    p
}

fn tls_conf(p: &Pki, extra: &str) -> PathBuf {
    common::jwt::write_conf(&format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  timeout: 1\n{extra}\n}}\n",
        p.path("server.pem").display(),
        p.path("server-key.pem").display(),
        p.path("ca.pem").display()
    ))
}

async fn pubsub(c: &async_nats::Client) {
    let mut sub = c.subscribe("secure").await.unwrap();
    c.flush().await.unwrap();
    c.publish("secure", "over tls".into()).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&m.payload[..], b"over tls");
    let responder = c.clone();
    let mut svc = c.subscribe("svc").await.unwrap();
    tokio::spawn(async move {
        if let Some(m) = svc.next().await {
            responder.publish(m.reply.unwrap(), "pong".into()).await.unwrap();
        }
    });
    c.flush().await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), c.request("svc", "ping".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&r.payload[..], b"pong");
}

/// async-nats options that require TLS and trust `p`'s CA.
fn tls_opts(p: &Pki) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::new()
        .add_root_certificates(ca(p))
        .require_tls(true)
}

fn ca(p: &Pki) -> PathBuf {
    p.path("ca.pem")
}

#[tokio::test]
async fn async_nats_over_tls() {
    let p = pki();
    let s = common::petrel(&["-c", tls_conf(&p, "").to_str().unwrap()]);
    let mut raw = common::raw::Raw::open(&s.addr());
    assert_eq!(raw.info()["tls_required"], serde_json::json!(true));
    // A plain client's CONNECT is not a TLS handshake: the server closes.
    let r = raw.exchange(b"CONNECT {}\r\nPING\r\n");
    assert!(r.closed, "plain client refused: {:?}", r.text());
    let c = tls_opts(&p).connect(s.url()).await.unwrap();
    pubsub(&c).await;
    // Without trusting the CA the client refuses the server.
    assert!(async_nats::ConnectOptions::new()
        .require_tls(true)
        .connection_timeout(Duration::from_secs(2))
        .connect(s.url())
        .await
        .is_err());
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate() {
    let p = pki();
    let s = common::petrel(&["-c", tls_conf(&p, "  verify: true").to_str().unwrap()]);
    let mut raw = common::raw::Raw::open(&s.addr());
    assert_eq!(raw.info()["tls_verify"], serde_json::json!(true));
    drop(raw.exchange(b""));
    let c = async_nats::ConnectOptions::new()
        .add_root_certificates(ca(&p))
        .add_client_certificate(p.path("client.pem"), p.path("client-key.pem"))
        .require_tls(true)
        .connect(s.url())
        .await
        .unwrap();
    pubsub(&c).await;
    let without = tls_opts(&p)
        .connection_timeout(Duration::from_secs(2))
        .connect(s.url())
        .await;
    assert!(without.is_err(), "no client certificate, no connection");
}

#[tokio::test]
async fn handshake_first() {
    let p = pki();
    let s = common::petrel(&["-c", tls_conf(&p, "  handshake_first: true").to_str().unwrap()]);
    let c = tls_opts(&p).tls_first().connect(s.url()).await.unwrap();
    pubsub(&c).await;
}

/// The fallback form: TLS-first clients start at once; a client that sends
/// nothing within the delay gets INFO in the clear and then starts TLS, as
/// with nats-server. Both servers are asked the same.
#[tokio::test]
async fn handshake_first_fallback_delay() {
    let p = pki();
    let conf = tls_conf(&p, "  handshake_first: \"300ms\"");
    for s in [
        common::petrel(&["-c", conf.to_str().unwrap()]),
        common::nats_server(&["-c", conf.to_str().unwrap()]),
    ] {
        let first = tls_opts(&p).tls_first().connect(s.url()).await.unwrap();
        pubsub(&first).await;
        let t0 = std::time::Instant::now();
        let raw = common::raw::Raw::open(&s.addr());
        let info = raw.info();
        let waited = t0.elapsed();
        assert_eq!(info["tls_required"], serde_json::json!(true), "{info}");
        assert!(
            waited >= Duration::from_millis(250),
            "INFO only after the delay: {waited:?}"
        );
        let after_info = tls_opts(&p).connect(s.url()).await.unwrap();
        pubsub(&after_info).await;
    }
}

#[test]
fn tls_flags_and_bad_files() {
    let p = pki();
    let s = common::petrel(&[
        "--tls",
        "--tlscert",
        p.path("server.pem").to_str().unwrap(),
        "--tlskey",
        p.path("server-key.pem").to_str().unwrap(),
    ]);
    let raw = common::raw::Raw::open(&s.addr());
    assert_eq!(raw.info()["tls_required"], serde_json::json!(true));
    assert!(!s.log_lines("TLS required for client connections").is_empty());
    let missing: &Path = &p.path("nope.pem");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args([
            "-p",
            "-1",
            "--tlscert",
            missing.to_str().unwrap(),
            "--tlskey",
            missing.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.pem"));
}

#[tokio::test]
async fn certificate_reload_keeps_open_connections() {
    let (a, b) = (pki(), pki());
    let conf = tls_conf(&a, "");
    let s = common::petrel(&["-c", conf.to_str().unwrap()]);
    let old = async_nats::ConnectOptions::new()
        .add_root_certificates(ca(&a))
        .require_tls(true)
        .connect(s.url())
        .await
        .unwrap();
    // New certificates from another CA, then SIGHUP.
    std::fs::copy(tls_conf(&b, ""), &conf).unwrap();
    unsafe { libc::kill(s.pid() as i32, libc::SIGHUP) };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let new = async_nats::ConnectOptions::new()
        .add_root_certificates(ca(&b))
        .require_tls(true)
        .connect(s.url())
        .await
        .expect("new connections get the new certificate");
    pubsub(&new).await;
    pubsub(&old).await;
    assert!(
        async_nats::ConnectOptions::new()
            .add_root_certificates(ca(&a))
            .require_tls(true)
            .connection_timeout(Duration::from_secs(2))
            .connect(s.url())
            .await
            .is_err(),
        "the old CA no longer verifies the server"
    );
}

/// async-nats over TLS to `s`, presenting the client certificate `name`
/// of `p` (`<name>.pem`, `<name>-key.pem`).
fn connect_with_cert(
    p: &Pki,
    s: &common::Proc,
    name: &str,
) -> impl std::future::Future<Output = Result<async_nats::Client, async_nats::ConnectError>> {
    let (cert, key) = (p.path(&format!("{name}.pem")), p.path(&format!("{name}-key.pem")));
    let url = s.url();
    let root = ca(p);
    async move {
        async_nats::ConnectOptions::new()
            .add_root_certificates(root)
            .add_client_certificate(cert, key)
            .require_tls(true)
            .connection_timeout(Duration::from_secs(2))
            .connect(url)
            .await
    }
}

/// A client certificate for `cn`, with `email` as an email SAN when given.
/// Returns its `pinned_certs` entry: hex SHA-256 of the key's
/// SubjectPublicKeyInfo, computed from the key (the server computes it
/// from the certificate).
fn client_cert(p: &Pki, file: &str, cn: &str, email: Option<&str>) -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    if let Some(e) = email {
        params
            .subject_alt_names
            .push(rcgen::SanType::Rfc822Name(e.try_into().unwrap()));
    }
    p.issue_params(params, file)
}

#[tokio::test]
async fn verify_and_map_selects_the_user_and_its_permissions() {
    let p = pki();
    client_cert(&p, "alice", "alice", Some("alice@example.com"));
    client_cert(&p, "bob", "bob", None);
    client_cert(&p, "mallory", "mallory", Some("mallory@example.com"));
    let conf = common::jwt::write_conf(&format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify_and_map: true\n}}\n\
         authorization {{ users = [\n  {{user: \"alice@example.com\", permissions: {{publish: \"allowed.>\", subscribe: \">\"}}}}\n  {{user: \"CN=bob\"}}\n] }}\n",
        p.path("server.pem").display(),
        p.path("server-key.pem").display(),
        ca(&p).display()
    ));
    let s = common::petrel(&["-c", conf.to_str().unwrap()]);
    let connect = |name: &str| connect_with_cert(&p, &s, name);
    // alice: mapped by her email address, with her permissions.
    let alice = connect("alice").await.expect("alice is mapped");
    let mut sub = alice.subscribe(">").await.unwrap();
    alice.flush().await.unwrap();
    alice.publish("denied.x", "no".into()).await.unwrap();
    alice.publish("allowed.x", "yes".into()).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.subject.as_str(), "allowed.x", "the denied publish never arrived");
    // bob: mapped by his certificate's subject.
    let bob = connect("bob").await.expect("bob is mapped by subject");
    bob.flush().await.unwrap();
    // mallory's certificate is valid but names no user.
    assert!(connect("mallory").await.is_err(), "an unmapped certificate is refused");
}

/// A TLS client built with rustls directly, so a test chooses exactly the
/// versions, suites and groups it offers.
struct TlsClient {
    conn: rustls::ClientConnection,
    tcp: std::net::TcpStream,
}

/// Reads the INFO line the server sends in the clear, byte by byte so no
/// TLS bytes are consumed.
fn read_info(tcp: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while tcp.read(&mut b).unwrap_or(0) == 1 {
        line.push(b[0]);
        if b[0] == b'\n' {
            break;
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// Connects, reads INFO and completes a TLS handshake offering what
/// `provider` and `versions` allow; `Err` with rustls' reason when the
/// server refuses.
fn rustls_client(
    p: &Pki,
    addr: &str,
    provider: rustls::crypto::CryptoProvider,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<TlsClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &std::fs::read(ca(p)).unwrap()[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let info = read_info(&mut tcp);
    assert!(info.starts_with("INFO "), "{info:?}");
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    Ok(TlsClient { conn, tcp })
}

impl TlsClient {
    fn suite(&self) -> rustls::CipherSuite {
        self.conn.negotiated_cipher_suite().unwrap().suite()
    }

    fn version(&self) -> rustls::ProtocolVersion {
        self.conn.protocol_version().unwrap()
    }

    /// CONNECT and PING over the session: whether PONG comes back.
    fn pong(&mut self) -> bool {
        use std::io::{Read, Write};
        let mut s = rustls::Stream::new(&mut self.conn, &mut self.tcp);
        if s.write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n").is_err() {
            return false;
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("PONG\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        true
    }
}

fn ring() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A provider offering only `suites`.
fn offering(suites: &[rustls::SupportedCipherSuite]) -> rustls::crypto::CryptoProvider {
    rustls::crypto::CryptoProvider {
        cipher_suites: suites.to_vec(),
        ..ring()
    }
}

const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

#[test]
fn cipher_suites_limit_the_tls12_suites() {
    use rustls::crypto::ring::cipher_suite as cs;
    let p = pki();
    // The test certificates carry ECDSA keys, so ECDSA suites apply.
    let conf = tls_conf(
        &p,
        "  cipher_suites: [\"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256\", \"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\"]",
    );
    let s = common::petrel(&["-c", conf.to_str().unwrap()]);
    // A TLS 1.2 client offering only a suite the server dropped is refused.
    let e = rustls_client(
        &p,
        &s.addr(),
        offering(&[cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]),
        TLS12,
    )
    .err()
    .expect("AES-256 is not among the server's suites");
    assert!(e.contains("HandshakeFailure") || e.contains("handshake"), "{e}");
    // Offering all of rustls' suites, the client gets one of the listed ones.
    let mut c = rustls_client(&p, &s.addr(), ring(), TLS12).unwrap();
    assert!(
        [
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        ]
        .contains(&c.suite()),
        "{:?}",
        c.suite()
    );
    assert!(c.pong());
    // Go leaves TLS 1.3 suites out of cipher_suites; so does petrel when
    // the list names none: TLS 1.3 still works with any of its suites.
    let mut c = rustls_client(&p, &s.addr(), offering(&[cs::TLS13_AES_256_GCM_SHA384]), TLS13).unwrap();
    assert_eq!(c.version(), rustls::ProtocolVersion::TLSv1_3);
    assert!(c.pong());
    drop(s);

    // Naming a TLS 1.3 suite restricts TLS 1.3 to the named ones.
    let conf = tls_conf(&p, "  cipher_suites: [\"TLS_AES_128_GCM_SHA256\"]");
    let s = common::petrel(&["-c", conf.to_str().unwrap()]);
    assert!(rustls_client(&p, &s.addr(), offering(&[cs::TLS13_AES_256_GCM_SHA384]), TLS13).is_err());
    let mut c = rustls_client(&p, &s.addr(), ring(), TLS13).unwrap();
    assert_eq!(c.suite(), rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    assert!(c.pong());
}

#[test]
fn curve_preferences_limit_the_key_exchange() {
    use rustls::crypto::ring::kx_group;
    let p = pki();
    let s = common::petrel(&[
        "-c",
        tls_conf(&p, "  curve_preferences: [\"CurveP384\"]").to_str().unwrap(),
    ]);
    for versions in [TLS12, TLS13] {
        let only_x25519 = rustls::crypto::CryptoProvider {
            kx_groups: vec![kx_group::X25519],
            ..ring()
        };
        assert!(
            rustls_client(&p, &s.addr(), only_x25519, versions).is_err(),
            "X25519 is not allowed ({versions:?})"
        );
        let mut c = rustls_client(&p, &s.addr(), ring(), versions).unwrap();
        assert_eq!(
            c.conn.negotiated_key_exchange_group().unwrap().name(),
            rustls::NamedGroup::secp384r1
        );
        assert!(c.pong());
    }
}

#[tokio::test]
async fn min_version_1_3_refuses_tls12_clients() {
    let p = pki();
    // insecure is accepted as nats-server accepts it; it only concerns
    // connections the server dials, so nothing changes for clients.
    let conf = tls_conf(&p, "  min_version: \"1.3\"\n  insecure: true");
    let s = common::petrel(&["-c", conf.to_str().unwrap()]);
    let e = rustls_client(&p, &s.addr(), ring(), TLS12)
        .err()
        .expect("TLS 1.2 refused");
    assert!(e.contains("ProtocolVersion") || e.contains("version"), "{e}");
    let mut c = rustls_client(&p, &s.addr(), ring(), TLS13).unwrap();
    assert!(c.pong());
    // async-nats (TLS 1.3 capable) connects as usual.
    let c = tls_opts(&p).connect(s.url()).await.unwrap();
    pubsub(&c).await;
    drop(s);
    // min_version 1.2 (the default) still takes TLS 1.2.
    let s = common::petrel(&["-c", tls_conf(&p, "  min_version: \"1.2\"").to_str().unwrap()]);
    let mut c = rustls_client(&p, &s.addr(), ring(), TLS12).unwrap();
    assert_eq!(c.version(), rustls::ProtocolVersion::TLSv1_2);
    assert!(c.pong());
}

#[tokio::test]
async fn pinned_certs_admit_only_pinned_client_keys() {
    let p = pki();
    let alice = client_cert(&p, "alice", "alice", None);
    client_cert(&p, "bob", "bob", None);
    // Upper case, as nats-server accepts it.
    let conf = tls_conf(
        &p,
        &format!("  verify: true\n  pinned_certs: [\"{}\"]", alice.to_ascii_uppercase()),
    );
    let s = common::petrel(&["-D", "-c", conf.to_str().unwrap()]);
    let connect = |name: &str| connect_with_cert(&p, &s, name);
    let c = connect("alice").await.expect("alice's key is pinned");
    pubsub(&c).await;
    // bob's certificate chains to the same CA but his key is not pinned.
    assert!(connect("bob").await.is_err(), "an unpinned key is refused");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!s.log_lines("TLS handshake error: certificate not pinned").is_empty());
    assert!(!s.log_lines("Failed pinned cert test for key id: ").is_empty());
    // The refusal names bob's key, never alice's.
    assert!(s.log_lines(&format!("key id: {alice}")).is_empty());
}

#[tokio::test]
async fn allow_non_tls_serves_plain_and_tls_clients_together() {
    let p = pki();
    let conf = common::jwt::write_conf(&format!(
        "allow_non_tls: true\ntls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
        p.path("server.pem").display(),
        p.path("server-key.pem").display()
    ));
    let s = common::petrel(&["-c", conf.to_str().unwrap()]);
    assert!(!s.log_lines("TLS available for client connections").is_empty());
    let mut raw = common::raw::Raw::open(&s.addr());
    let info = raw.info();
    assert_eq!(info["tls_available"], serde_json::json!(true));
    assert!(info.get("tls_required").is_none(), "{info}");
    // A plain subscriber and a TLS publisher on the same server.
    let r = raw.exchange(b"CONNECT {\"verbose\":false}\r\nSUB mixed 1\r\nPING\r\n");
    assert_eq!(r.text(), "PONG\r\n");
    let tls = tls_opts(&p).connect(s.url()).await.unwrap();
    tls.publish("mixed", "from tls".into()).await.unwrap();
    tls.flush().await.unwrap();
    let got = raw.read_until_quiet(Duration::from_millis(300), Duration::from_secs(5));
    assert_eq!(got.text(), "MSG mixed 1 8\r\nfrom tls\r\n");
    pubsub(&tls).await;
    // A plain async-nats client too.
    let plain = async_nats::connect(s.url()).await.unwrap();
    pubsub(&plain).await;

    // Same INFO fields as nats-server with the same configuration.
    let n = common::nats_server(&["-c", conf.to_str().unwrap()]);
    let theirs = common::raw::Raw::open(&n.addr());
    assert_eq!(
        common::normalize_info(&raw.info_line),
        common::normalize_info(&theirs.info_line)
    );
}

#[test]
fn handshake_timeout_and_plain_clients_are_closed_silently_as_nats_server_does() {
    let p = pki();
    let conf = tls_conf(&p, "");
    let ours = common::petrel(&["-D", "-c", conf.to_str().unwrap()]);
    let theirs = common::nats_server(&["-c", conf.to_str().unwrap()]);
    for s in [&ours, &theirs] {
        // Silent past the 1 s timeout: closed, nothing written after INFO.
        let mut raw = common::raw::Raw::open(&s.addr());
        let t = std::time::Instant::now();
        let r = raw.read_until_quiet(Duration::from_secs(4), Duration::from_secs(4));
        assert!(r.closed && r.bytes.is_empty(), "{:?}", r.text());
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(800) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        // A plain client's CONNECT is not a TLS record: closed at once.
        let mut raw = common::raw::Raw::open(&s.addr());
        let r = raw.exchange(b"CONNECT {}\r\nPING\r\n");
        assert!(r.closed && r.bytes.is_empty(), "{:?}", r.text());
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(!ours.log_lines("TLS handshake timeout").is_empty());
    assert!(!ours.log_lines("TLS handshake error").is_empty());
    assert!(!ours
        .log_lines("Client connection closed: TLS Handshake Failure")
        .is_empty());
}

/// `petrel -t -c` (and nats-server's) verdict on a `tls` block.
fn check(bin: &str, p: &Pki, extra: &str) -> (bool, String) {
    // `-t` counts warnings as errors: an integer `timeout` (seconds) must
    // pass without one, as nats-server reads it.
    let conf = common::jwt::write_conf(&format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  timeout: 1\n{extra}\n}}\n",
        p.path("server.pem").display(),
        p.path("server-key.pem").display(),
    ));
    let out = std::process::Command::new(bin)
        .args(["-t", "-c", conf.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn bad_tls_values_are_configuration_errors_naming_the_key() {
    let p = pki();
    let petrel = env!("CARGO_BIN_EXE_petrel");
    let nats = common::nats_server_bin();
    let nats = nats.to_str().unwrap();
    // (setting, what petrel's error says, whether nats-server refuses it too)
    let cases = [
        ("  cipher_suites: [\"TLS_NOPE\"]", "unrecognized cipher TLS_NOPE", true),
        (
            "  cipher_suites: [\"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA\"]",
            "cipher TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA is not supported",
            false,
        ),
        ("  cipher_suites: []", "'cipher_suites' cannot be empty", true),
        (
            "  curve_preferences: [\"CurveP999\"]",
            "unrecognized curve preference CurveP999",
            true,
        ),
        (
            "  curve_preferences: [\"CurveP521\"]",
            "curve preference CurveP521 is not supported",
            false,
        ),
        ("  min_version: \"1.1\"", "unsupported TLS version: TLS 1.1", true),
        ("  min_version: \"1.0\"", "unsupported TLS version: TLS 1.0", true),
        ("  min_version: \"2.0\"", "unknown version: 2.0", true),
        (
            "  pinned_certs: [\"abc\"]",
            "'pinned_certs' key abc does not look like hex-encoded sha256",
            true,
        ),
        ("  insecure: \"yes\"", "insecure: expected a boolean", true),
    ];
    for (setting, want, nats_refuses) in cases {
        let (ok, msg) = check(petrel, &p, setting);
        assert!(!ok, "{setting}: petrel accepted it");
        let key = setting.trim().split(':').next().unwrap();
        assert!(msg.contains(want) && msg.contains(key), "{setting}: {msg}");
        assert!(msg.contains("server.conf:"), "{setting}: names file and line: {msg}");
        let (theirs, their_msg) = check(nats, &p, setting);
        assert_eq!(!theirs, nats_refuses, "{setting}: nats-server says {their_msg}");
    }
    // Good values pass both.
    let good = "  cipher_suites: [\"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\", \"TLS_AES_128_GCM_SHA256\"]\n  \
                curve_preferences: [\"X25519\", \"CurveP256\"]\n  min_version: \"1.2\"\n  pinned_certs: []\n  \
                insecure: false\n  allow_insecure_cipher_suites: false";
    for bin in [petrel, nats] {
        let (ok, msg) = check(bin, &p, good);
        assert!(ok, "{bin}: {msg}");
    }
}

/// A client that fails the TLS handshake is listed among closed
/// connections with nats-server's reason, on both servers.
#[test]
fn failed_handshakes_are_listed_as_closed() {
    let p = pki();
    let conf = common::jwt::write_conf(&format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  timeout: 3\n}}\n",
        p.path("server.pem").display(),
        p.path("server-key.pem").display()
    ));
    for s in [
        common::petrel(&["-c", conf.to_str().unwrap(), "-m", "-1"]),
        common::nats_server(&["-c", conf.to_str().unwrap(), "-m", "-1"]),
    ] {
        let mut plain = common::raw::Raw::open(&s.addr());
        plain.send(b"CONNECT {}\r\nPING\r\n");
        let _ = plain.read_until_quiet(Duration::from_millis(300), Duration::from_secs(3));
        let port = s.monitor_port();
        let mut closed = serde_json::Value::Null;
        for _ in 0..20 {
            closed = serde_json::from_str(&common::http_get(port, "/connz?state=closed").1).unwrap();
            if closed["connections"].as_array().is_some_and(|a| !a.is_empty()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(closed["connections"][0]["reason"], "TLS Handshake Failure", "{closed}");
        // With TLS the auth timeout defaults to the TLS timeout (3 s here) + 1 s.
        let varz: serde_json::Value = serde_json::from_str(&common::http_get(port, "/varz").1).unwrap();
        assert_eq!(varz["auth_timeout"].as_f64(), Some(4.0), "{}", varz["auth_timeout"]);
    }
}

/// An X.509 version 1 client certificate (`tests/fixtures/tls-v1`):
/// nats-server (Go) accepts it; rustls cannot, and petrel says why in
/// words, not with rustls's internal error name.
#[test]
fn a_version_1_client_certificate_is_refused_in_words() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls-v1");
    let f = |n: &str| dir.join(n).display().to_string();
    let conf = common::jwt::write_conf(&format!(
        "tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\", verify: true }}\n",
        f("server.pem"),
        f("server-key.pem"),
        f("ca.pem")
    ));
    let handshake = |addr: &str| -> Result<(), String> {
        let pem = |n: &str| std::fs::read(dir.join(n)).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut &pem("ca.pem")[..]) {
            roots.add(c.unwrap()).unwrap();
        }
        let certs: Vec<_> = rustls_pemfile::certs(&mut &pem("client-v1.pem")[..])
            .map(Result::unwrap)
            .collect();
        let key = rustls_pemfile::private_key(&mut &pem("client-key.pem")[..])
            .unwrap()
            .unwrap();
        // rustls will not load a v1 certificate for itself: hand it over
        // as an already-certified key, which it sends without parsing.
        #[derive(Debug)]
        struct Fixed(std::sync::Arc<rustls::sign::CertifiedKey>);
        impl rustls::client::ResolvesClientCert for Fixed {
            fn resolve(
                &self,
                _: &[&[u8]],
                _: &[rustls::SignatureScheme],
            ) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
                Some(self.0.clone())
            }
            fn has_certs(&self) -> bool {
                true
            }
        }
        let signer = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
        let certified = std::sync::Arc::new(rustls::sign::CertifiedKey::new(certs, signer));
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(ring()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_cert_resolver(std::sync::Arc::new(Fixed(certified)));
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(read_info(&mut tcp).starts_with("INFO "));
        let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap()).unwrap();
        let mut c = TlsClient { conn, tcp };
        while c.conn.is_handshaking() {
            c.conn.complete_io(&mut c.tcp).map_err(|e| e.to_string())?;
        }
        if c.pong() {
            Ok(())
        } else {
            Err("no PONG".into())
        }
    };
    let c = conf.to_str().unwrap();
    let nats = common::nats_server(&["-c", c]);
    assert_eq!(handshake(&nats.addr()), Ok(()), "nats-server accepts it");
    let petrel = common::petrel(&["-c", c]);
    assert!(handshake(&petrel.addr()).is_err(), "petrel refuses it");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while petrel.log_lines("X.509 version 1").is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines = petrel.log_lines("TLS handshake error");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("certificate is X.509 version 1") && !l.contains("UnsupportedCertVersion")),
        "{lines:?}"
    );
}
