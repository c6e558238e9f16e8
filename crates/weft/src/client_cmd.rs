//! `weft apply`, `weft get`, `weft delete`: client commands against the control plane's
//! REST API (see `weft_control::api`).

use crate::api_client::{ApiArgs, ApiClient};
use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use weft_control::api::FILES_CONTENT_TYPE;

#[derive(Args)]
#[command(
    after_help = "Everything given is applied at once, or nothing is: an error in one \
    document leaves every resource as it was.\n\nExamples:\n  weft apply -f routes.yaml\n  \
    weft apply -f mesh/            # every *.yaml, *.yml and *.json in it, in name order\n  \
    cat route.yaml | weft apply -f -"
)]
pub struct ApplyArgs {
    /// A YAML or JSON file, a directory of them, or `-` for standard input. Repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required = true
    )]
    files: Vec<PathBuf>,
    /// Check everything against what is stored and show what would change; store nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct GetArgs {
    /// Service, HTTPRoute, GRPCRoute, TrafficPolicy, AuthorizationPolicy or Mesh (any case,
    /// singular or plural, or svc, hr, gr, tp, ap), `all`, or `proxies`.
    kind: String,
    /// One resource; without it, all of this kind.
    name: Option<String>,
    /// The namespace: of NAME (default `default`), or the only one to list (default all).
    #[arg(short, long)]
    namespace: Option<String>,
    /// `yaml` or `json` print the documents instead of a table (YAML applies back as is);
    /// `wide` adds what tells each resource apart (ports, parents and backends, targets,
    /// actions) and every standing warning.
    #[arg(short, long)]
    output: Option<Output>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Output {
    Yaml,
    Json,
    Wide,
}

#[derive(Args)]
#[command(after_help = "Examples:\n  weft delete httproute reviews\n  \
    weft delete -f routes.yaml      # every resource the file defines")]
pub struct DeleteArgs {
    /// The resource's kind (any case, singular or plural, or a short name).
    #[arg(required_unless_present = "files", requires = "name")]
    kind: Option<String>,
    name: Option<String>,
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Delete every resource these files (or directories, or `-`) define, instead.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        conflicts_with = "kind"
    )]
    files: Vec<PathBuf>,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let mut files = Vec::new();
    for path in &args.files {
        read_input(path, &mut files)?;
    }
    let body = json!({ "files": files }).to_string();
    let client = ApiClient::new(&args.api)?;
    let path = if args.dry_run {
        "/api/v1/apply?dryRun=true"
    } else {
        "/api/v1/apply"
    };
    let reply = client.send(Method::POST, path, Some(FILES_CONTENT_TYPE), body.into())?;
    if !reply.status.is_success() {
        let errors = reply.errors();
        for error in &errors {
            eprintln!("error: {error}");
        }
        let why = match reply.status {
            StatusCode::CONFLICT => "a resource changed since it was read",
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                "the control plane refused the credential"
            }
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => "the input is not valid",
            _ => "the control plane refused the request",
        };
        bail!(
            "nothing was applied: {why} ({} {})",
            errors.len(),
            if errors.len() == 1 { "error" } else { "errors" }
        );
    }
    let answer = reply.json()?;
    let suffix = if args.dry_run { " (dry run)" } else { "" };
    for resource in answer["applied"].as_array().into_iter().flatten() {
        println!(
            "{} {}{suffix}",
            resource_path(resource, &resource["namespace"], &resource["name"]),
            text(&resource["result"])
        );
    }
    print_warnings(&answer);
    if args.dry_run {
        eprintln!("dry run: nothing was stored");
    }
    Ok(())
}

pub fn get(args: GetArgs) -> anyhow::Result<()> {
    // Proxies are not resources, but `get` is where people look for them.
    if matches!(args.kind.to_ascii_lowercase().as_str(), "proxies" | "proxy") {
        let as_json = matches!(args.output, Some(Output::Json | Output::Yaml));
        return crate::fleet_cmd::print_proxies(&args.api, as_json);
    }
    let client = ApiClient::new(&args.api)?;
    let output = match args.output {
        Some(Output::Yaml) => "yaml",
        _ => "json",
    };
    let path = match &args.name {
        Some(name) => format!(
            "/api/v1/resources/{}/{}/{}?output={output}",
            encode(&args.kind),
            encode(args.namespace.as_deref().unwrap_or("default")),
            encode(name)
        ),
        None if args.kind.eq_ignore_ascii_case("all") => {
            let mut path = format!("/api/v1/resources?output={output}");
            if let Some(namespace) = &args.namespace {
                path.push_str(&format!("&namespace={}", encode(namespace)));
            }
            path
        }
        None => {
            let mut path = format!("/api/v1/resources?kind={}", encode(&args.kind));
            if let Some(namespace) = &args.namespace {
                path.push_str(&format!("&namespace={}", encode(namespace)));
            }
            path.push_str(&format!("&output={output}"));
            path
        }
    };
    let reply = client
        .send(Method::GET, &path, None, Bytes::new())?
        .success()?;
    match args.output {
        Some(Output::Yaml) => print!("{}", String::from_utf8_lossy(&reply.body)),
        Some(Output::Json) => println!("{}", serde_json::to_string_pretty(&reply.json()?)?),
        table => {
            let answer = reply.json()?;
            let items = match args.name {
                Some(_) => vec![answer],
                None => answer["items"].as_array().cloned().unwrap_or_default(),
            };
            if items.is_empty() {
                eprintln!("no {} found", args.kind);
            } else {
                let with_kind = args.kind.eq_ignore_ascii_case("all");
                print_table(&items, with_kind, table == Some(Output::Wide));
            }
        }
    }
    Ok(())
}

