//! The resource loader and compiler: any text, as `weft apply` or `--local` reads it. What
//! loads must compile into a proxy config that survives JSON, as it travels to proxies.
#![no_main]

use weft_model::config::ProxyConfig;

libfuzzer_sys::fuzz_target!(|text: &str| {
    if let Ok(resources) = weft_model::load_str("fuzz.yaml", text) {
        let config = weft_model::compile(&resources);
        let json = serde_json::to_string(&config).expect("a compiled config serializes");
        let again: ProxyConfig = serde_json::from_str(&json).expect("and reads back");
        assert_eq!(again, config, "a compiled config survives JSON");
    }
});
