//! The dashboard in a real browser (headless Chromium, driven over the DevTools protocol):
//! what it shows comes from a running mesh, it changes live as traffic does, and its tap
//! view streams the requests a proxy carries.

mod support;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::browser::Browser;
use support::*;

const SOON: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_mesh_live_and_taps_its_requests() {
    let dir = TempDir::new("dashboard-browser");
    let control = ControlPlane::start(&dir.path().join("data"), None);
    control.apply(&(plain_service("web", "http", &[]) + &plain_service("reviews", "http", &[])));
    let reviews_app = HttpBackend::start("reviews").await;
    let reviews = control.proxy("reviews", reviews_app.addr).start();
    let web_app = HttpBackend::start("web").await;
    let web = control.proxy("web", web_app.addr).start();

    // The page first, with no traffic yet: what it shows next came over its live stream.
    let mut page = Browser::open(&format!("{}/#token={}", control.url(), control.token)).await;
    page.wait_for(
        "the page to be live",
        SOON,
        "document.getElementById('status').textContent.startsWith('live')",
    )
    .await;
    page.wait_for(
        "both Services in the topology",
        SOON,
        "[...document.querySelectorAll('#graph .node text')].map(t => t.textContent).sort().join() \
         === 'reviews.default,web.default'",
    )
    .await;
    assert_eq!(
        page.eval("document.querySelectorAll('#graph .edge').length")
            .await,
        0
    );

    let stop = Arc::new(AtomicBool::new(false));
    let load = paced_load(
        web.outbound,
        "reviews",
        "/books/",
        Duration::from_millis(100),
        stop.clone(),
    );
    // The edge appears with a rate and full success, without the page being loaded again
    // (while the stream is up the page does not poll).
    let label = page
        .wait_for(
            "the edge web -> reviews, with its rate",
            SOON,
            "[...document.querySelectorAll('#graph .edge text')].map(t => t.textContent) \
             .find(t => !t.includes(' 0.0/s') && t.includes('/s 100.00%'))",
        )
        .await;
    assert!(
        page.eval("document.getElementById('status').textContent.startsWith('live')")
            .await
            == true,
        "the page fell back to polling"
    );
    page.screenshot("dashboard-topology").await;
    assert!(label.as_str().unwrap().contains("p99"), "{label}");

    // The Services table has both, and reviews' page its edge.
    page.eval("location.hash = '#services'").await;
    page.wait_for(
        "reviews in the Services table",
        SOON,
        "[...document.querySelectorAll('#services-table tr.link')].find(r => r.cells[0].textContent === 'reviews.default')",
    )
    .await;

    // Tap: the requests web's proxy sends to reviews, as they happen.
    page.eval(
        "location.hash = '#tap'; \
         document.getElementById('tap-service').value = 'reviews'; \
         document.getElementById('tap-path').value = '/books/1'; \
         document.getElementById('tap-form').requestSubmit(); true",
    )
    .await;
    page.wait_for(
        "three tapped requests",
        SOON,
        "document.querySelectorAll('#tap-table tr.tapped').length >= 3",
    )
    .await;
    let rows = page
        .eval(
            "[...document.querySelectorAll('#tap-table tr.tapped')].map(r => \
             [...r.cells].map(c => c.textContent))",
        )
        .await;
    for row in rows.as_array().unwrap() {
        let cells: Vec<&str> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        // DIRECTION, SOURCE, DESTINATION, METHOD, PATH, STATUS after the time.
        assert_eq!(cells[4], "GET", "{cells:?}");
        assert!(cells[5].starts_with("/books/1"), "{cells:?}");
        assert_eq!(cells[6], "200", "{cells:?}");
        assert!(cells[3].starts_with("reviews"), "{cells:?}");
    }
    page.screenshot("dashboard-tap").await;

    // Stop ends the tap in the proxy too.
    page.eval("document.getElementById('tap-stop').click(); true")
        .await;
    wait_for("the tap to close", SOON, || {
        let open = reviews.metric("weft_taps_open", &[]);
        async move { open == 0.0 }
    })
    .await;

    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
}
