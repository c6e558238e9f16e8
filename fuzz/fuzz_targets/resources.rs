//! The resource loader and compiler: any text, as `weft apply` or `--local` reads it. What
//! loads must compile into a proxy config that survives JSON, as it travels to proxies,
//! and every scope must cut it down to a part of it.
#![no_main]

use weft_model::config::ProxyConfig;

libfuzzer_sys::fuzz_target!(|text: &str| {
    if let Ok(resources) = weft_model::load_str("fuzz.yaml", text) {
        let config = weft_model::compile(&resources);
        let json = serde_json::to_string(&config).expect("a compiled config serializes");
        let again: ProxyConfig = serde_json::from_str(&json).expect("and reads back");
        assert_eq!(again, config, "a compiled config survives JSON");
        // A scope is a subset of the whole mesh's config, holding its own service.
        for scope in weft_model::scopes(&resources) {
            let scoped = weft_model::scoped(&config, &scope);
            assert!(scoped.services.iter().all(|s| config.services.contains(s)));
            assert!(scoped
                .services
                .iter()
                .any(|s| s.name == scope.service && s.namespace == scope.namespace));
        }
    }
});
