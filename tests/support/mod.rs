//! Shared harness for the end-to-end tests: real `weft` processes on loopback with ports
//! chosen by the OS, real certificates made by `weft cert`, and small real servers.
#![allow(dead_code, unused_imports)] // each test binary uses a different part of the harness

pub mod backend;
pub mod browser;
pub mod client;
pub mod control;
pub mod netns;
pub mod pki;
pub mod process;
pub mod resolver;

pub use backend::*;
pub use client::*;
pub use control::*;
pub use process::*;
