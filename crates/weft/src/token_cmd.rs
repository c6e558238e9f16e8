//! `weft token create|revoke`: join tokens, through the control plane's REST API (see
//! `weft_control::tokens`).

use crate::api_client::{answer_field, ApiArgs, ApiClient, ListArgs};
use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Subcommand};
use http::Method;
use serde_json::json;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a join token for one service. The token goes to stdout (give it to that
    /// service's proxy, e.g. in its --token-file); its id and expiry go to stderr. It works
    /// once, unless --reusable.
    #[command(
        after_help = "Examples:\n  weft token create --service web > web.token\n  \
        weft token create --service api --namespace shop --ttl 10m\n  \
        weft token create --service batch --ttl 24h --reusable   # for a fleet of workers"
    )]
    Create(CreateArgs),
    /// List the join tokens: id, service, expiry, and whether usable, used, expired or
    /// revoked (never the tokens themselves).
    List(ListArgs),
    /// Revoke a join token by its id (printed by `weft token create`): proxies can no
    /// longer use it to get a certificate.
    Revoke(RevokeArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// The service the token lets a proxy act as.
    #[arg(long)]
    service: String,
    /// The service's namespace.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// How long the token can be used, e.g. 1h, 30m, 90s.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// The token works more than once, until it expires or is revoked (by default a
    /// second proxy presenting it is refused).
    #[arg(long)]
    reusable: bool,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct RevokeArgs {
    /// The token's id.
    id: String,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create(args) => create(args),
        TokenCommand::List(args) => list(args),
        TokenCommand::Revoke(args) => revoke(args),
    }
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    let Some(answer) = args.fetch("/api/v1/tokens")? else {
        return Ok(());
    };
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    let rows: Vec<[String; 6]> = answer["tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            [
                text(&t["id"]),
                text(&t["service"]),
                text(&t["namespace"]),
                text(&t["expiresAt"]),
                if t["singleUse"] == true {
                    "single"
                } else {
                    "reusable"
                }
                .to_owned(),
                text(&t["state"]),
            ]
        })
        .collect();
    crate::table::print(
        ["ID", "SERVICE", "NAMESPACE", "EXPIRES", "USE", "STATE"],
        &rows,
    );
    Ok(())
}

fn create(args: CreateArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.api)?;
    let body = json!({
        "service": args.service,
        "namespace": args.namespace,
        "ttl": args.ttl,
        "singleUse": !args.reusable,
    });
    let answer = client.post_json("/api/v1/tokens", &body, "creating the join token")?;
    let field = |name: &str| answer_field(&answer, name);
    let token = field("token")?;
    eprintln!(
        "join token {} for {}.{}{}, expires {}",
        field("id")?,
        field("service")?,
        field("namespace")?,
        if args.reusable {
            " (reusable)"
        } else {
            " (single use)"
        },
        field("expiresAt")?
    );
    println!("{token}");
    Ok(())
}

fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.api)?;
    let id: String = args
        .id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    if id.is_empty() || id != args.id {
        anyhow::bail!(
            "{:?} is not a token id; ids are the hex digits `weft token create` prints",
            args.id
        );
    }
    client
        .send(
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            None,
            Bytes::new(),
        )?
        .success()
        .context("revoking the join token")?;
    println!("join token {id} revoked");
    Ok(())
}
