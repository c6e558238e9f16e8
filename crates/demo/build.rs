//! Generates the sample `catalog` service's gRPC code from `proto/weft/demo/v1` with protox,
//! a pure-Rust protobuf compiler, so the build needs no system `protoc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [root.join("weft/demo/v1/catalog.proto")];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&root])?;
    tonic_prost_build::configure()
        // Clients build a `Channel` (with the `catalog` origin) and call `new`.
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
