//! `peer.Peer`: every node that runs a netgov agent, with the address
//! Hubble Relay dials, then the changes as nodes come and go.
//!
//! Which nodes: those with a pod of this agent's own workload (its
//! DaemonSet), found through the agent's pod (`POD_NAMESPACE`/`POD_NAME`,
//! set by the manifests) in the cluster state netgov already holds, so
//! discovery costs the API server nothing more. Without its pod (run by
//! hand, or before the pod is listed), the agent announces itself alone.
//!
//! The address: the node's first InternalIP (the agent runs with host
//! networking; an ExternalIP for a node with none, its agent pod's IP for a
//! node with no address known) and this server's port. With TLS, the name Relay verifies is Cilium's,
//! `<node>.default.hubble-grpc.cilium.io` (dots in the node name become
//! `-`; `default` is Relay's cluster name unless configured): Relay checks
//! the peer Service's certificate against `hubble-peer.<cluster>.` of the
//! same domain, so one wildcard certificate,
//! `*.default.hubble-grpc.cilium.io`, serves both, as with Cilium.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::observer::StreamLimits;
use super::proto::peer::peer_server::Peer;
use super::proto::peer::{ChangeNotification, ChangeNotificationType, NotifyRequest, Tls};
use crate::engine::ClusterState;

/// How often the peer set is looked at again for a notified client.
const PEER_REFRESH: Duration = Duration::from_secs(1);

/// The domain of the TLS names peers serve (Cilium's, for the cluster
/// name Relay uses by default).
pub const TLS_DOMAIN: &str = "default.hubble-grpc.cilium.io";

/// The TLS server name of a node's Hubble server.
pub fn tls_server_name(node: &str) -> String {
    format!("{}.{TLS_DOMAIN}", node.replace('.', "-"))
}

pub use crate::model::PodRef;

/// How this agent finds its peers.
#[derive(Clone, Debug)]
pub struct PeerDiscovery {
    /// This node.
    pub node: String,
    /// Where this agent's Hubble server listens.
    pub listen: SocketAddr,
    /// This agent's own pod, when known.
    pub pod: Option<PodRef>,
    /// Whether peers serve TLS.
    pub tls: bool,
}

/// A peer as announced.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PeerInfo {
    address: SocketAddr,
}

impl PeerDiscovery {
    /// The peers in `state`, by node name.
    fn peers(&self, state: &ClusterState) -> BTreeMap<String, PeerInfo> {
        let port = self.listen.port();
        let node_address = |node: &str, fallback: Option<IpAddr>| {
            state
                .node_addresses(node)
                .first()
                .copied()
                .or(fallback)
                .map(|ip| SocketAddr::new(ip, port))
        };
        let mut peers = BTreeMap::new();
        let own = self
            .pod
            .as_ref()
            .and_then(|pod| state.pod(&pod.namespace, &pod.name));
        if let Some(own) = own {
            for pod in state.pods() {
                if pod.namespace != own.namespace || pod.workload != own.workload {
                    continue;
                }
                let Some(node) = pod.node() else { continue };
                if let Some(address) = node_address(node, pod.ips.first().copied()) {
                    peers.insert(node.to_string(), PeerInfo { address });
                }
            }
        }
        let listen_ip = (!self.listen.ip().is_unspecified()).then_some(self.listen.ip());
        let own_address = node_address(&self.node, listen_ip).unwrap_or(self.listen);
        peers.entry(self.node.clone()).or_insert(PeerInfo {
            address: own_address,
        });
        peers
    }

    fn notification(
        &self,
        node: &str,
        peer: &PeerInfo,
        kind: ChangeNotificationType,
    ) -> ChangeNotification {
        ChangeNotification {
            name: node.to_owned(),
            address: peer.address.to_string(),
            r#type: kind.into(),
            tls: self.tls.then(|| Tls {
                server_name: tls_server_name(node),
            }),
        }
    }
}

/// What changed between two peer sets, in node order: deletions, then
/// additions and updates.
fn changes(
    discovery: &PeerDiscovery,
    before: &BTreeMap<String, PeerInfo>,
    after: &BTreeMap<String, PeerInfo>,
) -> Vec<ChangeNotification> {
    let mut out = Vec::new();
    for (node, peer) in before {
        if !after.contains_key(node) {
            out.push(discovery.notification(node, peer, ChangeNotificationType::PeerDeleted));
        }
    }
    for (node, peer) in after {
        match before.get(node) {
            None => out.push(discovery.notification(node, peer, ChangeNotificationType::PeerAdded)),
            Some(old) if old != peer => {
                out.push(discovery.notification(node, peer, ChangeNotificationType::PeerUpdated));
            }
            Some(_) => {}
        }
    }
    out
}

/// Sends every peer, then each change, until the client leaves.
async fn notify_changes(
    discovery: PeerDiscovery,
    state: Arc<RwLock<ClusterState>>,
    tx: mpsc::Sender<Result<ChangeNotification, Status>>,
) {
    let mut known = BTreeMap::new();
    let mut generation = None;
    loop {
        let current = {
            let state = state.read().unwrap_or_else(|e| e.into_inner());
            if generation == Some(state.generation()) {
                None
            } else {
                generation = Some(state.generation());
                Some(discovery.peers(&state))
            }
        };
        if let Some(current) = current {
            for change in changes(&discovery, &known, &current) {
                if tx.send(Ok(change)).await.is_err() {
                    return;
                }
            }
            known = current;
        }
        tokio::select! {
            () = tokio::time::sleep(PEER_REFRESH) => {}
            () = tx.closed() => return,
        }
    }
}

