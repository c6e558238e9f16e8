//! `weft audit`: the control plane's tamper-evident record of who changed what.

use crate::api_client::{ApiArgs, ApiClient};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http::Method;
use serde_json::Value;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// List entries, oldest first: resource changes (with the document before and after),
    /// credentials and certificates issued or revoked, root rotations, refused API calls.
    Log(LogArgs),
    /// Check that no entry was changed, removed or reordered since it was written; names
    /// the first entry that fails. Exits non-zero if one does.
    Verify(VerifyArgs),
}

#[derive(Args)]
pub struct LogArgs {
    /// Only entries newer than this (`30m`, `1h`, `7d`).
    #[arg(long, value_name = "DURATION")]
    since: Option<String>,
    /// Only actions starting with this: `resource.`, `token.`, `api-token.`, `certificate.`,
    /// `identity.`, `ca.`, `api.denied`.
    #[arg(long, value_name = "PREFIX")]
    action: Option<String>,
    /// At most this many (the most recent).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print the entries as JSON lines, with the documents before and after each change
    /// (for a SIEM, or `jq`).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    api: ApiArgs,
}

pub fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Log(args) => log(args),
        AuditCommand::Verify(args) => verify(args),
    }
}

fn get(api: &ApiArgs, path: &str) -> anyhow::Result<Value> {
    ApiClient::new(api)?
        .send(Method::GET, path, None, Bytes::new())?
        .success()?
        .json()
}

fn log(args: LogArgs) -> anyhow::Result<()> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("limit", &args.limit.to_string());
    if let Some(since) = &args.since {
        query.append_pair("since", since);
    }
    if let Some(action) = &args.action {
        query.append_pair("action", action);
    }
    let answer = get(&args.api, &format!("/api/v1/audit?{}", query.finish()))?;
    let entries = answer["entries"].as_array().cloned().unwrap_or_default();
    if args.json {
        for entry in &entries {
            println!("{entry}");
        }
        return Ok(());
    }
    if entries.is_empty() {
        eprintln!("no entries");
        return Ok(());
    }
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|e| {
            [
                e["seq"].to_string(),
                text(&e["time"]),
                text(&e["actor"]),
                text(&e["action"]),
                text(&e["target"]),
                text(&e["detail"]),
            ]
        })
        .collect();
    crate::table::print(
        ["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "DETAIL"],
        &rows,
    );
    Ok(())
}

fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let answer = get(&args.api, "/api/v1/audit/verify")?;
    let checked = answer["checked"].as_u64().unwrap_or(0);
    if answer["intact"] == true {
        println!("✔ the audit log is intact: {checked} entries, each chained to the one before");
        return Ok(());
    }
    let broken = &answer["broken"];
    anyhow::bail!(
        "the audit log is not intact at entry {}: {} ({checked} entries before it check out)",
        broken["seq"],
        broken["why"].as_str().unwrap_or_default()
    )
}
