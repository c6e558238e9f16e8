//! `weft api-token create|list|revoke`: the REST API's credentials (see
//! `weft_control::access`). Needs an admin token.

use crate::api_client::{answer_field, ApiArgs, ApiClient, ListArgs, Role};
use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Subcommand};
use http::Method;
use serde_json::{json, Value};

#[derive(Subcommand)]
pub enum ApiTokenCommand {
    /// Make an API token. The token goes to stdout (shown only now; hand it over as
    /// WEFT_TOKEN or the file ~/.config/weft/token); its id goes to stderr.
    #[command(after_help = "Examples:\n  \
        weft api-token create --name grafana --role read-only > grafana.token\n  \
        weft api-token create --name ci --role admin")]
    Create(CreateArgs),
    /// List the API tokens: id, name, role, creation time, revoked or not (never the
    /// tokens themselves).
    List(ListArgs),
    /// Revoke an API token by its id: refused from the next call on.
    Revoke(RevokeArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// What the token is for, shown in lists and logs (letters, digits, - _ . @).
    #[arg(long)]
    name: String,
    #[arg(long, value_enum, default_value = "read-only")]
    role: Role,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct RevokeArgs {
    /// The token's id (`weft api-token list` shows it).
    id: String,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn run(cmd: ApiTokenCommand) -> anyhow::Result<()> {
    match cmd {
        ApiTokenCommand::Create(args) => create(args),
        ApiTokenCommand::List(args) => list(args),
        ApiTokenCommand::Revoke(args) => revoke(args),
    }
}

fn create(args: CreateArgs) -> anyhow::Result<()> {
    let role = args.role.as_str();
    let body = json!({ "name": args.name, "role": role });
    let answer = ApiClient::new(&args.api)?.post_json(
        "/api/v1/api-tokens",
        &body,
        "creating the API token",
    )?;
    let token = answer_field(&answer, "token")?;
    eprintln!(
        "API token {} ({}, {role})",
        text(&answer["id"]),
        text(&answer["name"])
    );
    println!("{token}");
    Ok(())
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    let Some(answer) = args.fetch("/api/v1/api-tokens")? else {
        return Ok(());
    };
    let rows: Vec<[String; 5]> = answer["tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            [
                text(&t["id"]).to_owned(),
                text(&t["name"]).to_owned(),
                text(&t["role"]).to_owned(),
                text(&t["createdAt"]).to_owned(),
                if t["revoked"] == true {
                    "revoked"
                } else {
                    "active"
                }
                .to_owned(),
            ]
        })
        .collect();
    crate::table::print(["ID", "NAME", "ROLE", "CREATED", "STATE"], &rows);
    Ok(())
}

fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    if !weft_control::secret::is_id(&args.id) {
        anyhow::bail!(
            "{:?} is not a token id; ids are the 16 hex digits `weft api-token list` shows",
            args.id
        );
    }
    ApiClient::new(&args.api)?
        .send(
            Method::DELETE,
            &format!("/api/v1/api-tokens/{}", args.id),
            None,
            Bytes::new(),
        )?
        .success()
        .context("revoking the API token")?;
    println!("API token {} revoked", args.id);
    Ok(())
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("-")
}
