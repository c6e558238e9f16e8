//! Release builds lay out the proxy's code together.
//!
//! `hot-symbols.txt` lists the functions a proxy runs (made by `bench/hot-symbols.sh`); LLD
//! places them side by side at the start of `.text`. The kernel maps code around every page
//! fault, so packed hot code keeps a proxy's resident set about 4 MB smaller than code spread
//! over the whole binary. A name that no longer exists is skipped, so a stale list only packs
//! less. Only where LLD is rustc's default linker (x86_64 Linux, Rust 1.90 and later); set
//! `WEFT_SYMBOL_ORDERING=0` to build without it, e.g. with a linker that lacks the option.

use std::process::Command;

const ORDERING_FILE: &str = "hot-symbols.txt";

fn main() {
    println!("cargo:rerun-if-changed={ORDERING_FILE}");
    println!("cargo:rerun-if-env-changed=WEFT_SYMBOL_ORDERING");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let opted_out = std::env::var("WEFT_SYMBOL_ORDERING").is_ok_and(|v| v == "0");
    let lld_target = std::env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu");
    // A linker chosen in RUSTFLAGS may not know the option.
    let own_linker = std::env::var("CARGO_ENCODED_RUSTFLAGS").is_ok_and(|f| f.contains("linker"));
    if !release || opted_out || !lld_target || own_linker || !rustc_links_with_lld() {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let file = std::path::Path::new(&dir).join(ORDERING_FILE);
    if !file.exists() {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bin=weft=-Wl,--symbol-ordering-file={}",
        file.display()
    );
    println!("cargo:rustc-link-arg-bin=weft=-Wl,--no-warn-symbol-ordering");
}

/// Rust 1.90 made LLD the default linker on x86_64-unknown-linux-gnu.
fn rustc_links_with_lld() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(output) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let version = String::from_utf8_lossy(&output.stdout);
    let mut numbers = version
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .split('.')
        .map(|n| n.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(1), Some(minor)) => minor >= 90,
        (Some(major), _) => major > 1,
        _ => false,
    }
}
