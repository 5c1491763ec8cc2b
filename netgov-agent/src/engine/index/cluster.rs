//! The cluster state the engine judges against: namespaces, pods, nodes,
//! services, endpoint slices and compiled policies, indexed for verdicts
//! and updated one object at a time.

use std::collections::BTreeMap;

// hashbrown's maps hash with foldhash, a fraction of the cost of std's
// SipHash: every flow judged looks its ends up here. Randomly seeded, and
// filled only from the API server or manifests, not from traffic.
use hashbrown::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::history::IpHistory;
use super::services::{ServiceInfo, SliceInfo};
use super::workload::Workload;
use crate::engine::PolicyError;
use crate::engine::compile::{CompiledPolicy, compile};
use crate::engine::selector::Labels;
use crate::engine::tiers::ClusterPolicy;
use crate::model::Name;
use crate::model::{HOST, Identity, Protocol};

/// The label the API server puts on every namespace (since 1.21); added
/// here when manifests omit it, so selectors on it work offline too.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A container port a named port can resolve to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedPort {
    /// Port name.
    pub name: String,
    /// Container port number.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
}

/// A pod as the engine sees it.
#[derive(Clone, Debug)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: Name,
    /// Name.
    pub name: Name,
    /// `namespace/name`.
    pub id: Name,
    /// Labels.
    pub labels: Labels,
    /// Pod IPs (dual stack: both families).
    pub ips: Vec<IpAddr>,
    /// Uses the node's network namespace.
    pub host_network: bool,
    /// Node it runs on.
    pub node: Option<String>,
    /// Named container ports.
    pub named_ports: Vec<NamedPort>,
    /// The pod's top owner.
    pub workload: Workload,
    /// Which pod keeps an IP several pods claim: one not being deleted,
    /// then the newest created, then the latest seen.
    pub(crate) ip_claim: (bool, i64, u64),
    /// Policies of its namespace that select it with the Ingress type.
    pub(crate) ingress_policies: Vec<Arc<CompiledPolicy>>,
    /// Policies of its namespace that select it with the Egress type.
    pub(crate) egress_policies: Vec<Arc<CompiledPolicy>>,
    /// Cluster-wide policies whose subject it is, by tier then priority
    /// (never for host-network pods).
    pub(crate) cluster_policies: Vec<Arc<ClusterPolicy>>,
}

impl PodInfo {
    /// The number of the named port `name` for `protocol`, if the pod has it.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.named_ports
            .iter()
            .find(|p| p.name == name && p.protocol == protocol)
            .map(|p| p.port)
    }
}

