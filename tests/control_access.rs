//! End to end: the control plane's REST API as an attacker on the same host finds it. Every
//! call but health needs a token; read-only tokens cannot write; forged browser posts and
//! cookies get nowhere; the data directory is private; a port clash leaves nothing behind.

mod support;

use redb::ReadableTable;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use support::*;

const SERVICE: &str = "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80, protocol: http}]\n";

/// `weft ARGS --api URL` with no credential anywhere it looks (no token, a data dir and a
/// config home with nothing in them), plus `env`.
fn weft_as_stranger(
    control: &ControlPlane,
    home: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let mut command = Command::new(weft_bin());
    command
        .args(args)
        .args(["--api", &control.url(), "--data-dir"])
        .arg(home.join("no-data-dir"))
        .env_remove("WEFT_TOKEN")
        .env_remove("WEFT_DATA_DIR")
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"));
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("running weft")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn raw(
    control: &ControlPlane,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    http_exchange(control.api, method, path, headers, body.as_bytes())
        .unwrap_or_else(|| panic!("{method} {path}: no answer"))
}

fn refusals(control: &ControlPlane, reason: &str) -> f64 {
    let (status, body) = control.api_call("GET", "/metrics", "");
    assert_eq!(status, 200, "{body}");
    metric_sum(
        &body,
        "weft_api_requests_refused_total",
        &[("reason", reason)],
    )
}

#[test]
fn api_calls_need_a_token_and_the_role_for_them() {
    let dir = TempDir::new("access");
    let control = ControlPlane::start(&dir.path().join("data"), None);
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();

    // No credential: neither an apply nor a join token (which would mint an identity).
    for (path, body) in [
        ("/api/v1/apply", SERVICE),
        ("/api/v1/tokens", r#"{"service": "web"}"#),
    ] {
        let (status, answer) = raw(
            &control,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body,
        );
        assert_eq!(status, 401, "{path}: {answer}");
        assert!(answer.contains("Authorization: Bearer"), "{answer}");
    }
    // A cookie is no credential either.
    let cookie = format!("token={}", control.token);
    let (status, _) = raw(
        &control,
        "GET",
        "/api/v1/resources?kind=service",
        &[("Cookie", &cookie)],
        "",
    );
    assert_eq!(status, 401);
    let out = weft_as_stranger(
        &control,
        &home,
        &["token", "create", "--service", "web"],
        &[],
    );
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("needs an API token") && said.contains("no token was sent"),
        "{said}"
    );
    // Health stays open, for probes.
    assert_eq!(raw(&control, "GET", "/api/v1/health", &[], "").0, 200);

    // A read-only token reads, and cannot write or mint.
    let made = control.weft(&[
        "api-token",
        "create",
        "--name",
        "viewer",
        "--role",
        "read-only",
    ]);
    assert!(made.status.success(), "{}", text(&made));
    let viewer = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    let env = [("WEFT_TOKEN", viewer.as_str())];
    let out = weft_as_stranger(&control, &home, &["get", "services"], &env);
    assert!(out.status.success(), "{}", text(&out));
    for args in [
        &["apply", "-f", "-"][..],
        &["token", "create", "--service", "web"],
        &["api-token", "list"],
        &["ca", "rotate"],
    ] {
        let out = weft_as_stranger(&control, &home, args, &env);
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("needs the admin role"),
            "{args:?}: {}",
            text(&out)
        );
    }

    // From ~/.config/weft/token too, which is where a handed-out token lives.
    std::fs::create_dir_all(home.join("config/weft")).unwrap();
    std::fs::write(home.join("config/weft/token"), &viewer).unwrap();
    let out = weft_as_stranger(&control, &home, &["proxies"], &[]);
    assert!(out.status.success(), "{}", text(&out));

    // A web page's forged post (a form, or text/plain) is refused even with a credential.
    let bearer = format!("Bearer {}", control.token);
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let (status, answer) = raw(
            &control,
            "POST",
            "/api/v1/apply",
            &[("Authorization", &bearer), ("Content-Type", content_type)],
            SERVICE,
        );
        assert_eq!(status, 415, "{content_type}: {answer}");
    }
    let listed = control.weft(&["get", "services"]);
    assert!(
        !text(&listed).contains("web"),
        "nothing was applied: {}",
        text(&listed)
    );

    // Every refusal was counted, by reason.
    assert_eq!(refusals(&control, "missing_credential"), 4.0);
    assert_eq!(refusals(&control, "bad_credential"), 0.0);
    assert_eq!(refusals(&control, "forbidden"), 4.0);
    assert_eq!(refusals(&control, "content_type"), 2.0);

    // Revoked, the token opens nothing, not even reads.
    let listed = control.weft(&["api-token", "list"]);
    let id = text(&listed)
        .lines()
        .find(|line| line.contains("viewer"))
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_else(|| panic!("no viewer token listed: {}", text(&listed)))
        .to_owned();
    let out = control.weft(&["api-token", "revoke", &id]);
    assert!(out.status.success(), "{}", text(&out));
    let out = weft_as_stranger(&control, &home, &["get", "services"], &env);
    assert!(!out.status.success());
    assert!(text(&out).contains("not valid here"), "{}", text(&out));
    assert_eq!(refusals(&control, "bad_credential"), 1.0);
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o777
}

