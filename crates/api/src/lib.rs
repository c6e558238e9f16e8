//! The gRPC contract between the control plane and its proxies (`proto/weft/v1`), generated
//! at build time by tonic and prost from the `.proto` files, with the codec they use and the
//! splitting of large messages into parts.

pub mod codec;
pub mod parts;

pub mod v1 {
    tonic::include_proto!("weft.v1");
}

/// The upper bounds, in microseconds, of the latency buckets of a `TrafficStat`: fine
/// below a millisecond (loopback hops), then about three per decade up to 10 s. A stat
/// carries one count per bound and one more for slower requests.
pub const LATENCY_BUCKETS_US: [u64; 23] = [
    250, 500, 1_000, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 20_000, 30_000, 50_000, 75_000,
    100_000, 150_000, 200_000, 300_000, 500_000, 750_000, 1_000_000, 2_000_000, 5_000_000,
    10_000_000,
];

/// Latency buckets a `TrafficStat` carries: one per bound and the overflow.
pub const LATENCY_BUCKETS: usize = LATENCY_BUCKETS_US.len() + 1;

/// The bucket a latency of `micros` falls in.
pub fn latency_bucket(micros: u64) -> usize {
    LATENCY_BUCKETS_US.partition_point(|&bound| bound < micros)
}
