use super::*;
use crate::api::{ApiState, NoStatus};
use crate::store::tests::{service, ScratchDir};
use crate::store::{RedbStore, Store};
use axum::body::Body;
use tower::ServiceExt;

struct Guarded {
    router: Router,
    tokens: Arc<ApiTokens>,
    admin: String,
    _dir: ScratchDir,
}

impl Guarded {
    async fn new(tag: &str) -> Guarded {
        let dir = ScratchDir::new(tag);
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path()).unwrap());
        let tokens = Arc::new(ApiTokens::open(store.clone(), dir.path()).await.unwrap());
        let admin = std::fs::read_to_string(dir.path().join(ADMIN_TOKEN_FILE))
            .unwrap()
            .trim()
            .to_owned();
        let api = crate::api::router(ApiState {
            store,
            status: Arc::new(NoStatus),
            ca_trust_domain: None,
            proxies_address: None,
        });
        let router = protect(
            api,
            Access::new(tokens.clone(), &Default::default(), None, None),
        );
        Guarded {
            router,
            tokens,
            admin,
            _dir: dir,
        }
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: &str,
    ) -> (StatusCode, String) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let request = request.body(Body::from(body.to_owned())).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn refused(&self, reason: &str) -> String {
        let (status, text) = self
            .call(Method::GET, "/metrics", Some(&self.admin), None, "")
            .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        text.lines()
            .find(|l| {
                l.starts_with(&format!(
                    "weft_api_requests_refused_total{{reason=\"{reason}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or("0")
            .to_owned()
    }
}

#[tokio::test]
async fn calls_without_a_valid_token_are_refused_and_counted() {
    let api = Guarded::new("access-anonymous").await;
    let yaml = service("web", 80);
    for token in [None, Some("weftapi_guessed"), Some("")] {
        let (status, body) = api
            .call(
                Method::POST,
                "/api/v1/apply",
                token,
                Some("application/yaml"),
                &yaml,
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let errors: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            errors["errors"][0].as_str().unwrap().contains("API token"),
            "{body}"
        );
    }
    let (status, _) = api
        .call(
            Method::GET,
            "/api/v1/resources?kind=services",
            None,
            None,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A cookie is no credential.
    let request = Request::get("/api/v1/resources?kind=services")
        .header(header::COOKIE, format!("token={}", api.admin))
        .body(Body::empty())
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Health stays open.
    let (status, _) = api
        .call(Method::GET, "/api/v1/health", None, None, "")
        .await;
    assert_eq!(status, StatusCode::OK);
    // Nothing was applied.
    let (status, body) = api
        .call(
            Method::GET,
            "/api/v1/resources?kind=services",
            Some(&api.admin),
            None,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.contains("\"web\""), "{body}");
    assert_eq!(api.refused("missing_credential").await, "3");
    assert_eq!(api.refused("bad_credential").await, "2");
}

#[tokio::test]
async fn a_read_only_token_reads_but_cannot_write_or_list_tokens() {
    let api = Guarded::new("access-read-only").await;
    let reader = api.tokens.create("grafana", Role::ReadOnly).await.unwrap();
    let (status, _) = api
        .call(
            Method::GET,
            "/api/v1/resources?kind=services",
            Some(&reader.token),
            None,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/apply",
            Some(&reader.token),
            Some("application/yaml"),
            &service("web", 80),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains("needs the admin role") && body.contains("grafana"),
        "{body}"
    );
    for (method, uri) in [
        (Method::GET, "/api/v1/api-tokens"),
        (Method::DELETE, "/api/v1/resources/service/default/web"),
    ] {
        let (status, body) = api.call(method, uri, Some(&reader.token), None, "").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}: {body}");
    }
    assert_eq!(api.refused("forbidden").await, "3");

    // Revoked by an admin, it reads nothing more.
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/api-tokens/{}", reader.id),
            Some(&api.admin),
            None,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api
        .call(
            Method::GET,
            "/api/v1/resources?kind=services",
            Some(&reader.token),
            None,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn writes_a_web_page_could_forge_are_refused() {
    let api = Guarded::new("access-csrf").await;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let (status, body) = api
            .call(
                Method::POST,
                "/api/v1/apply",
                Some(&api.admin),
                content_type,
                &service("web", 80),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}: {body}"
        );
    }
    assert_eq!(api.refused("content_type").await, "4");
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/apply",
            Some(&api.admin),
            Some("application/yaml; charset=utf-8"),
            &service("web", 80),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn an_admin_makes_lists_and_revokes_tokens() {
    let api = Guarded::new("access-admin").await;
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/api-tokens",
            Some(&api.admin),
            Some("application/json"),
            r#"{"name": "ci", "role": "read-only"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let created: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = created["token"].as_str().unwrap();
    assert!(token.starts_with(TOKEN_PREFIX));
    assert_eq!(api.tokens.verify(token).unwrap().role, Role::ReadOnly);
    let (status, body) = api
        .call(
            Method::GET,
            "/api/v1/api-tokens",
            Some(&api.admin),
            None,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("\"ci\"") && !body.contains(token), "{body}");
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/api-tokens",
            Some(&api.admin),
            Some("application/json"),
            r#"{"name": "x", "role": "superuser"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn an_operator_certificate_is_a_credential_with_the_role_of_its_namespace() {
    let api = Guarded::new("access-operator").await;
    let call = |namespace: &str, method: Method, uri: &str, content_type: Option<&str>| {
        let peer = Peer {
            remote: "127.0.0.1:50000".parse().unwrap(),
            tls: true,
            identity: Some(weft_identity::SpiffeId::new("weft.local", namespace, "alice").unwrap()),
            certificate_sha256: None,
        };
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let mut request = request.body(Body::from(service("web", 80))).unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        let router = api.router.clone();
        async move { router.oneshot(request).await.unwrap().status() }
    };
    let reads = "/api/v1/resources?kind=services";
    assert_eq!(
        call("weft-readers", Method::GET, reads, None).await,
        StatusCode::OK
    );
    assert_eq!(
        call(
            "weft-readers",
            Method::POST,
            "/api/v1/apply",
            Some("application/yaml")
        )
        .await,
        StatusCode::FORBIDDEN
    );
    // A browser holding the certificate still cannot forge a write.
    assert_eq!(
        call(
            "weft-operators",
            Method::POST,
            "/api/v1/apply",
            Some("text/plain")
        )
        .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(
        call(
            "weft-operators",
            Method::POST,
            "/api/v1/apply",
            Some("application/yaml")
        )
        .await,
        StatusCode::OK
    );
    // A workload's certificate is no operator's.
    assert_eq!(
        call("default", Method::GET, reads, None).await,
        StatusCode::UNAUTHORIZED
    );
}
