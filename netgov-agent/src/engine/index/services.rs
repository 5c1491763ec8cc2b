//! Services and EndpointSlices in the cluster state: which address is a
//! Service's cluster IP, and which backends its slices name.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::cluster::{ClusterState, IpList, Slot, find_slot, key_of, make_room};
use crate::engine::compile::exact;
use crate::model::{Name, Protocol};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePortInfo {
    /// Port name (empty for a single unnamed port).
    pub name: String,
    /// The port clients connect to.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// `targetPort`: a number or a container port name.
    pub target: IntOrString,
    /// The node port, for `NodePort` and `LoadBalancer` Services.
    pub node_port: Option<u16>,
}

/// A Service with cluster IPs.
#[derive(Clone, Debug)]
pub struct ServiceInfo {
    /// Namespace.
    pub namespace: Name,
    /// Name.
    pub name: Name,
    /// Ports.
    pub ports: Vec<ServicePortInfo>,
    /// `internalTrafficPolicy: Local`: traffic from inside the cluster
    /// goes only to endpoints on the client's node.
    pub internal_traffic_local: bool,
    /// Cluster IPs.
    pub cluster_ips: IpList,
    /// External IPs and load-balancer ingress IPs.
    pub frontend_ips: IpList,
}

/// One endpoint of a slice, with the conditions that choose it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Its address.
    pub address: IpAddr,
    /// `conditions.ready` (absent means ready, as upstream).
    pub ready: bool,
    /// `conditions.serving` (absent means the same as ready).
    pub serving: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
    /// The node it runs on.
    pub node: Option<Name>,
}

/// An EndpointSlice reduced to what resolution needs.
#[derive(Clone, Debug)]
pub struct SliceInfo {
    /// Namespace.
    pub namespace: Name,
    /// Name.
    pub name: Name,
    /// The Service it belongs to.
    pub service: Name,
    /// `(name, port, protocol)` of each slice port.
    pub ports: Vec<(String, u16, Protocol)>,
    /// Endpoints with an IP address (FQDN slices have none).
    pub endpoints: Vec<EndpointInfo>,
}

/// Why a Service has no backend for a flow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoBackend {
    /// No endpoint is ready, nor serving while terminating.
    #[error("Service {0} has no ready or serving endpoints")]
    NoEndpoints(String),
    /// None of the client's address family (each family has its own
    /// slices).
    #[error("Service {service} has no {family} endpoints")]
    NoneOfFamily {
        /// `namespace/name`.
        service: String,
        /// `IPv4` or `IPv6`.
        family: &'static str,
    },
    /// `internalTrafficPolicy: Local` and no endpoint on the client's node.
    #[error("Service {service} has internalTrafficPolicy Local and no endpoint on node {node}")]
    NoneOnNode {
        /// `namespace/name`.
        service: String,
        /// The client's node.
        node: String,
    },
}

