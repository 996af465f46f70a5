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

/// The image of `scripts/deploy/Dockerfile` runs the binary on
/// distroless/cc, which holds glibc and libgcc and nothing else: the
/// binary must need no other shared library. (No container engine runs
/// on the project's machine, so the image itself is not built here.)
#[test]
fn dockerfile_runtime_has_what_the_binary_needs() {
    let dockerfile = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("FROM gcr.io/distroless/cc-debian12"),
        "{dockerfile}"
    );
    assert!(
        dockerfile.contains("cargo build --release --bin petrel"),
        "{dockerfile}"
    );
    assert!(deploy_dir().join("examples").is_dir(), "the image copies the examples");
    let ignored = std::fs::read_to_string(deploy_dir().join("Dockerfile.dockerignore")).unwrap();
    for needed in ["src", "Cargo.toml", "Cargo.lock", "benches", "perf", "tests", "scripts"] {
        assert!(!ignored.lines().any(|l| l.trim() == needed), "the build needs {needed}");
    }
    let Ok(out) = Command::new("readelf")
        .arg("-d")
        .arg(env!("CARGO_BIN_EXE_petrel"))
        .output()
    else {
        eprintln!("readelf not installed: skipping the library check");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let needed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(!needed.is_empty(), "{text}");
    let distroless_cc = [
        "libc.so.6",
        "libm.so.6",
        "libgcc_s.so.1",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
        "libutil.so.1",
        "ld-linux-x86-64.so.2",
    ];
    for lib in needed {
        assert!(distroless_cc.contains(&lib), "{lib} is not in distroless/cc");
    }
}
