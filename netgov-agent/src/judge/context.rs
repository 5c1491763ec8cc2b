//! What a recorded flow needs to be judged again later, when the pods are
//! gone: for each end that is a pod, its labels, its namespace's labels and
//! its named ports, as they were when the flow was judged. Written into the
//! flow log (format 1) and read back by `netgov replay`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::engine::selector::Labels;
use crate::engine::{ClusterState, Resolved};

/// A pod end of a flow, as policies saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndContext {
    /// The address judged (a Service flow's backend).
    pub ip: IpAddr,
    /// The pod's labels.
    pub labels: Labels,
    /// Its namespace's labels.
    pub namespace_labels: Labels,
    /// Its named container ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub named_ports: Vec<RecordedPort>,
}

/// A named container port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedPort {
    /// Its name.
    pub name: String,
    /// Its number.
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
}

/// The context of the pod at `ip` during `[first_seen, last_seen]`, if a
/// pod had it.
pub fn end_context(
    cluster: &ClusterState,
    ip: IpAddr,
    (first_seen, last_seen): (i128, i128),
) -> Option<Box<EndContext>> {
    let Resolved::Pod(pod) = cluster.resolve_at(ip, first_seen, last_seen) else {
        return None;
    };
    Some(Box::new(EndContext {
        ip,
        labels: pod.labels.to_map(),
        namespace_labels: cluster
            .namespace_labels(&pod.namespace)
            .cloned()
            .unwrap_or_default(),
        named_ports: pod
            .named_ports
            .iter()
            .map(|p| RecordedPort {
                name: p.name.clone(),
                port: p.port,
                protocol: p.protocol.to_string(),
            })
            .collect(),
    }))
}
