//! The engine's index: what the cluster is ([`ClusterState`]) — its
//! objects, each pod's compiled policy lists, Services and their backends —
//! who an address is ([`Resolved`]), who it was (`history`), and a pod's
//! workload.
//!
//! One writer (the source), many readers (judge, posture, Hubble). Nothing
//! here does I/O or knows where objects come from.

mod apply;
pub mod cluster;
mod cluster_policies;
mod history;
mod intern;
mod ip_map;
mod pods;
pub mod services;
pub mod workload;

pub use cluster::{ClusterState, NamedPort, PodInfo, PodShape, Resolved};
pub use history::DEFAULT_HISTORY_RETENTION;
pub use services::{
    EndpointInfo, Frontend, NoBackend, SERVICE_NAME_LABEL, ServiceInfo, ServicePortInfo, SliceInfo,
};
