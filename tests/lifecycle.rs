//! Configuration reloads and shutdown: zero failed requests while the config changes under
//! load, bad files rejected with a precise error while the old config keeps serving, and
//! graceful drain on SIGTERM.

mod support;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

fn split(v1: u32, v2: u32) -> String {
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: split}}
spec:
  parentRefs: [{{group: "", kind: Service, name: reviews}}]
  rules:
    - backendRefs:
        - {{name: reviews-v1, weight: {v1}}}
        - {{name: reviews-v2, weight: {v2}}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_drops_nothing_and_bad_files_change_nothing() {
    let dir = TempDir::new("reload");
    let v1 = HttpBackend::start("reviews-v1").await;
    let v2 = HttpBackend::start("reviews-v2").await;
    let services = format!(
        "{}{}{}",
        plain_service("reviews", "http", &[]),
        plain_service("reviews-v1", "http", &[v1.addr]),
        plain_service("reviews-v2", "http", &[v2.addr])
    );
    let config = write_config(
        dir.path(),
        "mesh.yaml",
        &format!("{services}{}", split(100, 0)),
    );
    let proxy = ProxySpec::new("client", "127.0.0.1:9".parse().unwrap(), &config).start();

    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(proxy.outbound, "reviews", stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (a, b) in [(0, 100), (50, 50), (100, 0), (0, 100)] {
        std::fs::write(&config, format!("{services}{}", split(a, b))).unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    let before_bad = admin_get(proxy.admin, "/config").unwrap().1;
    let v2_before = v2.count();
    // A bad regex: rejected, reported with file, line and field; traffic unaffected.
    let bad = format!(
        "{services}{}    - matches:\n        - path: {{type: RegularExpression, value: \"(unclosed\"}}\n      backendRefs: [{{name: reviews-v1}}]\n",
        split(0, 100)
    );
    std::fs::write(&config, bad).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    let (done, failed) = load.await.unwrap();
    assert_eq!(failed, 0, "of {done} requests");
    assert!(done > 500);
    assert!(
        v2.count() > v2_before,
        "the last good config (all to v2) kept serving"
    );
    assert_eq!(admin_get(proxy.admin, "/config").unwrap().1, before_bad);
    assert_eq!(
        proxy.metric("weft_config_reloads_total", &[("result", "error")]),
        1.0
    );
    assert_eq!(
        proxy.metric("weft_config_reloads_total", &[("result", "ok")]),
        5.0
    );
    let logs = proxy.logs();
    let rejection = logs
        .lines()
        .find(|l| l.contains("configuration rejected"))
        .expect("a rejection is logged");
    assert!(rejection.contains("mesh.yaml:"), "{rejection}");
    assert!(
        rejection.contains("regular expression") || rejection.contains("regex"),
        "{rejection}"
    );
}

#[test]
fn a_bad_file_at_start_up_is_a_clear_error() {
    let dir = TempDir::new("badstart");
    let config = write_config(
        dir.path(),
        "bad.yaml",
        "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n    - port: 0\n",
    );
    let out = run_weft(&[
        "proxy",
        "--service",
        "web",
        "--local",
        config.to_str().unwrap(),
        "--admin",
        "127.0.0.1:0",
        "--inbound",
        "127.0.0.1:0",
        "--outbound",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml:7"), "{stderr}");
    assert!(stderr.contains("port"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let dir = TempDir::new("drain");
    let backend = HttpBackend::start("app").await;
    let config = write_config(
        dir.path(),
        "mesh.yaml",
        &plain_service("app", "http", &[backend.addr]),
    );
    let mut proxy = ProxySpec::new("client", "127.0.0.1:9".parse().unwrap(), &config).start();
    let addr = proxy.outbound;
    let in_flight = tokio::spawn(async move {
        let mut c = Http1Client::connect(addr).await;
        c.get("app", "/slow/1000").await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        admin_get(proxy.admin, "/ready").map(|r| r.0),
        Some(503),
        "not ready while draining"
    );
    // Callers that have not moved away yet are still served while the stop is announced.
    let mut late = Http1Client::connect(addr).await;
    assert_eq!(late.get("app", "/").await.unwrap().status, 200);
    let answer = in_flight
        .await
        .unwrap()
        .expect("the in-flight request finished");
    assert_eq!(answer.status, 200);
    // Once no request has come in for a second, the listeners close.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "the listener stayed open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = proxy
        .wait_exit(Duration::from_secs(5))
        .expect("the proxy exited after draining");
    assert!(status.success());
}

#[test]
fn sigterm_ends_a_proxy_whose_standard_input_stays_open() {
    let dir = TempDir::new("stdin-open");
    let config = write_config(
        dir.path(),
        "mesh.yaml",
        &plain_service("app", "http", &["127.0.0.1:9".parse().unwrap()]),
    );
    let spec = ProxySpec::new("client", "127.0.0.1:9".parse().unwrap(), &config)
        .arg("--exit-on-stdin-close");
    // A supervisor that keeps the pipe open: stdin never closes.
    let mut child = std::process::Command::new(weft_bin())
        .args(spec.args())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _stdin = child.stdin.take();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut lines = std::io::BufRead::lines(stderr);
    // Serving once it logs its listeners (and the config is loaded before that).
    assert!(lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.contains("listener=\"outbound\"") || line.contains("listener=outbound")));
    // Keep reading, so the proxy never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if exited.is_none() {
        let _ = child.kill();
    }
    assert!(
        exited.is_some(),
        "the proxy drained but did not exit while stdin stayed open"
    );
}

/// One of two instances stops while a client keeps sending: the stopping proxy tells its
/// callers to move away and keeps serving until they have, so no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_under_load_fails_nothing() {
    let dir = TempDir::new("stop-one");
    let certs = Certs::new(dir.path(), &["web", "api"]);
    let backends = [
        HttpBackend::start("api-1").await,
        HttpBackend::start("api-2").await,
    ];
    let config = write_config(dir.path(), "mesh.yaml", &plain_service("api", "http", &[]));
    let mut stopping = ProxySpec::new("api", backends[0].addr, &config)
        .tls(&certs)
        .start();
    let staying = ProxySpec::new("api", backends[1].addr, &config)
        .tls(&certs)
        .start();
    std::fs::write(
        &config,
        mesh_service("api", "http", &[stopping.inbound, staying.inbound]),
    )
    .unwrap();
    let client = ProxySpec::new("web", "127.0.0.1:9".parse().unwrap(), &config)
        .tls(&certs)
        .start();
    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(client.outbound, "api", stop.clone());
    while backends[0].count() < 200 || backends[1].count() < 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stopping.signal("TERM");
    let exited = tokio::task::spawn_blocking(move || stopping.wait_exit(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(
        exited.is_some_and(|s| s.success()),
        "the stopping proxy exited"
    );
    let served_after = backends[1].count();
    while backends[1].count() < served_after + 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (done, failed) = load.await.unwrap();
    assert_eq!(failed, 0, "{failed} of {done} requests failed");
}
