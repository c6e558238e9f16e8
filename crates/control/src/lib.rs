//! Weft's control plane (`weft control`): the resource store, the REST API, the registry of
//! connected proxies, and the discovery server that compiles and pushes their config.

pub mod access;
pub mod api;
pub mod api_listener;
pub mod audit;
pub mod ca;
pub mod dashboard;
pub mod data_dir;
pub mod discovery;
pub mod explain;
pub mod fleet;
#[cfg(fuzzing)]
pub mod fuzzing;
pub mod identity;
pub mod operators;
pub mod plane_metrics;
pub mod prometheus_sd;
pub mod resource_set;
pub mod revocation;
pub mod rotation;
pub mod secret;
pub mod server;
pub mod serving;
pub mod store;
pub mod suggest;
pub mod tap;
pub mod telemetry;
pub mod tokens;
pub mod transport;
