//! A mesh grown to thousands of Services by back-to-back applies, while traffic flows:
//! no request fails or stalls, and a proxy whose Service lists what it calls is sent (and
//! holds) only that.

mod support;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const SERVICES: usize = 5000;
const BATCHES: usize = 10;

/// Requests from one keep-alive connection, 50 a second, until `stop`:
/// (requests, failures, slowest).
fn paced_client(
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, usize, Duration)> {
    tokio::spawn(async move {
        let mut c = Http1Client::connect(addr).await;
        let (mut requests, mut failures, mut slowest) = (0, 0, Duration::ZERO);
        while !stop.load(Ordering::SeqCst) {
            let started = Instant::now();
            match tokio::time::timeout(Duration::from_secs(10), c.get("web", "/")).await {
                Ok(Ok(answer)) if answer.status == 200 => {}
                _ => failures += 1,
            }
            requests += 1;
            slowest = slowest.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (requests, failures, slowest)
    })
}

fn services(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| {
            format!(
                "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {{name: svc-{i}}}\n\
                 spec:\n  ports: [{{port: 80, protocol: http}}]\n  \
                 endpoints: [{{address: \"127.0.0.{}:{}\"}}]\n---\n",
                1 + i / 250,
                20000 + i % 250
            )
        })
        .collect()
}

fn config_services(proxy: &Proxy) -> usize {
    let (_, body) = admin_get(proxy.admin, "/config").expect("reading /config");
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    config["config"]["services"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_services_pushed_under_load_fail_and_stall_nothing() {
    let dir = TempDir::new("config-push");
    let control = ControlPlane::start(&dir.path().join("control"), None);
    control.apply(
        "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {name: web}\n\
         spec: {ports: [{port: 80, protocol: http}]}\n---\n\
         apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {name: everything}\n\
         spec: {ports: [{port: 80, protocol: http}]}\n---\n\
         apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {name: lean}\n\
         spec: {ports: [{port: 80, protocol: http}], calls: [web]}\n",
    );
    let backend = HttpBackend::start("web").await;
    let _web = control.proxy("web", backend.addr).start();
    let everything = control
        .proxy("everything", "127.0.0.1:9".parse().unwrap())
        .start();
    let lean = control
        .proxy("lean", "127.0.0.1:9".parse().unwrap())
        .start();
    for proxy in [&everything, &lean] {
        wait_for("web reachable", Duration::from_secs(20), || async {
            let mut c = Http1Client::connect(proxy.outbound).await;
            c.get("web", "/").await.is_ok_and(|a| a.status == 200)
        })
        .await;
    }
    let lean_before = lean.resident_kib();

    let stop = Arc::new(AtomicBool::new(false));
    let clients = [
        paced_client(everything.outbound, stop.clone()),
        paced_client(lean.outbound, stop.clone()),
    ];
    for batch in 0..BATCHES {
        let per_batch = SERVICES / BATCHES;
        control.apply(&services(batch * per_batch, per_batch));
    }
    let last = format!("svc-{}", SERVICES - 1);
    wait_for("every proxy in sync", Duration::from_secs(120), || async {
        let out = control.weft(&["get", "service", &last, "-o", "json"]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        status["status"]["inSync"] == 3 && status["status"]["proxies"] == 3
    })
    .await;
    // Traffic goes on a moment on the new configs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for (name, client) in ["everything", "lean"].into_iter().zip(clients) {
        let (requests, failures, slowest) = client.await.unwrap();
        assert!(requests > 10, "{name}: only {requests} requests");
        assert_eq!(failures, 0, "{name}: {failures} of {requests} failed");
        // A stall (a config swap blocking the request path) would show as seconds.
        assert!(
            slowest < Duration::from_secs(2),
            "{name}: a request took {slowest:?}"
        );
    }
    assert_eq!(config_services(&everything), SERVICES + 3);
    assert_eq!(
        config_services(&lean),
        2,
        "lean is sent itself and web only"
    );
    // The whole mesh costs the proxy that holds it tens of MB; the scoped one nothing.
    let (lean_after, everything_after) = (lean.resident_kib(), everything.resident_kib());
    assert!(
        lean_after < lean_before + 4 * 1024,
        "the scoped proxy grew from {lean_before} to {lean_after} KiB"
    );
    assert!(
        everything_after > lean_after + 10 * 1024,
        "the proxy holding {SERVICES} services uses {everything_after} KiB, the scoped one {lean_after} KiB"
    );
    assert!(
        everything_after < 200 * 1024,
        "the proxy holding {SERVICES} services uses {everything_after} KiB"
    );
}
