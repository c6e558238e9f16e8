//! `weft tap`: the requests one Service's proxies carry, live, as they happen
//! (`GET /api/v1/tap`), until interrupted.

use crate::api_client::{ApiArgs, ApiClient};
use clap::Args;
use serde_json::Value;

#[derive(Args)]
pub struct TapArgs {
    /// The Service whose proxies are tapped: the requests its app receives (inbound) and
    /// sends (outbound).
    service: String,
    /// The Service's namespace.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Only requests whose path starts with this.
    #[arg(long)]
    path: Option<String>,
    /// Only requests with this method.
    #[arg(long)]
    method: Option<String>,
    /// Only requests answered with this status.
    #[arg(long)]
    status: Option<u16>,
    /// At most this many requests a second (1-1000); the rest are counted, not shown.
    #[arg(long, default_value_t = 100)]
    max_rps: u32,
    /// Print each request as a JSON line.
    #[arg(short, long, value_parser = ["json"])]
    output: Option<String>,
    /// Stop after this many requests.
    #[arg(long)]
    count: Option<u64>,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn run(args: TapArgs) -> anyhow::Result<()> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("service", &args.service);
    query.append_pair("namespace", &args.namespace);
    query.append_pair("maxRps", &args.max_rps.to_string());
    if let Some(path) = &args.path {
        query.append_pair("path", path);
    }
    if let Some(method) = &args.method {
        query.append_pair("method", method);
    }
    if let Some(status) = args.status {
        query.append_pair("status", &status.to_string());
    }
    let client = ApiClient::new(&args.api)?;
    let json = args.output.is_some();
    if !json {
        eprintln!(
            "tapping {}.{} (at most {} a second; Ctrl-C stops)",
            args.service, args.namespace, args.max_rps
        );
    }
    let mut shown = 0u64;
    client.stream_lines(&format!("/api/v1/tap?{}", query.finish()), |line| {
        if line.is_empty() {
            return true; // the control plane's heartbeat
        }
        if json {
            println!("{line}");
        } else if let Ok(event) = serde_json::from_str::<Value>(line) {
            println!("{}", describe(&event));
        }
        shown += 1;
        args.count.is_none_or(|count| shown < count)
    })
}

/// One request on one line: time, direction, who called what, the answer and its time.
fn describe(event: &Value) -> String {
    let text = |field: &str| event[field].as_str().unwrap_or("-");
    let mut line = format!(
        "{} {:<3} {} -> {} {} {} {} {:.1}ms",
        text("time"),
        if event["direction"] == "inbound" {
            "in"
        } else {
            "out"
        },
        text("source"),
        text("destination"),
        text("method"),
        text("path"),
        event["status"],
        event["latencyMs"].as_f64().unwrap_or(0.0),
    );
    if let Some(route) = event["route"].as_str() {
        line.push_str(&format!(" route={route}"));
    }
    if let Some(decision) = event["authz"]["decision"].as_str() {
        line.push_str(&format!(
            " authz={decision}:{}",
            event["authz"]["policy"].as_str().unwrap_or("-")
        ));
    }
    if let Some(dropped) = event["droppedBefore"].as_u64() {
        line.push_str(&format!(" ({dropped} not shown before, over the rate)"));
    }
    line
}
