//! The cluster state the engine judges against: namespaces, pods, nodes,
//! services, endpoint slices and compiled policies, indexed for verdicts
//! and updated one object at a time.

use std::collections::BTreeMap;

// hashbrown's maps hash with foldhash, a fraction of the cost of std's
// SipHash: every flow judged looks its ends up here. Randomly seeded, and
// filled only from the API server or manifests, not from traffic.
use hashbrown::{DefaultHashBuilder, HashMap, HashSet, HashTable};
use smallvec::SmallVec;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::history::IpHistory;
use super::intern::Interner;
use super::ip_map::IpMap;
use super::services::{ServiceInfo, SliceInfo};
use super::workload::Workload;
use crate::engine::PolicyError;
use crate::engine::compile::{CompiledPolicy, compile};
use crate::engine::label_set::LabelSet;
use crate::engine::selector::Labels;
use crate::engine::tiers::ClusterPolicy;
use crate::model::{HOST, Identity, Protocol};
use crate::model::{Name, PodRef};

/// The label the API server puts on every namespace (since 1.21); added
/// here when manifests omit it, so selectors on it work offline too.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A container port a named port can resolve to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NamedPort {
    /// Port name.
    pub name: String,
    /// Container port number.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
}

/// A pod as the engine sees it. Every agent holds every pod of the
/// cluster, so a pod keeps only what judging and naming need, and what
/// it has alike with other pods is its [`PodShape`], held once for them
/// all. A pod reads as its shape too (`pod.labels`, `pod.namespace`).
#[derive(Clone, Debug)]
pub struct PodInfo {
    /// What it shares with the pods like it.
    pub shape: Arc<PodShape>,
    /// Name.
    pub name: Name,
    /// Pod IPs (dual stack: both families).
    pub ips: IpList,
    /// Node it runs on (see [`PodInfo::node`]).
    pub(crate) node: Option<NodeName>,
    /// Not being deleted (`deletionTimestamp` unset).
    pub(crate) staying: bool,
    /// `creationTimestamp`, in Unix seconds (`i64::MIN` when unset).
    pub(crate) created: i64,
    /// How many pods the state had taken in before this one.
    pub(crate) arrival: u64,
}

impl std::ops::Deref for PodInfo {
    type Target = PodShape;

    fn deref(&self) -> &PodShape {
        &self.shape
    }
}

/// What pods of one kind have alike (pods of one ReplicaSet, as a rule):
/// held once for them all. Shapes are compared by their parts' identity,
/// which are shared themselves.
#[derive(Debug)]
pub struct PodShape {
    /// Namespace.
    pub namespace: Name,
    /// Labels.
    pub labels: Arc<LabelSet>,
    /// Uses the node's network namespace.
    pub host_network: bool,
    /// Named container ports.
    pub named_ports: Arc<[NamedPort]>,
    /// The pod's top owner.
    pub workload: Arc<Workload>,
    /// The policies that apply to it.
    pub(crate) policies: Arc<PodPolicies>,
}

impl PartialEq for PodShape {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.namespace, &other.namespace)
            && Arc::ptr_eq(&self.labels, &other.labels)
            && self.host_network == other.host_network
            && Arc::ptr_eq(&self.named_ports, &other.named_ports)
            && Arc::ptr_eq(&self.workload, &other.workload)
            && Arc::ptr_eq(&self.policies, &other.policies)
    }
}

impl Eq for PodShape {}

impl Hash for PodShape {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.namespace).hash(state);
        Arc::as_ptr(&self.labels).hash(state);
        self.host_network.hash(state);
        Arc::as_ptr(&self.named_ports).hash(state);
        Arc::as_ptr(&self.workload).hash(state);
        Arc::as_ptr(&self.policies).hash(state);
    }
}

/// A node's name as pods hold it: shared, behind a thin pointer (half a
/// shared `str`'s in each of the cluster's pods).
pub(crate) type NodeName = Arc<String>;

