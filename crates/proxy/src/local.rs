//! `--local` mode: configuration from a resource file (or directory), reloaded on change.
//!
//! The file is polled rather than watched with inotify: editors replace files in ways that
//! break watches, and a poll every half second costs nothing. A bad file is reported
//! (file, line, field) and the config in force keeps serving.

use crate::config_error::ConfigError;
use crate::proxy::Proxy;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const POLL: Duration = Duration::from_millis(500);

pub fn load(proxy: &Proxy, path: &Path) -> Result<u64, ConfigError> {
    let options = &proxy.options;
    let (config, warnings) =
        weft_model::load_and_compile(path, &options.namespace, &options.service)?;
    for warning in warnings {
        tracing::warn!(%warning, "configuration warning");
    }
    let version = config.version.clone();
    let current = proxy.snapshot();
    if current.generation > 0 && current.config.version == version {
        // Touched but unchanged: keep the running snapshot and its counters.
        return Ok(current.generation);
    }
    let generation = proxy.apply(config)?;
    tracing::info!(path = %path.display(), %version, generation, "configuration loaded");
    Ok(generation)
}

/// What changes when someone edits the file(s): names, sizes and modification times.
fn fingerprint(path: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let entry = |p: PathBuf| {
        let meta = std::fs::metadata(&p).ok();
        let len = meta.as_ref().map_or(0, |m| m.len());
        let modified = meta.and_then(|m| m.modified().ok());
        (p, len, modified)
    };
    if !path.is_dir() {
        return vec![entry(path.to_path_buf())];
    }
    let mut entries: Vec<_> = std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| entry(e.path()))
        .collect();
    entries.sort();
    entries
}

pub async fn watch(proxy: Arc<Proxy>, path: PathBuf) {
    let mut reload = reload_signal();
    let mut seen = fingerprint(&path);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = reload.recv() => seen.clear(),
        }
        // File system calls and compiling block: they run on a blocking thread, never on
        // the one serving traffic.
        let polled = path.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || fingerprint(&polled)).await else {
            continue;
        };
        if now == seen {
            continue;
        }
        seen = now;
        let (loading, from) = (proxy.clone(), path.clone());
        match tokio::task::spawn_blocking(move || load(&loading, &from)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                proxy.metrics.config_rejected();
                tracing::error!(%error, "configuration rejected; the previous configuration stays in force");
            }
            Err(error) => tracing::error!(%error, "loading the configuration failed"),
        }
    }
}

/// SIGHUP forces a reload, for tools that rewrite a file without changing size or mtime.
fn reload_signal() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let _ = tx.try_send(());
            }
        });
    }
    rx
}
