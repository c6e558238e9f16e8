//! Mutual-TLS handshake benchmark: opens N connections to a running `weft proxy`'s inbound
//! listener, C at a time, each doing a full mTLS handshake and one HTTP/1.1 request, and
//! prints one JSON object on stdout. `--mode fresh` gives every connection its own client
//! config, so none can resume; `--mode resume` reuses one per worker, so each connection
//! resumes with a session ticket from the worker's previous one.
//!
//! `weft-bench-tls app` is the application behind the proxy: a tiny HTTP/1.1 server on
//! 127.0.0.1:0 that prints its address on stdout and answers every request with 200.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, HandshakeKind};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use weft_identity::{SpiffeId, TlsIdentity};

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: api\r\nconnection: close\r\n\r\n";
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";
/// A connection that takes longer than this is counted as failed instead of stalling the run.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests from the proxy are bodiless GETs; a head this large means something is wrong.
const MAX_REQUEST_HEAD: usize = 64 * 1024;

#[derive(Parser)]
#[command(
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the application behind the proxy: print the address, answer 200 forever.
    App,
}

#[derive(clap::Args)]
struct LoadArgs {
    /// The proxy's inbound (mutual TLS) address, e.g. 127.0.0.1:7143.
    #[arg(long, required = true)]
    inbound: Option<SocketAddr>,
    /// Client certificate (PEM), issued by the same CA as the proxy's.
    #[arg(long, required = true)]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, required = true)]
    key: Option<PathBuf>,
    /// Trust bundle the proxy's certificate must chain to.
    #[arg(long, required = true)]
    ca: Option<PathBuf>,
    /// The SPIFFE id the proxy must present.
    #[arg(long, default_value = "spiffe://weft.local/ns/default/svc/api")]
    server_id: String,
    /// Connections to open in all, each a handshake and one request.
    #[arg(long, default_value_t = 10000)]
    connections: usize,
    /// Connections in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long, value_enum, required = true)]
    mode: Option<Mode>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// A new client config (and so an empty session cache) per connection: full handshakes.
    Fresh,
    /// One client config per worker, reused for its connections: all but each worker's
    /// first resume with session tickets.
    // Not one config for all workers: rustls keeps at most 8 TLS 1.3 tickets per server in
    // a client cache, so more than 8 connections in flight drain it and about half of them
    // fall back to full handshakes.
    Resume,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Fresh => "fresh",
            Mode::Resume => "resume",
        }
    }
}

/// The load generator and the app each get one core in bench/tls.sh, so one thread is all
/// they can use.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::App) => serve_app().await,
        None => run_load(cli.load).await,
    }
}

async fn serve_app() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the app listener on 127.0.0.1")?;
    let addr = listener.local_addr()?;
    // The script reads this line to learn where to point the proxy; it must not sit in a
    // buffer until exit.
    let mut stdout = tokio::io::stdout();
    stdout.write_all(format!("{addr}\n").as_bytes()).await?;
    stdout.flush().await?;
    loop {
        let (stream, _) = listener.accept().await.context("accepting on the app")?;
        tokio::spawn(async move {
            if let Err(error) = answer_requests(stream).await {
                eprintln!("app connection: {error:#}");
            }
        });
    }
}

/// Answers every request on one connection until the proxy closes it, so the proxy can keep
/// its connection to the app and the benchmark measures handshakes, not app connects.
async fn answer_requests(mut stream: TcpStream) -> Result<()> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if buf.len() > MAX_REQUEST_HEAD {
                bail!("request head larger than {MAX_REQUEST_HEAD} bytes");
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let close = String::from_utf8_lossy(&buf[..head_end])
            .to_ascii_lowercase()
            .contains("connection: close");
        buf.drain(..head_end);
        stream.write_all(RESPONSE).await?;
        if close {
            return stream.shutdown().await.map_err(Into::into);
        }
    }
}

/// What one connection ended as.
enum Outcome {
    Full,
    Resumed,
    Failed(String),
}

