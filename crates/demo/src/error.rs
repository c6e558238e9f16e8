//! What can stop the demo, each saying what went wrong and what to try.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{what} ({path}): {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting the {app} app: {source}")]
    App {
        app: &'static str,
        source: std::io::Error,
    },
    #[error("cannot run {bin} for the {service} sidecar: {source}; is this the weft binary?")]
    Spawn {
        bin: PathBuf,
        service: &'static str,
        source: std::io::Error,
    },
    #[error("the {service} sidecar {problem}; its last log lines:\n{log}")]
    Sidecar {
        service: &'static str,
        problem: String,
        log: String,
    },
    #[error("the demo's control plane: {0}")]
    ControlPlane(String),
    #[error("setting up the pods' network: {0}")]
    Network(String),
    #[error("interrupted while the mesh was starting; everything it started has been stopped")]
    Interrupted,
}
