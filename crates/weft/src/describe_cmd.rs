//! `weft describe service NAME`: one Service and everything about it on one page: its
//! ports, its instances and their health, the routes that attach to it or send to it, the
//! policies that target it, and its status.

use crate::api_client::{ApiArgs, ApiClient};
use crate::client_cmd::encode;
use bytes::Bytes;
use clap::Args;
use http::Method;
use serde_json::Value;

#[derive(Args)]
#[command(after_help = "Example:\n  weft describe service reviews -n shop")]
pub struct DescribeArgs {
    /// What to describe; `service` (or `svc`) for now.
    kind: String,
    name: String,
    #[arg(short, long, default_value = "default")]
    namespace: String,
    #[command(flatten)]
    api: ApiArgs,
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| value.to_string())
}

pub fn run(args: DescribeArgs) -> anyhow::Result<()> {
    if !matches!(
        args.kind.to_ascii_lowercase().as_str(),
        "service" | "services" | "svc"
    ) {
        anyhow::bail!(
            "weft describe knows services for now; for {}, use `weft get {} NAME -o yaml`",
            args.kind,
            args.kind
        );
    }
    let client = ApiClient::new(&args.api)?;
    let get = |path: &str| -> anyhow::Result<Value> {
        client
            .send(Method::GET, path, None, Bytes::new())?
            .success()?
            .json()
    };
    let (ns, name) = (&args.namespace, &args.name);
    let service = get(&format!(
        "/api/v1/resources/service/{}/{}",
        encode(ns),
        encode(name)
    ))?;
    println!("Service {ns}/{name}");
    let ports: Vec<String> = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            format!(
                "{} ({})",
                p["port"],
                p["protocol"].as_str().unwrap_or("auto")
            )
        })
        .collect();
    println!("  ports:    {}", ports.join(", "));
    if let Some(vip) = service["status"]["virtualIP"].as_str() {
        println!("  address:  {vip} (virtual IP: what its name resolves to with --dns)");
    }
    if let Some(summary) = service["status"]["summary"].as_str() {
        println!("  status:   {summary}");
    }
    for warning in service["status"]["warnings"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!("  warning:  {}", text(warning));
    }

    let proxies = get("/api/v1/proxies")?;
    let instances: Vec<&Value> = proxies["proxies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["service"] == name.as_str() && p["namespace"] == ns.as_str())
        .collect();
    println!("\nInstances ({}):", instances.len());
    for p in &instances {
        let health = if p["healthy"] == true {
            "healthy".to_owned()
        } else {
            format!("out of rotation: {}", text(&p["healthDetail"]))
        };
        println!(
            "  {}  {health}, config {} ({}), certificate until {}",
            text(&p["inboundAddress"]),
            p["ackedVersion"].as_str().unwrap_or("none"),
            if p["inSync"] == true {
                "in sync"
            } else {
                "NOT in sync"
            },
            p["certificate"]["notAfter"].as_str().unwrap_or("-")
        );
    }
    for endpoint in service["spec"]["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!("  {}  static endpoint", text(&endpoint["address"]));
    }

    let names_it = |reference: &Value, from_ns: &str| {
        reference["name"] == name.as_str()
            && reference["namespace"].as_str().unwrap_or(from_ns) == ns
    };
    println!("\nRoutes:");
    let mut any = false;
    for kind in ["httproute", "grpcroute"] {
        let listed = get(&format!("/api/v1/resources?kind={kind}"))?;
        for route in listed["items"].as_array().into_iter().flatten() {
            let route_ns = route["metadata"]["namespace"].as_str().unwrap_or("default");
            let label = format!(
                "{} {route_ns}/{}",
                text(&route["kind"]),
                text(&route["metadata"]["name"])
            );
            let parent = route["spec"]["parentRefs"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| names_it(p, route_ns));
            let backend = route["spec"]["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|rule| rule["backendRefs"].as_array().into_iter().flatten())
                .any(|b| names_it(b, route_ns));
            if parent || backend {
                any = true;
                let role = match (parent, backend) {
                    (true, true) => "attached, and sends to it",
                    (true, false) => "attached: routes calls to it",
                    _ => "sends to it",
                };
                let summary = route["status"]["summary"].as_str().unwrap_or("-");
                println!("  {label}: {role} ({summary})");
            }
        }
    }
    if !any {
        println!("  none: calls go to its own instances");
    }
    println!("\nPolicies:");
    let mut any = false;
    for kind in ["trafficpolicy", "authorizationpolicy"] {
        let listed = get(&format!("/api/v1/resources?kind={kind}"))?;
        for policy in listed["items"].as_array().into_iter().flatten() {
            let policy_ns = policy["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default");
            if names_it(&policy["spec"]["targetRef"], policy_ns) {
                any = true;
                let action = policy["spec"]["action"].as_str().unwrap_or("");
                let mode = policy["spec"]["mode"].as_str().unwrap_or("");
                println!(
                    "  {} {policy_ns}/{} {action} {mode}",
                    text(&policy["kind"]),
                    text(&policy["metadata"]["name"])
                );
            }
        }
    }
    if !any {
        println!("  none");
    }
    println!(
        "\nWhy a call to it goes where it goes: weft explain --from CALLER --to {name}{}",
        if ns == "default" {
            String::new()
        } else {
            format!(".{ns}")
        }
    );
    Ok(())
}
