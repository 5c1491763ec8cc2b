//! Pods coming and going: which pod owns an IP several claim, and the
//! ownership history every change leaves (see `history`).

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use smallvec::SmallVec;

use super::cluster::{
    ClusterState, IpList, Key, NamedPort, PodInfo, PodPolicies, PodShape, Slot, key_of, make_room,
};
use super::workload::workload_of;
use crate::engine::label_set::{LabelSet, LabelsOf};
use crate::engine::selector::Labels;
use crate::model::Name;
use crate::model::Protocol;

impl ClusterState {
    /// Adds or replaces a pod. Pods that finished (`Succeeded`, `Failed`)
    /// are removed: their IPs may already belong to someone else.
    pub(super) fn upsert_pod(&mut self, pod: &Pod) {
        let key = key_of(&pod.metadata);
        let old_ips = self.pod(&key.0, &key.1).map(|p| p.ips.to_vec());
        let new_ips = pod.status.iter().flat_map(|s| {
            let listed = s.pod_ips.iter().flatten().map(|p| p.ip.as_str());
            listed
                .chain(s.pod_ip.as_deref())
                .filter_map(|ip| ip.parse().ok())
        });
        let before = self.owners(old_ips.into_iter().flatten().chain(new_ips));
        let removed = self.remove_pod(&key.0, &key.1);
        self.insert_pod(key, pod);
        self.record_ownership(before, removed.as_ref());
    }

