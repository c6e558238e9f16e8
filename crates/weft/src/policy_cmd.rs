//! `weft policy suggest`: AuthorizationPolicies that allow exactly the calls the mesh saw.

use crate::api_client::{ApiArgs, ApiClient};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http::Method;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Print least-privilege AuthorizationPolicy YAML, one per Service, allowing exactly the
    /// callers and operations its proxies judged (calls only ever denied are left out, in a
    /// comment). Review it, then `weft apply -f` it, perhaps first with `mode: dry-run`.
    Suggest(SuggestArgs),
}

#[derive(Args)]
pub struct SuggestArgs {
    /// Only this Service: NAME (namespace `default`) or NAME.NAMESPACE.
    #[arg(long, value_name = "SERVICE")]
    service: Option<String>,
    /// Calls seen in this window (`30m`, `1h`, `7d`; the control plane keeps a week).
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    since: String,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn run(command: PolicyCommand) -> anyhow::Result<()> {
    let PolicyCommand::Suggest(args) = command;
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("since", &args.since);
    if let Some(service) = &args.service {
        query.append_pair("service", service);
    }
    let answer = ApiClient::new(&args.api)?
        .send(
            Method::GET,
            &format!("/api/v1/policy-suggestions?{}", query.finish()),
            None,
            Bytes::new(),
        )?
        .success()?;
    print!("{}", String::from_utf8_lossy(&answer.body));
    Ok(())
}