impl ClusterState {
    /// Adds or replaces a Service (headless services have no cluster IP and
    /// resolve nothing).
    pub(super) fn upsert_service(&mut self, service: &Service) {
        let key = key_of(&service.metadata);
        self.delete_service(&key.0, &key.1);
        let spec = service.spec.clone().unwrap_or_default();
        let mut ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .filter_map(|ip| ip.parse().ok())
            .collect();
        if ips.is_empty()
            && let Some(ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok())
        {
            ips.push(ip);
        }
        let ports: Vec<ServicePortInfo> = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(ServicePortInfo {
                    name: p.name.clone().unwrap_or_default(),
                    port: u16::try_from(p.port).ok()?,
                    protocol: Protocol::parse_port_protocol(
                        p.protocol.as_deref().unwrap_or("TCP"),
                    )?,
                    target: p.target_port.clone().unwrap_or(IntOrString::Int(p.port)),
                    node_port: p.node_port.and_then(|n| u16::try_from(n).ok()),
                })
            })
            .collect();
        // Addresses outside the cluster's that the node translates to the
        // Service too: external IPs and load-balancer ingress IPs.
        let ingress = service
            .status
            .iter()
            .flat_map(|s| s.load_balancer.iter())
            .flat_map(|lb| lb.ingress.iter().flatten())
            .filter_map(|i| i.ip.clone());
        let frontend_ips: Vec<IpAddr> = spec
            .external_ips
            .iter()
            .flatten()
            .cloned()
            .chain(ingress)
            .filter_map(|ip| ip.parse::<IpAddr>().ok())
            .collect();
        let info = Arc::new(ServiceInfo {
            namespace: self.shared.names.name(&key.0),
            // Shared with its EndpointSlices'.
            name: self.shared.names.name(&key.1),
            ports: exact(ports),
            internal_traffic_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            cluster_ips: ips.into_iter().collect(),
            frontend_ips: frontend_ips.into_iter().collect(),
        });
        for ip in &info.cluster_ips {
            self.service_by_ip.insert(*ip, Arc::clone(&info));
        }
        for ip in &info.frontend_ips {
            self.service_frontends
                .entry(*ip)
                .or_default()
                .push(Arc::clone(&info));
        }
        for port in &info.ports {
            if let Some(node_port) = port.node_port {
                self.node_ports
                    .insert((port.protocol, node_port), Arc::clone(&info));
            }
        }
        let hasher = &self.slot_hasher;
        self.services
            .insert_unique(self.slot_hash(&key.0, &key.1), info, |s| {
                hasher.hash_one((&*s.namespace, &*s.name))
            });
    }

    /// The Service `namespace/name`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&ServiceInfo> {
        self.services
            .find(self.slot_hash(namespace, name), |s| {
                *s.namespace == *namespace && *s.name == *name
            })
            .map(|s| &**s)
    }

    /// Removes a Service, and its addresses and node ports where they are
    /// still its own.
    pub(super) fn delete_service(&mut self, namespace: &str, name: &str) {
        let Ok(filed) = self
            .services
            .find_entry(self.slot_hash(namespace, name), |s| {
                *s.namespace == *namespace && *s.name == *name
            })
        else {
            return;
        };
        let (gone, _) = filed.remove();
        let own = |service: &Arc<ServiceInfo>| Arc::ptr_eq(service, &gone);
        for ip in &gone.cluster_ips {
            if self.service_by_ip.get(ip).is_some_and(own) {
                self.service_by_ip.remove(ip);
            }
        }
        for ip in &gone.frontend_ips {
            if let Some(services) = self.service_frontends.get_mut(ip) {
                services.retain(|service| !own(service));
                if services.is_empty() {
                    self.service_frontends.remove(ip);
                }
            }
        }
        for port in &gone.ports {
            if let Some(node_port) = port.node_port {
                let at = (port.protocol, node_port);
                if self.node_ports.get(&at).is_some_and(own) {
                    self.node_ports.remove(&at);
                }
            }
        }
    }

    /// Adds or replaces an EndpointSlice (every endpoint with an IP
    /// address, with its conditions and node).
    pub(super) fn upsert_endpoint_slice(&mut self, slice: &EndpointSlice) {
        let (namespace, name) = key_of(&slice.metadata);
        self.delete_endpoint_slice(&namespace, &name);
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .map_or("", String::as_str);
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.name.clone().unwrap_or_default(),
                    u16::try_from(p.port?).ok()?,
                    Protocol::parse_port_protocol(p.protocol.as_deref().unwrap_or("TCP"))?,
                ))
            })
            .collect();
        let names = &mut self.shared.names;
        let endpoints = slice
            .endpoints
            .iter()
            .flatten()
            .flat_map(|e| {
                let conditions = e.conditions.clone().unwrap_or_default();
                let ready = conditions.ready.unwrap_or(true);
                let info = EndpointInfo {
                    address: IpAddr::from([0, 0, 0, 0]),
                    ready,
                    serving: conditions.serving.unwrap_or(ready),
                    terminating: conditions.terminating.unwrap_or(false),
                    node: e.node_name.as_deref().map(|node| names.name(node)),
                };
                e.addresses.iter().filter_map(move |a| {
                    Some(EndpointInfo {
                        address: a.parse().ok()?,
                        ..info.clone()
                    })
                })
            })
            .collect();
        let info = SliceInfo {
            namespace: self.shared.names.name(&namespace),
            name: Name::from(name.as_str()),
            service: self.shared.names.name(service),
            ports: exact(ports),
            endpoints: exact(endpoints),
        };
        let slot = match self.free_slice_slots.pop() {
            Some(slot) => slot,
            None => {
                make_room(&mut self.slices);
                self.slices.push(None);
                Slot::try_from(self.slices.len() - 1).expect("fewer than 2^32 slices")
            }
        };
        let (by_name, by_service) = (
            self.slot_hash(&namespace, &name),
            self.slot_hash(&namespace, service),
        );
        self.slices[slot as usize] = Some(info);
        let (slices, hasher) = (&self.slices, &self.slot_hasher);
        let filed = |slot: &Slot| {
            slices[*slot as usize]
                .as_ref()
                .expect("filed slices are in their slots")
        };
        self.slice_slots.insert_unique(by_name, slot, |slot| {
            let slice = filed(slot);
            hasher.hash_one((&*slice.namespace, &*slice.name))
        });
        self.service_slices.insert_unique(by_service, slot, |slot| {
            let slice = filed(slot);
            hasher.hash_one((&*slice.namespace, &*slice.service))
        });
    }

    /// The slot of the EndpointSlice `namespace/name`.
    pub(super) fn slice_slot(&self, namespace: &str, name: &str) -> Option<Slot> {
        let hash = self.slot_hash(namespace, name);
        find_slot(&self.slice_slots, &self.slices, hash, |slice| {
            *slice.namespace == *namespace && *slice.name == *name
        })
    }

    /// Removes an EndpointSlice.
    pub(super) fn delete_endpoint_slice(&mut self, namespace: &str, name: &str) {
        let Some(slot) = self.slice_slot(namespace, name) else {
            return;
        };
        if let Ok(filed) = self
            .slice_slots
            .find_entry(self.slot_hash(namespace, name), |s| *s == slot)
        {
            filed.remove();
        }
        let Some(gone) = self.slices[slot as usize].take() else {
            return;
        };
        let by_service = self.slot_hash(namespace, &gone.service);
        if let Ok(filed) = self.service_slices.find_entry(by_service, |s| *s == slot) {
            filed.remove();
        }
        self.free_slice_slots.push(slot);
    }

    /// The slices of Service `namespace/service`.
    pub fn slices_of<'a>(
        &'a self,
        namespace: &'a str,
        service: &'a str,
    ) -> impl Iterator<Item = &'a SliceInfo> {
        self.service_slices
            .iter_hash(self.slot_hash(namespace, service))
            .filter_map(|slot| self.slices[*slot as usize].as_ref())
            .filter(move |s| *s.namespace == *namespace && *s.service == *service)
    }
}

