//! Pods coming and going: which pod owns an IP several claim, and the
//! ownership history every change leaves (see `history`).

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

use super::cluster::{ClusterState, Key, NamedPort, PodInfo, key_of};
use super::workload::workload_of;
use crate::model::Name;
use crate::model::Protocol;

impl ClusterState {
    /// Adds or replaces a pod. Pods that finished (`Succeeded`, `Failed`)
    /// are removed: their IPs may already belong to someone else.
    pub(super) fn upsert_pod(&mut self, pod: &Pod) {
        let key = key_of(&pod.metadata);
        let old_ips = self.pod(&key.0, &key.1).map(|p| p.ips.clone());
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
        let status = pod.status.clone().unwrap_or_default();
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            return;
        }
        let spec = pod.spec.clone().unwrap_or_default();
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
        let named_ports = spec
            .containers
            .iter()
            // Named ports resolve against the containers and the sidecar
            // init containers (restartPolicy Always), as upstream.
            .chain(
                spec.init_containers
                    .iter()
                    .flatten()
                    .filter(|c| c.restart_policy.as_deref() == Some("Always")),
            )
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
        let host_network = spec.host_network.unwrap_or(false);
        self.ensure_namespace(&key.0);
        let info = PodInfo {
            namespace: Name::from(key.0.as_str()),
            name: Name::from(key.1.as_str()),
            id: Name::from(format!("{}/{}", key.0, key.1)),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ips: ips.clone(),
            host_network,
            node: spec.node_name.clone(),
            named_ports,
            workload: workload_of(pod),
            ip_claim: (
                pod.metadata.deletion_timestamp.is_none(),
                pod.metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(i64::MIN, |t| t.0.as_second()),
                self.pod_arrivals,
            ),
            ingress_policies: Vec::new(),
            cluster_policies: Vec::new(),
            egress_policies: Vec::new(),
        };
        self.pod_arrivals += 1;
        let slot = match self.free_pod_slots.pop() {
            Some(slot) => {
                self.pods[slot] = Some(info);
                slot
            }
            None => {
                self.pods.push(Some(info));
                self.pods.len() - 1
            }
        };
        for ip in ips {
            if host_network {
                self.host_network_ips
                    .entry(ip)
                    .or_default()
                    .insert(key.clone());
            } else {
                self.ip_claimants.entry(ip).or_default().push(slot);
                self.elect_ip_owner(ip);
            }
        }
        self.pods_by_namespace
            .entry(key.0.clone())
            .or_default()
            .insert(slot);
        self.pod_slots.insert(key, slot);
        self.refresh_pod_policies(slot);
    }

    /// Removes a pod; its IPs resolve to nobody unless another pod holds
    /// them — except for flows seen while it owned them (see
    /// [`ClusterState::resolve_at`]).
    pub(super) fn delete_pod(&mut self, namespace: &str, name: &str) {
        let ips = self.pod(namespace, name).map(|p| p.ips.clone());
        let before = self.owners(ips.into_iter().flatten());
        let removed = self.remove_pod(namespace, name);
        self.record_ownership(before, removed.as_ref());
    }

    fn remove_pod(&mut self, namespace: &str, name: &str) -> Option<PodInfo> {
        let key = (namespace.to_owned(), name.to_owned());
        let slot = self.pod_slots.remove(&key)?;
        let removed = self.pods[slot].take();
        if let Some(pod) = &removed {
            for ip in &pod.ips {
                if let Some(claimants) = self.ip_claimants.get_mut(ip) {
                    claimants.retain(|s| *s != slot);
                    if claimants.is_empty() {
                        self.ip_claimants.remove(ip);
                    }
                }
                self.elect_ip_owner(*ip);
                if let Some(owners) = self.host_network_ips.get_mut(ip) {
                    owners.remove(&key);
                    if owners.is_empty() {
                        self.host_network_ips.remove(ip);
                    }
                }
            }
        }
        if let Some(slots) = self.pods_by_namespace.get_mut(namespace) {
            slots.remove(&slot);
        }
        self.free_pod_slots.push(slot);
        removed
    }

    /// Points `ip` at its best claimant (see [`PodInfo::ip_claim`]), or at
    /// nobody.
    fn elect_ip_owner(&mut self, ip: IpAddr) {
        let owner = self.ip_claimants.get(&ip).and_then(|claimants| {
            claimants
                .iter()
                .filter_map(|slot| Some((self.pods[*slot].as_ref()?.ip_claim, *slot)))
                .max()
                .map(|(_, slot)| slot)
        });
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
