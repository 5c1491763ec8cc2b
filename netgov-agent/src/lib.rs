//! netgov's agent library: flow capture with eBPF on pod interfaces, the
//! cluster state, the NetworkPolicy engine, the judge and the exports.
//!
//! The binary `netgov` (in `main.rs`) is a thin command-line front end over
//! these modules. The way of one flow, and where each decision lives, is
//! drawn in `ARCHITECTURE.md`.
#![deny(missing_docs)]

/// The version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The source revision built (`git rev-parse --short=12 HEAD`, or
/// `NETGOV_REVISION` when set, else `unknown`).
pub const REVISION: &str = env!("NETGOV_REVISION");

pub mod agent;
pub mod capture;
pub mod churn_map;
pub mod cli;
pub mod commands;
pub mod config;
pub mod engine;
pub mod export;
pub mod flowlog;
pub mod hubble;
pub mod input;
pub mod judge;
pub mod ledger;
pub mod model;
pub mod names;
pub mod sources;

/// `error` and each of its causes, `: `-separated, each cause once (some
/// errors already show their cause in their own text).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
