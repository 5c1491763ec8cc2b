//! netgov's agent library: flow capture with eBPF on pod interfaces, and
//! the NetworkPolicy engine.
//!
//! The binary `netgov` (in `main.rs`) is a thin command-line front end over
//! these modules.
#![deny(missing_docs)]

pub mod agent;
pub mod capture;
pub mod cli;
pub mod cluster;
pub mod export;
pub mod policy;
