//! Who an end of a flow is, resolved once per judgement and carried to
//! every sink (metrics labels, flow log, `/flows`).

use serde::Serialize;

use super::Name;

/// The workload name of addresses outside the cluster.
pub const WORLD: &str = "world";
/// The workload name of a node address whose node is not known.
pub const HOST: &str = "host";

/// Who an end of a flow is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Identity {
    /// Namespace (`""` outside the cluster or for nodes).
    pub namespace: Name,
    /// Pod name, when a pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<Name>,
    /// Workload name: the pod's top owner, [`WORLD`] outside the cluster,
    /// the node name (or [`HOST`]) for nodes, the service name for
    /// services.
    pub workload: Name,
}

impl Identity {
    /// Outside the cluster.
    pub fn world() -> Self {
        Self {
            namespace: Name::from(""),
            pod: None,
            workload: Name::from(WORLD),
        }
    }

    /// Whether this is outside the cluster.
    pub fn is_world(&self) -> bool {
        self.namespace.is_empty() && &*self.workload == WORLD
    }
}
