//! Weft's configuration model: the resources users write (YAML, Kubernetes-style), their
//! validation, and the compiler that turns them into the [`config::ProxyConfig`] a proxy
//! runs. No I/O except reading the files it is asked to load; shared by the control plane
//! and by `weft proxy --local`.
//!
//! The pipeline is [`load_path`] (parse and check each value, with file, line and field
//! in every error), then [`validate`] (checks across resources), then [`compile`].

mod address;
pub mod analyze;
pub mod authz;
mod catalog;
pub mod cidr;
mod compile;
pub mod config;
mod error;
pub mod explain;
pub mod exposition;
pub mod host;
mod load;
pub mod resources;
pub mod route_match;
mod validate;

#[cfg(test)]
mod testdata;

pub use address::Address;
pub use compile::{
    compile, compile_with_workloads, scope_of, scoped, scopes, service_virtual_ips, Scope,
    VirtualIps, Workload,
};
pub use error::{Diagnostic, LoadError, Location, Warning};
pub use load::{load_dir, load_file, load_path, load_str};
pub use resources::Resource;
pub use validate::validate;

use std::path::Path;

/// Loads a file or directory of resources, validates them as a whole and compiles them
/// for a proxy of `service` in `namespace` (the slice of the mesh its Service says it
/// calls, or all of it): what `weft proxy --local FILE` runs on.
pub fn load_and_compile(
    path: &Path,
    namespace: &str,
    service: &str,
) -> Result<(config::ProxyConfig, Vec<Warning>), LoadError> {
    let resources = load_path(path)?;
    let warnings = validate(&resources)?;
    let config = compile(&resources);
    let config = match scope_of(&scopes(&resources), namespace, service) {
        Some(scope) => scoped(&config, scope),
        None => config,
    };
    Ok((config, warnings))
}
