//! The discovery protocol as a proxy receives it: length-delimited `ControlMessage`s, parts
//! joined by the assembler, full configs and endpoints updates decoded and put in force.
#![no_main]

use prost::Message as _;
use weft_api::parts::Assembler;
use weft_api::v1::{control_message, ControlMessage};

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let mut assembler = Assembler::new(1 << 20);
    let mut whole = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Ok(message) = ControlMessage::decode_length_delimited(&mut rest) else {
            break;
        };
        let Some(received) = message.message else {
            continue;
        };
        match assembler.push(received) {
            Ok(Some(control_message::Message::Part(_))) | Ok(None) => {}
            Ok(Some(message)) => whole.push(message),
            Err(_) => break,
        }
    }
    weft_proxy::fuzzing::pushed(whole);
});
