//! `weft`: the one binary for every role (see DESIGN.md). Commands are thin: they parse
//! flags and call into the library crates.

mod cert_cmd;
mod demo_cmd;
mod proxy_cmd;

use clap::{Parser, Subcommand};
use std::io::IsTerminal;

#[derive(Parser)]
#[command(name = "weft", version, about = "Weft service mesh", long_about = None)]
struct Cli {
    /// Log filter, e.g. `info`, `debug`, `weft_proxy=debug` (also RUST_LOG).
    #[arg(long, global = true, env = "WEFT_LOG", default_value = "info")]
    log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a sample mesh with sidecars and traffic on loopback: the first thing to try.
    Demo(demo_cmd::DemoArgs),
    /// Run the sidecar proxy for one workload (data plane).
    Proxy(Box<proxy_cmd::ProxyArgs>),
    /// Make certificates for local mode, tests and benchmarks.
    Cert {
        #[command(subcommand)]
        cmd: cert_cmd::CertCommand,
    },
}

fn init_logging(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    // Logs go to stderr: stdout carries the access log.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log, cli.log_json);
    let result = match cli.command {
        Command::Demo(args) => demo_cmd::run(args),
        Command::Proxy(args) => proxy_cmd::run(*args),
        Command::Cert { cmd } => cert_cmd::run(cmd),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
