//! End to end: the control plane's CA (generated and kept across restarts, or supplied by
//! the operator) and join tokens, with the real `weft` binary.

mod support;

use serde_json::Value;
use support::*;

/// `GET /api/v1/ca` as JSON, from the control plane at `api` with the admin token in `data`.
fn ca_view(api: std::net::SocketAddr, data: &std::path::Path) -> Value {
    let bearer = format!("Bearer {}", admin_token(data));
    let (status, body) =
        http_exchange(api, "GET", "/api/v1/ca", &[("Authorization", &bearer)], b"")
            .expect("GET /api/v1/ca");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn generated_root_survives_a_restart() {
    let dir = TempDir::new("ca-restart");
    let first = {
        let plane = ControlPlane::start(dir.path(), None);
        ca_view(plane.api, dir.path())
    };
    let bundle = first["trustBundle"].as_str().unwrap();
    assert!(bundle.starts_with("-----BEGIN CERTIFICATE-----"), "{first}");
    assert_eq!(first["trustDomain"], "weft.local");
    assert!(
        first["notAfter"].as_str().unwrap().ends_with('Z'),
        "{first}"
    );

    let plane = ControlPlane::start(dir.path(), None);
    let again = ca_view(plane.api, dir.path());
    assert_eq!(again["trustBundle"], first["trustBundle"]);
    assert_eq!(again["notAfter"], first["notAfter"]);
}

fn start_with_ca(data: &std::path::Path, cert: &str, key: &str) -> LoggedChild {
    let args: Vec<String> = [
        "control",
        "--data-dir",
        data.to_str().unwrap(),
        "--api-addr",
        "127.0.0.1:0",
        "--grpc-addr",
        "127.0.0.1:0",
        "--ca-cert",
        cert,
        "--ca-key",
        key,
    ]
    .map(String::from)
    .to_vec();
    LoggedChild::spawn(&args)
}

#[test]
fn supplied_root_is_served() {
    let dir = TempDir::new("ca-supplied");
    let ca_dir = dir.path().join("pki");
    let out = run_weft(&[
        "cert",
        "ca",
        "--out",
        ca_dir.to_str().unwrap(),
        "--trust-domain",
        "corp.example",
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let cert = ca_dir.join("ca.pem");
    let key = ca_dir.join("ca-key.pem");
    let data = dir.path().join("data");

    let process = start_with_ca(&data, cert.to_str().unwrap(), key.to_str().unwrap());
    let found = process.listeners(|found| found.iter().any(|(n, _)| n == "api"));
    let api = found.iter().find(|(n, _)| n == "api").unwrap().1;
    let view = ca_view(api, &data);
    assert_eq!(
        view["trustBundle"].as_str().unwrap(),
        std::fs::read_to_string(&cert).unwrap()
    );
    assert_eq!(view["trustDomain"], "corp.example");
    drop(process);

    // A file that cannot be read, or that is not a CA, is refused with its name.
    let missing = dir.path().join("missing.pem");
    let out = run_weft(&[
        "control",
        "--data-dir",
        data.to_str().unwrap(),
        "--api-addr",
        "127.0.0.1:0",
        "--grpc-addr",
        "127.0.0.1:0",
        "--ca-cert",
        missing.to_str().unwrap(),
        "--ca-key",
        key.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("missing.pem"), "{stderr}");

    let issued = run_weft(&[
        "cert",
        "issue",
        "--ca-dir",
        ca_dir.to_str().unwrap(),
        "--service",
        "web",
        "--out",
        dir.path().join("leaf").to_str().unwrap(),
    ]);
    assert!(issued.status.success(), "{:?}", text(&issued));
    {
        let leaf = dir.path().join("leaf").join("web.pem");
        let leaf_key = dir.path().join("leaf").join("web-key.pem");
        let out = run_weft(&[
            "control",
            "--data-dir",
            data.to_str().unwrap(),
            "--api-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--ca-cert",
            leaf.to_str().unwrap(),
            "--ca-key",
            leaf_key.to_str().unwrap(),
        ]);
        let (_, stderr) = text(&out);
        assert!(!out.status.success());
        assert!(
            stderr.contains("web.pem") && stderr.contains("not a CA"),
            "{stderr}"
        );
    }
}

#[test]
fn tokens_are_created_and_revoked_from_the_cli() {
    let dir = TempDir::new("tokens-cli");
    let plane = ControlPlane::start(dir.path(), None);

    let out = plane.weft(&[
        "token",
        "create",
        "--service",
        "web",
        "--namespace",
        "shop",
        "--ttl",
        "10m",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let token = stdout.trim();
    assert_eq!(token.len(), 64, "{stdout}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{stdout}");
    assert!(
        stderr.contains("web.shop") && stderr.contains("single use"),
        "{stderr}"
    );
    let id = stderr
        .split_whitespace()
        .nth(2)
        .expect("the id on stderr")
        .to_owned();
    assert_eq!(id.len(), 16, "{stderr}");

    let out = plane.weft(&["token", "revoke", &id]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(&id), "{stdout}");

    let out = plane.weft(&["token", "revoke", "0123456789abcdef"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("no join token with id"), "{stderr}");

    let out = plane.weft(&["token", "create", "--service", "Not_A_Name"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("Not_A_Name"), "{stderr}");

    let out = plane.weft(&["token", "create", "--service", "web", "--ttl", "soon"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("invalid duration"), "{stderr}");
}
