//! Generates the gRPC code from `proto/` with protox, a pure-Rust protobuf compiler, so the
//! build needs no system `protoc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [root.join("weft/v1/discovery.proto")];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&root])?;
    tonic_prost_build::configure()
        // `bytes::Bytes` for `bytes` fields: the control plane serializes a config once and
        // hands every proxy's stream a reference-counted view of the same buffer.
        .bytes(".")
        // The transport helper `DiscoveryClient::connect(url)` would clash with the client
        // method of the `Connect` rpc; clients build a `Channel` and call `new` instead.
        .build_transport(false)
        // Small stream buffers: see src/codec.rs.
        .codec_path("crate::codec::WeftCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
