//! The client commands' side of the REST API: where it is, which credential to send, and
//! one HTTP/1.1 request per command.
//!
//! The credential is the first of: `--token` / `WEFT_TOKEN`; over `https://`, an operator
//! certificate (`--cert`/`--key`, from `weft operator-cert create`); the admin token of a
//! control plane on this host, `<--data-dir>/admin.token` (only when `--api` is on loopback,
//! so an admin token never leaves the host it was made on); `$XDG_CONFIG_HOME/weft/token`
//! (or `~/.config/weft/token`), for a token an admin handed out. An `https://` API is
//! checked against the mesh CA (`--ca`, the output of `weft ca show --pem`).

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::Args;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde_json::Value;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls;
use weft_control::access::ADMIN_TOKEN_FILE;

/// A large apply is parsed, validated and committed well within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args)]
#[command(next_help_heading = "Control plane connection")]
pub struct ApiArgs {
    /// The control plane's REST API.
    #[arg(long, env = "WEFT_API", default_value = "http://127.0.0.1:7080")]
    pub(crate) api: String,
    /// An API token (`weft api-token create` makes them). Without it: the admin token in
    /// --data-dir when --api is on this host, then the file ~/.config/weft/token.
    #[arg(long, env = "WEFT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The data directory of a `weft control` on this host: its admin.token is used when
    /// no --token is given.
    #[arg(long, env = "WEFT_DATA_DIR", default_value = "./weft-data")]
    data_dir: PathBuf,
    /// With an https:// --api: an operator certificate (PEM) to call it with instead of a
    /// token (`weft operator-cert create` makes one).
    #[arg(long, env = "WEFT_CERT", requires = "key", value_name = "FILE")]
    cert: Option<PathBuf>,
    /// The private key of --cert.
    #[arg(long, env = "WEFT_KEY", requires = "cert", value_name = "FILE")]
    key: Option<PathBuf>,
    /// With an https:// --api: the mesh CA's roots the control plane is checked against
    /// (`weft ca show --pem`).
    #[arg(long, env = "WEFT_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
}

/// The flags of a command that lists things: a table, or the API's JSON.
#[derive(Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiArgs,
}

impl ListArgs {
    /// `GET path`: printed and `None` with --json, else the answer, for a table.
    pub(crate) fn fetch(&self, path: &str) -> anyhow::Result<Option<Value>> {
        let answer = ApiClient::new(&self.api)?
            .send(Method::GET, path, None, Bytes::new())?
            .success()?
            .json()?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&answer)?);
            return Ok(None);
        }
        Ok(Some(answer))
    }
}

/// Where the credential came from, for error messages.
enum Credential {
    Token {
        token: String,
        from: String,
    },
    /// The operator certificate presented in the TLS handshake.
    Certificate {
        from: String,
    },
    None {
        looked: Vec<String>,
    },
}

impl ApiArgs {
    fn credential(&self, api_host_is_local: bool) -> Credential {
        if let Some(token) = &self.token {
            return Credential::Token {
                token: token.trim().to_owned(),
                from: "--token / WEFT_TOKEN".to_owned(),
            };
        }
        if let Some(cert) = &self.cert {
            return Credential::Certificate {
                from: cert.display().to_string(),
            };
        }
        let mut looked = Vec::new();
        let mut files = Vec::new();
        if api_host_is_local {
            files.push(self.data_dir.join(ADMIN_TOKEN_FILE));
        }
        files.extend(user_token_file());
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) if !text.trim().is_empty() => {
                    return Credential::Token {
                        token: text.trim().to_owned(),
                        from: file.display().to_string(),
                    }
                }
                Ok(_) => looked.push(format!("{} (empty)", file.display())),
                Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
                    looked.push(format!("{} (not readable by you)", file.display()))
                }
                Err(_) => looked.push(format!("{} (none)", file.display())),
            }
        }
        Credential::None { looked }
    }
}

