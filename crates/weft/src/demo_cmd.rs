//! `weft demo`: flags to `DemoOptions`, and the runtime the demo runs on.

use crate::stop_signal;
use anyhow::Context;
use clap::Args;
use std::time::Duration;

#[derive(Args)]
#[command(
    after_help = "Starts a sample mesh on loopback: a control plane (state in a temporary \
    directory), a frontend calling a gRPC catalog and two versions of reviews (split 90/10 \
    by an HTTPRoute) which call ratings, each with its own sidecar connected to the control \
    plane, plus a load generator. It prints where everything is and the commands to try \
    (weft proxies/check/get/apply --api ...), and when it stops (Ctrl-C or --duration) a \
    per-edge summary of requests, success rate and latency. Every process it starts is \
    stopped at exit.\n\n\
    With --transparent (root): each workload runs in a network namespace of its own, on a \
    bridge with the host at 10.251.0.1; its app is unmodified and calls services by name \
    (http://ratings.default/, gRPC to catalog.default:80), and `weft capture install` \
    (iptables) sends its traffic through its sidecar, which runs as user 1337. The \
    namespaces, and every rule in them, are deleted at exit (or by the next demo, if this one \
    was killed)."
)]
pub struct DemoArgs {
    /// Stop after this long (e.g. 30s, 5m) instead of waiting for Ctrl-C.
    #[arg(long, value_parser = crate::duration_flag::parse)]
    duration: Option<Duration>,
    /// Requests per second the load generator sends to the frontend.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    rps: u32,
    /// Run each workload in its own network namespace, its app unmodified (calling services
    /// by name) and captured by iptables. Needs root.
    #[arg(long)]
    transparent: bool,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    // The sidecars are this same binary, run as `weft proxy`.
    let weft_bin =
        std::env::current_exe().context("finding the weft binary to run the sidecars")?;
    let options = weft_demo::DemoOptions {
        weft_bin,
        rps: args.rps,
        duration: args.duration,
        transparent: args.transparent,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("weft-demo")
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let summary = runtime.block_on(async {
        let stop = stop_signal::install(stop_signal::TERMINATE_INTERRUPT_OR_HANGUP)
            .context("installing the signal handlers")?;
        weft_demo::run(options, stop, |guide| println!("{guide}"))
            .await
            .map_err(anyhow::Error::from)
    })?;
    println!("{summary}");
    Ok(())
}
