//! Services and EndpointSlices in the cluster state: which address is a
//! Service's cluster IP, and which backends its slices name.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Protocol;
use super::cluster::{ClusterState, key_of};

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
}

/// A Service with cluster IPs.
#[derive(Clone, Debug)]
pub struct ServiceInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Ports.
    pub ports: Vec<ServicePortInfo>,
}

/// An EndpointSlice reduced to what resolution needs.
#[derive(Clone, Debug)]
pub struct SliceInfo {
    /// The Service it belongs to.
    pub service: String,
    /// `(name, port, protocol)` of each slice port.
    pub ports: Vec<(String, u16, Protocol)>,
    /// Addresses of ready endpoints.
    pub addresses: Vec<IpAddr>,
}

impl ClusterState {
    /// Adds or replaces a Service (headless services have no cluster IP and
    /// resolve nothing).
    pub fn upsert_service(&mut self, service: &Service) {
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
        let ports = spec
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
                })
            })
            .collect();
        let info = Arc::new(ServiceInfo {
            namespace: key.0.clone(),
            name: key.1.clone(),
            ports,
        });
        for ip in ips {
            self.service_by_ip.insert(ip, key.clone());
        }
        self.services.insert(key, info);
        self.generation += 1;
    }

    /// Removes a Service.
    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        if self.services.remove(&key).is_some() {
            self.service_by_ip.retain(|_, owner| *owner != key);
        }
        self.generation += 1;
    }

    /// Adds or replaces an EndpointSlice (ready endpoints only; an endpoint
    /// without conditions counts as ready, as upstream).
    pub fn upsert_endpoint_slice(&mut self, slice: &EndpointSlice) {
        let key = key_of(&slice.metadata);
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .cloned()
            .unwrap_or_default();
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
        let addresses = slice
            .endpoints
            .iter()
            .flatten()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .flat_map(|e| e.addresses.iter())
            .filter_map(|a| a.parse().ok())
            .collect();
        self.slices.insert(
            key,
            SliceInfo {
                service,
                ports,
                addresses,
            },
        );
        self.generation += 1;
    }

    /// Removes an EndpointSlice.
    pub fn delete_endpoint_slice(&mut self, namespace: &str, name: &str) {
        self.slices.remove(&(namespace.to_owned(), name.to_owned()));
        self.generation += 1;
    }

    /// The slices of Service `namespace/service`.
    pub fn slices_of<'a>(
        &'a self,
        namespace: &'a str,
        service: &'a str,
    ) -> impl Iterator<Item = &'a SliceInfo> {
        self.slices
            .iter()
            .filter(move |((ns, _), slice)| ns == namespace && slice.service == service)
            .map(|(_, slice)| slice)
    }
}