impl PodInfo {
    /// The node it runs on.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref().map(String::as_str)
    }

    /// The pod as `namespace/name`.
    pub fn id(&self) -> PodRef {
        PodRef {
            namespace: Arc::clone(&self.namespace),
            name: Arc::clone(&self.name),
        }
    }

    /// Whether `other` is this pod.
    pub fn is(&self, other: &PodInfo) -> bool {
        self.namespace == other.namespace && self.name == other.name
    }

    /// Which pod keeps an IP several pods claim: one not being deleted,
    /// then the newest created, then the latest seen.
    pub(crate) fn ip_claim(&self) -> (bool, i64, u64) {
        (self.staying, self.created, self.arrival)
    }
}

/// Addresses read as a slice, held for one without a block of their own: a
/// pod's IPs (one as a rule, or one of each family), a Service's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum IpList {
    /// None (a pod not started yet, a headless Service).
    #[default]
    Unassigned,
    /// One.
    One(IpAddr),
    /// Several (dual stack).
    Several(Box<[IpAddr]>),
}

impl std::ops::Deref for IpList {
    type Target = [IpAddr];

    fn deref(&self) -> &[IpAddr] {
        match self {
            IpList::Unassigned => &[],
            IpList::One(ip) => std::slice::from_ref(ip),
            IpList::Several(ips) => ips,
        }
    }
}

impl<'a> IntoIterator for &'a IpList {
    type Item = &'a IpAddr;
    type IntoIter = std::slice::Iter<'a, IpAddr>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl FromIterator<IpAddr> for IpList {
    fn from_iter<I: IntoIterator<Item = IpAddr>>(ips: I) -> Self {
        let ips: Vec<IpAddr> = ips.into_iter().collect();
        match ips[..] {
            [] => IpList::Unassigned,
            [ip] => IpList::One(ip),
            _ => IpList::Several(ips.into()),
        }
    }
}

/// The policies that apply to a pod, shared by every pod they apply to
/// alike (pods of one ReplicaSet, as a rule). Two lists are the same when
/// they hold the same compiled policies, not merely equal ones: a policy
/// changed is compiled anew.
#[derive(Debug, Default)]
pub(crate) struct PodPolicies {
    /// Policies of its namespace that select it with the Ingress type.
    pub(crate) ingress: Box<[Arc<CompiledPolicy>]>,
    /// Policies of its namespace that select it with the Egress type.
    pub(crate) egress: Box<[Arc<CompiledPolicy>]>,
    /// Cluster-wide policies whose subject it is, by tier then priority
    /// (never for host-network pods).
    pub(crate) cluster: Box<[Arc<ClusterPolicy>]>,
}

impl PartialEq for PodPolicies {
    fn eq(&self, other: &Self) -> bool {
        fn same<T>(a: &[Arc<T>], b: &[Arc<T>]) -> bool {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| Arc::ptr_eq(a, b))
        }
        same(&self.ingress, &other.ingress)
            && same(&self.egress, &other.egress)
            && same(&self.cluster, &other.cluster)
    }
}

impl Eq for PodPolicies {}

impl Hash for PodPolicies {
    fn hash<H: Hasher>(&self, state: &mut H) {
        fn addresses<T, H: Hasher>(list: &[Arc<T>], state: &mut H) {
            state.write_usize(list.len());
            for policy in list {
                Arc::as_ptr(policy).hash(state);
            }
        }
        addresses(&self.ingress, state);
        addresses(&self.egress, state);
        addresses(&self.cluster, state);
    }
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
                namespace: Arc::clone(&service.namespace),
                pod: None,
                workload: Arc::clone(&service.name),
            },
            Resolved::External => Identity::world(),
        }
    }
}

/// Object identity `namespace/name`.
pub(super) type Key = (String, String);

/// A pod's place in [`ClusterState::pods`]. Slots are reused: 32 bits
/// number any cluster's pods, at half a pointer's size in the indexes.
pub(super) type Slot = u32;

