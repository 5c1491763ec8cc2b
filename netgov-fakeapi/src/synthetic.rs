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
    /// Pods, spread over the namespaces, the ReplicaSets and the nodes.
    pub pods: usize,
    /// ReplicaSets the pods belong to (at least 1): pods of one share
    /// their labels.
    pub replica_sets: usize,
    /// Nodes (at least 1).
    pub nodes: usize,
    /// NetworkPolicies.
    pub policies: usize,
    /// Services, each with one EndpointSlice of two pods.
    pub services: usize,
}

impl Scale {
    /// The shape of a cluster at Kubernetes' published limits, scaled to
    /// `pods` (150,000 pods: 1,000 namespaces, 15,000 ReplicaSets, 5,000
    /// nodes, 10,000 NetworkPolicies, 20,000 Services).
    pub fn at_the_limits(pods: usize) -> Self {
        Self {
            namespaces: (pods / 150).max(1),
            pods,
            replica_sets: (pods / 10).max(1),
            nodes: (pods / 30).max(1),
            policies: pods / 15,
            services: pods * 2 / 15,
        }
    }
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
    let (replica_sets, nodes) = (scale.replica_sets.max(1), scale.nodes.max(1));
    for i in 0..scale.pods {
        server.seed(
            Resource::Pods,
            pod(i, i % namespaces, i % replica_sets, i % nodes),
        );
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
    for i in 0..nodes {
        server.seed(Resource::Nodes, json!({"metadata": {"name": format!("node-{i}")},
            "status": {"addresses": [{"type": "InternalIP", "address": format!("192.168.{}.{}", i / 250, i % 250 + 1)}]}}));
    }
}

/// The `i`-th pod, of ReplicaSet `rs` (its app label `app-{rs % 20}`, as
/// the policies select), about 4 KB of JSON as an API server sends a
/// pod: owner, managed fields, a container with its probes, environment
/// and resources, the service-account token volume, the default
/// tolerations, and a running status with its conditions.
pub fn pod(i: usize, ns: usize, rs: usize, node: usize) -> serde_json::Value {
    let ip = pod_ip(i).to_string();
    let hash = format!("{:x}", 0x5f00_0000 + rs);
    let time = "2026-11-30T08:15:42Z";
    let conditions: Vec<_> = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ]
    .iter()
    .map(|kind| json!({"type": kind, "status": "True", "lastProbeTime": null, "lastTransitionTime": time}))
    .collect();
    json!({
        "metadata": {"name": format!("app-{rs}-{hash}-{i}"), "generateName": format!("app-{rs}-{hash}-"),
            "namespace": format!("ns-{ns}"), "uid": format!("6c1a0e2b-0000-4000-8000-{i:012}"),
            "resourceVersion": format!("{}", 100_000 + i), "creationTimestamp": time,
            "labels": {"app": format!("app-{}", rs % 20), "app.kubernetes.io/instance": format!("app-{rs}"),
                       "pod-template-hash": hash},
            "annotations": {"kubectl.kubernetes.io/restartedAt": time},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("app-{rs}-{hash}"),
                                 "uid": format!("9e2d4c1a-0000-4000-8000-{rs:012}"), "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [
                {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1", "time": time,
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app": {}, "f:pod-template-hash": {}},
                     "f:ownerReferences": {".": {}, "k:{\"uid\":\"9e2d4c1a\"}": {}}},
                     "f:spec": {"f:containers": {"k:{\"name\":\"main\"}": {".": {}, "f:image": {}, "f:name": {}, "f:ports": {}, "f:resources": {}}}}}},
                {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": time, "subresource": "status",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:conditions": {}, "f:containerStatuses": {}, "f:hostIP": {},
                     "f:phase": {}, "f:podIP": {}, "f:podIPs": {}, "f:startTime": {}}}}]},
        "spec": {"nodeName": format!("node-{node}"), "serviceAccountName": "default", "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
            "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority", "priority": 0,
            "securityContext": {}, "volumes": [{"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}],
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
            "containers": [{"name": "main", "image": "registry.example/team/app:1.2.3", "imagePullPolicy": "IfNotPresent",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}, {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
                "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}],
                "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "250m", "memory": "512Mi"}},
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http", "scheme": "HTTP"}, "periodSeconds": 10,
                                   "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
                "volumeMounts": [{"name": "kube-api-access", "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}]},
        "status": {"phase": "Running", "qosClass": "Burstable", "startTime": time,
            "hostIP": format!("192.168.{}.{}", node / 250, node % 250 + 1), "hostIPs": [{"ip": format!("192.168.{}.{}", node / 250, node % 250 + 1)}],
            "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": conditions,
            "containerStatuses": [{"name": "main", "ready": true, "started": true, "restartCount": 0,
                "image": "registry.example/team/app:1.2.3",
                "imageID": "registry.example/team/app@sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",
                "containerID": format!("containerd://{i:064x}"),
                "state": {"running": {"startedAt": time}}, "lastState": {}}]}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size real pods have as an API server sends them (3.9 KB in the
    /// cluster this shape was taken from), so that bytes served measure
    /// what a real sync costs.
    #[test]
    fn a_pod_is_about_as_big_as_a_real_one() {
        let sizes: Vec<usize> = [(0, 0, 0, 0), (149_999, 999, 14_999, 4_999)]
            .into_iter()
            .map(|(i, ns, rs, node)| pod(i, ns, rs, node).to_string().len())
            .collect();
        for size in sizes {
            assert!((3_600..=4_200).contains(&size), "{size} bytes");
        }
    }
}
