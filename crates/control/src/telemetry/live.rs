//! `GET /api/v1/stats/live?window=1m|10m|1h`: the same view as `GET /api/v1/stats`, as
//! server-sent events: one `stats` event at once and another whenever proxies have reported
//! since (at most one a second, so a mesh of thousands of proxies costs one view a second per
//! watcher), a comment every 15 s to keep idle paths open. What the dashboard shows live.
//!
//! Each open stream holds a task and a view's worth of memory: at most [`MAX_LIVE`] are open
//! at once (beyond: 429), and all end when the control plane shuts down.

use super::{Telemetry, Window};
use crate::api::ApiError;
use crate::server::Shutdown;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Live views open at once, mesh-wide.
pub const MAX_LIVE: usize = 64;
/// The least time between two events of one stream.
const COALESCE: Duration = Duration::from_secs(1);
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Clone)]
pub(super) struct Live {
    open: Arc<Semaphore>,
    shutdown: Shutdown,
}

impl Live {
    pub(super) fn new(shutdown: Shutdown) -> Live {
        Live {
            open: Arc::new(Semaphore::new(MAX_LIVE)),
            shutdown,
        }
    }

    pub(super) fn stream(
        &self,
        telemetry: Arc<Telemetry>,
        window: Window,
    ) -> Result<Response, ApiError> {
        let permit = self.open.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{MAX_LIVE} live views are open already; close a dashboard tab or use \
                     GET /api/v1/stats"
                ),
            )
        })?;
        let watching = Watching {
            reports: telemetry.reports(),
            telemetry,
            window,
            first: true,
            _permit: permit,
        };
        let shutdown = Box::pin(self.shutdown.clone().wait());
        let events = futures_util::stream::unfold(
            (watching, shutdown),
            |(mut watching, mut shutdown)| async move {
                let next = tokio::select! {
                    event = watching.next() => event?,
                    () = &mut shutdown => return None,
                };
                Some((Ok::<_, Infallible>(next), (watching, shutdown)))
            },
        );
        Ok(Sse::new(events)
            .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
            .into_response())
    }
}

struct Watching {
    telemetry: Arc<Telemetry>,
    reports: tokio::sync::watch::Receiver<u64>,
    window: Window,
    first: bool,
    _permit: OwnedSemaphorePermit,
}

impl Watching {
    /// The next `stats` event: at once the first time, then after the next report (and a
    /// second more, for the others of that round to come in).
    async fn next(&mut self) -> Option<Event> {
        if self.first {
            self.first = false;
        } else {
            self.reports.changed().await.ok()?;
            tokio::time::sleep(COALESCE).await;
        }
        self.reports.borrow_and_update();
        let view = self.telemetry.view(self.window);
        Some(
            Event::default()
                .event("stats")
                .json_data(&view)
                .unwrap_or_else(|_| Event::default().comment("a view that did not serialize")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn a_view_comes_at_once_and_live_views_are_capped() {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let live = Live::new(Shutdown::on(stopped));
        let telemetry = Arc::new(Telemetry::default());
        let mut open: Vec<Response> = (0..MAX_LIVE)
            .map(|_| live.stream(telemetry.clone(), Window::OneMinute).unwrap())
            .collect();
        let refused = live
            .stream(telemetry.clone(), Window::OneMinute)
            .unwrap_err();
        assert_eq!(
            refused.into_response().status(),
            StatusCode::TOO_MANY_REQUESTS
        );

        let first = open
            .pop()
            .unwrap()
            .into_body()
            .into_data_stream()
            .next()
            .await;
        let text = first.unwrap().unwrap();
        let text = std::str::from_utf8(&text).unwrap();
        assert!(text.starts_with("event: stats\ndata: {"), "{text}");
        // A closed stream gives its place back.
        live.stream(telemetry.clone(), Window::OneMinute).unwrap();

        // Shutdown ends every stream.
        stop.send(true).unwrap();
        for response in open {
            let mut body = response.into_body().into_data_stream();
            while let Some(chunk) = body.next().await {
                chunk.unwrap();
            }
        }
    }
}
