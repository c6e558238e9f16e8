//! `weft stat`: the golden metrics of the mesh, from the control plane's rolling windows
//! (`GET /api/v1/stats`): per Service, per edge (caller -> Service) and per route.

use crate::api_client::{ApiArgs, ApiClient};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use http::Method;
use serde_json::Value;

#[derive(Args)]
pub struct StatArgs {
    /// Every Service when left out; `edges` (caller -> Service), `routes`, or one Service
    /// (`svc/NAME`, with the Service's edges in and out and the routes to it).
    #[arg(value_name = "WHAT")]
    target: Option<String>,
    /// The window the numbers cover: `1m`, `10m` or `1h`.
    #[arg(long, default_value = "1m", value_parser = ["1m", "10m", "1h"])]
    window: String,
    /// The namespace of `svc/NAME`.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// `json`: the numbers as JSON; `wide`: the counts too (requests, 4xx, 5xx, denied,
    /// retries, TCP connections opened, bytes).
    #[arg(short, long)]
    output: Option<StatOutput>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum StatOutput {
    Json,
    Wide,
}

/// What a table lists.
enum Shown {
    Services,
    Edges,
    Routes,
    Service(String),
}

pub fn run(args: StatArgs) -> anyhow::Result<()> {
    let shown = match args.target.as_deref() {
        None => Shown::Services,
        Some("edges") => Shown::Edges,
        Some("routes") => Shown::Routes,
        Some(target) => match target.split_once('/') {
            Some(("svc" | "service" | "services", name)) if !name.is_empty() => {
                Shown::Service(format!("{name}.{}", args.namespace))
            }
            _ => anyhow::bail!(
                "cannot show {target:?}: name `edges`, `routes` or a Service as svc/NAME, or \
                 nothing for every Service"
            ),
        },
    };
    let view = ApiClient::new(&args.api)?
        .send(
            Method::GET,
            &format!("/api/v1/stats?window={}", args.window),
            None,
            Bytes::new(),
        )?
        .success()?
        .json()?;
    let list = |name: &str| view[name].as_array().cloned().unwrap_or_default();
    let named = |row: &Value, field: &str, value: &str| row[field].as_str() == Some(value);
    let tables: Vec<(&str, Vec<Value>)> = match &shown {
        Shown::Services => vec![("services", list("services"))],
        Shown::Edges => vec![("edges", list("edges"))],
        Shown::Routes => vec![("routes", list("routes"))],
        Shown::Service(service) => vec![
            (
                "services",
                list("services")
                    .into_iter()
                    .filter(|row| named(row, "name", service))
                    .collect(),
            ),
            (
                "edges",
                list("edges")
                    .into_iter()
                    .filter(|row| {
                        named(row, "destination", service) || named(row, "source", service)
                    })
                    .collect(),
            ),
            (
                "routes",
                list("routes")
                    .into_iter()
                    .filter(|row| named(row, "destination", service))
                    .collect(),
            ),
        ],
    };
    if args.output == Some(StatOutput::Json) {
        let mut answer = serde_json::Map::new();
        answer.insert("window".to_owned(), view["window"].clone());
        for (name, rows) in tables {
            answer.insert(name.to_owned(), Value::Array(rows));
        }
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    if let Shown::Service(service) = &shown {
        if tables.iter().all(|(_, rows)| rows.is_empty()) {
            anyhow::bail!(
                "no traffic of {service} in the last {}: check the name (and -n), or send it \
                 some",
                args.window
            );
        }
    }
    let wide = args.output == Some(StatOutput::Wide);
    let several = tables.len() > 1;
    for (name, rows) in &tables {
        if several {
            if rows.is_empty() {
                continue;
            }
            println!("{}:", name.to_uppercase());
        }
        print(name, rows, wide);
        if several {
            println!();
        }
    }
    let dropped = view["droppedSeries"].as_u64().unwrap_or(0);
    if dropped > 0 {
        eprintln!("note: {dropped} reports were for series beyond the control plane's cap and are not shown");
    }
    Ok(())
}

fn print(kind: &str, rows: &[Value], wide: bool) {
    let mut header: Vec<&str> = match kind {
        "services" => vec!["SERVICE"],
        "edges" => vec!["SOURCE", "DESTINATION"],
        _ => vec!["SERVICE", "ROUTE"],
    };
    header.extend(["RPS", "SUCCESS", "P50", "P95", "P99", "TCP"]);
    if kind != "routes" {
        header.push("MTLS");
    }
    if wide {
        header.extend([
            "REQUESTS",
            "4XX",
            "5XX",
            "DENIED",
            "RETRIES",
            "TCP OPENED",
            "BYTES IN",
            "BYTES OUT",
        ]);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let text = |field: &str| row[field].as_str().unwrap_or("-").to_owned();
            let count = |field: &str| row[field].as_u64().unwrap_or(0).to_string();
            let mut cells = match kind {
                "services" => vec![text("name")],
                "edges" => vec![text("source"), text("destination")],
                _ => vec![text("destination"), text("route")],
            };
            cells.extend([
                format!("{:.1}", row["rps"].as_f64().unwrap_or(0.0)),
                percent(&row["successRate"]),
                millis(&row["p50Ms"]),
                millis(&row["p95Ms"]),
                millis(&row["p99Ms"]),
                count("tcpOpen"),
            ]);
            if kind != "routes" {
                cells.push(percent(&row["mtlsShare"]));
            }
            if wide {
                for field in [
                    "requests",
                    "clientErrors",
                    "serverErrors",
                    "denied",
                    "retries",
                    "tcpOpened",
                    "bytesReceived",
                    "bytesSent",
                ] {
                    cells.push(count(field));
                }
            }
            cells
        })
        .collect();
    crate::table::print_rows(&header, &table);
}

pub(crate) fn percent(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".to_owned(), |share| format!("{:.2}%", share * 100.0))
}

/// A latency in milliseconds as people read it: `0.42ms`, `4.2ms`, `42ms`, `1.50s`.
pub(crate) fn millis(value: &Value) -> String {
    match value.as_f64() {
        None => "-".to_owned(),
        Some(ms) if ms < 1.0 => format!("{ms:.2}ms"),
        Some(ms) if ms < 10.0 => format!("{ms:.1}ms"),
        Some(ms) if ms < 1000.0 => format!("{ms:.0}ms"),
        Some(ms) => format!("{:.2}s", ms / 1000.0),
    }
}
