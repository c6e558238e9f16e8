use super::*;
use crate::store::tests::{service, ScratchDir};
use crate::store::RedbStore;
use axum::body::Body;
use axum::http::{header, Method, Request};
use serde_json::Value;
use tower::ServiceExt;

struct Api {
    router: Router,
    _dir: ScratchDir,
}

/// Says every HTTPRoute is accepted by two proxies.
struct FixedStatus;

impl StatusSource for FixedStatus {
    fn status(&self, kind: &str, _namespace: &str, name: &str) -> Option<Value> {
        (kind == "HTTPRoute").then(|| json!({"summary": format!("{name}: accepted by 2")}))
    }
}

impl Api {
    fn new(tag: &str) -> Self {
        let dir = ScratchDir::new(tag);
        let store = RedbStore::open(dir.path()).unwrap();
        let router = router(ApiState {
            store: Arc::new(store),
            status: Arc::new(FixedStatus),
            ca_trust_domain: Some("weft.local".to_owned()),
            proxies_address: None,
        });
        Api { router, _dir: dir }
    }

    async fn call(&self, request: Request<Body>) -> (StatusCode, String) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn apply(&self, source: &str, body: &str) -> (StatusCode, Value) {
        let request = Request::post("/api/v1/apply")
            .header(SOURCE_HEADER, source)
            .body(Body::from(body.to_owned()))
            .unwrap();
        let (status, body) = self.call(request).await;
        (status, serde_json::from_str(&body).unwrap())
    }

