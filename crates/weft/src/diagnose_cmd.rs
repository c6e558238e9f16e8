//! `weft diagnose`: what changed in the mesh in the last seconds against the minutes before,
//! worst first, with the numbers and what to look at next (`GET /api/v1/diagnose`).

use crate::api_client::{ApiArgs, ApiClient};
use bytes::Bytes;
use clap::Args;
use http::Method;

#[derive(Args)]
pub struct DiagnoseArgs {
    /// Only what concerns this Service (its edges, routes and proxies).
    service: Option<String>,
    /// The namespace of SERVICE.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Print the findings as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn run(args: DiagnoseArgs) -> anyhow::Result<()> {
    let path = match &args.service {
        Some(name) => format!(
            "/api/v1/diagnose?service={}",
            crate::client_cmd::encode(&format!("{name}.{}", args.namespace))
        ),
        None => "/api/v1/diagnose".to_owned(),
    };
    let findings = ApiClient::new(&args.api)?
        .send(Method::GET, &path, None, Bytes::new())?
        .success()?
        .json()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&findings)?);
        return Ok(());
    }
    let findings = findings.as_array().cloned().unwrap_or_default();
    if findings.is_empty() {
        println!(
            "✔ nothing stands out: every edge's last seconds look like its last 10 minutes, and \
             every proxy is healthy"
        );
        return Ok(());
    }
    for (rank, finding) in findings.iter().enumerate() {
        let text = |field: &str| finding[field].as_str().unwrap_or_default().to_owned();
        let mark = match finding["severity"].as_str() {
            Some("error") => "✖",
            Some("warning") => "!",
            _ => "·",
        };
        println!("{}. {mark} {}", rank + 1, text("summary"));
        println!("     {}", text("evidence"));
        println!("     next: {}", text("hint"));
    }
    if findings.iter().any(|f| f["severity"] == "error") {
        anyhow::bail!("something is failing (see above)");
    }
    Ok(())
}