/// The values pods share, one copy each.
#[derive(Clone, Debug, Default)]
pub(super) struct Shared {
    /// Namespace names, Service names (shared with their slices), node
    /// names of endpoints, label keys and values, policies' selector
    /// strings and port names.
    pub(super) names: Interner<str>,
    /// Node names of pods.
    pub(super) nodes: Interner<String>,
    pub(super) labels: Interner<LabelSet>,
    pub(super) named_ports: Interner<[NamedPort]>,
    pub(super) workloads: Interner<Workload>,
    pub(super) policies: Interner<PodPolicies>,
    pub(super) shapes: Interner<PodShape>,
}

/// The indexed cluster state.
// Clone: the staged policies (`agent --staged`) are judged on a copy.
#[derive(Clone, Debug, Default)]
pub struct ClusterState {
    pub(super) namespaces: HashMap<String, Labels>,
    pub(super) pods: Vec<Option<PodInfo>>,
    pub(super) free_pod_slots: Vec<Slot>,
    /// Every pod's slot, found by the hash of its namespace and name
    /// ([`ClusterState::slot_hash`]), which the pod itself holds: the key
    /// is not kept twice.
    pub(super) pod_slots: HashTable<Slot>,
    /// Hashes the names the slot tables file objects under.
    pub(super) slot_hasher: DefaultHashBuilder,
    pub(super) pods_by_namespace: HashMap<Name, Vec<Slot>>,
    /// The pod that owns each pod IP.
    pub(super) pod_by_ip: IpMap<Slot>,
    /// Every pod that claims an IP several pods claim (a sole claimant
    /// owns it), so the IP falls back to another claimant when its owner
    /// goes.
    pub(super) contested_ips: HashMap<IpAddr, SmallVec<[Slot; 2]>>,
    pub(super) pod_arrivals: u64,
    pub(super) shared: Shared,
    pub(super) host_network_ips: HashMap<IpAddr, HashSet<Key>>,
    pub(super) node_ips: HashMap<String, Vec<IpAddr>>,
    pub(super) node_by_ip: HashMap<IpAddr, String>,
    pub(super) node_labels: HashMap<String, Labels>,
    /// Cluster-wide policies by `Kind name`, compiled.
    pub(super) cluster_policies: BTreeMap<String, Arc<ClusterPolicy>>,
    pub(super) cluster_policy_errors: BTreeMap<String, PolicyError>,
    /// Services, by the hash of their namespace and name.
    pub(super) services: HashTable<Arc<ServiceInfo>>,
    pub(super) service_by_ip: IpMap<Arc<ServiceInfo>>,
    /// External and load-balancer IPs of Services.
    pub(super) service_frontends: HashMap<IpAddr, Vec<Arc<ServiceInfo>>>,
    /// Node ports, on every node's addresses.
    pub(super) node_ports: HashMap<(Protocol, u16), Arc<ServiceInfo>>,
    /// EndpointSlices, in reused slots as pods are.
    pub(super) slices: Vec<Option<SliceInfo>>,
    pub(super) free_slice_slots: Vec<Slot>,
    /// Each slice's slot, by the hash of its namespace and name.
    pub(super) slice_slots: HashTable<Slot>,
    /// Each slice's slot, by the hash of its namespace and Service (a
    /// Service may have several).
    pub(super) service_slices: HashTable<Slot>,
    pub(super) policies: HashMap<String, BTreeMap<String, Arc<CompiledPolicy>>>,
    pub(super) policy_errors: BTreeMap<String, PolicyError>,
    /// Bumped on every change; caches of verdicts compare it.
    pub(super) generation: u64,
    /// Who owned pod IPs before their current owners.
    pub(super) history: IpHistory,
}

/// The slot filed in `table` under `hash` whose object in `slots` is the
/// one `is` looks for.
pub(super) fn find_slot<T>(
    table: &HashTable<Slot>,
    slots: &[Option<T>],
    hash: u64,
    is: impl Fn(&T) -> bool,
) -> Option<Slot> {
    table
        .find(hash, |slot| slots[*slot as usize].as_ref().is_some_and(&is))
        .copied()
}

