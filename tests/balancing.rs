//! Load balancing observed under steady load.
//!
//! Alone in its test binary on purpose: peak-EWMA follows latency, so "identical instances"
//! must be identical in fact. Beside the other tests of a binary, on 2 cores, one backend
//! could be the slower one for seconds and rightly get less of the load; here nothing else
//! runs, and each backend has an OS thread of its own.

mod support;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::*;

/// Two identical instances behind the default balancer each take a fair share of steady
/// load, in every window, not turns at most of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_instances_share_the_load() {
    let dir = TempDir::new("fair");
    let a = HttpBackend::start_isolated("a").await;
    let b = HttpBackend::start_isolated("b").await;
    let config = write_config(
        dir.path(),
        "mesh.yaml",
        &plain_service("pair", "http", &[a.addr, b.addr]),
    );
    let proxy = ProxySpec::new("client", "127.0.0.1:9".parse().unwrap(), &config).start();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = steady_load_at_rate(proxy.outbound, "pair", 1000, stop.clone());
    let share = |a: u64, b: u64| a as f64 / (a + b) as f64;
    let even = |&(a, b): &(u64, u64)| (0.4..=0.6).contains(&share(a, b));
    // Steady state first: each endpoint's first answers include opening its connection (in
    // this debug build, slowly), and the balancer's mean starts at 1 ms and follows the real
    // answers over seconds (seen in CI before the peak faded fast: 26 %, then 34 %, then
    // even). Measured once two seconds in a row are even.
    let warm_up = std::time::Instant::now();
    let mut warm_up_windows = Vec::new();
    loop {
        let (start_a, start_b) = (a.count(), b.count());
        tokio::time::sleep(Duration::from_secs(1)).await;
        let window = (a.count() - start_a, b.count() - start_b);
        warm_up_windows.push(window);
        if warm_up_windows.len() >= 2 && warm_up_windows.iter().rev().take(2).all(even) {
            break;
        }
        assert!(
            warm_up.elapsed() < Duration::from_secs(30),
            "never even for two seconds in a row in 30 s: {warm_up_windows:?}"
        );
    }
    eprintln!("warm-up, requests per 1 s window (a, b): {warm_up_windows:?}");
    let mut shares = Vec::new();
    let (mut last_a, mut last_b) = (a.count(), b.count());
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (now_a, now_b) = (a.count(), b.count());
        let (in_a, in_b) = (now_a - last_a, now_b - last_b);
        shares.push((in_a, in_b));
        (last_a, last_b) = (now_a, now_b);
    }
    stop.store(true, Ordering::SeqCst);
    let (_, failed) = load.await.unwrap();
    assert_eq!(failed, 0);
    eprintln!("requests per 2 s window (a, b): {shares:?}");
    // Turns at most of the load (the bug: over 90 % to one instance, flipping every ~10 s)
    // show in every window. A window may still lean one way: one slow answer (a pause of
    // this debug-build proxy or of the machine, blamed on whichever endpoint had a request
    // in flight) holds its endpoint off for about a second (the peak's fading), so each
    // 2-s window may lean to 85 %, and the whole run must be even.
    for (in_a, in_b) in &shares {
        let window = share(*in_a, *in_b);
        assert!(
            (0.15..=0.85).contains(&window),
            "per 2 s window: {shares:?}"
        );
    }
    let (total_a, total_b) = shares
        .iter()
        .fold((0, 0), |(a, b), (in_a, in_b)| (a + in_a, b + in_b));
    let whole = share(total_a, total_b);
    assert!((0.4..=0.6).contains(&whole), "over 16 s: {shares:?}");
}
