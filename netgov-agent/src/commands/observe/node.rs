//! The agent on a node, reached as `kubectl port-forward` reaches a pod:
//! the agent pod is found by label and `spec.nodeName`, and its `observe`
//! container port (the agent itself, when a proxy guards `metrics`: see
//! `deploy/components/metrics-auth`), else its `metrics` port, is forwarded through the API server (WebSocket,
//! `v4.channel.k8s.io`). The kubelet dials the port inside the pod's
//! network namespace — the node's, as the agent runs on the host network —
//! from loopback, which is where the agent serves `/flows`.
//!
//! Needs `get`/`list` on pods and `create` on `pods/portforward` in the
//! agent's namespace (what `kubectl port-forward` needs).

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use tokio::io::DuplexStream;

use crate::sources::kube_source::{self, KubeSourceError};

/// The agent pod on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeTarget {
    /// The node's name.
    pub node: String,
    /// The namespace the DaemonSet runs in.
    pub namespace: String,
    /// The label selector of the agent pods.
    pub selector: String,
    /// Kubeconfig (default: in-cluster, then `$KUBECONFIG`, then
    /// `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
}

/// The names of the container ports the agent may serve HTTP on, in order
/// of preference.
const PORT_NAMES: [&str; 2] = ["observe", "metrics"];

/// Why the agent pod on a node could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No usable Kubernetes configuration.
    #[error(transparent)]
    Client(#[from] KubeSourceError),
    /// Listing the agent pods failed.
    #[error("listing pods {selector} on node {node} in namespace {namespace}: {source}")]
    List {
        /// The node.
        node: String,
        /// The namespace.
        namespace: String,
        /// The selector.
        selector: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// No running agent pod on the node.
    #[error(
        "no running pod {selector} on node {node} in namespace {namespace} (is the DaemonSet scheduled there? see --agent-namespace, --agent-selector)"
    )]
    NoAgent {
        /// The node.
        node: String,
        /// The namespace.
        namespace: String,
        /// The selector.
        selector: String,
    },
    /// The agent pod declares no `observe` or `metrics` container port.
    #[error(
        "pod {namespace}/{pod}: no container port named \"observe\" or \"metrics\" in spec.containers[].ports"
    )]
    NoPort {
        /// The namespace.
        namespace: String,
        /// The pod.
        pod: String,
    },
    /// The API server refused or failed the port-forward.
    #[error("port-forward to {agent}: {source}")]
    PortForward {
        /// The agent pod and node.
        agent: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The port-forward was set up, but the pod's port could not be used.
    #[error("port-forward to {agent}: {message}")]
    Forward {
        /// The agent pod and node.
        agent: String,
        /// What the kubelet said.
        message: String,
    },
}

/// A forwarded connection to the agent.
pub(super) struct Forwarded {
    /// The connection.
    pub stream: DuplexStream,
    /// The agent, for messages: `namespace/pod (node N)`.
    pub agent: String,
    /// Resolves with the kubelet's error message, or `None` once the
    /// forwarder ends without one.
    pub error: std::pin::Pin<Box<dyn Future<Output = Option<String>> + Send>>,
}

/// Finds the agent pod on `target.node` and forwards a connection to it.
///
/// # Errors
/// [`NodeError`] naming the pod, node and step that failed.
pub(super) async fn connect(target: &NodeTarget) -> Result<Forwarded, NodeError> {
    let client = kube_source::client(target.kubeconfig.as_deref()).await?;
    let pods: Api<Pod> = Api::namespaced(client, &target.namespace);
    let params = ListParams::default()
        .labels(&target.selector)
        .fields(&format!("spec.nodeName={}", target.node));
    let list = pods.list(&params).await.map_err(|source| NodeError::List {
        node: target.node.clone(),
        namespace: target.namespace.clone(),
        selector: target.selector.clone(),
        source,
    })?;
    let pod = list
        .items
        .into_iter()
        .find(|pod| {
            pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                && pod.metadata.deletion_timestamp.is_none()
        })
        .ok_or_else(|| NodeError::NoAgent {
            node: target.node.clone(),
            namespace: target.namespace.clone(),
            selector: target.selector.clone(),
        })?;
    let name = pod.metadata.name.clone().unwrap_or_default();
    let ports: Vec<_> = pod
        .spec
        .iter()
        .flat_map(|spec| &spec.containers)
        .flat_map(|container| container.ports.iter().flatten())
        .collect();
    let port = PORT_NAMES
        .iter()
        .find_map(|name| ports.iter().find(|p| p.name.as_deref() == Some(name)))
        .and_then(|port| u16::try_from(port.container_port).ok())
        .ok_or_else(|| NodeError::NoPort {
            namespace: target.namespace.clone(),
            pod: name.clone(),
        })?;
    let agent = format!("{}/{name} (node {})", target.namespace, target.node);
    let mut forwarder =
        pods.portforward(&name, &[port])
            .await
            .map_err(|source| NodeError::PortForward {
                agent: agent.clone(),
                source,
            })?;
    let stream = forwarder.take_stream(port).expect("the port asked for");
    let error = forwarder.take_error(port).expect("the port asked for");
    Ok(Forwarded {
        stream,
        agent,
        error: Box::pin(error),
    })
}
