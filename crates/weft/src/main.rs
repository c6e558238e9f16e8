//! `weft`: the one binary for every role (see DESIGN.md). Commands are thin: they parse
//! flags and call into the library crates.

mod api_client;
mod api_token_cmd;
mod audit_cmd;
mod ca_cmd;
mod capture_cmd;
mod cert_cmd;
mod client_cmd;
mod control_cmd;
mod demo_cmd;
mod describe_cmd;
mod diagnose_cmd;
mod duration_flag;
mod explain_cmd;
mod fleet_cmd;
mod identity_cmd;
mod operator_cert_cmd;
mod policy_cmd;
mod proxy_cmd;
mod resource_summary;
mod stat_cmd;
mod stop_signal;
mod table;
mod tap_cmd;
mod token_cmd;
mod top_cmd;

use clap::{Parser, Subcommand};
use std::io::IsTerminal;

#[derive(Parser)]
#[command(name = "weft", version, about = "Weft service mesh", long_about = None)]
struct Cli {
    /// Log filter, e.g. `info`, `debug`, `weft_proxy=debug` (also RUST_LOG).
    /// [default: info; `warn` for `weft demo`, whose own output is the point]
    #[arg(long, global = true, env = "WEFT_LOG", help_heading = "Global options")]
    log: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, help_heading = "Global options")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane: the resource store and the REST API.
    Control(control_cmd::ControlArgs),
    /// Create or update resources from YAML or JSON files, all or nothing.
    Apply(client_cmd::ApplyArgs),
    /// Show resources: a table, or the documents with -o yaml|json.
    Get(client_cmd::GetArgs),
    /// One Service on one page: instances and their health, routes, policies, status.
    Describe(describe_cmd::DescribeArgs),
    /// Delete a resource.
    Delete(client_cmd::DeleteArgs),
    /// List the proxies connected to the control plane: identity, config version, health.
    Proxies(fleet_cmd::ProxiesArgs),
    /// Is the control plane up, are its proxies connected, healthy and in sync? Exits
    /// non-zero with hints when not.
    Check(fleet_cmd::CheckArgs),
    /// This weft's version and the control plane's.
    Version(fleet_cmd::VersionArgs),
    /// Shell completion: `source <(weft completion bash)`, or write it where your shell
    /// looks (zsh: a file `_weft` on $fpath; fish: ~/.config/fish/completions/weft.fish).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// What the mesh would do with one request, and why: route, backends, endpoints,
    /// timeouts, retries, identities and each authorization rule. Sends nothing.
    Explain(explain_cmd::ExplainArgs),
    /// Requests a second, success rate and latency of every Service, edge (caller ->
    /// Service) and route, over the last minute (or 10 minutes, or hour), from what the
    /// proxies report: `weft stat`, `weft stat edges`, `weft stat svc/reviews`.
    Stat(stat_cmd::StatArgs),
    /// What changed: each edge's last seconds against its last 10 minutes (success rate,
    /// p99, denials, retries, new edges), unhealthy endpoints and expiring certificates,
    /// worst first with the numbers. Exits non-zero when something is failing.
    Diagnose(diagnose_cmd::DiagnoseArgs),
    /// Watch the requests one Service's proxies carry, live: time, caller, method, path,
    /// status, latency, route and authorization decision, at most --max-rps a second.
    /// Costs the proxies nothing once it stops.
    Tap(tap_cmd::TapArgs),
    /// The busiest edges of the mesh, refreshed in place (q quits); plain lines, one table
    /// per refresh, when the output is not a terminal.
    Top(top_cmd::TopArgs),
    /// Run a sample mesh with sidecars and traffic on loopback: the first thing to try.
    Demo(demo_cmd::DemoArgs),
    /// Run the sidecar proxy for one workload (data plane).
    Proxy(Box<proxy_cmd::ProxyArgs>),
    /// Transparent capture: the iptables rules that send an unmodified app's traffic
    /// through its proxy (`install`, `remove`).
    Capture {
        #[command(subcommand)]
        cmd: capture_cmd::CaptureCmd,
    },
    /// Make certificates for local mode, tests and benchmarks.
    Cert {
        #[command(subcommand)]
        cmd: cert_cmd::CertCommand,
    },
    /// AuthorizationPolicies from observed traffic (`suggest`).
    Policy {
        #[command(subcommand)]
        cmd: policy_cmd::PolicyCommand,
    },
    /// The audit log: who changed what and when, tamper-evident (`log`, `verify`).
    Audit {
        #[command(subcommand)]
        cmd: audit_cmd::AuditCommand,
    },
    /// Show or rotate the control plane's CA root.
    Ca {
        #[command(subcommand)]
        cmd: ca_cmd::CaCommand,
    },
    /// Create, list or revoke join tokens: what a proxy presents to get its identity.
    Token {
        #[command(subcommand)]
        cmd: token_cmd::TokenCommand,
    },
    /// Client certificates for operators, to call the API over HTTPS instead of with a
    /// token.
    OperatorCert {
        #[command(subcommand)]
        cmd: operator_cert_cmd::OperatorCertCommand,
    },
    /// Revoke or restore workload identities and certificates.
    Identity {
        #[command(subcommand)]
        cmd: identity_cmd::IdentityCommand,
    },
    /// Create, list or revoke API tokens: the credentials of `weft` commands, scripts and
    /// the dashboard (roles admin and read-only).
    ApiToken {
        #[command(subcommand)]
        cmd: api_token_cmd::ApiTokenCommand,
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
    let default_log = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    init_logging(cli.log.as_deref().unwrap_or(default_log), cli.log_json);
    let result = match cli.command {
        Command::Control(args) => control_cmd::run(args),
        Command::Apply(args) => client_cmd::apply(args),
        Command::Get(args) => client_cmd::get(args),
        Command::Delete(args) => client_cmd::delete(args),
        Command::Proxies(args) => fleet_cmd::proxies(args),
        Command::Check(args) => fleet_cmd::check(args),
        Command::Explain(args) => explain_cmd::run(args),
        Command::Stat(args) => stat_cmd::run(args),
        Command::Diagnose(args) => diagnose_cmd::run(args),
        Command::Tap(args) => tap_cmd::run(args),
        Command::Top(args) => top_cmd::run(args),
        Command::Describe(args) => describe_cmd::run(args),
        Command::Version(args) => fleet_cmd::version(args),
        Command::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "weft", &mut std::io::stdout());
            Ok(())
        }
        Command::Demo(args) => demo_cmd::run(args),
        Command::Proxy(args) => proxy_cmd::run(*args),
        Command::Ca { cmd } => ca_cmd::run(cmd),
        Command::Capture { cmd } => capture_cmd::run(cmd),
        Command::Audit { cmd } => audit_cmd::run(cmd),
        Command::Policy { cmd } => policy_cmd::run(cmd),
        Command::Cert { cmd } => cert_cmd::run(cmd),
        Command::Token { cmd } => token_cmd::run(cmd),
        Command::ApiToken { cmd } => api_token_cmd::run(cmd),
        Command::Identity { cmd } => identity_cmd::run(cmd),
        Command::OperatorCert { cmd } => operator_cert_cmd::run(cmd),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", report(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated, each said once: a cause whose text its
/// context already quotes (`cannot listen on ...: Address in use (os error 98)`) is not
/// repeated after it.
fn report(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::report;

    #[test]
    fn each_cause_is_said_once() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let quoted = format!("connecting to 127.0.0.1:9: {refused}");
        let error = anyhow::Error::new(refused).context(quoted.clone());
        assert_eq!(report(&error), quoted);
        let error = anyhow::anyhow!("the disk is full").context("applying");
        assert_eq!(report(&error), "applying: the disk is full");
    }
}
