//! `weft proxies` and `weft check`: what the mesh's proxies run, and whether all is well.

use crate::api_client::{ApiArgs, ApiClient};
use bytes::Bytes;
use clap::Args;
use http::Method;
use serde_json::Value;

#[derive(Args)]
pub struct ProxiesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct VersionArgs {
    #[command(flatten)]
    api: ApiArgs,
}

/// The client's version, then the control plane's (or why it can't be asked).
pub fn version(args: VersionArgs) -> anyhow::Result<()> {
    println!("client:        weft {}", env!("CARGO_PKG_VERSION"));
    match fetch(&args.api, "/api/v1/version") {
        Ok(answer) => println!(
            "control plane: weft {} at {}",
            answer["version"].as_str().unwrap_or("?"),
            args.api.api
        ),
        Err(error) => println!("control plane: not reached at {}: {error}", args.api.api),
    }
    Ok(())
}

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    api: ApiArgs,
}

fn fetch(api: &ApiArgs, path: &str) -> anyhow::Result<Value> {
    ApiClient::new(api)?
        .send(Method::GET, path, None, Bytes::new())?
        .success()?
        .json()
}

pub fn proxies(args: ProxiesArgs) -> anyhow::Result<()> {
    print_proxies(&args.api, args.json)
}

/// `weft proxies`, also reached as `weft get proxies`.
pub fn print_proxies(api: &ApiArgs, json: bool) -> anyhow::Result<()> {
    let answer = fetch(api, "/api/v1/proxies")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    if let Some(seconds) = answer["warmingUpForSeconds"].as_u64() {
        eprintln!(
            "note: the control plane has just started; for {seconds}s more, proxies that \
             reconnect keep the config they run while its registry refills, so VERSION may lag"
        );
    }
    let proxies = answer["proxies"].as_array().cloned().unwrap_or_default();
    if proxies.is_empty() {
        eprintln!("no proxies connected");
        return Ok(());
    }
    let text = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string())
    };
    let rows: Vec<[String; 9]> = proxies
        .iter()
        .map(|p| {
            let certificate = &p["certificate"];
            [
                text(&p["service"]),
                text(&p["namespace"]),
                text(&p["inboundAddress"]),
                p["ackedVersion"].as_str().unwrap_or("-").to_owned(),
                if p["inSync"] == true { "yes" } else { "no" }.to_owned(),
                if p["healthy"] == true { "yes" } else { "no" }.to_owned(),
                certificate["spiffeId"].as_str().unwrap_or("-").to_owned(),
                certificate["notAfter"].as_str().unwrap_or("-").to_owned(),
                text(&p["lastSeen"]),
            ]
        })
        .collect();
    let header = [
        "SERVICE",
        "NAMESPACE",
        "ADDRESS",
        "VERSION",
        "IN SYNC",
        "HEALTHY",
        "IDENTITY",
        "CERT EXPIRES",
        "LAST SEEN",
    ];
    crate::table::print(header, &rows);
    Ok(())
}

/// Exits non-zero when anything needs attention, so scripts can gate on it.
pub fn check(args: CheckArgs) -> anyhow::Result<()> {
    let verdict = fetch(&args.api, "/api/v1/check")?;
    println!("✔ control plane reachable at {}", args.api.api);
    let proxies = verdict["proxies"].as_u64().unwrap_or(0);
    println!(
        "{} {proxies} proxies connected, {} in sync, {} healthy",
        if verdict["ok"] == true { "✔" } else { "✖" },
        verdict["inSync"],
        verdict["healthy"]
    );
    for problem in verdict["problems"].as_array().into_iter().flatten() {
        println!("✖ {}", problem["problem"].as_str().unwrap_or_default());
        println!("    hint: {}", problem["hint"].as_str().unwrap_or_default());
    }
    let findings = verdict["findings"].as_array().cloned().unwrap_or_default();
    if findings.is_empty() {
        println!("✔ no findings in the configuration");
    }
    for finding in &findings {
        let mark = if finding["severity"] == "error" {
            "✖"
        } else {
            "!"
        };
        println!(
            "{mark} {}: {}",
            finding["resource"].as_str().unwrap_or_default(),
            finding["finding"].as_str().unwrap_or_default()
        );
        println!("    hint: {}", finding["hint"].as_str().unwrap_or_default());
    }
    for warning in verdict["warnings"].as_array().into_iter().flatten() {
        println!("! {}", warning["warning"].as_str().unwrap_or_default());
        println!("    hint: {}", warning["hint"].as_str().unwrap_or_default());
    }
    for hint in verdict["hints"].as_array().into_iter().flatten() {
        println!("  hint: {}", hint.as_str().unwrap_or_default());
    }
    if verdict["ok"] == true {
        println!("all good");
        Ok(())
    } else {
        anyhow::bail!("the mesh needs attention (see above)")
    }
}
