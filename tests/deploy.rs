//! The deployment files in `scripts/deploy/`: every example configuration
//! passes `-t` on petrel and on nats-server (paths under `/etc/petrel` and
//! `/var/lib/petrel` pointed at a temp folder holding a real operator JWT
//! and certificates), and the systemd unit passes `systemd-analyze verify`
//! where systemd is installed.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/deploy")
}

#[test]
fn example_configurations_pass_dash_t_on_both_servers() {
    let pki = common::pki::Pki::new();
    pki.issue(&["127.0.0.1", "localhost"], "petrel", "server");
    let root = pki.dir.clone();
    std::fs::create_dir_all(root.join("certs")).unwrap();
    for f in ["server.pem", "server-key.pem", "ca.pem"] {
        std::fs::copy(pki.path(f), root.join("certs").join(f)).unwrap();
    }
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt");
    std::fs::copy(fixtures.join("operator.jwt"), root.join("operator.jwt")).unwrap();
    let mut examples: Vec<PathBuf> = std::fs::read_dir(deploy_dir().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    examples.sort();
    assert_eq!(examples.len(), 4);
    let nats = common::nats_server_bin();
    for example in examples {
        let text = std::fs::read_to_string(&example)
            .unwrap()
            .replace("/etc/petrel/", &format!("{}/", root.display()))
            .replace("/var/lib/petrel/", &format!("{}/", root.display()));
        let file = root.join(example.file_name().unwrap());
        std::fs::write(&file, text).unwrap();
        for bin in [PathBuf::from(env!("CARGO_BIN_EXE_petrel")), nats.clone()] {
            let out = Command::new(&bin).arg("-t").arg("-c").arg(&file).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "{} -t {}: {err}",
                bin.display(),
                example.display()
            );
        }
    }
}

#[test]
fn systemd_unit_verifies() {
    let have = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        eprintln!("systemd-analyze not installed: skipping");
        return;
    }
    let dir = common::jwt::temp_dir();
    let unit = std::fs::read_to_string(deploy_dir().join("petrel.service"))
        .unwrap()
        .replace("/usr/local/bin/petrel", env!("CARGO_BIN_EXE_petrel"));
    let path = dir.join("petrel.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("petrel.service:"), "warnings about the unit: {text}");
}