/// How to reach an https:// API: checked against `--ca` as the control plane's SPIFFE id,
/// presenting the operator certificate when one is given.
fn tls_config(args: &ApiArgs) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    const ALPN: &[&[u8]] = &[b"http/1.1"];
    let ca = args.ca.as_ref().ok_or_else(|| {
        anyhow!(
            "an https:// --api is checked against the mesh CA: give --ca FILE (the output of \
             `weft ca show --pem`)"
        )
    })?;
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        let identity = weft_identity::TlsIdentity::from_files(cert, key, ca)
            .context("loading the operator certificate")?;
        let control = weft_identity::control_plane_id(identity.id().trust_domain())?;
        return Ok(identity.client_config(&control, ALPN));
    }
    let bundle =
        std::fs::read_to_string(ca).with_context(|| format!("reading {}", ca.display()))?;
    let trust_domain = weft_identity::root_trust_domain(&bundle)
        .unwrap_or_else(|| weft_control::ca::DEFAULT_TRUST_DOMAIN.to_owned());
    let control = weft_identity::control_plane_id(&trust_domain)?;
    Ok(weft_identity::anonymous_client_config(
        &bundle, ca, &control, ALPN,
    )?)
}

/// `$XDG_CONFIG_HOME/weft/token`, or `~/.config/weft/token`.
fn user_token_file() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".config")))?;
    Some(config.join("weft").join("token"))
}

/// One HTTP/1.1 request per command, on a current-thread runtime.
pub(crate) struct ApiClient {
    api: String,
    authority: String,
    /// For an https:// API: how to check it, and what to present.
    tls: Option<Arc<rustls::ClientConfig>>,
    credential: Credential,
    runtime: tokio::runtime::Runtime,
}

pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
    /// Said after the messages of a refusal: where the credential came from.
    refusal_hint: Option<String>,
}

impl ApiClient {
    pub(crate) fn new(args: &ApiArgs) -> anyhow::Result<ApiClient> {
        let api = args.api.trim_end_matches('/').to_owned();
        let uri: Uri = api
            .parse()
            .map_err(|_| anyhow!("--api {api:?} is not a URL; use http://HOST:PORT"))?;
        let (authority, tls) = match (uri.scheme_str(), uri.authority()) {
            (Some("http"), Some(authority)) => (authority.clone(), None),
            (Some("https"), Some(authority)) => (authority.clone(), Some(tls_config(args)?)),
            _ => bail!("--api {api:?} is not an http(s) URL; use http://HOST:PORT"),
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let local = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        Ok(ApiClient {
            tls,
            credential: args.credential(local),
            authority: authority.to_string(),
            api,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?,
        })
    }

    /// POSTs `body` as JSON to `path` and returns the JSON answer; a refusal is an error
    /// that says it happened while `doing` ("creating the join token").
    pub(crate) fn post_json(
        &self,
        path: &str,
        body: &Value,
        doing: &'static str,
    ) -> anyhow::Result<Value> {
        self.send(
            Method::POST,
            path,
            Some("application/json"),
            Bytes::from(body.to_string()),
        )?
        .success()
        .context(doing)?
        .json()
    }

    /// Sends one request. A write without a content type says JSON (its body is JSON or
    /// empty): the API refuses writes that do not say what they carry.
    pub(crate) fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<Reply> {
        let request = self.request(method, path, content_type, body)?;
        let exchange = async {
            let response = self.open(request).await?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .with_context(|| format!("reading the answer from {}", self.api))?
                .to_bytes();
            Ok(self.reply(status, body))
        };
        self.runtime
            .block_on(async { tokio::time::timeout(REQUEST_TIMEOUT, exchange).await })
            .map_err(|_| self.no_answer())?
    }

    /// GETs `path`, an answer of lines that goes on (`weft tap`), and hands each line to
    /// `each` as it comes, until the answer ends or `each` says stop.
    pub(crate) fn stream_lines(
        &self,
        path: &str,
        mut each: impl FnMut(&str) -> bool,
    ) -> anyhow::Result<()> {
        let request = self.request(Method::GET, path, None, Bytes::new())?;
        self.runtime.block_on(async {
            let response = tokio::time::timeout(REQUEST_TIMEOUT, self.open(request))
                .await
                .map_err(|_| self.no_answer())??;
            let status = response.status();
            let mut body = response.into_body();
            if !status.is_success() {
                let answer = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                self.reply(status, answer).success()?;
                return Ok(());
            }
            let mut pending: Vec<u8> = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame =
                    frame.with_context(|| format!("reading the stream from {}", self.api))?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                pending.extend_from_slice(&data);
                while let Some(end) = pending.iter().position(|byte| *byte == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    if !each(String::from_utf8_lossy(&line).trim_end()) {
                        return Ok(());
                    }
                }
            }
            Ok(())
        })
    }

