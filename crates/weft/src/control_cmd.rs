//! `weft control`: flags to `ControlOptions`, and the runtime the control plane runs on.

use crate::stop_signal;
use anyhow::Context;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use weft_control::ca::CaSource;
use weft_control::server::{self, ControlOptions, Shutdown};
use weft_control::transport::Plaintext;

#[derive(Args)]
#[command(after_help = "Example:\n  weft control --data-dir /var/lib/weft\n  \
    weft apply -f mesh/          # then, from another shell\n  \
    weft get httproutes")]
pub struct ControlArgs {
    /// Where the control plane keeps its state (the store file, weft.redb).
    #[arg(long, default_value = "./weft-data")]
    data_dir: PathBuf,
    /// REST API for `weft apply/get/delete` and the dashboard.
    #[arg(long, default_value = "127.0.0.1:7080")]
    api_addr: SocketAddr,
    /// gRPC server the proxies connect to.
    #[arg(long, default_value = "127.0.0.1:7443")]
    grpc_addr: SocketAddr,
    /// The mesh's CA certificate (PEM), a root or an intermediate of your own PKI, instead
    /// of the root the control plane generates on first start and keeps in its store.
    #[arg(long, requires = "ca_key", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// The private key of --ca-cert (unencrypted PKCS#8 PEM).
    #[arg(long, requires = "ca_cert", value_name = "FILE")]
    ca_key: Option<PathBuf>,
    /// DEVELOPMENT ONLY: accept plain-text proxy connections from this host on the gRPC
    /// port. They prove nothing, so any local process can register as any service;
    /// `weft check` warns while this is on. Without it, proxies connect with https://,
    /// --control-plane-ca and a join token.
    #[arg(long)]
    dev_plaintext_proxies: bool,
    /// Also write the audit log to this file, one JSON line per entry (`{"entry": ...,
    /// "hash": ...}`) within a second of it being recorded, for a SIEM or a log shipper.
    /// Appended to; after a restart it continues after the last entry it holds.
    #[arg(long, value_name = "FILE")]
    audit_file: Option<PathBuf>,
    /// Keep the mesh's Prometheus targets in this file (Prometheus `file_sd_configs`
    /// format): this control plane's /metrics and every connected proxy's admin server,
    /// rewritten whole as proxies come and go. `deploy/prometheus.yml` reads it.
    #[arg(long, value_name = "FILE")]
    prometheus_sd_file: Option<PathBuf>,
}

pub fn run(args: ControlArgs) -> anyhow::Result<()> {
    let ca = match (args.ca_cert, args.ca_key) {
        (Some(cert), Some(key)) => CaSource::Files { cert, key },
        _ => CaSource::Store,
    };
    let options = ControlOptions {
        data_dir: args.data_dir,
        api_addr: args.api_addr,
        grpc_addr: args.grpc_addr,
        plaintext: if args.dev_plaintext_proxies {
            Plaintext::DevLoopback
        } else {
            Plaintext::Refused
        },
        audit_file: args.audit_file,
        prometheus_sd_file: args.prometheus_sd_file,
    };
    // Two workers: the API and the config push share a small, busy-when-it-matters load,
    // and the store's commits wait for the disk on blocking threads, not on these.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("weft-control")
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let stop = stop_signal::install(stop_signal::TERMINATE_OR_INTERRUPT)
            .context("installing the signal handlers")?;
        server::run_with_ca(options, ca, Shutdown::on(stop))
            .await
            .map_err(anyhow::Error::from)
    })?;
    Ok(())
}
