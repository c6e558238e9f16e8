//! Weft's configuration model: the resources users write, and the compiled per-proxy config.

pub mod config;
