//! The dashboard: a page, a script and a style sheet, embedded in the binary and served at
//! the API's address (`/`), with nothing to build or install. The assets hold no data and
//! need no token; the page reads the same API as `weft` with the token its user gives it
//! (`#token=...` in the address, as `weft demo` prints it, or typed in), so it sees what
//! that token may see. Served with a content security policy that allows only these files
//! and calls to this origin: every value from the API is put on the page as text.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("dashboard/index.html");
const HTML: &str = "text/html; charset=utf-8";

/// Each asset: its path, its content and its type. Served open, like `/api/v1/health`.
const FILES: [(&str, &str, &str); 4] = [
    ("/", INDEX, HTML),
    ("/dashboard/", INDEX, HTML),
    (
        "/dashboard/app.js",
        include_str!("dashboard/app.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "/dashboard/style.css",
        include_str!("dashboard/style.css"),
        "text/css; charset=utf-8",
    ),
];

/// Whether `path` is one of the dashboard's assets (which need no token to read).
pub fn is_asset(path: &str) -> bool {
    FILES.iter().any(|(at, _, _)| *at == path)
}

pub fn router() -> Router {
    FILES
        .iter()
        .fold(Router::new(), |router, &(path, body, content_type)| {
            router.route(path, get(move || async move { asset(body, content_type) }))
        })
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
                ),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}
