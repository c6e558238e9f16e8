//! Protocol detection on a connection's first bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    weft_proxy::fuzzing::detect(bytes);
});