#[test]
fn the_data_directory_is_private_when_new_and_made_private_when_not() {
    let dir = TempDir::new("access-modes");
    let data = dir.path().join("data");
    let secrets = [data.join("weft.redb"), data.join("admin.token")];
    {
        let _control = ControlPlane::start(&data, None);
        assert_eq!(mode(&data), 0o700);
        for file in &secrets {
            assert_eq!(mode(file), 0o600, "{}", file.display());
        }
    }
    // As an older version (or a careless copy) left it: readable by everyone.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    for file in &secrets {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let control = ControlPlane::start(&data, None);
    control.wait_for_log("made a data-directory entry private");
    // One line per entry: the first may be logged before the last entry is fixed.
    let private = || mode(&data) == 0o700 && secrets.iter().all(|file| mode(file) == 0o600);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !private() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(mode(&data), 0o700);
    for file in &secrets {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
}

#[test]
fn a_port_in_use_leaves_no_store_behind() {
    let dir = TempDir::new("access-bind");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let data = dir.path().join("data");
    let out = run_weft(&[
        "control",
        "--data-dir",
        data.to_str().unwrap(),
        "--api-addr",
        &taken.local_addr().unwrap().to_string(),
        "--grpc-addr",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--api-addr"), "{}", text(&out));
    assert!(!data.exists(), "a failed start made {}", data.display());
}

/// `weft ARGS` over HTTPS to `control`, as an operator holding `name`'s certificate from
/// `certs` (or, with `None`, only the CA's roots), with no token anywhere it looks.
fn weft_over_https(
    control: &ControlPlane,
    certs: &Path,
    name: Option<&str>,
    args: &[&str],
) -> Output {
    let mut command = Command::new(weft_bin());
    command
        .args(args)
        .args(["--api", &format!("https://{}", control.api), "--ca"])
        .arg(certs.join("ca.pem"))
        .arg("--data-dir")
        .arg(certs.join("no-data-dir"))
        .env_remove("WEFT_TOKEN")
        .env("HOME", certs)
        .env("XDG_CONFIG_HOME", certs.join("config"));
    if let Some(name) = name {
        command
            .arg("--cert")
            .arg(certs.join(format!("{name}.pem")))
            .arg("--key")
            .arg(certs.join(format!("{name}-key.pem")));
    }
    command.output().expect("running weft")
}

#[test]
fn operators_call_the_api_over_https_with_a_certificate_of_their_role() {
    let dir = TempDir::new("access-operators");
    let control = ControlPlane::start(&dir.path().join("data"), None);
    let certs = dir.path().join("certs");
    for (name, role) in [("alice", "admin"), ("grafana", "read-only")] {
        let out = control.weft(&[
            "operator-cert",
            "create",
            "--name",
            name,
            "--role",
            role,
            "--out",
            certs.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let key = certs.join("alice-key.pem");
    assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
    let yaml = dir.path().join("web.yaml");
    std::fs::write(&yaml, SERVICE).unwrap();
    let apply = ["apply", "-f", yaml.to_str().unwrap()];

    let out = weft_over_https(&control, &certs, Some("alice"), &apply);
    assert!(out.status.success(), "{}", text(&out));
    let out = weft_over_https(&control, &certs, Some("grafana"), &["get", "services"]);
    assert!(
        out.status.success() && text(&out).contains("web"),
        "{}",
        text(&out)
    );
    let out = weft_over_https(&control, &certs, Some("grafana"), &apply);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("needs the admin role"),
        "{}",
        text(&out)
    );
    // HTTPS alone proves nothing.
    let out = weft_over_https(&control, &certs, None, &["get", "services"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("needs an API token"), "{}", text(&out));
    // No workload can be given an operator's identity.
    let out = control.weft(&[
        "token",
        "create",
        "--service",
        "mallory",
        "--namespace",
        "weft-operators",
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("reserved"), "{}", text(&out));

    // Revoked, alice's certificate no longer gets through the handshake.
    let out = control.weft(&[
        "identity",
        "revoke",
        "spiffe://weft.local/ns/weft-operators/svc/alice",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = weft_over_https(&control, &certs, Some("alice"), &["get", "services"]);
    assert!(!out.status.success(), "{}", text(&out));
    // TLS 1.3: the server checks the client's certificate after the client has finished,
    // so the refusal arrives as an alert on the first request.
    assert!(text(&out).contains("CertificateUnknown"), "{}", text(&out));
}

/// The audit log's rows, straight from the store file (the control plane stopped): seq ->
/// (body, hash).
const AUDIT: redb::TableDefinition<u64, (&str, &str)> = redb::TableDefinition::new("audit");

#[test]
fn the_audit_log_records_who_did_what_and_any_edit_breaks_its_chain() {
    let dir = TempDir::new("audit");
    let data = dir.path().join("data");
    let audit_file = dir.path().join("audit.jsonl");
    let audit_flag = ["--audit-file", audit_file.to_str().unwrap()];
    let control = ControlPlane::start_with(&data, None, &audit_flag);
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();

    // Changes by two credentials, a join token, and refused calls.
    let made = control.weft(&["api-token", "create", "--name", "ci", "--role", "admin"]);
    assert!(made.status.success(), "{}", text(&made));
    let ci = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    control.apply(SERVICE);
    let changed = SERVICE.replace("port: 80", "port: 8080");
    let mut apply = Command::new(weft_bin());
    apply
        .args(["apply", "-f", "-", "--api", &control.url()])
        .env("WEFT_TOKEN", &ci)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = apply.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(changed.as_bytes())
        .unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    assert!(control.weft(&["delete", "service", "web"]).status.success());
    assert!(control
        .weft(&["token", "create", "--service", "web"])
        .status
        .success());
    // A flood of refused calls: logged up to the budget, then counted in one line.
    for _ in 0..150 {
        let (status, _) = raw(
            &control,
            "GET",
            "/api/v1/resources",
            &[("Authorization", "Bearer not-a-token")],
            "",
        );
        assert_eq!(status, 401);
    }

    let log = control.weft(&["audit", "log", "--json", "--limit", "1000"]);
    assert!(log.status.success(), "{}", text(&log));
    let entries: Vec<serde_json::Value> = String::from_utf8(log.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let find = |action: &str| {
        entries
            .iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("no {action} in {entries:?}"))
    };
    let created = find("resource.create");
    assert_eq!(created["target"], "Service default/web");
    assert!(
        created["actor"].as_str().unwrap().contains("admin"),
        "{created}"
    );
    assert_eq!(created["after"]["spec"]["ports"][0]["port"], 80);
    let updated = find("resource.update");
    assert!(
        updated["actor"].as_str().unwrap().contains("(ci)"),
        "{updated}"
    );
    assert_eq!(updated["before"]["spec"]["ports"][0]["port"], 80);
    assert_eq!(updated["after"]["spec"]["ports"][0]["port"], 8080);
    let deleted = find("resource.delete");
    assert_eq!(deleted["before"]["metadata"]["name"], "web");
    assert!(deleted.get("after").is_none(), "{deleted}");
    assert!(find("api-token.create")["detail"]
        .as_str()
        .unwrap()
        .contains("named ci"));
    assert!(find("token.create")["detail"]
        .as_str()
        .unwrap()
        .contains("default/web"));
    let denied = entries
        .iter()
        .filter(|e| e["action"] == "api.denied")
        .count();
    assert!((1..=60).contains(&denied), "{denied} refused calls logged");
    // Only an admin reads it.
    let made = control.weft(&[
        "api-token",
        "create",
        "--name",
        "viewer",
        "--role",
        "read-only",
    ]);
    let viewer = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    let out = weft_as_stranger(
        &control,
        &home,
        &["audit", "log"],
        &[("WEFT_TOKEN", &viewer)],
    );
    assert!(
        !out.status.success() && text(&out).contains("admin"),
        "{}",
        text(&out)
    );

    let verified = control.weft(&["audit", "verify"]);
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(text(&verified).contains("intact"), "{}", text(&verified));
    // Only the Service's changes, by kind.
    let by_kind = control.weft(&["audit", "log", "--kind", "service", "--json"]);
    let kinds: Vec<serde_json::Value> = String::from_utf8(by_kind.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(kinds.len(), 3, "create, update, delete: {kinds:?}");
    assert!(kinds.iter().all(|e| e["target"] == "Service default/web"));

    // The same entries reach the audit file, each once, in order.
    let last = entries.last().unwrap()["seq"].as_u64().unwrap();
    let file_seqs = || -> Vec<u64> {
        std::fs::read_to_string(&audit_file)
            .unwrap_or_default()
            .lines()
            .map(|line| {
                let line: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(line["hash"].as_str().map(str::len), Some(64), "{line}");
                line["entry"]["seq"].as_u64().unwrap()
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while file_seqs().last().copied().unwrap_or(0) < last {
        assert!(
            std::time::Instant::now() < deadline,
            "the audit file lags: {:?}",
            file_seqs()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let seqs = file_seqs();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());

    // One byte of a stored entry changed while the control plane is down.
    let target = updated["seq"].as_u64().unwrap();
    drop(control);
    {
        let db = redb::Database::create(data.join("weft.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(AUDIT).unwrap();
            let (body, hash) = {
                let row = table.get(target).unwrap().unwrap();
                let (body, hash) = row.value();
                (body.to_owned(), hash.to_owned())
            };
            let edited = body.replacen("8080", "8081", 1);
            assert_ne!(edited, body);
            table
                .insert(target, (edited.as_str(), hash.as_str()))
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let control = ControlPlane::start_with(&data, None, &audit_flag);
    let verified = control.weft(&["audit", "verify"]);
    assert!(!verified.status.success());
    let said = text(&verified);
    assert!(
        said.contains(&format!("not intact at entry {target}")) && said.contains("changed"),
        "{said}"
    );
}

/// SHA-256 of `prev` then `body`, hex: how the chain links one entry to the one before.
fn chain_hash(prev: &str, body: &str) -> String {
    let input = [prev.as_bytes(), body.as_bytes()].concat();
    ring::digest::digest(&ring::digest::SHA256, &input)
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[test]
fn a_signed_checkpoint_catches_a_log_rewritten_with_its_hashes() {
    let dir = TempDir::new("checkpoint");
    let data = dir.path().join("data");
    let control = ControlPlane::start(&data, None);
    control.apply(SERVICE);
    let signed = control.weft(&["audit", "checkpoint"]);
    assert!(signed.status.success(), "{}", text(&signed));
    let said = text(&signed);
    let checkpoint: u64 = said
        .split("written as entry ")
        .nth(1)
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    // Nothing new to sign: no second checkpoint.
    let again = control.weft(&["audit", "checkpoint"]);
    assert!(text(&again).contains("nothing to sign"), "{}", text(&again));
    let verified = control.weft(&["audit", "verify"]);
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(
        text(&verified).contains(&format!(
            "1 signed checkpoints verified with the CA's key, the last at entry {checkpoint}"
        )),
        "{}",
        text(&verified)
    );
    // Someone who can write the store changes the first entry and recomputes every hash
    // after it, the checkpoint's included: the chain holds, the signature cannot.
    drop(control);
    {
        let db = redb::Database::create(data.join("weft.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(AUDIT).unwrap();
            let rows: Vec<(u64, String)> = table
                .iter()
                .unwrap()
                .map(|row| {
                    let (seq, value) = row.unwrap();
                    (seq.value(), value.value().0.to_owned())
                })
                .collect();
            assert_eq!(rows.last().unwrap().0, checkpoint);
            let mut prev = "0".repeat(64);
            for (seq, body) in rows {
                let mut entry: serde_json::Value = serde_json::from_str(&body).unwrap();
                if seq == 1 {
                    entry["detail"] = "nothing to see here".into();
                }
                if seq == checkpoint {
                    entry["after"]["hash"] = prev.clone().into();
                }
                entry["prev"] = prev.clone().into();
                let body = entry.to_string();
                let hash = chain_hash(&prev, &body);
                table.insert(seq, (body.as_str(), hash.as_str())).unwrap();
                prev = hash;
            }
        }
        txn.commit().unwrap();
    }
    let control = ControlPlane::start(&data, None);
    let verified = control.weft(&["audit", "verify"]);
    assert!(!verified.status.success());
    let said = text(&verified);
    assert!(
        said.contains(&format!("not intact at entry {checkpoint}"))
            && said.contains("signature does not verify"),
        "{said}"
    );
}

#[test]
fn the_cli_has_short_names_a_version_and_completion() {
    let dir = TempDir::new("cli");
    let control = ControlPlane::start(&dir.path().join("data"), None);
    control.apply(SERVICE);
    let out = control.weft(&["get", "svc"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("web"), "{}", text(&out));
    let out = control.weft(&["get", "services", "-o", "wide"]);
    assert!(out.status.success(), "{}", text(&out));
    let table = text(&out);
    assert!(
        table.contains("SPEC") && table.contains("ports 80/http"),
        "{table}"
    );
    let out = control.weft(&["version"]);
    let said = text(&out);
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        said.contains(&format!("client:        weft {version}")),
        "{said}"
    );
    assert!(
        said.contains(&format!("control plane: weft {version} at")),
        "{said}"
    );
    // The version is a read like any other: no token, no answer.
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let out = weft_as_stranger(&control, &home, &["version"], &[]);
    assert!(
        text(&out).contains("control plane: not reached"),
        "{}",
        text(&out)
    );
    // A dry run checks against what is stored and stores nothing.
    let route = dir.path().join("route.yaml");
    std::fs::write(
        &route,
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: web}]\n  rules: [{backendRefs: [{name: web}]}]\n",
    )
    .unwrap();
    let route = route.to_str().unwrap();
    let out = control.weft(&["apply", "--dry-run", "-f", route]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("httproute/default/web created (dry run)"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("nothing was stored"), "{}", text(&out));
    let out = control.weft(&["get", "all"]);
    let table = text(&out);
    assert!(
        table.contains("KIND") && table.contains("Service") && !table.contains("HTTPRoute"),
        "{table}"
    );
    // Applied for real, it shows; deleted by file, it goes.
    assert!(control.weft(&["apply", "-f", route]).status.success());
    assert!(text(&control.weft(&["get", "all"])).contains("HTTPRoute"));
    let out = control.weft(&["delete", "-f", route]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("httproute/default/web deleted"),
        "{}",
        text(&out)
    );
    let out = control.weft(&["delete", "-f", route]);
    assert!(
        !out.status.success(),
        "deleting what is gone fails: {}",
        text(&out)
    );
    for shell in ["bash", "zsh", "fish"] {
        let out = run_weft(&["completion", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("explain") && script.contains("audit"),
            "{shell}: {script}"
        );
    }
}

#[test]
fn the_dashboard_is_served_without_a_token_and_reads_only_the_api_with_one() {
    let dir = TempDir::new("dashboard");
    let control = ControlPlane::start(&dir.path().join("data"), None);
    let (status, page) = raw(&control, "GET", "/", &[], "");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<title>Weft</title>") && page.contains("/dashboard/app.js"));
    let (status, script) = raw(&control, "GET", "/dashboard/app.js", &[], "");
    assert_eq!(status, 200);
    let (status, _) = raw(&control, "GET", "/dashboard/style.css", &[], "");
    assert_eq!(status, 200);
    // Only reading the assets is open: the rest still wants a token.
    let (status, _) = raw(&control, "POST", "/", &[], "");
    assert_eq!(status, 401);
    let (status, _) = raw(&control, "GET", "/api/v1/stats", &[], "");
    assert_eq!(status, 401);
    // Every API path the page calls exists, and answers a token.
    let bearer = format!("Bearer {}", control.token);
    let mut paths: Vec<&str> = script
        .match_indices("/api/v1/")
        .map(|(at, _)| {
            let rest = &script[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '/' || c == '-'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    paths.sort_unstable();
    paths.dedup();
    assert!(paths.len() >= 6, "{paths:?}");
    for path in paths {
        if path == "/api/v1/stats/live" {
            // A stream that does not end: tests/dashboard.rs reads it in the browser. Here:
            // it wants a token like the rest.
            assert_eq!(raw(&control, "GET", path, &[], "").0, 401);
            continue;
        }
        let (status, body) = raw(&control, "GET", path, &[("Authorization", &bearer)], "");
        // The tap needs a service to tap: a 400 that names it, not a missing endpoint.
        let expected = if path == "/api/v1/tap" { 400 } else { 200 };
        assert_eq!(status, expected, "{path}: {body}");
    }
}
