//! `weft ca show|rotate`: the control plane's CA, through its REST API (see
//! `weft_control::ca`).

use crate::api_client::{ApiArgs, ApiClient};
use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Subcommand};
use http::Method;
use serde_json::Value;

#[derive(Subcommand)]
pub enum CaCommand {
    /// Show the trust bundle's roots: which signs, which is being retired, when each
    /// expires. `--pem` prints the bundle itself.
    Show(ShowArgs),
    /// Rotate the root with no outage: a new root signs from now on, proxies trust both
    /// and renew at once, and the old root is retired by itself when every proxy holds a
    /// certificate from the new one (`weft check` shows the progress).
    Rotate(RotateArgs),
}

#[derive(Args)]
pub struct ShowArgs {
    /// Print the trust bundle (PEM) instead of a summary.
    #[arg(long)]
    pem: bool,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct RotateArgs {
    #[command(flatten)]
    api: ApiArgs,
}

pub fn run(cmd: CaCommand) -> anyhow::Result<()> {
    match cmd {
        CaCommand::Show(args) => {
            let view = ApiClient::new(&args.api)?
                .send(Method::GET, "/api/v1/ca", None, Bytes::new())?
                .success()?
                .json()?;
            if args.pem {
                print!("{}", view["trustBundle"].as_str().unwrap_or_default());
            } else {
                print_roots(&view);
            }
            Ok(())
        }
        CaCommand::Rotate(args) => {
            let view = ApiClient::new(&args.api)?
                .send(Method::POST, "/api/v1/ca/rotate", None, Bytes::new())?
                .success()
                .context("rotating the CA root")?
                .json()?;
            print_roots(&view);
            eprintln!(
                "rotation started: proxies renew under the new root now; the old root is retired \
                 once all have (see `weft check`)"
            );
            Ok(())
        }
    }
}

fn print_roots(view: &Value) {
    println!(
        "trust domain {}",
        view["trustDomain"].as_str().unwrap_or("(none)")
    );
    for root in view["roots"].as_array().into_iter().flatten() {
        println!(
            "{:<9} sha256 {}  expires {}",
            root["role"].as_str().unwrap_or("?"),
            root["sha256"].as_str().unwrap_or("?"),
            root["notAfter"].as_str().unwrap_or("?"),
        );
    }
}
