//! `weft identity revoke|restore|revoked`: take a workload identity or one certificate back
//! (see `weft_control::revocation`). Needs an admin token; `revoked` a read-only one.

use crate::api_client::{ApiArgs, ApiClient, ListArgs};
use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Subcommand};
use http::Method;
use serde_json::{json, Value};

#[derive(Subcommand)]
pub enum IdentityCommand {
    /// Revoke a workload identity (every certificate naming it, and any new one, until
    /// restored) or one certificate: the control plane refuses its renewals and
    /// registrations, and every proxy refuses handshakes with it within seconds.
    #[command(after_help = "Examples:\n  \
        weft identity revoke web                   # web in namespace default\n  \
        weft identity revoke api.shop              # api in namespace shop\n  \
        weft identity revoke spiffe://weft.local/ns/shop/svc/api\n  \
        weft identity revoke --certificate 3f5a...  # certificate.sha256 in `weft proxies --json`")]
    Revoke(RevokeArgs),
    /// Lift the revocation of a workload identity: it can get certificates again (with a
    /// new join token).
    Restore(RestoreArgs),
    /// List what is revoked.
    Revoked(ListArgs),
}

#[derive(Args)]
pub struct RevokeArgs {
    /// The workload: SERVICE[.NAMESPACE] or its SPIFFE id.
    #[arg(
        required_unless_present = "certificate",
        conflicts_with = "certificate"
    )]
    identity: Option<String>,
    /// One certificate, by the SHA-256 of its DER (64 hex digits).
    #[arg(long, value_name = "SHA256")]
    certificate: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The workload: SERVICE[.NAMESPACE] or its SPIFFE id.
    identity: String,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn run(cmd: IdentityCommand) -> anyhow::Result<()> {
    match cmd {
        IdentityCommand::Revoke(args) => revoke(args),
        IdentityCommand::Restore(args) => restore(args),
        IdentityCommand::Revoked(args) => list(args),
    }
}

/// `web`, `api.shop` or a SPIFFE id, as a SPIFFE id of the control plane's trust domain.
fn spiffe_id(client: &ApiClient, identity: &str) -> anyhow::Result<String> {
    if identity.starts_with("spiffe://") {
        return Ok(identity.to_owned());
    }
    let (service, namespace) = identity.split_once('.').unwrap_or((identity, "default"));
    let ca = client
        .send(Method::GET, "/api/v1/ca", None, Bytes::new())?
        .success()?
        .json()?;
    let trust_domain = ca["trustDomain"].as_str().unwrap_or("weft.local");
    Ok(format!(
        "spiffe://{trust_domain}/ns/{namespace}/svc/{service}"
    ))
}

fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.api)?;
    let (body, what) = match (&args.identity, &args.certificate) {
        (_, Some(sha256)) => (
            json!({ "certificate": sha256 }),
            format!("certificate {sha256}"),
        ),
        (Some(identity), None) => {
            let id = spiffe_id(&client, identity)?;
            (json!({ "identity": id }), format!("identity {id}"))
        }
        (None, None) => anyhow::bail!("name an identity or --certificate"),
    };
    client
        .send(
            Method::POST,
            "/api/v1/revocations",
            Some("application/json"),
            Bytes::from(body.to_string()),
        )?
        .success()
        .with_context(|| format!("revoking {what}"))?;
    println!("{what} revoked: its renewals and registrations are refused, and proxies refuse its handshakes once their config arrives");
    Ok(())
}

fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.api)?;
    let id = spiffe_id(&client, &args.identity)?;
    let encoded = crate::client_cmd::encode(&id);
    client
        .send(
            Method::DELETE,
            &format!("/api/v1/revocations?identity={encoded}"),
            None,
            Bytes::new(),
        )?
        .success()
        .with_context(|| format!("restoring {id}"))?;
    println!("identity {id} restored: it can get a certificate again with a new join token");
    Ok(())
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    let Some(answer) = args.fetch("/api/v1/revocations")? else {
        return Ok(());
    };
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let mut rows: Vec<[String; 3]> = Vec::new();
    for entry in answer["identities"].as_array().into_iter().flatten() {
        rows.push([
            "identity".into(),
            text(&entry["identity"]),
            text(&entry["revokedAt"]),
        ]);
    }
    for entry in answer["certificates"].as_array().into_iter().flatten() {
        let what = match entry["identity"].as_str() {
            Some(identity) => format!("{} ({identity})", text(&entry["sha256"])),
            None => text(&entry["sha256"]),
        };
        rows.push(["certificate".into(), what, text(&entry["revokedAt"])]);
    }
    if rows.is_empty() {
        eprintln!("nothing is revoked");
        return Ok(());
    }
    crate::table::print(["KIND", "REVOKED", "SINCE"], &rows);
    Ok(())
}
