//! A gRPC call's outcome for the golden metrics. gRPC answers HTTP 200 and puts its own
//! status in the trailers (`grpc-status`), or in the headers when it fails at once
//! ("trailers-only"), so a failing gRPC service would look healthy by HTTP status alone. A
//! status other than OK (0) counts as a failure of the edge and route, like a 5xx, as the
//! golden metrics of other meshes count it; `weft_requests_total` keeps the HTTP status.

use crate::body::Body;
use crate::traffic::EdgeStat;
use http::{HeaderMap, Response};
use std::sync::Arc;

/// The `grpc-status` of `headers` (a response's, or its trailers).
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

fn is_grpc(response: &Response<Body>) -> bool {
    response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// Counts a gRPC failure in `stat`: at once for a trailers-only answer, or when the
/// trailers come, by watching the body. Other answers pass untouched.
pub fn watch(response: Response<Body>, stat: &Arc<EdgeStat>) -> Response<Body> {
    if !is_grpc(&response) {
        return response;
    }
    match grpc_status(response.headers()) {
        Some(0) => response,
        Some(_) => {
            stat.grpc_failed();
            response
        }
        None => response.map(|body| Body::GrpcOutcome {
            body: Box::new(body),
            stat: stat.clone(),
        }),
    }
}

/// The trailers of a watched gRPC body have come: counted if they say it failed (or say
/// nothing, which a gRPC client takes as an internal error).
pub fn trailers(trailers: &HeaderMap, stat: &EdgeStat) {
    if grpc_status(trailers) != Some(0) {
        stat.grpc_failed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn grpc(status_in_headers: Option<&str>, body: Body) -> Response<Body> {
        let mut response = Response::builder().header("content-type", "application/grpc+proto");
        if let Some(status) = status_in_headers {
            response = response.header("grpc-status", status);
        }
        response.body(body).unwrap()
    }

    /// A real HTTP/2 answer (over an in-memory pipe) whose body ends with `grpc-status`.
    async fn trailers_of(status: &'static str) -> Body {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let service = hyper::service::service_fn(move |_request| async move {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", status.parse().unwrap());
            let frames = [
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(
                    bytes::Bytes::from_static(b"\0\0\0\0\0"),
                )),
                Ok(http_body::Frame::trailers(trailers)),
            ];
            let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
            Ok::<_, std::convert::Infallible>(Response::new(body))
        });
        tokio::spawn(
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(server_io), service),
        );
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client_io))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = http::Request::new(http_body_util::Empty::<bytes::Bytes>::new());
        Body::Streaming(sender.send_request(request).await.unwrap().into_body())
    }

    #[tokio::test]
    async fn failures_count_from_the_headers_or_the_trailers_and_nothing_else_does() {
        let stat = Arc::new(EdgeStat::default());
        let failed = |stat: &EdgeStat| stat.server_errors();
        // Trailers-only: counted at once.
        let _ = watch(grpc(Some("14"), Body::Empty), &stat);
        assert_eq!(failed(&stat), 1);
        let _ = watch(grpc(Some("0"), Body::Empty), &stat);
        assert_eq!(failed(&stat), 1);
        // In the trailers: counted when the body ends with them.
        for (status, total) in [("0", 1), ("13", 2)] {
            let response = watch(grpc(None, trailers_of(status).await), &stat);
            response.into_body().collect().await.unwrap();
            assert_eq!(failed(&stat), total, "grpc-status {status}");
        }
        // Not gRPC: untouched, whatever it carries.
        let plain = Response::builder()
            .header("grpc-status", "2")
            .body(Body::Empty)
            .unwrap();
        let _ = watch(plain, &stat);
        assert_eq!(failed(&stat), 2);
    }
}