/// The Peer service.
pub struct PeerService {
    discovery: PeerDiscovery,
    state: Arc<RwLock<ClusterState>>,
    limits: StreamLimits,
}

impl PeerService {
    /// Peers found in `state`; each `Notify` is a stream within `limits`.
    pub fn new(
        discovery: PeerDiscovery,
        state: Arc<RwLock<ClusterState>>,
        limits: StreamLimits,
    ) -> Self {
        Self {
            discovery,
            state,
            limits,
        }
    }
}

type NotifyStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<ChangeNotification, Status>> + Send>>;

#[tonic::async_trait]
impl Peer for PeerService {
    async fn notify(
        &self,
        _request: Request<NotifyRequest>,
    ) -> Result<Response<NotifyStream>, Status> {
        let permit = self.limits.open_stream()?;
        let stopping = self.limits.stopping.clone();
        let (tx, rx) = mpsc::channel(64);
        let notify = notify_changes(self.discovery.clone(), Arc::clone(&self.state), tx);
        tokio::spawn(async move {
            tokio::select! {
                () = notify => {}
                () = stopping.cancelled() => {}
            }
            drop(permit);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ClusterState;

    const CLUSTER: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: node-a}
status: {addresses: [{type: InternalIP, address: 10.1.0.1}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
status: {addresses: [{type: InternalIP, address: 10.1.0.2}]}
---
apiVersion: v1
kind: Pod
metadata:
  namespace: netgov
  name: netgov-aaaaa
  ownerReferences: [{apiVersion: apps/v1, kind: DaemonSet, name: netgov, uid: "1", controller: true}]
spec: {nodeName: node-a, hostNetwork: true, containers: [{name: agent, image: netgov}]}
status: {podIP: 10.1.0.1, podIPs: [{ip: 10.1.0.1}]}
---
apiVersion: v1
kind: Pod
metadata:
  namespace: netgov
  name: netgov-bbbbb
  ownerReferences: [{apiVersion: apps/v1, kind: DaemonSet, name: netgov, uid: "1", controller: true}]
spec: {nodeName: node-b, hostNetwork: true, containers: [{name: agent, image: netgov}]}
status: {podIP: 10.1.0.2, podIPs: [{ip: 10.1.0.2}]}
---
apiVersion: v1
kind: Pod
metadata:
  namespace: netgov
  name: other-ccccc
  ownerReferences: [{apiVersion: apps/v1, kind: DaemonSet, name: other, uid: "2", controller: true}]
spec: {nodeName: node-b, containers: [{name: other, image: other}]}
status: {podIP: 10.2.0.9, podIPs: [{ip: 10.2.0.9}]}
"#;

    fn discovery(pod: Option<&str>) -> PeerDiscovery {
        PeerDiscovery {
            node: "node-a".into(),
            listen: "0.0.0.0:4244".parse().expect("address"),
            pod: pod.map(|name| PodRef {
                namespace: "netgov".into(),
                name: name.into(),
            }),
            tls: true,
        }
    }

    fn line(change: &ChangeNotification) -> String {
        format!(
            "{:?} {} {} {}",
            change.r#type(),
            change.name,
            change.address,
            change.tls.as_ref().map_or("-", |t| t.server_name.as_str())
        )
    }

    #[test]
    fn every_node_of_the_agents_daemonset_then_changes() {
        let state = ClusterState::from_yaml(CLUSTER);
        let discovery = discovery(Some("netgov-aaaaa"));
        let peers = discovery.peers(&state);
        let added: Vec<String> = changes(&discovery, &BTreeMap::new(), &peers)
            .iter()
            .map(line)
            .collect();
        assert_eq!(
            added,
            [
                "PeerAdded node-a 10.1.0.1:4244 node-a.default.hubble-grpc.cilium.io",
                "PeerAdded node-b 10.1.0.2:4244 node-b.default.hubble-grpc.cilium.io",
            ]
        );
        let mut fewer = peers.clone();
        fewer.remove("node-b");
        let gone: Vec<String> = changes(&discovery, &peers, &fewer)
            .iter()
            .map(line)
            .collect();
        assert_eq!(
            gone,
            ["PeerDeleted node-b 10.1.0.2:4244 node-b.default.hubble-grpc.cilium.io"]
        );
    }

    #[test]
    fn without_its_pod_the_agent_announces_itself() {
        let state = ClusterState::from_yaml(CLUSTER);
        let discovery = discovery(None);
        let peers = discovery.peers(&state);
        let added: Vec<String> = changes(&discovery, &BTreeMap::new(), &peers)
            .iter()
            .map(line)
            .collect();
        assert_eq!(
            added,
            ["PeerAdded node-a 10.1.0.1:4244 node-a.default.hubble-grpc.cilium.io"]
        );
    }
}
