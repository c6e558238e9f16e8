//! Control-plane scale benchmark: opens N simulated proxies against a running
//! `weft control`, each a real gRPC client on its own HTTP/2 connection (or a few streams per
//! connection with `--streams-per-connection`), that says Hello, reports itself healthy and
//! ACKs every Config and Endpoints message like a real proxy. Once all of them run their
//! first config, one extra proxy flips its health M times; each flip is an endpoint change,
//! and the time from the flip until every one of the N proxies has received the resulting
//! message is one round. Prints one JSON object on stdout; progress goes to stderr.
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
use weft_api::v1::discovery_client::DiscoveryClient;
use weft_api::v1::{control_message, proxy_message, Ack, ControlMessage, Health, Hello};
use weft_api::v1::{ProxyMessage, ServiceEndpoints};

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
    /// PID of the control plane, to report its VmRSS and VmHWM at the end.
    #[arg(long)]
    control_pid: Option<u32>,
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
    // The trigger goes last, in the last group, so it joins after the measured proxies.
    let indices: Vec<usize> = (0..=args.proxies).collect();
    for group in indices.chunks(args.streams_per_connection) {
        let proxies: Vec<(
            usize,
            Hello,
            mpsc::Sender<ProxyMessage>,
            mpsc::Receiver<ProxyMessage>,
        )> = group
            .iter()
            .map(|&index| {
                let (tx, rx) = if index == trigger_index {
                    trigger_parts.take().expect("one trigger")
                } else {
                    mpsc::channel(8)
                };
                (index, hello(index, &args), tx, rx)
            })
            .collect();
        let endpoint = endpoint.clone();
        let opening = opening.clone();
        let events = events.clone();
        tokio::spawn(async move {
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
            for (index, hello, tx, rx) in proxies {
                tokio::spawn(proxy(index, channel.clone(), hello, tx, rx, events.clone()));
            }
        });
    }
    drop(events);

    let mut fleet = Fleet::new(args.proxies + 1);
    // Phase 1: every measured proxy connected and sent its first config.
    let mut all_connected = None;
    while fleet.first_received < args.proxies || fleet.connected < args.proxies + 1 {
        let event = next(&mut inbox, started + patience, "the fleet to start").await?;
        fleet.record(&event)?;
        if all_connected.is_none() && fleet.connected == args.proxies + 1 {
            all_connected = Some(started.elapsed());
        }
    }
    let all_connected = all_connected.unwrap_or_else(|| started.elapsed());
    let first_config = fleet
        .first
        .iter()
        .take(args.proxies)
        .map(|at| at.expect("every proxy has its first config") - started)
        .max()
        .unwrap_or_default();
    eprintln!(
        "all connected in {:.2} s; all {} had a first config after {:.2} s",
        all_connected.as_secs_f64(),
        args.proxies,
        first_config.as_secs_f64()
    );
    // The proxies joined rotation one after another: wait for the pushes to die down.
    let start_messages = fleet.messages;
    settle(&mut inbox, &mut fleet, quiet, patience).await?;
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
        settle(&mut inbox, &mut fleet, quiet, patience).await?;
        round_bytes += fleet.bytes - before;
        eprintln!(
            "round {}/{}: health -> {healthy}: all {} proxies had it after {:.1} ms",
            round + 1,
            args.rounds,
            args.proxies,
            ms(slowest)
        );
    }

    let control = args.control_pid.map(|pid| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        (kb_field(&status, "VmRSS:"), kb_field(&status, "VmHWM:"))
    });
    let own = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    round_times.sort();
    per_proxy.sort();
    let mb = |kb: Option<u64>| kb.map(|kb| (kb as f64 / 1024.0 * 10.0).round() / 10.0);
    let report = serde_json::json!({
        "proxies": args.proxies,
        "services": args.services,
        "rounds": args.rounds,
        "connections": connections,
        "streams_per_connection": args.streams_per_connection,
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
                    if receipt.index + 1 < self.first.len() {
                        self.first_received += 1;
                    }
                }
                self.version[receipt.index] = Some(receipt.version.clone());
            }
            Event::Ended(index, why) => bail!("proxy {index}'s stream ended: {why}"),
        }
        Ok(())
    }

    /// Whether every proxy, the trigger included, was last sent the same version.
    fn in_step(&self) -> bool {
        let first = self.version[0].as_ref();
        first.is_some() && self.version.iter().all(|v| v.as_ref() == first)
    }
}

/// Waits until nothing arrived for `quiet` and every proxy was last sent the same version.
async fn settle(
    inbox: &mut mpsc::UnboundedReceiver<Event>,
    fleet: &mut Fleet,
    quiet: Duration,
    patience: Duration,
) -> Result<()> {
    let deadline = Instant::now() + patience;
    loop {
        match tokio::time::timeout(quiet, inbox.recv()).await {
            Ok(Some(event)) => fleet.record(&event)?,
            Ok(None) => bail!("every proxy task ended"),
            Err(_) if fleet.in_step() => return Ok(()),
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
    outbound: mpsc::Sender<ProxyMessage>,
    queued: mpsc::Receiver<ProxyMessage>,
    events: mpsc::UnboundedSender<Event>,
) {
    let ended = |why: String| {
        let _ = events.send(Event::Ended(index, why));
    };
    let opening = [
        proxy_message::Message::Hello(hello),
        proxy_message::Message::Health(Health {
            healthy: true,
            detail: String::new(),
        }),
    ];
    for body in opening {
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
    loop {
        let body = match inbound.message().await {
            Ok(Some(ControlMessage {
                message: Some(body),
            })) => body,
            Ok(Some(_)) => continue,
            Ok(None) => return ended("closed by the control plane".to_owned()),
            Err(status) => return ended(status.to_string()),
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
