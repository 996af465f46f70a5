//! Client TLS: async-nats over TLS (server-only, mutual, handshake_first),
//! INFO's TLS fields, and a plain client on a TLS server. Certificates are
//! made by the test (rcgen) and never checked in.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate.
fn pki() -> Pki {
    let dir = common::jwt::temp_dir();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "petrel test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issue = |names: Vec<String>, cn: &str, file: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{file}-key.pem")), key.serialize_pem()).unwrap();
    };
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("ca-key.pem"), ca_key.serialize_pem()).unwrap();
    issue(vec!["127.0.0.1".into(), "localhost".into()], "petrel", "server");
    issue(vec!["client".into()], "client", "client");
    Pki { dir }
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
    let c = async_nats::ConnectOptions::new()
        .add_root_certificates(ca(&p))
        .require_tls(true)
        .connect(s.url())
        .await
        .unwrap();
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
    let without = async_nats::ConnectOptions::new()
        .add_root_certificates(ca(&p))
        .require_tls(true)
        .connection_timeout(Duration::from_secs(2))
        .connect(s.url())
        .await;
    assert!(without.is_err(), "no client certificate, no connection");
}

#[tokio::test]
async fn handshake_first() {
    let p = pki();
    let s = common::petrel(&["-c", tls_conf(&p, "  handshake_first: true").to_str().unwrap()]);
    let c = async_nats::ConnectOptions::new()
        .add_root_certificates(ca(&p))
        .require_tls(true)
        .tls_first()
        .connect(s.url())
        .await
        .unwrap();
    pubsub(&c).await;
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

/// A client certificate for `cn`, with `email` as an email SAN when given.
fn client_cert(p: &Pki, file: &str, cn: &str, email: Option<&str>) {
    use rcgen::SanType;
    // The issuer: the same CA name and key as pki() wrote.
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(p.path("ca-key.pem")).unwrap()).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "petrel test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(e) = email {
        params
            .subject_alt_names
            .push(SanType::Rfc822Name(e.try_into().unwrap()));
    }
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    std::fs::write(p.path(&format!("{file}.pem")), cert.pem()).unwrap();
    std::fs::write(p.path(&format!("{file}-key.pem")), key.serialize_pem()).unwrap();
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
    let connect = |name: &str| {
        let (cert, key) = (p.path(&format!("{name}.pem")), p.path(&format!("{name}-key.pem")));
        let url = s.url();
        let root = ca(&p);
        async move {
            async_nats::ConnectOptions::new()
                .add_root_certificates(root)
                .add_client_certificate(cert, key)
                .require_tls(true)
                .connection_timeout(Duration::from_secs(2))
                .connect(url)
                .await
        }
    };
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
