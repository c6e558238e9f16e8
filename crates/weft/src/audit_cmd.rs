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
    Verify(ConnectionArgs),
    /// Sign the log's last entry with the CA's key now (the control plane also does it every
    /// 10 minutes when entries were added): a rewrite of the log from any earlier entry on
    /// no longer verifies, even by someone who can write the store.
    Checkpoint(ConnectionArgs),
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
    /// Only changes to resources of this kind (`HTTPRoute`, `AuthorizationPolicy`, ...).
    #[arg(long)]
    kind: Option<String>,
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
pub struct ConnectionArgs {
    #[command(flatten)]
    api: ApiArgs,
}

pub fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Log(args) => log(args),
        AuditCommand::Verify(args) => verify(args),
        AuditCommand::Checkpoint(args) => checkpoint(args),
    }
}

fn checkpoint(args: ConnectionArgs) -> anyhow::Result<()> {
    let answer = ApiClient::new(&args.api)?
        .send(Method::POST, "/api/v1/audit/checkpoint", None, Bytes::new())?
        .success()?
        .json()?;
    match answer["seq"].as_u64() {
        Some(seq) => println!(
            "✔ entries 1 to {} signed by the CA: checkpoint written as entry {seq}",
            seq - 1
        ),
        None => println!("nothing to sign: the log is empty or already ends with a checkpoint"),
    }
    Ok(())
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
    if let Some(kind) = &args.kind {
        query.append_pair("kind", kind);
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

fn verify(args: ConnectionArgs) -> anyhow::Result<()> {
    let answer = get(&args.api, "/api/v1/audit/verify")?;
    let checked = answer["checked"].as_u64().unwrap_or(0);
    if answer["intact"] == true {
        println!("✔ the audit log is intact: {checked} entries, each chained to the one before");
        let checkpoints = &answer["checkpoints"];
        match checkpoints["lastVerified"].as_u64() {
            Some(last) => println!(
                "✔ {} signed checkpoints verified with the CA's key, the last at entry {last}",
                checkpoints["verified"]
            ),
            None => println!("  no signed checkpoint yet (`weft audit checkpoint` writes one)"),
        }
        let unknown = checkpoints["unknownSigner"].as_u64().unwrap_or(0);
        if unknown > 0 {
            println!(
                "  {unknown} checkpoints were signed by roots this control plane no longer \
                 holds (retired by a rotation): chained, but their signatures are not checked"
            );
        }
        return Ok(());
    }
    let broken = &answer["broken"];
    anyhow::bail!(
        "the audit log is not intact at entry {}: {} ({checked} entries before it check out)",
        broken["seq"],
        broken["why"].as_str().unwrap_or_default()
    )
}