async fn run_load(args: LoadArgs) -> Result<()> {
    // clap enforces these unless a subcommand is given, and then this is not called.
    let (Some(inbound), Some(cert), Some(key), Some(ca), Some(mode)) =
        (args.inbound, args.cert, args.key, args.ca, args.mode)
    else {
        bail!("--inbound, --cert, --key, --ca and --mode are required");
    };
    if args.connections == 0 || args.concurrency == 0 {
        bail!("--connections and --concurrency must be at least 1");
    }
    let identity = Arc::new(
        TlsIdentity::from_files(&cert, &key, &ca)
            .with_context(|| format!("loading the client identity from {}", cert.display()))?,
    );
    let server_id = Arc::new(
        SpiffeId::parse(&args.server_id)
            .with_context(|| format!("--server-id {:?} is not a SPIFFE id", args.server_id))?,
    );

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..args.concurrency.min(args.connections) {
        let (identity, server_id, next) = (identity.clone(), server_id.clone(), next.clone());
        workers.spawn(async move {
            let reused = identity.client_config(&server_id, &[b"http/1.1"]);
            let mut outcomes = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < args.connections {
                let config = match mode {
                    Mode::Fresh => identity.client_config(&server_id, &[b"http/1.1"]),
                    Mode::Resume => reused.clone(),
                };
                let outcome =
                    tokio::time::timeout(CONNECTION_TIMEOUT, connect_once(inbound, config))
                        .await
                        .unwrap_or_else(|_| {
                            Err(anyhow::anyhow!("timed out after {CONNECTION_TIMEOUT:?}"))
                        });
                outcomes
                    .push(outcome.unwrap_or_else(|error| Outcome::Failed(format!("{error:#}"))));
            }
            outcomes
        });
    }
    let (mut resumed, mut full, mut failures, mut first_error) = (0usize, 0usize, 0usize, None);
    while let Some(outcomes) = workers.join_next().await {
        for outcome in outcomes.context("a connection worker panicked")? {
            match outcome {
                Outcome::Full => full += 1,
                Outcome::Resumed => resumed += 1,
                Outcome::Failed(error) => {
                    failures += 1;
                    first_error.get_or_insert(error);
                }
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let succeeded = full + resumed;
    if let Some(error) = &first_error {
        eprintln!(
            "weft-bench-tls: {failures} of {} connections failed; first: {error}",
            args.connections
        );
    }
    let report = serde_json::json!({
        "mode": mode.name(),
        "connections": args.connections,
        "concurrency": args.concurrency,
        "succeeded": succeeded,
        "failures": failures,
        "first_error": first_error,
        "full_handshakes": full,
        "resumed": resumed,
        "seconds": seconds,
        "handshakes_per_second": succeeded as f64 / seconds,
    });
    println!("{report}");
    Ok(())
}

/// One connection: handshake, one request, the whole answer. In TLS 1.3 the proxy checks the
/// client certificate after the client already considers the handshake done, so only a
/// complete 200 answer proves the proxy accepted this connection.
async fn connect_once(inbound: SocketAddr, config: Arc<ClientConfig>) -> Result<Outcome> {
    let tcp = TcpStream::connect(inbound).await.context("connecting")?;
    tcp.set_nodelay(true)?;
    // The IP address is the session cache key, and it sends no SNI, like the proxy's own
    // outbound connections.
    let name = ServerName::IpAddress(inbound.ip().into());
    let mut tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    let kind = tls.get_ref().1.handshake_kind();
    tls.write_all(REQUEST)
        .await
        .context("sending the request")?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer)
        .await
        .context("reading the answer")?;
    if !answer.starts_with(b"HTTP/1.1 200 ") || !answer.ends_with(b"\r\n\r\nok") {
        let head = String::from_utf8_lossy(&answer[..answer.len().min(120)]).into_owned();
        bail!("unexpected answer: {head:?}");
    }
    Ok(match kind {
        Some(HandshakeKind::Resumed) => Outcome::Resumed,
        _ => Outcome::Full,
    })
}
