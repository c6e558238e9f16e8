//! `weft operator-cert create`: a client certificate from the mesh CA for calling the REST
//! API over HTTPS instead of with a token (see `weft_control::operators`). The key is made
//! here and never leaves this machine. Needs an admin credential.

use crate::api_client::{answer_field, ApiArgs, ApiClient, Role};
use crate::cert_cmd::{write_file, Access};
use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum OperatorCertCommand {
    /// Make a key here and get it certified as an operator: writes NAME.pem, NAME-key.pem
    /// (0600) and ca.pem into --out.
    #[command(after_help = "Examples:\n  \
        weft operator-cert create --name alice --role admin --out ~/.config/weft\n  \
        weft get services --api https://10.0.0.5:7080 --cert ~/.config/weft/alice.pem \\\n    \
        --key ~/.config/weft/alice-key.pem --ca ~/.config/weft/ca.pem\n\n\
        Revoke one like any identity: weft identity revoke spiffe://weft.local/ns/weft-operators/svc/alice")]
    Create(CreateArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// Who the certificate is for (lowercase letters, digits, '-').
    #[arg(long)]
    name: String,
    #[arg(long, value_enum, default_value = "read-only")]
    role: Role,
    /// How long it lasts, at most 365d.
    #[arg(long, default_value = "30d")]
    ttl: String,
    /// Where to write the certificate, its key and the CA's roots.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn run(cmd: OperatorCertCommand) -> anyhow::Result<()> {
    match cmd {
        OperatorCertCommand::Create(args) => create(args),
    }
}

fn create(args: CreateArgs) -> anyhow::Result<()> {
    // The CA names the certificate itself; the id in the CSR is only a placeholder.
    let placeholder = weft_identity::SpiffeId::new("weft.local", "weft-operators", "operator")?;
    let (key_pem, csr_pem) = weft_identity::generate_csr(&placeholder)?;
    let body = json!({
        "name": args.name,
        "role": args.role.as_str(),
        "csr": csr_pem,
        "ttl": args.ttl,
    });
    let answer = ApiClient::new(&args.api)?.post_json(
        "/api/v1/operator-certificates",
        &body,
        "getting the operator certificate",
    )?;
    let field = |name: &str| answer_field(&answer, name);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let cert = args.out.join(format!("{}.pem", args.name));
    let key = args.out.join(format!("{}-key.pem", args.name));
    let ca = args.out.join("ca.pem");
    write_file(&key, &key_pem, Access::OwnerOnly, true)?;
    write_file(&cert, &field("certificate")?, Access::Readable, true)?;
    write_file(&ca, &field("trustBundle")?, Access::Readable, true)?;
    eprintln!(
        "{} ({}) until {}: {}, {}, {}",
        field("identity")?,
        args.role.as_str(),
        field("notAfter")?,
        cert.display(),
        key.display(),
        ca.display()
    );
    Ok(())
}