    async fn get(&self, uri: &str) -> (StatusCode, String) {
        self.call(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    async fn get_json(&self, uri: &str) -> (StatusCode, Value) {
        let (status, body) = self.get(uri).await;
        (status, serde_json::from_str(&body).unwrap())
    }
}

const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews
spec:
  parentRefs: [{group: \"\", kind: Service, name: reviews}]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /v2}
    backendRefs: [{name: reviews, weight: 90}]
";

#[tokio::test]
async fn apply_then_read_in_json_and_yaml_then_delete() {
    let api = Api::new("api-roundtrip");
    let text = format!("{}---\n{ROUTE}", service("reviews", 80));
    let (status, body) = api.apply("reviews.yaml", &text).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"applied": [
            {"kind": "Service", "namespace": "default", "name": "reviews",
             "resourceVersion": "1", "result": "created"},
            {"kind": "HTTPRoute", "namespace": "default", "name": "reviews",
             "resourceVersion": "1", "result": "created"}],
         "warnings": []})
    );
    let (_, body) = api.apply("reviews.yaml", &text).await;
    assert_eq!(body["applied"][1]["result"], "unchanged");
    // A Service's status carries its virtual IP: the first of the default range.
    let (_, service) = api
        .get_json("/api/v1/resources/service/default/reviews")
        .await;
    assert_eq!(service["status"]["virtualIP"], "240.240.0.1", "{service}");

    let (status, route) = api
        .get_json("/api/v1/resources/httproutes/default/reviews")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(route["metadata"]["resourceVersion"], "1");
    assert_eq!(route["spec"]["rules"][0]["backendRefs"][0]["weight"], 90);
    assert_eq!(route["status"]["summary"], "reviews: accepted by 2");

    let (status, yaml) = api
        .get("/api/v1/resources/HTTPRoute/default/reviews?output=yaml")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(yaml.contains("kind: HTTPRoute\n"), "{yaml}");
    assert!(yaml.contains("resourceVersion: '1'\n"), "{yaml}");
    // What `get -o yaml` shows applies back as is, with its version checked.
    let (status, body) = api.apply("edited.yaml", &yaml.replace("90", "80")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["applied"][0]["result"], "configured");
    assert_eq!(body["applied"][0]["resourceVersion"], "2");

    let request = Request::get("/api/v1/resources?kind=service")
        .header(header::ACCEPT, "application/yaml")
        .body(Body::empty())
        .unwrap();
    let (_, yaml) = api.call(request).await;
    assert!(
        yaml.starts_with("apiVersion: weft.dev/v1alpha1\n"),
        "{yaml}"
    );
    let (_, list) = api.get_json("/api/v1/resources").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let (_, list) = api.get_json("/api/v1/resources?namespace=prod").await;
    assert_eq!(list["items"], json!([]));

    let delete = |uri: &str| Request::delete(uri).body(Body::empty()).unwrap();
    let (status, body) = api
        .call(delete(
            "/api/v1/resources/service/default/reviews?resourceVersion=1",
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["deleted"]["name"], "reviews");
    assert_eq!(
        body["warnings"].as_array().unwrap().len(),
        2,
        "the route lost its Service"
    );
    let (status, body) = api
        .call(delete("/api/v1/resources/service/default/reviews"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"errors": ["Service default/reviews does not exist; `weft get service` lists \
                          the ones that do"]})
    );
}

#[tokio::test]
async fn bad_documents_name_file_line_and_field_and_store_nothing() {
    let api = Api::new("api-invalid");
    let bad_regex = ROUTE.replace(
        "{type: PathPrefix, value: /v2}",
        "{type: RegularExpression, value: \"(\"}",
    );
    let text = format!("{}---\n{bad_regex}", service("reviews", 80));
    let (status, body) = api.apply("routes.yaml", &text).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error = body["errors"][0].as_str().unwrap();
    assert!(
        error.starts_with("routes.yaml:14:"),
        "names file and line: {error}"
    );
    assert!(
        error.contains("spec.rules[0].matches[0].path"),
        "names the field: {error}"
    );
    let (_, list) = api.get_json("/api/v1/resources").await;
    assert_eq!(list["items"], json!([]), "nothing was stored");

    let (status, body) = api.apply("empty.yaml", "# nothing\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["errors"][0]
        .as_str()
        .unwrap()
        .starts_with("the request holds no resources"));
}

#[tokio::test]
async fn several_files_in_one_request_keep_their_names() {
    let api = Api::new("api-files");
    let files = json!({"files": [
        {"name": "a.yaml", "content": service("a", 80)},
        {"name": "b.yaml", "content": "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {name: b}\nspec: {ports: [{port: 80}], colour: red}\n"},
    ]});
    let request = Request::post("/api/v1/apply")
        .header(header::CONTENT_TYPE, FILES_CONTENT_TYPE)
        .body(Body::from(files.to_string()))
        .unwrap();
    let (status, body) = api.call(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body: Value = serde_json::from_str(&body).unwrap();
    let error = body["errors"][0].as_str().unwrap();
    assert!(
        error.starts_with("b.yaml:4:") && error.contains("unknown field `colour`"),
        "{error}"
    );
    let (_, list) = api.get_json("/api/v1/resources").await;
    assert_eq!(list["items"], json!([]), "a.yaml was not applied either");
}

#[tokio::test]
async fn a_stale_version_is_a_conflict() {
    let api = Api::new("api-conflict");
    api.apply("a.yaml", &service("a", 80)).await;
    api.apply("a.yaml", &service("a", 81)).await;
    let stale = service("a", 82).replace("{name: a}", "{name: a, resourceVersion: \"1\"}");
    let (status, body) = api.apply("a.yaml", &stale).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("Service default/a: resourceVersion 1 is stale (it is now 2)"),
        "{body}"
    );
    let (_, a) = api.get_json("/api/v1/resources/service/default/a").await;
    assert_eq!(a["spec"]["ports"][0]["port"], 81);
}

#[tokio::test]
async fn mistakes_in_requests_get_json_errors() {
    let api = Api::new("api-mistakes");
    for (uri, status, start) in [
        (
            "/api/v1/resources/virtualservices/default/x",
            StatusCode::BAD_REQUEST,
            "unknown kind \"virtualservices\"; use one of Mesh, Service",
        ),
        (
            "/api/v1/resources/mesh/default/none",
            StatusCode::NOT_FOUND,
            "Mesh default/none does not exist",
        ),
        (
            "/api/v1/resources?output=xml",
            StatusCode::BAD_REQUEST,
            "unknown output \"xml\"",
        ),
        (
            "/api/v1/resources?colour=red",
            StatusCode::BAD_REQUEST,
            "Failed to deserialize query string",
        ),
        ("/api/v2/things", StatusCode::NOT_FOUND, "no such endpoint"),
    ] {
        let (got, body) = api.get_json(uri).await;
        assert_eq!(got, status, "{uri}: {body}");
        let error = body["errors"][0].as_str().unwrap();
        assert!(error.starts_with(start), "{uri}: {error}");
    }
    let (status, health) = api.get_json("/api/v1/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        health,
        json!({"status": "ok", "revision": "0", "proxiesAddress": null})
    );

    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/apply")
        .body(Body::from(vec![0xff, 0xfe]))
        .unwrap();
    let (status, body) = api.call(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("request: the body is not UTF-8 text"),
        "{body}"
    );
}

#[tokio::test]
async fn a_mesh_cannot_contradict_the_cas_trust_domain() {
    let api = Api::new("api-trust-domain");
    let mesh = |spec: &str| {
        format!("apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: default}}\nspec: {spec}\n")
    };
    let (status, body) = api
        .apply("mesh.yaml", &mesh("{trustDomain: corp.example}"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = body["errors"][0].as_str().unwrap();
    assert!(
        message.contains("\"corp.example\" differs from the CA's, \"weft.local\"")
            && message.contains("weft cert ca --trust-domain corp.example"),
        "{message}"
    );
    let (status, body) = api.get_json("/api/v1/resources?kind=mesh").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"], json!([]), "nothing was applied");
    for spec in ["{trustDomain: weft.local}", "{mtls: {mode: permissive}}"] {
        let (status, body) = api.apply("mesh.yaml", &mesh(spec)).await;
        assert_eq!(status, StatusCode::OK, "{spec}: {body}");
    }
}