    fn reply(&self, status: StatusCode, body: Bytes) -> Reply {
        let refusal_hint = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
            .then(|| self.credential_hint());
        Reply {
            status,
            body,
            refusal_hint,
        }
    }

    fn no_answer(&self) -> anyhow::Error {
        anyhow!(
            "the control plane at {} did not answer within {}s; check its log",
            self.api,
            REQUEST_TIMEOUT.as_secs()
        )
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<Request<Full<Bytes>>> {
        let writes = matches!(method, Method::POST | Method::PUT | Method::PATCH);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.authority);
        match (content_type, writes) {
            (Some(content_type), _) => request = request.header(header::CONTENT_TYPE, content_type),
            (None, true) => request = request.header(header::CONTENT_TYPE, "application/json"),
            (None, false) => {}
        }
        if let Credential::Token { token, .. } = &self.credential {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        Ok(request.body(Full::new(body))?)
    }

    /// Connects (over TLS for https) and sends `request`: the answer's head.
    async fn open(
        &self,
        request: Request<Full<Bytes>>,
    ) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|err| {
                self.unreachable(match err.kind() {
                    std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                    _ => err.to_string(),
                })
            })?;
        let response = match &self.tls {
            None => self.exchange(stream, request).await?,
            Some(config) => {
                // The control plane is checked by its SPIFFE id, not by this name.
                let name = ServerName::try_from(self.host().to_owned())
                    .map_err(|err| anyhow!("--api {}: {err}", self.api))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, stream)
                    .await
                    .map_err(|err| self.unreachable(format!("TLS: {err}")))?;
                self.exchange(tls, request).await?
            }
        };
        Ok(response)
    }

    fn host(&self) -> &str {
        let host = self
            .authority
            .rsplit_once(':')
            .map_or(self.authority.as_str(), |(host, _)| host);
        host.trim_start_matches('[').trim_end_matches(']')
    }

    /// One request on `io` (plain or TLS): the response.
    async fn exchange<IO>(
        &self,
        io: IO,
        request: Request<Full<Bytes>>,
    ) -> anyhow::Result<http::Response<hyper::body::Incoming>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|err| self.unreachable(err.to_string()))?;
        tokio::spawn(connection);
        sender
            .send_request(request)
            .await
            .with_context(|| format!("the control plane at {} dropped the request", self.api))
    }

    fn credential_hint(&self) -> String {
        match &self.credential {
            Credential::Token { from, .. } => format!("(the token sent came from {from})"),
            Credential::Certificate { from } => {
                format!("(the operator certificate presented was {from})")
            }
            Credential::None { looked } => format!(
                "(no token was sent: none given with --token or WEFT_TOKEN; looked in {})",
                looked.join(", ")
            ),
        }
    }

    fn unreachable(&self, why: String) -> anyhow::Error {
        anyhow!(
            "cannot reach the control plane at {}: {why} — is `weft control` running? \
             (set --api or WEFT_API)",
            self.api
        )
    }
}

impl Reply {
    /// Turns an error answer into an error that carries its messages.
    pub(crate) fn success(self) -> anyhow::Result<Reply> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(anyhow!(self.errors().join("\n")))
        }
    }

    pub(crate) fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).map_err(|_| self.unexpected())
    }

    /// The messages of an error answer, with where the credential came from when it was
    /// refused.
    pub(crate) fn errors(&self) -> Vec<String> {
        let parsed: Option<Vec<String>> = serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| serde_json::from_value(v["errors"].clone()).ok());
        let mut errors = parsed.unwrap_or_else(|| vec![self.unexpected().to_string()]);
        errors.extend(self.refusal_hint.clone());
        errors
    }

    fn unexpected(&self) -> anyhow::Error {
        anyhow!(
            "unexpected answer ({}): {}; is --api pointing at `weft control`?",
            self.status,
            String::from_utf8_lossy(&self.body).trim()
        )
    }
}

/// A string field of an answer from the control plane, which must be there.
pub(crate) fn answer_field(answer: &Value, name: &str) -> anyhow::Result<String> {
    answer[name]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("the control plane's answer has no {name:?}: {answer}"))
}

/// What an API token or an operator certificate may do (`--role`).
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum Role {
    /// Everything: applies, deletes, tokens, certificates.
    Admin,
    /// Reads only: resources, proxies, check, the CA's roots, metrics.
    ReadOnly,
}

impl Role {
    /// As the API names it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReadOnly => "read-only",
        }
    }
}
