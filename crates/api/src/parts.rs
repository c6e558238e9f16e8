//! Splitting large control messages into [`Part`]s and joining them again.
//!
//! The control plane encodes a message once and every stream sends reference-counted
//! slices of that one buffer; the proxy gathers the slices and decodes the whole.

use crate::v1::control_message::Message;
use crate::v1::{ControlMessage, Part};
use bytes::{Bytes, BytesMut};
use prost::Message as _;

/// The most one part carries. Small enough that stream buffers stay small, large enough
/// that a multi-megabyte config is a few hundred messages, not tens of thousands.
pub const PART_BYTES: usize = 8 * 1024;

/// `message` as it goes on the wire: itself when it fits in a part, else its encoding cut
/// into parts.
pub fn split(message: ControlMessage) -> Vec<ControlMessage> {
    if message.encoded_len() <= PART_BYTES {
        return vec![message];
    }
    let encoded = Bytes::from(message.encode_to_vec());
    let count = encoded.len().div_ceil(PART_BYTES);
    (0..count)
        .map(|index| {
            let start = index * PART_BYTES;
            let end = (start + PART_BYTES).min(encoded.len());
            ControlMessage {
                message: Some(Message::Part(Part {
                    data: encoded.slice(start..end),
                    last: index + 1 == count,
                })),
            }
        })
        .collect()
}

/// Why received parts could not be joined.
#[derive(Debug, PartialEq, Eq)]
pub enum PartError {
    /// The parts add up to more than the receiver accepts.
    TooLarge { limit: usize },
    /// The joined parts do not decode as a `ControlMessage`.
    Malformed(String),
    /// The joined parts are themselves a part.
    Nested,
}

impl std::fmt::Display for PartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PartError::TooLarge { limit } => {
                write!(f, "a message sent in parts exceeds {limit} bytes")
            }
            PartError::Malformed(reason) => {
                write!(f, "a message sent in parts does not decode: {reason}")
            }
            PartError::Nested => f.write_str("a message sent in parts is itself a part"),
        }
    }
}

impl std::error::Error for PartError {}

/// Gathers parts on the receiving side of one stream.
pub struct Assembler {
    pending: BytesMut,
    limit: usize,
}

impl Assembler {
    /// Refuses messages whose parts add up to more than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            pending: BytesMut::new(),
            limit,
        }
    }

    /// The next whole message: `received` itself unless it is a part; for a part, `None`
    /// until the last one arrives, then the message they make. A whole message arriving
    /// between parts abandons the parts gathered so far.
    pub fn push(&mut self, received: Message) -> Result<Option<Message>, PartError> {
        let part = match received {
            Message::Part(part) => part,
            whole => {
                self.pending = BytesMut::new();
                return Ok(Some(whole));
            }
        };
        if self.pending.len() + part.data.len() > self.limit {
            self.pending = BytesMut::new();
            return Err(PartError::TooLarge { limit: self.limit });
        }
        self.pending.extend_from_slice(&part.data);
        if !part.last {
            return Ok(None);
        }
        // Taking the buffer frees it once decoded: a receiver keeps no config-sized buffer.
        let joined = std::mem::take(&mut self.pending).freeze();
        match ControlMessage::decode(joined) {
            Ok(ControlMessage {
                message: Some(Message::Part(_)),
            }) => Err(PartError::Nested),
            Ok(message) => Ok(message.message),
            Err(e) => Err(PartError::Malformed(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::Config;

    fn config(bytes: usize) -> ControlMessage {
        ControlMessage {
            message: Some(Message::Config(Config {
                version: "v7".into(),
                config_json: Bytes::from(vec![b'x'; bytes]),
            })),
        }
    }

    #[test]
    fn small_messages_go_whole() {
        let parts = split(config(100));
        assert_eq!(parts, vec![config(100)]);
        let mut assembler = Assembler::new(1 << 20);
        let whole = parts.into_iter().next().unwrap().message.unwrap();
        assert_eq!(assembler.push(whole).unwrap(), config(100).message);
    }

    #[test]
    fn large_messages_split_and_join() {
        let parts = split(config(100_000));
        assert_eq!(parts.len(), 100_000_usize.div_ceil(PART_BYTES));
        let mut assembler = Assembler::new(1 << 20);
        let mut joined = None;
        for (index, part) in parts.iter().enumerate() {
            let Some(Message::Part(p)) = &part.message else {
                panic!("expected a part");
            };
            assert!(p.data.len() <= PART_BYTES);
            assert_eq!(p.last, index + 1 == parts.len());
            let out = assembler.push(part.message.clone().unwrap()).unwrap();
            assert_eq!(out.is_some(), p.last);
            joined = out;
        }
        assert_eq!(joined, config(100_000).message);
    }

    #[test]
    fn a_whole_message_between_parts_abandons_them() {
        let parts = split(config(50_000));
        let mut assembler = Assembler::new(1 << 20);
        assembler.push(parts[0].message.clone().unwrap()).unwrap();
        let whole = config(10).message.unwrap();
        assert_eq!(assembler.push(whole.clone()).unwrap(), Some(whole));
        // The rest of the abandoned message does not bring it back.
        let mut result = Ok(None);
        for part in &parts[1..] {
            result = assembler.push(part.message.clone().unwrap());
        }
        assert_ne!(result, Ok(config(50_000).message), "{result:?}");
    }

    #[test]
    fn oversized_and_nested_parts_are_refused() {
        let mut assembler = Assembler::new(20_000);
        let mut result = Ok(None);
        for part in split(config(50_000)) {
            result = assembler.push(part.message.unwrap());
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(PartError::TooLarge { limit: 20_000 }));

        let inner = split(config(50_000)).remove(0);
        let nested = Part {
            data: Bytes::from(inner.encode_to_vec()),
            last: true,
        };
        let mut assembler = Assembler::new(1 << 20);
        assert_eq!(
            assembler.push(Message::Part(nested)),
            Err(PartError::Nested)
        );
    }
}
