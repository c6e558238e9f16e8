//! Control-plane scale benchmark: opens N simulated proxies against a running
//! `weft control`, each a real gRPC client on its own HTTP/2 connection (or a few streams per
//! connection with `--streams-per-connection`), that says Hello, reports itself healthy and
//! ACKs every Config and Endpoints message like a real proxy. Once all of them run their
//! first config, one extra proxy flips its health M times; each flip is an endpoint change,
//! and the time from the flip until every one of the N proxies has received the resulting
//! message is one round. Prints one JSON object on stdout; progress goes to stderr.
//!
//! `--join all` starts every proxy at once (as after a control-plane restart);
//! `--join by-service` starts one service's proxies at a time and lets the fleet settle in
//! between (as in a rollout), so no single push carries every endpoint to every proxy;
//! `--join unhealthy-first` starts every proxy at once without a health report (an empty
//! first config), then reports one service's proxies healthy at a time. `--endpoints E`
//! makes only the first E proxies healthy, i.e. endpoints.
//!
//! Configs are not parsed, only counted: this measures the control plane and the transport,
//! not JSON decoding in the proxies.

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures_util::stream;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use weft_api::parts::Assembler;
use weft_api::v1::discovery_client::DiscoveryClient;
use weft_api::v1::{
    control_message, proxy_message, Ack, ControlMessage, Health, Hello, Traffic, TrafficStat,
};
use weft_api::v1::{ProxyMessage, ServiceEndpoints};

/// The largest message a simulated proxy accepts once its parts are joined, as a real one.
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

#[derive(Parser, Debug)]
#[command(
    name = "weft-bench-scale",
    about = "Simulated proxies against one `weft control`: config push latency at scale"
)]
struct Args {
    /// The control plane's gRPC (discovery) address, `host:port`.
    #[arg(long)]
    addr: String,
    /// Simulated proxies measured (N). One more, the trigger, makes the changes.
    #[arg(long, default_value_t = 1_000)]
    proxies: usize,
    /// Proxy `i` belongs to service `svc-<i % S>`; apply those Services first.
    #[arg(long, default_value_t = 100)]
    services: usize,
    /// Namespace of every proxy (and of the Services).
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Proxies that report themselves healthy, i.e. endpoints (the first E); default N.
    #[arg(long)]
    endpoints: Option<usize>,
    /// Endpoint changes to time (M).
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Streams sharing one HTTP/2 connection; 1 gives every proxy its own connection.
    #[arg(long, default_value_t = 1)]
    streams_per_connection: usize,
    /// Connections being opened at once while the fleet starts.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// The fleet is settled when nothing arrived for this long and all run one version.
    #[arg(long, default_value_t = 300)]
    quiet_ms: u64,
    /// Give up on any one phase (start, settle, a round) after this long.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// How the fleet joins before the changes are timed.
    #[arg(long, value_enum, default_value = "all")]
    join: Join,
    /// PID of the control plane, to report its VmRSS and VmHWM at the end.
    #[arg(long)]
    control_pid: Option<u32>,
    /// After the rounds, each proxy sends traffic summaries (as real proxies do every 5 s)
    /// naming K callers and K routes, and the control plane's memory is read again: its
    /// golden-metrics windows hold 2 x K series per Service, whatever N.
    #[arg(long, default_value_t = 0)]
    traffic_peers: usize,
}

/// How the fleet joins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Join {
    /// Every proxy at once, as after a control-plane restart.
    All,
    /// The proxies of one service at a time, the fleet settling in between, as in a
    /// rollout: each step changes the endpoints of one service only.
    ByService,
    /// Every proxy at once but not yet healthy, so its first config carries no endpoints;
    /// then one service's proxies at a time report healthy, the fleet settling in between.
    UnhealthyFirst,
}

/// A proxy about to open its stream: index, Hello, whether it reports itself healthy at
/// once, and both ends of its outbound queue.
type Opening = (
    usize,
    Hello,
    bool,
    mpsc::Sender<ProxyMessage>,
    mpsc::Receiver<ProxyMessage>,
);

/// Opens one connection and starts the streams of `proxies` on it.
async fn open(
    endpoint: Endpoint,
    opening: Arc<Semaphore>,
    proxies: Vec<Opening>,
    events: mpsc::UnboundedSender<Event>,
) {
    let permit = opening.acquire_owned().await;
    let channel = match endpoint.connect().await {
        Ok(channel) => channel,
        Err(error) => {
            for (index, ..) in proxies {
                let _ = events.send(Event::Ended(index, format!("connect: {error:?}")));
            }
            return;
        }
    };
    drop(permit);
    for (index, hello, healthy, tx, rx) in proxies {
        let events = events.clone();
        tokio::spawn(proxy(
            index,
            channel.clone(),
            hello,
            healthy,
            tx,
            rx,
            events,
        ));
    }
}