pub fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.api)?;
    let targets = match (&args.kind, &args.name) {
        (Some(kind), Some(name)) => vec![(kind.clone(), args.namespace.clone(), name.clone())],
        _ => defined_in(&args.files)?,
    };
    let mut failed = 0;
    for (kind, namespace, name) in &targets {
        let path = format!(
            "/api/v1/resources/{}/{}/{}",
            encode(kind),
            encode(namespace),
            encode(name)
        );
        let reply = client.send(Method::DELETE, &path, None, Bytes::new())?;
        if !reply.status.is_success() {
            for error in reply.errors() {
                eprintln!("error: {error}");
            }
            failed += 1;
            continue;
        }
        let answer = reply.json()?;
        let deleted = &answer["deleted"];
        println!(
            "{} deleted",
            resource_path(deleted, &deleted["namespace"], &deleted["name"])
        );
        print_warnings(&answer);
    }
    if failed > 0 {
        bail!(
            "{failed} of {} resources could not be deleted (see above)",
            targets.len()
        );
    }
    Ok(())
}

/// `(kind, namespace, name)` of every resource the files define, as `weft apply` reads them.
fn defined_in(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, String, String)>> {
    let mut files = Vec::new();
    for path in paths {
        read_input(path, &mut files)?;
    }
    let mut targets = Vec::new();
    for file in &files {
        let name = text(&file["name"]);
        let resources = weft_model::load_str(name, text(&file["content"]))
            .map_err(|err| anyhow::anyhow!("{err}"))?;
        for resource in resources {
            targets.push((
                resource.kind().as_str().to_owned(),
                resource.metadata.namespace.to_string(),
                resource.metadata.name.to_string(),
            ));
        }
    }
    Ok(targets)
}

/// Adds the file, the directory's resource files (in name order) or standard input.
fn read_input(path: &Path, files: &mut Vec<Value>) -> anyhow::Result<()> {
    let mut add = |name: String, content: String| {
        files.push(json!({"name": name, "content": content}));
    };
    if path == Path::new("-") {
        let mut content = String::new();
        std::io::stdin()
            .read_to_string(&mut content)
            .context("reading standard input")?;
        add("stdin".to_owned(), content);
        return Ok(());
    }
    if !path.is_dir() {
        let content = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        add(path.display().to_string(), content);
        return Ok(());
    }
    let mut found = Vec::new();
    let entries =
        std::fs::read_dir(path).with_context(|| format!("cannot read {}", path.display()))?;
    for entry in entries {
        let file = entry
            .with_context(|| format!("cannot read {}", path.display()))?
            .path();
        let wanted = file
            .extension()
            .and_then(|ext| ext.to_str())
            .is_some_and(|ext| matches!(ext, "yaml" | "yml" | "json"));
        if wanted && file.is_file() {
            found.push(file);
        }
    }
    if found.is_empty() {
        bail!(
            "{} holds no *.yaml, *.yml or *.json files; point -f at the files to apply",
            path.display()
        );
    }
    found.sort();
    for file in found {
        let content = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        add(file.display().to_string(), content);
    }
    Ok(())
}

/// `httproute/default/reviews`, as results are printed.
fn resource_path(resource: &Value, namespace: &Value, name: &Value) -> String {
    format!(
        "{}/{}/{}",
        text(&resource["kind"]).to_ascii_lowercase(),
        text(namespace),
        text(name)
    )
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("-")
}

fn print_warnings(answer: &Value) {
    for warning in answer["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: {}", text(warning));
    }
}

/// The resources as a table: `with_kind` for `get all`; `wide` adds each one's spec in
/// short and every warning (otherwise the first).
fn print_table(items: &[Value], with_kind: bool, wide: bool) {
    let mut header = vec!["KIND", "NAMESPACE", "NAME", "RESOURCEVERSION"];
    if wide {
        header.push("SPEC");
    }
    header.push("STATUS");
    if !with_kind {
        header.remove(0);
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            let metadata = &item["metadata"];
            let mut status = text(&item["status"]["summary"]).to_owned();
            // Standing warnings, so a dangling reference shows until it is fixed.
            let warnings = item["status"]["warnings"]
                .as_array()
                .map_or(&[][..], Vec::as_slice);
            let shown = if wide { warnings.len() } else { 1 };
            for warning in warnings.iter().take(shown) {
                status = format!("{status}; warning: {}", text(warning));
            }
            let mut row = vec![
                text(&item["kind"]).to_owned(),
                text(&metadata["namespace"]).to_owned(),
                text(&metadata["name"]).to_owned(),
                text(&metadata["resourceVersion"]).to_owned(),
            ];
            if wide {
                row.push(crate::resource_summary::summary(item));
            }
            row.push(status);
            if !with_kind {
                row.remove(0);
            }
            row
        })
        .collect();
    crate::table::print_rows(&header, &rows);
}

/// Percent-encodes a path segment or query value.
pub(crate) fn encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}
