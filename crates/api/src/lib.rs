//! The gRPC contract between the control plane and its proxies (`proto/weft/v1`), generated
//! at build time by tonic and prost from the `.proto` files, with the codec they use and the
//! splitting of large messages into parts.

pub mod codec;
pub mod parts;

pub mod v1 {
    tonic::include_proto!("weft.v1");
}