/// What the proxies' tasks report to the main task.
enum Event {
    /// A proxy's Connect call returned.
    Connected,
    Received(Receipt),
    /// Proxy `index`'s stream ended (it should not).
    Ended(usize, String),
}

struct Receipt {
    index: usize,
    at: Instant,
    version: String,
    delta: bool,
    /// Payload bytes (config JSON, or the endpoints JSON of every service in the update).
    bytes: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.proxies == 0 || args.services == 0 || args.streams_per_connection == 0 {
        bail!("--proxies, --services and --streams-per-connection must be at least 1");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let connections = (args.proxies + 1).div_ceil(args.streams_per_connection);
    if let Some(limit) = open_files_limit() {
        // Each connection is one socket; leave room for the runtime and stdio.
        if connections as u64 + 64 > limit {
            bail!(
                "{connections} connections need more than the open-files limit of {limit}: \
                 raise `ulimit -n` or pass --streams-per-connection"
            );
        }
    }
    let patience = Duration::from_secs(args.timeout_secs);
    let quiet = Duration::from_millis(args.quiet_ms);
    let (events, mut inbox) = mpsc::unbounded_channel();
    let trigger_index = args.proxies;
    let endpoints = args.endpoints.unwrap_or(args.proxies).min(args.proxies);
    let (trigger_tx, trigger_rx) = mpsc::channel(8);
    let mut trigger_parts = Some((trigger_tx.clone(), trigger_rx));

    eprintln!(
        "starting {} proxies (+1 trigger) on {connections} connections against {}",
        args.proxies, args.addr
    );
    let started = Instant::now();
    let endpoint = Endpoint::from_shared(format!("http://{}", args.addr))
        .context("--addr")?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10));
    let opening = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    // The trigger joins last, on its own, after the measured proxies.
    let mut batches: Vec<Vec<usize>> = match args.join {
        Join::All | Join::UnhealthyFirst => vec![(0..args.proxies).collect()],
        Join::ByService => (0..args.services)
            .map(|service| (service..args.proxies).step_by(args.services).collect())
            .collect(),
    };
    batches.push(vec![trigger_index]);
    let mut fleet = Fleet::new(args.proxies + 1);
    // With --join unhealthy-first, each proxy's outbound queue, to report it healthy later.
    let mut senders: Vec<Option<mpsc::Sender<ProxyMessage>>> = vec![None; args.proxies + 1];
    let mut begun = 0;
    let mut all_connected = Duration::ZERO;
    for batch in batches.iter().filter(|batch| !batch.is_empty()) {
        for group in batch.chunks(args.streams_per_connection) {
            let proxies: Vec<Opening> = group
                .iter()
                .map(|&index| {
                    let (tx, rx) = if index == trigger_index {
                        trigger_parts.take().expect("one trigger")
                    } else {
                        mpsc::channel(8)
                    };
                    if args.join == Join::UnhealthyFirst || args.traffic_peers > 0 {
                        senders[index] = Some(tx.clone());
                    }
                    let healthy = index == trigger_index
                        || (args.join != Join::UnhealthyFirst && index < endpoints);
                    (index, hello(index, &args), healthy, tx, rx)
                })
                .collect();
            tokio::spawn(open(
                endpoint.clone(),
                opening.clone(),
                proxies,
                events.clone(),
            ));
        }
        begun += batch.len();
        // Every proxy begun so far connected and sent its first config...
        while fleet.first_received < begun || fleet.connected < begun {
            let event = next(&mut inbox, started + patience, "the fleet to start").await?;
            fleet.record(&event)?;
            if fleet.connected == args.proxies + 1 {
                all_connected = started.elapsed();
            }
        }
        // ...and, when joining service by service, the fleet settled before the next.
        if args.join == Join::ByService {
            settle(&mut inbox, &mut fleet, begun, quiet, patience).await?;
        }
    }
    drop(events);
    let first_config = fleet
        .first
        .iter()
        .map(|at| at.expect("every proxy has its first config") - started)
        .max()
        .unwrap_or_default();
    eprintln!(
        "all connected after {:.2} s; all {} had a first config after {:.2} s",
        all_connected.as_secs_f64(),
        args.proxies,
        first_config.as_secs_f64()
    );
    // The proxies joined rotation one after another: wait for the pushes to die down.
    let start_messages = fleet.messages;
    settle(&mut inbox, &mut fleet, args.proxies + 1, quiet, patience).await?;
    if args.join == Join::UnhealthyFirst {
        for service in 0..args.services {
            for index in (service..endpoints).step_by(args.services) {
                let sender = senders[index].as_ref().expect("kept for unhealthy-first");
                sender
                    .send(message(proxy_message::Message::Health(Health {
                        healthy: true,
                        detail: String::new(),
                    })))
                    .await
                    .with_context(|| format!("proxy {index}'s stream is gone"))?;
            }
            settle(&mut inbox, &mut fleet, args.proxies + 1, quiet, patience).await?;
        }
    }
    let settled = started.elapsed() - quiet;
    let start_bytes = fleet.bytes;
    let start_total_messages = fleet.messages;
    eprintln!(
        "settled on one version after {:.2} s ({} messages, {:.1} MB to the fleet while starting; {} after all had a first config)",
        settled.as_secs_f64(),
        fleet.messages,
        start_bytes as f64 / 1e6,
        fleet.messages - start_messages,
    );

    // Phase 2: M endpoint changes, each timed until all N proxies received it.
    let mut round_times = Vec::with_capacity(args.rounds);
    let mut per_proxy = Vec::with_capacity(args.rounds * args.proxies);
    let (mut deltas, mut fulls, mut round_bytes) = (0u64, 0u64, 0u64);
    let mut healthy = true;
    for round in 0..args.rounds {
        healthy = !healthy;
        let before = fleet.bytes;
        let mut got = vec![false; args.proxies];
        let mut missing = args.proxies;
        let changed = Instant::now();
        trigger_tx
            .send(message(proxy_message::Message::Health(Health {
                healthy,
                detail: String::new(),
            })))
            .await
            .context("the trigger proxy's stream is gone")?;
        let mut slowest = Duration::ZERO;
        while missing > 0 {
            let event = next(
                &mut inbox,
                changed + patience,
                "an endpoint change to arrive",
            )
            .await?;
            fleet.record(&event)?;
            if let Event::Received(receipt) = event {
                if receipt.index < args.proxies && !std::mem::replace(&mut got[receipt.index], true)
                {
                    missing -= 1;
                    let delay = receipt.at.saturating_duration_since(changed);
                    slowest = slowest.max(delay);
                    per_proxy.push(delay);
                    if receipt.delta {
                        deltas += 1;
                    } else {
                        fulls += 1;
                    }
                }
            }
        }
        round_times.push(slowest);
        settle(&mut inbox, &mut fleet, args.proxies + 1, quiet, patience).await?;
        round_bytes += fleet.bytes - before;
        eprintln!(
            "round {}/{}: health -> {healthy}: all {} proxies had it after {:.1} ms",
            round + 1,
            args.rounds,
            args.proxies,
            ms(slowest)
        );
    }

    let control_memory = || {
        args.control_pid.map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            (kb_field(&status, "VmRSS:"), kb_field(&status, "VmHWM:"))
        })
    };
    let control = control_memory();
    let mut with_traffic = None;
    if args.traffic_peers > 0 {
        // Two reports from every proxy, 5 s apart as real ones are; then the memory.
        for _ in 0..2 {
            for (index, sender) in senders.iter().enumerate().take(args.proxies) {
                let sender = sender.as_ref().expect("kept for --traffic-peers");
                let report = traffic(index, &args);
                sender
                    .send(message(proxy_message::Message::Traffic(report)))
                    .await
                    .with_context(|| format!("proxy {index}'s stream is gone"))?;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        with_traffic = control_memory();
    }
    let own = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    round_times.sort();
    per_proxy.sort();
    let mb = |kb: Option<u64>| kb.map(|kb| (kb as f64 / 1024.0 * 10.0).round() / 10.0);
    let report = serde_json::json!({
        "proxies": args.proxies,
        "services": args.services,
        "endpoints": endpoints,
        "rounds": args.rounds,
        "connections": connections,
        "streams_per_connection": args.streams_per_connection,
        "join": match args.join {
            Join::All => "all",
            Join::ByService => "by-service",
            Join::UnhealthyFirst => "unhealthy-first",
        },
        "all_connected_s": secs(all_connected),
        "first_config_all_s": secs(first_config),
        "settled_s": secs(settled),
        "start_messages": start_total_messages,
        "start_mb": (start_bytes as f64 / 1e5).round() / 10.0,
        "change_all_received_ms": {
            "p50": ms(percentile(&round_times, 50.0)),
            "p99": ms(percentile(&round_times, 99.0)),
            "max": ms(round_times.last().copied().unwrap_or_default()),
            "rounds": round_times.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
        },
        "change_per_proxy_ms": {
            "p50": ms(percentile(&per_proxy, 50.0)),
            "p99": ms(percentile(&per_proxy, 99.0)),
        },
        "round_messages": {"endpoints_updates": deltas, "full_configs": fulls},
        "round_kb_per_proxy": if args.rounds == 0 { 0.0 } else {
            (round_bytes as f64 / args.rounds as f64 / (args.proxies + 1) as f64 / 102.4).round() / 10.0
        },
        "control_vmrss_mb": mb(control.and_then(|c| c.0)),
        "traffic_series": 2 * args.traffic_peers * args.services.min(args.proxies),
        "control_vmrss_with_traffic_mb": mb(with_traffic.and_then(|c| c.0)),
        "control_vmhwm_mb": mb(control.and_then(|c| c.1)),
        "bench_vmhwm_mb": mb(kb_field(&own, "VmHWM:")),
    });
    println!("{report}");
    // The proxies' tasks end with the runtime; their connections close with the process.
    Ok(())
}

/// Per-proxy bookkeeping, index `N` being the trigger.
struct Fleet {
    first: Vec<Option<Instant>>,
    version: Vec<Option<String>>,
    first_received: usize,
    connected: usize,
    messages: u64,
    bytes: u64,
}

impl Fleet {
    fn new(size: usize) -> Self {
        Self {
            first: vec![None; size],
            version: vec![None; size],
            first_received: 0,
            connected: 0,
            messages: 0,
            bytes: 0,
        }
    }

    fn record(&mut self, event: &Event) -> Result<()> {
        match event {
            Event::Connected => self.connected += 1,
            Event::Received(receipt) => {
                self.messages += 1;
                self.bytes += receipt.bytes as u64;
                if self.first[receipt.index].is_none() {
                    self.first[receipt.index] = Some(receipt.at);
                    self.first_received += 1;
                }
                self.version[receipt.index] = Some(receipt.version.clone());
            }
            Event::Ended(index, why) => bail!("proxy {index}'s stream ended: {why}"),
        }
        Ok(())
    }

    /// Whether `begun` proxies have been sent something, and all were last sent the same
    /// version.
    fn in_step(&self, begun: usize) -> bool {
        let mut sent = self.version.iter().flatten();
        let Some(first) = sent.next() else {
            return begun == 0;
        };
        let mut count = 1;
        for version in sent {
            if version != first {
                return false;
            }
            count += 1;
        }
        count == begun
    }
}

/// Waits until nothing arrived for `quiet` and the `begun` proxies were all last sent the
/// same version.
async fn settle(
    inbox: &mut mpsc::UnboundedReceiver<Event>,
    fleet: &mut Fleet,
    begun: usize,
    quiet: Duration,
    patience: Duration,
) -> Result<()> {
    let deadline = Instant::now() + patience;
    loop {
        match tokio::time::timeout(quiet, inbox.recv()).await {
            Ok(Some(event)) => fleet.record(&event)?,
            Ok(None) => bail!("every proxy task ended"),
            Err(_) if fleet.in_step(begun) => return Ok(()),
            Err(_) => {}
        }
        if Instant::now() > deadline {
            bail!("the fleet did not settle on one version within {patience:?}");
        }
    }
}

async fn next(
    inbox: &mut mpsc::UnboundedReceiver<Event>,
    deadline: Instant,
    what: &str,
) -> Result<Event> {
    match tokio::time::timeout_at(deadline, inbox.recv()).await {
        Ok(Some(event)) => Ok(event),
        Ok(None) => bail!("every proxy task ended while waiting for {what}"),
        Err(_) => bail!("timed out waiting for {what}"),
    }
}

/// One simulated proxy: Hello and Health are queued before the call, so they are the
/// first things on the stream; then every message is recorded and ACKed.
async fn proxy(
    index: usize,
    channel: Channel,
    hello: Hello,
    healthy: bool,
    outbound: mpsc::Sender<ProxyMessage>,
    queued: mpsc::Receiver<ProxyMessage>,
    events: mpsc::UnboundedSender<Event>,
) {
    let ended = |why: String| {
        let _ = events.send(Event::Ended(index, why));
    };
    let health = proxy_message::Message::Health(Health {
        healthy: true,
        detail: String::new(),
    });
    let opening = [
        Some(proxy_message::Message::Hello(hello)),
        healthy.then_some(health),
    ];
    for body in opening.into_iter().flatten() {
        if outbound.send(message(body)).await.is_err() {
            return;
        }
    }
    let requests = stream::unfold(queued, |mut queued| async move {
        queued.recv().await.map(|message| (message, queued))
    });
    let mut client = DiscoveryClient::new(channel);
    let mut inbound = match client.connect(requests).await {
        Ok(response) => response.into_inner(),
        Err(status) => return ended(format!("Connect: {status}")),
    };
    let _ = events.send(Event::Connected);
    let mut assembler = Assembler::new(MAX_MESSAGE_BYTES);
    loop {
        let received = match inbound.message().await {
            Ok(Some(ControlMessage {
                message: Some(received),
            })) => received,
            Ok(Some(_)) => continue,
            Ok(None) => return ended("closed by the control plane".to_owned()),
            Err(status) => return ended(status.to_string()),
        };
        let body = match assembler.push(received) {
            Ok(Some(body)) => body,
            Ok(None) => continue,
            Err(error) => return ended(error.to_string()),
        };
        let at = Instant::now();
        let (version, delta, bytes) = match body {
            control_message::Message::Config(config) => {
                (config.version, false, config.config_json.len())
            }
            control_message::Message::Endpoints(update) => {
                let bytes = update
                    .services
                    .iter()
                    .map(|s: &ServiceEndpoints| s.endpoints_json.len())
                    .sum();
                (update.version, true, bytes)
            }
            control_message::Message::Part(_) => unreachable!("the assembler joins parts"),
            // No tap is ever opened on these proxies.
            control_message::Message::TapStart(_) | control_message::Message::TapStop(_) => {
                continue
            }
        };
        let ack = message(proxy_message::Message::Ack(Ack {
            version: version.clone(),
        }));
        let _ = events.send(Event::Received(Receipt {
            index,
            at,
            version,
            delta,
            bytes,
        }));
        if outbound.send(ack).await.is_err() {
            return;
        }
    }
}

/// Proxy `index`'s traffic report: requests from K callers and to K routes of other
/// Services.
fn traffic(index: usize, args: &Args) -> Traffic {
    let service = index % args.services;
    let mut latency = vec![0; weft_api::LATENCY_BUCKETS];
    latency[weft_api::latency_bucket(800)] = 100;
    let stat = |inbound: bool, peer: usize, route: String| TrafficStat {
        inbound,
        peer: format!("svc-{peer}.{}", args.namespace),
        route,
        requests: 100,
        server_errors: 1,
        mtls: if inbound { 100 } else { 0 },
        latency: latency.clone(),
        ..TrafficStat::default()
    };
    let mut stats = Vec::with_capacity(2 * args.traffic_peers);
    for j in 0..args.traffic_peers {
        let peer = (service + 1 + j) % args.services.max(1);
        stats.push(stat(true, peer, String::new()));
        stats.push(stat(false, peer, format!("{}/route-{j}/0", args.namespace)));
    }
    Traffic {
        window_millis: 5000,
        stats,
        left_out: 0,
    }
}

fn hello(index: usize, args: &Args) -> Hello {
    Hello {
        proxy_id: format!("bench-proxy-{index}"),
        service: format!("svc-{}", index % args.services),
        namespace: args.namespace.clone(),
        inbound_address: fake_address(index).to_string(),
        labels: Default::default(),
        zone: None,
        token: String::new(),
        running_version: String::new(),
        admin_address: String::new(),
    }
}

/// A distinct loopback address per proxy: ports 10000.. on 127.0.0.1, then on 127.0.0.2...
fn fake_address(index: usize) -> SocketAddrV4 {
    const PER_IP: usize = 50_000;
    let ip = u32::from(Ipv4Addr::new(127, 0, 0, 1)) + (index / PER_IP) as u32;
    SocketAddrV4::new(Ipv4Addr::from(ip), 10_000 + (index % PER_IP) as u16)
}

fn message(body: proxy_message::Message) -> ProxyMessage {
    ProxyMessage {
        message: Some(body),
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e3).round() / 1e3
}

fn kb_field(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
}

/// The soft open-files limit, from /proc/self/limits.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 50.0), Duration::from_millis(10));
        assert_eq!(percentile(&values, 99.0), Duration::from_millis(20));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn fake_addresses_are_distinct() {
        assert_eq!(fake_address(0).to_string(), "127.0.0.1:10000");
        assert_eq!(fake_address(49_999).to_string(), "127.0.0.1:59999");
        assert_eq!(fake_address(50_000).to_string(), "127.0.0.2:10000");
    }

    #[test]
    fn reads_proc_status_fields() {
        let status = "Name:\tweft\nVmHWM:\t   12345 kB\nVmRSS:\t   2345 kB\n";
        assert_eq!(kb_field(status, "VmRSS:"), Some(2345));
        assert_eq!(kb_field(status, "VmHWM:"), Some(12345));
        assert_eq!(kb_field(status, "VmSwap:"), None);
    }
}
