//! `weft explain`: what the mesh would do with one request, step by step, without sending
//! it (the control plane computes it: `GET /api/v1/explain`).

use crate::api_client::{ApiArgs, ApiClient};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use http::Method;
use serde_json::Value;

#[derive(Args)]
#[command(after_help = "Examples:
  weft explain --from web --to api GET /orders
  weft explain --from web.shop --to reviews.books POST /reviews --header x-user:alice
  weft explain --from web --to db --port 5432 -o json")]
pub struct ExplainArgs {
    /// The calling Service: NAME (namespace `default`) or NAME.NAMESPACE.
    #[arg(long, value_name = "SERVICE")]
    from: String,
    /// The host the app calls, as it writes it: `api`, `api.shop`, `api.shop:9080`.
    #[arg(long, value_name = "HOST")]
    to: String,
    /// The method and path, in that order; either may be left out (GET, /).
    #[arg(value_name = "METHOD|PATH", num_args = 0..=2)]
    request: Vec<String>,
    /// A request header, `name:value` or `name=value`; repeat for more.
    #[arg(long = "header", short = 'H', value_name = "NAME:VALUE")]
    headers: Vec<String>,
    /// The port called, when the host does not say.
    #[arg(long)]
    port: Option<u16>,
    /// How to print the answer.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Output {
    Text,
    Json,
}

pub fn run(args: ExplainArgs) -> anyhow::Result<()> {
    let (method, path) = method_and_path(&args.request)?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("from", &args.from)
        .append_pair("to", &args.to)
        .append_pair("method", &method)
        .append_pair("path", &path);
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .or_else(|| header.split_once('='))
            .ok_or_else(|| anyhow::anyhow!("--header {header:?}: write it name:value"))?;
        query.append_pair("header", &format!("{name}:{value}"));
    }
    if let Some(port) = args.port {
        query.append_pair("port", &port.to_string());
    }
    let answer = ApiClient::new(&args.api)?
        .send(
            Method::GET,
            &format!("/api/v1/explain?{}", query.finish()),
            None,
            Bytes::new(),
        )?
        .success()?
        .json()?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
        Output::Text => print!("{}", render(&answer, &method, &path)),
    }
    Ok(())
}

/// `[METHOD] [PATH]` from the positional arguments.
fn method_and_path(request: &[String]) -> anyhow::Result<(String, String)> {
    let (mut method, mut path) = ("GET".to_owned(), "/".to_owned());
    match request {
        [] => {}
        [one] if one.starts_with('/') => path = one.clone(),
        [one] => method = one.to_ascii_uppercase(),
        [m, p] if p.starts_with('/') => (method, path) = (m.to_ascii_uppercase(), p.clone()),
        [_, p] => anyhow::bail!("the path {p:?} must start with '/'"),
        _ => unreachable!("clap takes at most two"),
    }
    Ok((method, path))
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| value.to_string())
}

