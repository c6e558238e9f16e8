//! 1,000 proxy streams, each on its own connection, in this process: how long an endpoint
//! change takes to reach all of them. Printed, not asserted: on a shared 2-core machine a
//! timing assertion would only measure the neighbours (benchmarks live in `bench/`).

use super::{hello, message, resources, FakeProxy, Harness, PATIENCE, SERVICES};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use weft_api::v1::{control_message, proxy_message, Ack};

const PROXIES: usize = 1_000;

/// One received message: which proxy, when, and whether it was an endpoints update.
type Receipt = (usize, Instant, bool);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_change_reaches_1000_proxies() {
    let harness = Harness::start().await;
    harness.publish(resources(2, SERVICES));
    let (receipts, mut received) = mpsc::unbounded_channel::<Receipt>();
    let mut proxies = Vec::with_capacity(PROXIES);
    for index in 0..PROXIES {
        let address = format!("127.0.{}.{}:7143", 1 + index / 250, 1 + index % 250);
        let proxy = FakeProxy::connect(
            harness.channel().await,
            hello(&format!("web-{index}"), "web", &address),
        )
        .await;
        proxies.push(proxy);
    }
    // They join rotation together, as after a rolling restart: a few coalesced pushes.
    for proxy in &proxies {
        proxy.health(true).await;
    }
    for (index, proxy) in proxies.into_iter().enumerate() {
        tokio::spawn(answer(index, proxy, receipts.clone()));
    }
    let api = harness.proxy("api-1", "api", "127.0.0.2:7143").await;
    harness
        .until("every proxy in sync", |registry| {
            let proxies = registry.proxies();
            proxies.len() == PROXIES + 1 && proxies.iter().all(|p| p.in_sync || p.id == "api-1")
        })
        .await;
    // Let the debounce interval pass, then drop what the set-up sent.
    tokio::time::sleep(Duration::from_millis(100)).await;
    while received.try_recv().is_ok() {}

    let changed = Instant::now();
    api.health(false).await;
    let mut delays = Vec::with_capacity(PROXIES);
    let mut updates = 0;
    let mut seen = vec![false; PROXIES];
    while delays.len() < PROXIES {
        let (index, at, update) = tokio::time::timeout(PATIENCE, received.recv())
            .await
            .expect("every proxy hears of the change")
            .expect("the proxies keep running");
        if std::mem::replace(&mut seen[index], true) {
            continue;
        }
        delays.push(at - changed);
        updates += usize::from(update);
    }
    delays.sort();
    let percentile = |p: usize| delays[(delays.len() * p / 100).min(delays.len() - 1)];
    println!(
        "endpoint change -> {PROXIES} proxies: p50 {:?}, p99 {:?}, max {:?}; \
         {updates} got an endpoints update, {} a full config",
        percentile(50),
        percentile(99),
        delays[delays.len() - 1],
        PROXIES - updates,
    );
    assert_eq!(
        updates, PROXIES,
        "every proxy in sync gets the small update"
    );
}

/// Acknowledges everything, as a proxy that applies it would, and reports each receipt.
/// Configs are not parsed: this measures the control plane, not JSON decoding.
async fn answer(index: usize, mut proxy: FakeProxy, receipts: mpsc::UnboundedSender<Receipt>) {
    while let Some(body) = proxy.next_message().await {
        let at = Instant::now();
        let (version, update) = match body {
            control_message::Message::Config(full) => (full.version, false),
            control_message::Message::Endpoints(update) => (update.version, true),
            control_message::Message::Part(_) => unreachable!("recv_within joins parts"),
            // These tests open no taps.
            control_message::Message::TapStart(_) | control_message::Message::TapStop(_) => {
                continue
            }
        };
        let _ = receipts.send((index, at, update));
        let ack = proxy_message::Message::Ack(Ack { version });
        if proxy.to_server.send(message(ack)).await.is_err() {
            return;
        }
    }
}