/// What an IP address is.
#[derive(Clone, Copy, Debug)]
pub enum Resolved<'a> {
    /// A pod with its own network namespace.
    Pod(&'a PodInfo),
    /// A node, or a hostNetwork pod (which shares its node's addresses),
    /// with the node's name when known.
    Host(Option<&'a str>),
    /// A Service cluster IP.
    Service(&'a ServiceInfo),
    /// Nothing the cluster knows: outside the cluster.
    External,
}

impl Resolved<'_> {
    /// Who this address is, as every sink shows it.
    pub fn identity(self) -> Identity {
        let empty = || Name::from("");
        match self {
            Resolved::Pod(pod) => Identity {
                namespace: pod.namespace.clone(),
                pod: Some(pod.name.clone()),
                workload: pod.workload.name.clone(),
            },
            Resolved::Host(node) => Identity {
                namespace: empty(),
                pod: None,
                workload: Name::from(node.unwrap_or(HOST)),
            },
            Resolved::Service(service) => Identity {
                namespace: Name::from(service.namespace.as_str()),
                pod: None,
                workload: Name::from(service.name.as_str()),
            },
            Resolved::External => Identity::world(),
        }
    }
}

/// Object identity `namespace/name`.
pub(super) type Key = (String, String);

/// The indexed cluster state.
// Clone: the staged policies (`agent --staged`) are judged on a copy.
#[derive(Clone, Debug, Default)]
pub struct ClusterState {
    pub(super) namespaces: HashMap<String, Labels>,
    pub(super) pods: Vec<Option<PodInfo>>,
    pub(super) free_pod_slots: Vec<usize>,
    pub(super) pod_slots: HashMap<Key, usize>,
    pub(super) pods_by_namespace: HashMap<String, HashSet<usize>>,
    pub(super) pod_by_ip: HashMap<IpAddr, usize>,
    /// Every pod that claims an IP, so the IP falls back to another
    /// claimant when its owner goes.
    pub(super) ip_claimants: HashMap<IpAddr, Vec<usize>>,
    pub(super) pod_arrivals: u64,
    pub(super) host_network_ips: HashMap<IpAddr, HashSet<Key>>,
    pub(super) node_ips: HashMap<String, Vec<IpAddr>>,
    pub(super) node_by_ip: HashMap<IpAddr, String>,
    pub(super) node_labels: HashMap<String, Labels>,
    /// Cluster-wide policies by `Kind name`, compiled.
    pub(super) cluster_policies: BTreeMap<String, Arc<ClusterPolicy>>,
    pub(super) cluster_policy_errors: BTreeMap<String, PolicyError>,
    pub(super) services: HashMap<Key, Arc<ServiceInfo>>,
    pub(super) service_by_ip: HashMap<IpAddr, Key>,
    /// External and load-balancer IPs of Services.
    pub(super) service_frontends: HashMap<IpAddr, Vec<Key>>,
    /// Node ports, on every node's addresses.
    pub(super) node_ports: HashMap<(Protocol, u16), Key>,
    pub(super) slices: HashMap<Key, SliceInfo>,
    pub(super) policies: HashMap<String, BTreeMap<String, Arc<CompiledPolicy>>>,
    pub(super) policy_errors: BTreeMap<String, PolicyError>,
    /// Bumped on every change; caches of verdicts compare it.
    pub(super) generation: u64,
    /// Who owned pod IPs before their current owners.
    pub(super) history: IpHistory,
}

pub(super) fn key_of(metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (
        metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        metadata.name.clone().unwrap_or_default(),
    )
}

impl ClusterState {
    /// An empty cluster.
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes so far (a cache tag: equal generations, equal answers).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Labels of `namespace`, with the name label the API server adds. A
    /// namespace known only from its pods has just that label.
    pub fn namespace_labels(&self, namespace: &str) -> Option<&Labels> {
        self.namespaces.get(namespace)
    }

    /// Every known namespace with its labels, by name.
    pub fn namespaces(&self) -> impl Iterator<Item = (&str, &Labels)> {
        self.namespaces
            .iter()
            .map(|(name, labels)| (name.as_str(), labels))
    }

    pub(super) fn ensure_namespace(&mut self, namespace: &str) {
        if !self.namespaces.contains_key(namespace) {
            let labels = [(NAMESPACE_NAME_LABEL.to_owned(), namespace.to_owned())].into();
            self.namespaces.insert(namespace.to_owned(), labels);
        }
    }

    /// Adds or replaces a namespace.
    pub(super) fn upsert_namespace(&mut self, namespace: &Namespace) {
        let name = namespace.metadata.name.clone().unwrap_or_default();
        let mut labels = namespace.metadata.labels.clone().unwrap_or_default();
        // The API server sets this label to the name, whatever was asked.
        labels.insert(NAMESPACE_NAME_LABEL.to_owned(), name.clone());
        self.namespaces.insert(name.clone(), labels);
        // Cluster-wide policies choose their subjects by namespace labels.
        if !self.cluster_policies.is_empty() {
            self.refresh_namespace_pods(&name);
        }
    }

    /// Removes a namespace's labels (its pods and policies go with their
    /// own delete events).
    pub(super) fn delete_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
        if !self.cluster_policies.is_empty() {
            self.refresh_namespace_pods(name);
        }
    }

    /// The compiled policies, by namespace then name.
    pub fn policies(&self) -> impl Iterator<Item = &Arc<CompiledPolicy>> {
        self.policies.values().flat_map(|p| p.values())
    }

    /// Policies that failed to compile, by `namespace/name`, with why. They
    /// are not applied; every other policy is.
    pub fn policy_errors(&self) -> &BTreeMap<String, PolicyError> {
        &self.policy_errors
    }

    /// Compiles and adds or replaces a policy, then updates which pods of its
    /// namespace it selects.
    ///
    /// # Errors
    /// The compile error, also kept in [`ClusterState::policy_errors`]; a
    /// previous valid version of the policy is removed (the object as it
    /// stands now is invalid, and the API server would not have stored it).
    pub(super) fn upsert_policy(&mut self, policy: &NetworkPolicy) -> Result<(), PolicyError> {
        let (namespace, name) = key_of(&policy.metadata);
        let id = format!("{namespace}/{name}");
        match compile(policy) {
            Ok(compiled) => {
                self.policy_errors.remove(&id);
                self.policies
                    .entry(namespace.clone())
                    .or_default()
                    .insert(name, Arc::new(compiled));
                self.refresh_namespace_pods(&namespace);
                Ok(())
            }
            Err(error) => {
                self.policy_errors.insert(id, error.clone());
                if let Some(policies) = self.policies.get_mut(&namespace) {
                    policies.remove(&name);
                }
                self.refresh_namespace_pods(&namespace);
                Err(error)
            }
        }
    }

    /// Removes a policy.
    pub(super) fn delete_policy(&mut self, namespace: &str, name: &str) {
        self.policy_errors.remove(&format!("{namespace}/{name}"));
        if let Some(policies) = self.policies.get_mut(namespace) {
            policies.remove(name);
        }
        self.refresh_namespace_pods(namespace);
    }

    pub(super) fn refresh_namespace_pods(&mut self, namespace: &str) {
        let slots: Vec<usize> = self
            .pods_by_namespace
            .get(namespace)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for slot in slots {
            self.refresh_pod_policies(slot);
        }
        self.refresh_departed(Some(namespace));
    }

    pub(super) fn refresh_pod_policies(&mut self, slot: usize) {
        let Some(mut pod) = self.pods[slot].take() else {
            return;
        };
        self.assign_policies(&mut pod);
        self.pods[slot] = Some(pod);
    }

    /// Sets the policies that apply to `pod` (not in the state's slots).
    pub(super) fn assign_policies(&self, pod: &mut PodInfo) {
        let (mut ingress, mut egress) = (Vec::new(), Vec::new());
        for policy in self
            .policies
            .get(&*pod.namespace)
            .into_iter()
            .flat_map(|p| p.values())
        {
            if !policy.pod_selector.matches(&pod.labels) {
                continue;
            }
            if policy.ingress.is_some() {
                ingress.push(Arc::clone(policy));
            }
            if policy.egress.is_some() {
                egress.push(Arc::clone(policy));
            }
        }
        let cluster_policies = self.cluster_policies_of(pod);
        pod.ingress_policies = ingress;
        pod.egress_policies = egress;
        pod.cluster_policies = cluster_policies;
    }

    /// The pod `namespace/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&PodInfo> {
        let slot = self
            .pod_slots
            .get(&(namespace.to_owned(), name.to_owned()))?;
        self.pods[*slot].as_ref()
    }

    /// Every pod known.
    pub fn pods(&self) -> impl Iterator<Item = &PodInfo> {
        self.pods.iter().flatten()
    }

    /// Every workload that can name an end of a flow now: the pods'
    /// workloads and the Services, as `(namespace, name)`.
    pub fn workloads(&self) -> std::collections::HashSet<(String, String)> {
        self.pods()
            .map(|p| (p.namespace.to_string(), p.workload.name.to_string()))
            .chain(self.services.keys().cloned())
            .collect()
    }

    /// Whether policies isolate `pod` for ingress and for egress.
    pub fn isolation(pod: &PodInfo) -> (bool, bool) {
        (
            !pod.ingress_policies.is_empty(),
            !pod.egress_policies.is_empty(),
        )
    }

    /// Number of pods known.
    pub fn pod_count(&self) -> usize {
        self.pod_slots.len()
    }

    /// Adds or replaces a node (its InternalIP and ExternalIP addresses).
    pub(super) fn upsert_node(&mut self, node: &Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        self.delete_node(&name);
        let addresses: Vec<_> = node
            .status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
            .collect();
        // InternalIPs first, each type in the node's order.
        let ips: Vec<IpAddr> = ["InternalIP", "ExternalIP"]
            .iter()
            .flat_map(|kind| addresses.iter().filter(move |a| a.type_ == *kind))
            .filter_map(|a| a.address.parse().ok())
            .collect();
        for ip in &ips {
            self.node_by_ip.insert(*ip, name.clone());
        }
        self.node_labels.insert(
            name.clone(),
            node.metadata.labels.clone().unwrap_or_default(),
        );
        self.node_ips.insert(name, ips);
    }

    /// A node's InternalIP addresses, then its ExternalIP ones, each in the
    /// node's order (none for a node not known).
    pub fn node_addresses(&self, name: &str) -> &[IpAddr] {
        self.node_ips.get(name).map_or(&[], Vec::as_slice)
    }

    /// Removes a node.
    pub(super) fn delete_node(&mut self, name: &str) {
        self.node_labels.remove(name);
        for ip in self.node_ips.remove(name).unwrap_or_default() {
            if self.node_by_ip.get(&ip).is_some_and(|n| n == name) {
                self.node_by_ip.remove(&ip);
            }
        }
    }

    /// The pod that owns `ip` now.
    pub(super) fn pod_owning(&self, ip: IpAddr) -> Option<&PodInfo> {
        self.pod_by_ip
            .get(&ip)
            .and_then(|slot| self.pods[*slot].as_ref())
    }

    /// What `ip` is now (for a flow, see [`ClusterState::resolve_at`]).
    pub fn resolve(&self, ip: IpAddr) -> Resolved<'_> {
        match self.pod_owning(ip) {
            Some(pod) => Resolved::Pod(pod),
            None => self.resolve_not_pod(ip),
        }
    }

    /// What `ip` is, pods aside.
    pub(super) fn resolve_not_pod(&self, ip: IpAddr) -> Resolved<'_> {
        if let Some(node) = self.node_by_ip.get(&ip) {
            return Resolved::Host(Some(node));
        }
        if let Some(owners) = self.host_network_ips.get(&ip) {
            // A hostNetwork pod is its node, as far as the network goes.
            let node = owners
                .iter()
                .filter_map(|key| self.pod_slots.get(key))
                .filter_map(|slot| self.pods[*slot].as_ref()?.node.as_deref())
                .next();
            return Resolved::Host(node);
        }
        if let Some(service) = self
            .service_by_ip
            .get(&ip)
            .and_then(|key| self.services.get(key))
        {
            return Resolved::Service(service);
        }
        Resolved::External
    }
}