/// The explanation as an operator reads it: the outcome first, then each step.
fn render(answer: &Value, method: &str, path: &str) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    let from = &answer["from"];
    line(format!(
        "{}.{} ({}) -> {}: {method} {path}",
        text(&from["service"]),
        text(&from["namespace"]),
        text(&from["identity"]),
        text(&answer["to"])
    ));
    line(format!("outcome: {}", text(&answer["outcome"])));
    line(format!("mTLS:    {}", text(&answer["mtls"])));
    if let Some(destination) = answer["destination"].as_str() {
        line(format!("service: {destination}"));
    }
    let routes = answer["routes"].as_array().cloned().unwrap_or_default();
    if !routes.is_empty() {
        line("routes, in the order tried:".to_owned());
        for route in &routes {
            if route["matched"] == true {
                line(format!("  match     {}", text(&route["name"])));
            } else {
                let reasons: Vec<String> = route["reasons"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(text)
                    .collect();
                line(format!(
                    "  no match  {}: {}",
                    text(&route["name"]),
                    reasons.join("; or ")
                ));
            }
        }
    }
    let route = &answer["route"];
    if route.is_object() {
        let mut facts = Vec::new();
        if let Some(ms) = route["requestTimeoutMs"].as_u64() {
            facts.push(format!("timeout {ms} ms"));
        }
        if let Some(ms) = route["backendRequestTimeoutMs"].as_u64() {
            facts.push(format!("per try {ms} ms"));
        }
        let retry = &route["retry"];
        if retry.is_object() {
            let mut on: Vec<String> = retry["on"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            for code in retry["status_codes"].as_array().into_iter().flatten() {
                on.push(format!("HTTP {code}"));
            }
            for code in retry["grpc_codes"].as_array().into_iter().flatten() {
                on.push(format!("gRPC status {code}"));
            }
            facts.push(format!(
                "up to {} retries on {}",
                retry["attempts"],
                on.join(", ")
            ));
        }
        for mirror in route["mirrors"].as_array().into_iter().flatten() {
            facts.push(format!("mirrored to {}", text(mirror)));
        }
        let facts = if facts.is_empty() {
            "no timeout, no retries".to_owned()
        } else {
            facts.join(", ")
        };
        line(format!("route:   {} ({facts})", text(&route["name"])));
    }
    for backend in answer["backends"].as_array().into_iter().flatten() {
        line(format!(
            "backend {}: weight {} ({} %){}",
            text(&backend["service"]),
            backend["weight"],
            backend["sharePercent"].as_f64().unwrap_or(0.0),
            if backend["missing"] == true {
                ", does not exist: answered 500"
            } else {
                ""
            }
        ));
        let endpoints = backend["endpoints"].as_array().cloned().unwrap_or_default();
        if endpoints.is_empty() && backend["missing"] != true {
            line("  endpoints: none (answered 503)".to_owned());
        }
        for endpoint in &endpoints {
            let health = if endpoint["healthy"] == true {
                "in rotation".to_owned()
            } else {
                format!("out of rotation: {}", text(&endpoint["detail"]))
            };
            let identity = endpoint["identity"].as_str().unwrap_or("plain text");
            line(format!(
                "  endpoint {} ({identity}), {health}",
                text(&endpoint["address"])
            ));
        }
        if let Some(budget) = backend["retryBudget"].as_object() {
            line(format!(
                "  retry budget: {} of requests, at least {}/s",
                budget["ratio"], budget["min_retries_per_second"]
            ));
        }
        let authz = &backend["authorization"];
        if authz.is_object() {
            let verdict = if authz["allowed"] == true {
                "allowed"
            } else {
                "DENIED"
            };
            line(format!(
                "  authorization ({}): {verdict} by {} rule {} (mesh default: {})",
                text(&authz["layer"]),
                text(&authz["policy"]),
                text(&authz["rule"]),
                text(&authz["default"])
            ));
            for policy in authz["policies"].as_array().into_iter().flatten() {
                let matching: Vec<String> = policy["matchingRules"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(text)
                    .collect();
                let state = if policy["applies"] != true {
                    "does not apply to this port".to_owned()
                } else if matching.is_empty() {
                    format!("no rule of {} matches", policy["rules"])
                } else {
                    format!("rules matching: {}", matching.join(", "))
                };
                let mode = if policy["dryRun"] == true {
                    " (dry run)"
                } else {
                    ""
                };
                line(format!(
                    "    {} {}{mode}: {state}",
                    text(&policy["action"]).to_uppercase(),
                    text(&policy["name"])
                ));
            }
            if let Some(would) = authz["dryRunWouldDeny"].as_str() {
                line(format!("    a dry run would deny it: {would}"));
            }
            if let Some(audit) = authz["auditedBy"].as_str() {
                line(format!("    audited by {audit}"));
            }
        }
    }
    for note in answer["notes"].as_array().into_iter().flatten() {
        line(format!("note: {}", text(note)));
    }
    out
}
