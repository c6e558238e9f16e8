//! A demo whose sidecars cannot start says why and leaves nothing behind. (The end-to-end
//! run with the real binary is `tests/demo.rs` at the workspace root, in the `weft` package,
//! which can name the binary.)

use std::path::PathBuf;
use std::time::Duration;
use weft_demo::{DemoError, DemoOptions};

fn options(weft_bin: &str) -> DemoOptions {
    DemoOptions {
        weft_bin: PathBuf::from(weft_bin),
        rps: 1,
        duration: Some(Duration::from_secs(1)),
        transparent: false,
    }
}

/// The demo's temporary directories are named after the process that made them.
fn leftover_dirs() -> Vec<PathBuf> {
    let prefix = format!("weft-demo-{}-", std::process::id());
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .collect()
}

// One test, so no other demo in this process is running while leftovers are counted.
#[tokio::test]
async fn sidecars_that_cannot_start_are_reported_and_cleaned_up() {
    // Never told to stop: the sender stays alive for the whole test.
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let error = weft_demo::run(options("/nonexistent/weft"), stopped.clone(), |_| {
        panic!("nothing can be ready")
    })
    .await
    .unwrap_err();
    assert!(matches!(error, DemoError::Spawn { .. }), "{error}");
    assert!(error.to_string().contains("/nonexistent/weft"), "{error}");
    assert_eq!(leftover_dirs(), Vec::<PathBuf>::new());

    // `false` starts and exits at once, as a weft binary without `proxy` would.
    let error = weft_demo::run(options("/bin/false"), stopped, |_| {
        panic!("nothing can be ready")
    })
    .await
    .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, DemoError::Sidecar { .. }), "{message}");
    assert!(message.contains("loadgen sidecar exited"), "{message}");
    assert_eq!(leftover_dirs(), Vec::<PathBuf>::new());
}
