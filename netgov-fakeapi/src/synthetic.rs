//! A generated cluster of any size, shaped like a real one (pods with owner
//! references, `managedFields`, container specs and status; namespaces with
//! labels; policies selecting by label and named port; Services with their
//! EndpointSlices; nodes), for memory and speed measurements.

use std::net::Ipv4Addr;

use serde_json::json;

use crate::{FakeApiServer, Resource};

/// How big the cluster is.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// Namespaces (at least 1).
    pub namespaces: usize,
    /// Pods, spread over the namespaces and 20 nodes.
    pub pods: usize,
    /// NetworkPolicies.
    pub policies: usize,
    /// Services, each with one EndpointSlice of two pods.
    pub services: usize,
}

/// The IPv4 address of the `i`-th pod (10.100.0.0 onwards).
pub fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        10,
        100 + (i / 65536) as u8,
        (i / 256 % 256) as u8,
        (i % 256) as u8,
    )
}

/// Seeds `server` with a cluster of `scale` (without watch events: fill it
/// before clients start).
pub fn populate(server: &FakeApiServer, scale: Scale) {
    let namespaces = scale.namespaces.max(1);
    for ns in 0..namespaces {
        server.seed(Resource::Namespaces, json!({"metadata": {"name": format!("ns-{ns}"), "labels": {"team": format!("t{}", ns % 50)}}}));
    }
    for i in 0..scale.pods {
        let ns = i % namespaces;
        server.seed(Resource::Pods, json!({
            "metadata": {"name": format!("app-{i}"), "namespace": format!("ns-{ns}"),
                "labels": {"app": format!("app-{}", i % 20), "pod-template-hash": "abc12"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("app-{}-abc12", i % 20), "uid": "u", "controller": true}],
                "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                                   "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {}}, "f:spec": {"f:containers": {}}}}]},
            "spec": {"nodeName": format!("node-{}", i % 20),
                     "containers": [{"name": "main", "image": "registry.example/app:1.2.3", "ports": [{"name": "http", "containerPort": 8080}],
                                     "env": [{"name": "A", "value": "b"}], "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]},
            "status": {"phase": "Running", "podIP": pod_ip(i).to_string(), "podIPs": [{"ip": pod_ip(i).to_string()}],
                       "conditions": [{"type": "Ready", "status": "True"}]}}));
    }
    for i in 0..scale.policies {
        server.seed(Resource::NetworkPolicies, json!({
            "metadata": {"name": format!("policy-{i}"), "namespace": format!("ns-{}", i % namespaces)},
            "spec": {"podSelector": {"matchLabels": {"app": format!("app-{}", i % 20)}},
                     "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": format!("t{}", i % 50)}}}], "ports": [{"port": "http"}]}]}}));
    }
    for i in 0..scale.services {
        let ns = format!("ns-{}", i % namespaces);
        server.seed(Resource::Services, json!({"metadata": {"name": format!("svc-{i}"), "namespace": ns},
            "spec": {"clusterIP": Ipv4Addr::new(10, 96, (i / 256) as u8, (i % 256) as u8).to_string(), "ports": [{"port": 80, "targetPort": "http"}]}}));
        let pods = scale.pods.max(1);
        server.seed(Resource::EndpointSlices, json!({"metadata": {"name": format!("svc-{i}-1"), "namespace": ns,
                "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
            "addressType": "IPv4", "ports": [{"port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [pod_ip(i % pods).to_string()]}, {"addresses": [pod_ip((i + 1) % pods).to_string()]}]}));
    }
    for i in 0..20 {
        server.seed(Resource::Nodes, json!({"metadata": {"name": format!("node-{i}")},
            "status": {"addresses": [{"type": "InternalIP", "address": format!("192.168.0.{}", i + 1)}]}}));
    }
}
