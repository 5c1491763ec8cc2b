//! netgov's agent library: flow capture with eBPF on pod interfaces, the
//! cluster state, the NetworkPolicy engine, the judge and the exports.
//!
//! The binary `netgov` (in `main.rs`) is a thin command-line front end over
//! these modules. The way of one flow, and where each decision lives, is
//! drawn in `ARCHITECTURE.md`.
#![deny(missing_docs)]

pub mod agent;
pub mod capture;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod export;
pub mod judge;
pub mod policy;
pub mod state;
