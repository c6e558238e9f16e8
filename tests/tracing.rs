//! Distributed tracing through two proxies: W3C `traceparent` continued or started, a span
//! per hop exported over OTLP/gRPC, checked by a real OTLP receiver built on the official
//! protobuf service (`opentelemetry-proto`), with parent and child spans across the hops.

mod support;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, Span};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

/// Spans received, with the `service.name` of the proxy that sent them.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(name) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    received.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    async fn start() -> (SocketAddr, Receiver) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = Receiver::default();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (addr, receiver)
    }

    /// The spans of trace `trace_id` once there are `count` of them (within 30 s).
    async fn trace(&self, trace_id: &[u8], count: usize) -> Vec<(String, Span)> {
        let mut found = Vec::new();
        wait_for("the spans at the receiver", Duration::from_secs(30), || {
            found = self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, span)| span.trace_id == trace_id)
                .cloned()
                .collect();
            let done = found.len() >= count;
            async move { done }
        })
        .await;
        found
    }

    fn has_trace(&self, trace_id: &[u8]) -> bool {
        self.0
            .lock()
            .unwrap()
            .iter()
            .any(|(_, span)| span.trace_id == trace_id)
    }
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// The value of `name` in the headers `/echo` answered with.
fn echoed<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    body.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}: ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_through_two_proxies_reaches_the_collector_as_parent_and_child_spans() {
    let (collector, receiver) = Receiver::start().await;
    let dir = TempDir::new("tracing");
    let certs = Certs::new(dir.path(), &["api", "web"]);
    let backend = HttpBackend::start("api-app").await;
    let config = write_config(dir.path(), "mesh.yaml", &plain_service("api", "http", &[]));
    let collector_url = format!("http://{collector}");
    let traced = |spec: ProxySpec<'_>| {
        spec.arg("--trace-collector")
            .arg(collector_url.clone())
            .arg("--trace-sample-percent")
            .arg("100")
            .start()
    };
    let api = traced(ProxySpec::new("api", backend.addr, &config).tls(&certs));
    std::fs::write(&config, mesh_service("api", "http", &[api.inbound])).unwrap();
    api.signal("HUP");
    let web = traced(ProxySpec::new("web", "127.0.0.1:9".parse().unwrap(), &config).tls(&certs));
    wait_for(
        "web reaching api over mTLS",
        Duration::from_secs(20),
        || async {
            let mut client = Http1Client::connect(web.outbound).await;
            client.get("api", "/").await.is_ok_and(|a| a.status == 200)
        },
    )
    .await;

    // A request with no trace: web starts one, api continues it, the app is api's child.
    let mut client = Http1Client::connect(web.outbound).await;
    let answer = client.get("api", "/echo").await.unwrap();
    assert_eq!(answer.status, 200);
    let at_app = echoed(&answer.body, "traceparent").expect("the app gets a traceparent");
    let parts: Vec<&str> = at_app.split('-').collect();
    assert_eq!((parts[0], parts[3]), ("00", "01"), "{at_app}");
    let trace_id = unhex(parts[1]);
    let spans = receiver.trace(&trace_id, 2).await;
    let client_span = spans
        .iter()
        .find(|(service, _)| service == "web.default")
        .map(|(_, span)| span)
        .expect("web's span");
    let server_span = spans
        .iter()
        .find(|(service, _)| service == "api.default")
        .map(|(_, span)| span)
        .expect("api's span");
    assert_eq!(client_span.kind, SpanKind::Client as i32);
    assert!(
        client_span.parent_span_id.is_empty(),
        "web started the trace"
    );
    assert_eq!(server_span.kind, SpanKind::Server as i32);
    assert_eq!(server_span.parent_span_id, client_span.span_id);
    assert_eq!(
        unhex(parts[2]),
        server_span.span_id,
        "the app is api's span's child"
    );
    for span in [client_span, server_span] {
        assert_eq!(
            attribute(span, "http.request.method"),
            Some(&Value::StringValue("GET".into()))
        );
        assert_eq!(
            attribute(span, "http.response.status_code"),
            Some(&Value::IntValue(200))
        );
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    }
    assert_eq!(
        attribute(server_span, "url.path"),
        Some(&Value::StringValue("/echo".into()))
    );
    assert_eq!(
        attribute(client_span, "server.address"),
        Some(&Value::StringValue("api.default".into()))
    );

    // A trace that says "not sampled" is passed on, and recorded by no one.
    let unsampled = "00-11111111111111111111111111111111-2222222222222222-00";
    let answer = client
        .send(request(
            "GET",
            "api",
            "/echo",
            &[("traceparent", unsampled)],
        ))
        .await
        .unwrap();
    let passed = echoed(&answer.body, "traceparent").unwrap();
    assert!(passed.starts_with("00-11111111111111111111111111111111-") && passed.ends_with("-00"));

    // A trace the app's caller started: continued, with tracestate and B3 untouched.
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let answer = client
        .send(request(
            "GET",
            "api",
            "/echo",
            &[
                ("traceparent", incoming),
                ("tracestate", "vendor=opaque"),
                ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(echoed(&answer.body, "tracestate"), Some("vendor=opaque"));
    assert_eq!(
        echoed(&answer.body, "x-b3-traceid"),
        Some("80f198ee56343ba864fe8b2a57d3eff7")
    );
    let continued = unhex("4bf92f3577b34da6a3ce929d0e0e4736");
    let spans = receiver.trace(&continued, 2).await;
    let client_span = spans
        .iter()
        .find(|(service, _)| service == "web.default")
        .map(|(_, span)| span)
        .unwrap();
    assert_eq!(client_span.parent_span_id, unhex("00f067aa0ba902b7"));
    // Spans leave each proxy in order: the unsampled trace, sent before, would be here.
    assert!(!receiver.has_trace(&unhex("11111111111111111111111111111111")));
    assert_eq!(web.metric("weft_trace_spans_dropped_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_sets_the_collector_and_a_change_reaches_running_proxies() {
    let (first, first_receiver) = Receiver::start().await;
    let (second, second_receiver) = Receiver::start().await;
    let dir = TempDir::new("tracing-mesh");
    let certs = Certs::new(dir.path(), &["api", "web"]);
    let backend = HttpBackend::start("api-app").await;
    let mesh = |collector: SocketAddr| {
        format!(
            "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: mesh}}\nspec:\n  tracing: {{collector: \"http://{collector}\", samplePercent: 100}}\n---\n"
        )
    };
    let config = write_config(
        dir.path(),
        "mesh.yaml",
        &format!("{}{}", mesh(first), plain_service("api", "http", &[])),
    );
    let api = ProxySpec::new("api", backend.addr, &config)
        .tls(&certs)
        .start();
    let with_endpoint = |collector| {
        format!(
            "{}{}",
            mesh(collector),
            mesh_service("api", "http", &[api.inbound])
        )
    };
    std::fs::write(&config, with_endpoint(first)).unwrap();
    api.signal("HUP");
    let web = ProxySpec::new("web", "127.0.0.1:9".parse().unwrap(), &config)
        .tls(&certs)
        .start();
    let traced_request = || async {
        let mut client = Http1Client::connect(web.outbound).await;
        let answer = client.get("api", "/echo").await.ok()?;
        let parent = echoed(&answer.body, "traceparent")?.to_owned();
        (answer.status == 200).then(|| unhex(parent.split('-').nth(1).unwrap()))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let trace_id = loop {
        if let Some(id) = traced_request().await {
            break id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "web never reached api"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let spans = first_receiver.trace(&trace_id, 2).await;
    assert_eq!(spans.len(), 2);

    // The Mesh names another collector: both proxies follow without a restart.
    let next = write_config(dir.path(), "next.yaml", &with_endpoint(second));
    std::fs::rename(&next, &config).unwrap();
    api.signal("HUP");
    web.signal("HUP");
    wait_for(
        "spans of both proxies at the new collector",
        Duration::from_secs(30),
        || {
            let request = traced_request();
            async {
                let _ = request.await;
                let services: Vec<String> = second_receiver
                    .0
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(service, _)| service.clone())
                    .collect();
                services.iter().any(|s| s == "web.default")
                    && services.iter().any(|s| s == "api.default")
            }
        },
    )
    .await;
}
