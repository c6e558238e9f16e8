//! The codec of every Weft gRPC call: prost's, with small stream buffers.
//!
//! Each stream keeps its encoding buffer (and each reader its decoding buffer) for as long
//! as it lives, at the capacity of the most it ever held at once. A control plane holds one
//! stream per proxy, so that capacity is multiplied by the fleet: tonic's defaults (8 KiB,
//! growing to 32 KiB before a write) cost hundreds of megabytes at ten thousand proxies.
//! Large messages are sent as parts (see [`crate::parts`]), so a buffer never needs to hold
//! more than a part and a few small messages.

use std::marker::PhantomData;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial capacity of a stream's buffers.
const BUFFER_BYTES: usize = 4 * 1024;
/// Encoded messages are handed to HTTP/2 once this much is buffered (or nothing more is
/// ready), so a burst of small messages still goes out in few writes.
const YIELD_BYTES: usize = 8 * 1024;

pub struct WeftCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for WeftCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_BYTES)
}

impl<T, U> Codec for WeftCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