    fn insert_pod(&mut self, key: Key, pod: &Pod) {
        let Some(status) = &pod.status else {
            return self.insert_pod_with(key, pod, IpList::Unassigned);
        };
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            return;
        }
        let mut ips: Vec<IpAddr> = status
            .pod_ips
            .iter()
            .flatten()
            .filter_map(|p| p.ip.parse().ok())
            .collect();
        if ips.is_empty()
            && let Some(ip) = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok())
        {
            ips.push(ip);
        }
        self.insert_pod_with(key, pod, ips.into_iter().collect());
    }

    fn insert_pod_with(&mut self, (namespace, name): Key, pod: &Pod, ips: IpList) {
        let spec = pod.spec.as_ref();
        let named_ports: Vec<NamedPort> = spec
            .into_iter()
            .flat_map(|spec| {
                spec.containers.iter().chain(
                    // Named ports resolve against the containers and the
                    // sidecar init containers (restartPolicy Always), as
                    // upstream.
                    spec.init_containers
                        .iter()
                        .flatten()
                        .filter(|c| c.restart_policy.as_deref() == Some("Always")),
                )
            })
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                Some(NamedPort {
                    name: p.name.clone()?,
                    port: u16::try_from(p.container_port).ok()?,
                    protocol: Protocol::parse_port_protocol(
                        p.protocol.as_deref().unwrap_or("TCP"),
                    )?,
                })
            })
            .collect();
        let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
        self.ensure_namespace(&namespace);
        let shared = &mut self.shared;
        let shape = PodShape {
            namespace: shared.names.name(&namespace),
            labels: {
                let none = Labels::new();
                let labels = pod.metadata.labels.as_ref().unwrap_or(&none);
                let names = &mut shared.names;
                shared.labels.intern_with(&LabelsOf(labels), |labels| {
                    Arc::new(LabelSet::new(labels.0, |text| names.name(text)))
                })
            },
            host_network,
            named_ports: shared.named_ports.slice(&named_ports),
            workload: shared.workloads.intern(workload_of(pod)),
            // Assigned once the pod is in its slot.
            policies: shared.policies.intern(PodPolicies::default()),
        };
        let info = PodInfo {
            shape: shared.shapes.intern(shape),
            name: Name::from(name.as_str()),
            ips,
            node: spec
                .and_then(|s| s.node_name.as_deref())
                .map(|node| shared.nodes.text(node)),
            staying: pod.metadata.deletion_timestamp.is_none(),
            created: pod
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(i64::MIN, |t| t.0.as_second()),
            arrival: self.pod_arrivals,
        };
        self.pod_arrivals += 1;
        let slot = match self.free_pod_slots.pop() {
            Some(slot) => {
                self.pods[slot as usize] = Some(info);
                slot
            }
            None => {
                let slot = Slot::try_from(self.pods.len()).expect("fewer than 2^32 pods");
                make_room(&mut self.pods);
                self.pods.push(Some(info));
                slot
            }
        };
        let pod = self.pods[slot as usize].as_ref().expect("just filled");
        let (ips, namespace_name) = (pod.ips.to_vec(), Arc::clone(&pod.namespace));
        for ip in ips {
            if host_network {
                self.host_network_ips
                    .entry(ip)
                    .or_default()
                    .insert((namespace.clone(), name.clone()));
            } else {
                self.claim_ip(ip, slot);
            }
        }
        self.pods_by_namespace
            .entry(namespace_name)
            .or_default()
            .push(slot);
        let hash = self.slot_hash(&namespace, &name);
        let (pods, hasher) = (&self.pods, &self.slot_hasher);
        self.pod_slots.insert_unique(hash, slot, |slot| {
            let pod = pods[*slot as usize]
                .as_ref()
                .expect("filed pods are in their slots");
            hasher.hash_one((&*pod.namespace, &*pod.name))
        });
        self.refresh_pod_policies(slot);
    }

    /// Removes a pod; its IPs resolve to nobody unless another pod holds
    /// them — except for flows seen while it owned them (see
    /// [`ClusterState::resolve_at`]).
    pub(super) fn delete_pod(&mut self, namespace: &str, name: &str) {
        let ips = self.pod(namespace, name).map(|p| p.ips.to_vec());
        let before = self.owners(ips.into_iter().flatten());
        let removed = self.remove_pod(namespace, name);
        self.record_ownership(before, removed.as_ref());
    }

    fn remove_pod(&mut self, namespace: &str, name: &str) -> Option<PodInfo> {
        let slot = self.pod_slot(namespace, name)?;
        let hash = self.slot_hash(namespace, name);
        if let Ok(filed) = self.pod_slots.find_entry(hash, |s| *s == slot) {
            filed.remove();
        }
        let removed = self.pods[slot as usize].take();
        if let Some(pod) = &removed {
            for ip in pod.ips.iter() {
                self.release_ip(*ip, slot);
                if let Some(owners) = self.host_network_ips.get_mut(ip) {
                    owners.remove(&(namespace.to_owned(), name.to_owned()));
                    if owners.is_empty() {
                        self.host_network_ips.remove(ip);
                    }
                }
            }
        }
        if let Some(slots) = self.pods_by_namespace.get_mut(namespace)
            && let Some(at) = slots.iter().position(|s| *s == slot)
        {
            slots.swap_remove(at);
        }
        self.free_pod_slots.push(slot);
        removed
    }

    /// Every pod that claims `ip`.
    fn claimants(&self, ip: IpAddr) -> SmallVec<[Slot; 2]> {
        match self.contested_ips.get(&ip) {
            Some(claimants) => claimants.clone(),
            None => self.pod_by_ip.get(&ip).copied().into_iter().collect(),
        }
    }

    /// The pod in `slot` claims `ip` too.
    fn claim_ip(&mut self, ip: IpAddr, slot: Slot) {
        let mut claimants = self.claimants(ip);
        claimants.push(slot);
        self.settle_ip(ip, claimants);
    }

    /// The pod in `slot` no longer claims `ip`.
    fn release_ip(&mut self, ip: IpAddr, slot: Slot) {
        let mut claimants = self.claimants(ip);
        claimants.retain(|s| *s != slot);
        self.settle_ip(ip, claimants);
    }

    /// Files `ip`'s claimants, and points `ip` at the best of them (see
    /// [`PodInfo::ip_claim`]), or at nobody.
    fn settle_ip(&mut self, ip: IpAddr, claimants: SmallVec<[Slot; 2]>) {
        let owner = claimants
            .iter()
            .filter_map(|slot| Some((self.pod_in(*slot)?.ip_claim(), *slot)))
            .max()
            .map(|(_, slot)| slot);
        if claimants.len() > 1 {
            self.contested_ips.insert(ip, claimants);
        } else {
            self.contested_ips.remove(&ip);
        }
        match owner {
            Some(slot) => {
                self.pod_by_ip.insert(ip, slot);
            }
            None => {
                self.pod_by_ip.remove(&ip);
            }
        }
    }
}