/// Makes room in `slots` for one more when it is full: an eighth more
/// rather than twice as many, since slot vectors are the largest blocks the
/// state holds and, after the first list, grow slowly.
pub(super) fn make_room<T>(slots: &mut Vec<T>) {
    if slots.len() == slots.capacity() {
        slots.reserve_exact(slots.len() / 8 + 64);
    }
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
            Ok(mut compiled) => {
                let names = &mut self.shared.names;
                compiled.share_strings(&mut |text| names.name(text));
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
        let slots: Vec<Slot> = self
            .pods_by_namespace
            .get(namespace)
            .map(|s| s.to_vec())
            .unwrap_or_default();
        for slot in slots {
            self.refresh_pod_policies(slot);
        }
        self.refresh_departed(Some(namespace));
    }

    pub(super) fn refresh_pod_policies(&mut self, slot: Slot) {
        let Some(mut pod) = self.pods[slot as usize].take() else {
            return;
        };
        self.assign_policies(&mut pod);
        self.pods[slot as usize] = Some(pod);
    }

    /// Sets the policies that apply to `pod` (not in the state's slots).
    pub(super) fn assign_policies(&mut self, pod: &mut PodInfo) {
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
        let policies = PodPolicies {
            ingress: ingress.into(),
            egress: egress.into(),
            cluster: self.cluster_policies_of(pod).into(),
        };
        let policies = self.shared.policies.intern(policies);
        if !Arc::ptr_eq(&policies, &pod.policies) {
            let shape = PodShape {
                namespace: Arc::clone(&pod.namespace),
                labels: Arc::clone(&pod.labels),
                host_network: pod.host_network,
                named_ports: Arc::clone(&pod.named_ports),
                workload: Arc::clone(&pod.workload),
                policies,
            };
            pod.shape = self.shared.shapes.intern(shape);
        }
    }

    /// The hash a slot table files an object of `namespace` under, by its
    /// name (or, for slices by Service, the Service's).
    pub(super) fn slot_hash(&self, namespace: &str, name: &str) -> u64 {
        self.slot_hasher.hash_one((namespace, name))
    }

    /// The slot of the pod `namespace/name`.
    pub(super) fn pod_slot(&self, namespace: &str, name: &str) -> Option<Slot> {
        let hash = self.slot_hash(namespace, name);
        find_slot(&self.pod_slots, &self.pods, hash, |pod| {
            *pod.namespace == *namespace && *pod.name == *name
        })
    }

    /// The pod in `slot`.
    pub(super) fn pod_in(&self, slot: Slot) -> Option<&PodInfo> {
        self.pods[slot as usize].as_ref()
    }

    /// The pod `namespace/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&PodInfo> {
        self.pod_in(self.pod_slot(namespace, name)?)
    }

    /// Every pod known.
    pub fn pods(&self) -> impl Iterator<Item = &PodInfo> {
        self.pods.iter().flatten()
    }

    /// Every workload that can name an end of a flow now, as
    /// `(namespace, name)`: each pod's workload (once per pod), and the
    /// Services.
    pub fn workloads(&self) -> impl Iterator<Item = (&str, &str)> {
        let pods = self.pods().map(|p| (&*p.namespace, &*p.workload.name));
        pods.chain(self.services.iter().map(|s| (&*s.namespace, &*s.name)))
    }

    /// Whether policies isolate `pod` for ingress and for egress.
    pub fn isolation(pod: &PodInfo) -> (bool, bool) {
        (
            !pod.policies.ingress.is_empty(),
            !pod.policies.egress.is_empty(),
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
        self.pod_by_ip.get(&ip).and_then(|slot| self.pod_in(*slot))
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
                .filter_map(|(namespace, name)| self.pod(namespace, name)?.node())
                .next();
            return Resolved::Host(node);
        }
        if let Some(service) = self.service_by_ip.get(&ip) {
            return Resolved::Service(service);
        }
        Resolved::External
    }
}
