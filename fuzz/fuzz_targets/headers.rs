//! The request-head handling the proxy does itself (hop-by-hop headers, authority,
//! upgrades, trace ids, rewriting for the next hop).
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    weft_proxy::fuzzing::headers(bytes);
});
