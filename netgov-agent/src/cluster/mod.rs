//! Cluster state for the agent: who an IP is (pod, workload, node,
//! service). Today: workload derivation; the Kubernetes API watchers and the
//! file-backed source follow.

pub mod workload;