/// What a frontend address is: a Service and the port a client used.
#[derive(Clone, Copy, Debug)]
pub struct Frontend<'a> {
    /// The Service.
    pub service: &'a ServiceInfo,
    /// Its port that was addressed.
    pub port: &'a ServicePortInfo,
    /// Reached from outside the cluster's addresses (a node port, an
    /// external or load-balancer IP): `internalTrafficPolicy` does not
    /// apply (`externalTrafficPolicy` does, which netgov does not model).
    pub external: bool,
}

impl ClusterState {
    /// The Service port a client reaches at `address` over `protocol`:
    /// a cluster IP and port, an external or load-balancer IP and port, or
    /// any node's address and a node port.
    pub fn frontend<'s>(
        &'s self,
        protocol: Protocol,
        (ip, port): (IpAddr, u16),
    ) -> Option<Frontend<'s>> {
        let external = |node_port: bool| node_port || self.service_by_ip.get(&ip).is_none();
        let by_port = |service: &'s ServiceInfo, node_port: bool| {
            let port = service.ports.iter().find(|p| {
                p.protocol == protocol
                    && if node_port {
                        p.node_port == Some(port)
                    } else {
                        p.port == port
                    }
            })?;
            Some(Frontend {
                service,
                port,
                external: external(node_port),
            })
        };
        // A cluster IP belongs to one Service; an external or load-balancer
        // IP may be shared by several on different ports; any node address
        // takes the node ports.
        self.service_by_ip
            .get(&ip)
            .and_then(|service| by_port(service, false))
            .or_else(|| {
                self.service_frontends
                    .get(&ip)?
                    .iter()
                    .find_map(|service| by_port(service, false))
            })
            .or_else(|| {
                self.node_by_ip.contains_key(&ip).then_some(())?;
                by_port(self.node_ports.get(&(protocol, port))?, true)
            })
    }

    /// The backends `(address, target port)` of `frontend` for a client on
    /// `client_node`, of `family`'s address family, as the node's proxy
    /// chooses them: with `internalTrafficPolicy: Local` only endpoints on
    /// the client's node; ready endpoints, or when none is ready, those
    /// serving while terminating (KEP-1669).
    ///
    /// # Errors
    /// [`NoBackend`] saying which rule left none.
    pub fn backends(
        &self,
        frontend: Frontend<'_>,
        family: IpAddr,
        client_node: Option<&str>,
    ) -> Result<Vec<(IpAddr, u16)>, NoBackend> {
        let Frontend {
            service,
            port,
            external,
        } = frontend;
        let id = format!("{}/{}", service.namespace, service.name);
        let mut candidates: Vec<(&EndpointInfo, u16)> = Vec::new();
        let mut other_family = false;
        for slice in self.slices_of(&service.namespace, &service.name) {
            // Slices hold each backend's resolved target port.
            let target = slice
                .ports
                .iter()
                .find(|(name, _, p)| *name == port.name && *p == port.protocol)
                .map(|(_, target, _)| *target)
                .or(match &port.target {
                    IntOrString::Int(target) => u16::try_from(*target).ok(),
                    IntOrString::String(_) => None,
                });
            let Some(target) = target else {
                continue;
            };
            for endpoint in &slice.endpoints {
                if endpoint.address.is_ipv4() == family.is_ipv4() {
                    candidates.push((endpoint, target));
                } else {
                    other_family = true;
                }
            }
        }
        if candidates.is_empty() && other_family {
            return Err(NoBackend::NoneOfFamily {
                service: id,
                family: if family.is_ipv4() { "IPv4" } else { "IPv6" },
            });
        }
        if service.internal_traffic_local
            && !external
            && let Some(node) = client_node
        {
            candidates.retain(|(e, _)| e.node.as_deref() == Some(node));
            if candidates.is_empty() {
                return Err(NoBackend::NoneOnNode {
                    service: id,
                    node: node.to_owned(),
                });
            }
        }
        let ready: Vec<(IpAddr, u16)> = candidates
            .iter()
            .filter(|(e, _)| e.ready)
            .map(|(e, port)| (e.address, *port))
            .collect();
        let mut chosen = if ready.is_empty() {
            candidates
                .iter()
                .filter(|(e, _)| e.serving && e.terminating)
                .map(|(e, port)| (e.address, *port))
                .collect()
        } else {
            ready
        };
        chosen.sort();
        chosen.dedup();
        if chosen.is_empty() {
            return Err(NoBackend::NoEndpoints(id));
        }
        Ok(chosen)
    }
}
