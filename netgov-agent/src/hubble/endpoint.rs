//! An end of a flow as a Hubble `Endpoint`: namespace, pod, workload and
//! labels in Cilium's form, with Cilium's reserved identities for what is
//! not a pod.
//!
//! Labels:
//! - a pod's own: `k8s:key=value`;
//! - its namespace: `k8s:io.kubernetes.pod.namespace=NS`;
//! - its namespace's labels: `k8s:io.cilium.k8s.namespace.labels.key=value`;
//! - outside the cluster: `reserved:world`; this node: `reserved:host`;
//!   another node: `reserved:remote-node`.
//!
//! `identity`: Cilium's reserved numbers for the reserved ends (host 1,
//! world 2, remote-node 6); for a pod, a hash of its label list into
//! Cilium's cluster-local range (256–65,535). Every agent computes the same
//! number for the same labels, as Cilium's identities are per label set,
//! but it is not allocated: two label sets may share one.

use std::net::IpAddr;

use super::proto::flow::{Endpoint, Workload};
use crate::engine::{ClusterState, Resolved};
use crate::model::Identity;

/// Cilium's reserved identity of the local node.
pub const HOST_IDENTITY: u32 = 1;
/// Cilium's reserved identity of everything outside the cluster.
pub const WORLD_IDENTITY: u32 = 2;
/// Cilium's reserved identity of other nodes.
pub const REMOTE_NODE_IDENTITY: u32 = 6;
/// The first identity Cilium allocates to label sets.
const FIRST_LABEL_IDENTITY: u32 = 256;
/// Cilium's last cluster-local identity.
const LAST_LABEL_IDENTITY: u32 = 65_535;

/// The label Cilium gives every pod's namespace.
pub const NAMESPACE_LABEL: &str = "k8s:io.kubernetes.pod.namespace";
/// The prefix of a pod's namespace's labels.
pub const NAMESPACE_LABELS_PREFIX: &str = "k8s:io.cilium.k8s.namespace.labels.";

/// One end of a judged flow.
#[derive(Clone, Copy, Debug)]
pub struct EndpointSource<'a> {
    /// Its address in the record.
    pub ip: IpAddr,
    /// Who the judge said it is.
    pub identity: &'a Identity,
    /// The flow's first and last packet: who had the address then.
    pub seen: (i128, i128),
}

/// The Hubble endpoint of one end (see the module docs).
pub fn endpoint(cluster: &ClusterState, end: EndpointSource<'_>, this_node: &str) -> Endpoint {
    let identity = end.identity;
    let resolved = cluster.resolve_at(end.ip, end.seen.0, end.seen.1);
    match resolved {
        Resolved::Pod(pod) => {
            let mut labels: Vec<String> = pod
                .labels
                .iter()
                .map(|(key, value)| format!("k8s:{key}={value}"))
                .collect();
            labels.push(format!("{NAMESPACE_LABEL}={}", pod.namespace));
            if let Some(namespace_labels) = cluster.namespace_labels(&pod.namespace) {
                labels.extend(
                    namespace_labels
                        .iter()
                        .map(|(key, value)| format!("{NAMESPACE_LABELS_PREFIX}{key}={value}")),
                );
            }
            labels.sort();
            Endpoint {
                id: 0,
                identity: label_identity(&labels),
                cluster_name: String::new(),
                namespace: pod.namespace.to_string(),
                labels,
                pod_name: pod.name.to_string(),
                workloads: vec![Workload {
                    name: pod.workload.name.to_string(),
                    kind: pod.workload.kind.clone(),
                }],
            }
        }
        Resolved::Host(node) => {
            let here = node.is_some_and(|node| node == this_node);
            let (number, label) = if here {
                (HOST_IDENTITY, "reserved:host")
            } else {
                (REMOTE_NODE_IDENTITY, "reserved:remote-node")
            };
            reserved(number, label)
        }
        Resolved::External => reserved(WORLD_IDENTITY, "reserved:world"),
        // A Service whose backend is not known: named by the judge (the
        // backends' shared workload, or the Service).
        Resolved::Service(_) => Endpoint {
            namespace: identity.namespace.to_string(),
            workloads: vec![Workload {
                name: identity.workload.to_string(),
                kind: String::new(),
            }],
            ..Endpoint::default()
        },
    }
}

fn reserved(identity: u32, label: &str) -> Endpoint {
    Endpoint {
        identity,
        labels: vec![label.to_owned()],
        ..Endpoint::default()
    }
}

/// A number for a sorted label list, in Cilium's cluster-local range
/// (FNV-1a: stable across agents and releases).
pub fn label_identity(labels: &[String]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for label in labels {
        for byte in label.bytes().chain([0]) {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    }
    FIRST_LABEL_IDENTITY + hash % (LAST_LABEL_IDENTITY - FIRST_LABEL_IDENTITY + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_identities_are_stable_and_in_range() {
        let labels = vec!["k8s:app=a".to_owned(), format!("{NAMESPACE_LABEL}=shop")];
        let identity = label_identity(&labels);
        assert_eq!(identity, label_identity(&labels.clone()));
        assert!((FIRST_LABEL_IDENTITY..=LAST_LABEL_IDENTITY).contains(&identity));
        assert_ne!(identity, label_identity(&labels[..1]));
    }
}
