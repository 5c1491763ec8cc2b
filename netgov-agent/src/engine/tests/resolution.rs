//! What ends resolve to: named ports per destination pod, nodes and
//! hostNetwork pods, Services per backend; explanations.

use super::*;
use crate::model::Name;

const SERVICE: &str = "---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: prod}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: pg, port: 5432, targetPort: postgres}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-abc, namespace: prod, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: pg, port: 15432, protocol: TCP}]
endpoints:
  - addresses: [10.0.1.3]
    conditions: {ready: true}
  - addresses: [10.0.1.2]
  - addresses: [10.0.1.9]
    conditions: {ready: false}
";

#[test]
fn named_ports_resolve_per_destination_pod() {
    // Two backends name port `http` differently; one lacks it.
    let yaml = [
        namespace("shop", "{}"),
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: shop, labels: {app: be}}\n\
         spec: {containers: [{name: c, image: i, ports: [{name: http, containerPort: 8080}]}]}\nstatus: {podIP: 10.1.0.1}\n"
            .to_owned(),
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: shop, labels: {app: be}}\n\
         spec: {containers: [{name: c, image: i, ports: [{name: http, containerPort: 9090}, {name: dns, containerPort: 53, protocol: UDP}]}]}\nstatus: {podIP: 10.1.0.2}\n"
            .to_owned(),
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: c, namespace: shop, labels: {app: be}}\n\
         spec: {containers: [{name: c, image: i}]}\nstatus: {podIP: 10.1.0.3}\n"
            .to_owned(),
        pod("shop", "client", "10.1.0.9", "{app: client}"),
        policy("shop", "http", "podSelector: {matchLabels: {app: be}}\ningress: [{ports: [{port: http}, {port: dns, protocol: UDP}]}]"),
        policy(
            "shop",
            "client-egress",
            "podSelector: {matchLabels: {app: client}}\npolicyTypes: [Egress]\negress: [{ports: [{port: http}]}]",
        ),
    ]
    .concat();
    let state = cluster(&yaml);
    let judge = |dst: &str, protocol, port| {
        evaluate(&state, &flow("10.1.0.9", dst, protocol, port)).verdict
    };
    assert_eq!(judge("10.1.0.1", Tcp, 8080), Decision::Allow);
    assert_eq!(judge("10.1.0.1", Tcp, 9090), Decision::Deny);
    assert_eq!(judge("10.1.0.2", Tcp, 9090), Decision::Allow);
    assert_eq!(judge("10.1.0.2", Tcp, 8080), Decision::Deny);
    assert_eq!(
        judge("10.1.0.3", Tcp, 8080),
        Decision::Deny,
        "no port named http"
    );
    // The named port's protocol must match too.
    assert_eq!(
        judge("10.1.0.2", Udp, 53),
        Decision::Deny,
        "egress only admits http"
    );
    // Egress named ports resolve against the destination, not the source.
    assert_eq!(
        judge(OUTSIDE, Tcp, 8080),
        Decision::Deny,
        "an outside address has no named ports"
    );
}

#[test]
fn host_ends() {
    let yaml = base()
        + &policy(
            "prod",
            "deny",
            "podSelector: {}\npolicyTypes: [Ingress, Egress]",
        )
        + "---\napiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nstatus: {addresses: [{type: InternalIP, address: 192.168.1.10}]}\n"
        + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: agent, namespace: kube-system}\n\
           spec: {hostNetwork: true, nodeName: node-1, containers: [{name: c, image: i}]}\nstatus: {podIP: 192.168.1.11}\n";
    let state = cluster(&yaml);
    // A node's traffic to a pod: governed by neither NetworkPolicy nor the
    // tiers. A pod's to a node: egress the tiers judge, allowed when no
    // rule denies it, whatever the NetworkPolicies.
    let rows = [
        (
            "node -> pod",
            "192.168.1.10",
            API,
            "not-applicable | egress: n/a | ingress: n/a",
        ),
        (
            "pod -> node",
            API,
            "192.168.1.10",
            "allow | egress: open | ingress: n/a",
        ),
        (
            "hostNetwork pod -> pod",
            "192.168.1.11",
            DB,
            "not-applicable | egress: n/a | ingress: n/a",
        ),
        (
            "pod -> hostNetwork pod",
            DB,
            "192.168.1.11",
            "allow | egress: open | ingress: n/a",
        ),
        (
            "outside -> outside",
            OUTSIDE,
            "198.51.100.1",
            "not-applicable | egress: n/a | ingress: n/a",
        ),
    ];
    for (name, src, dst, expected) in rows {
        assert_eq!(
            summary(&evaluate(&state, &flow(src, dst, Tcp, 10250))),
            expected,
            "{name}"
        );
    }
    let to_node = evaluate(&state, &flow(API, "192.168.1.10", Tcp, 10250));
    assert_eq!(
        to_node.egress.reason,
        "a pod's traffic to a node: NetworkPolicy does not govern it, and its tier comes before Baseline: allowed"
    );
    assert_eq!(
        to_node
            .egress
            .pod
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("prod/api")
    );
    // A hostNetwork pod is its node.
    let verdict = evaluate(&state, &flow(API, "192.168.1.11", Tcp, 10250));
    assert_eq!(
        verdict.destination,
        verdict::EndpointKind::Host {
            node: Some("node-1".into())
        }
    );
    // A pod's traffic to itself, each side saying why.
    let hairpin = evaluate(&state, &flow(API, API, Tcp, 8080));
    assert_eq!(summary(&hairpin), "allow | egress: open | ingress: open");
    for side in [&hairpin.egress, &hairpin.ingress] {
        assert_eq!(side.reason, "a pod's traffic to itself is always allowed");
        assert_eq!(
            side.pod.as_ref().map(ToString::to_string).as_deref(),
            Some("prod/api")
        );
    }
}

#[test]
fn explanations_name_policies_and_rules() {
    let yaml = base()
        + &policy("prod", "deny", "podSelector: {}\npolicyTypes: [Ingress]")
        + &policy(
            "prod",
            "db",
            "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{podSelector: {matchLabels: {app: web}}}]}, {from: [{podSelector: {matchLabels: {app: api}}}], ports: [{port: 5432}]}]",
        );
    let state = cluster(&yaml);
    let allowed = evaluate(&state, &flow(API, DB, Tcp, 5432));
    assert_eq!(
        summary(&allowed),
        "allow | egress: open | ingress: allowed by [prod/db#1]"
    );
    assert_eq!(
        allowed
            .ingress
            .pod
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("prod/db")
    );
    assert_eq!(
        allowed.ingress.isolating_policies,
        [Name::from("prod/db"), Name::from("prod/deny")]
    );
    let denied = evaluate(&state, &flow(API, DB, Tcp, 22));
    assert_eq!(
        summary(&denied),
        "deny | egress: open | ingress: denied by [prod/db, prod/deny]"
    );
}

#[test]
fn services_are_judged_per_backend() {
    // db and web back the service (ready); 10.0.1.9 is not ready.
    let allow_db_only = policy(
        "prod",
        "p",
        "podSelector: {matchLabels: {app: db}}\ningress: [{ports: [{port: 15432}]}]",
    );
    let state = cluster(&(base() + SERVICE + &allow_db_only));
    let verdict = evaluate(&state, &flow(API, "10.96.0.10", Tcp, 5432));
    // db is isolated and admits 15432; web is not isolated: both allow.
    // The flow's own sides are those of the first backend.
    assert_eq!(
        summary(&verdict),
        "allow | egress: open | ingress: open | backends: [10.0.1.2:15432 allow, 10.0.1.3:15432 allow]"
    );
    assert!(matches!(
        verdict.destination,
        verdict::EndpointKind::Service { .. }
    ));

    // Isolate web without admitting the port: the backends disagree.
    let deny_web = policy(
        "prod",
        "w",
        "podSelector: {matchLabels: {app: web}}\ningress: []",
    );
    let state = cluster(&(base() + SERVICE + &allow_db_only + &deny_web));
    let verdict = evaluate(&state, &flow(API, "10.96.0.10", Tcp, 5432));
    assert_eq!(
        summary(&verdict),
        "deny | egress: open | ingress: denied by [prod/w] | backends: [10.0.1.2:15432 deny, 10.0.1.3:15432 allow] (disagree)"
    );

    // A port the service does not expose.
    let verdict = evaluate(&state, &flow(API, "10.96.0.10", Tcp, 80));
    assert_eq!(
        summary(&verdict),
        "not-applicable | egress: n/a | ingress: n/a"
    );
    assert_eq!(verdict.egress.reason, "Service prod/db has no port 80/TCP");
}

/// A Service `prod/svc` (cluster IPs 10.96.0.20 and fd00:96::20, port
/// 80 → 8080, `internalTrafficPolicy` as given) with one IPv4 slice of
/// `endpoints` (`(address, node, conditions)`), and the client
/// `prod/api` on `node-1`.
fn service_cluster(policy: &str, endpoints: &[(&str, &str, &str)]) -> ClusterState {
    let endpoints: String = endpoints
        .iter()
        .map(|(address, node, conditions)| {
            format!("  - {{addresses: [{address}], nodeName: {node}, conditions: {conditions}}}\n")
        })
        .collect();
    let yaml = base().replace(
        "metadata: {name: api, namespace: prod, labels: {app: api}}\nspec: {",
        "metadata: {name: api, namespace: prod, labels: {app: api}}\nspec: {nodeName: node-1, ",
    ) + &format!(
        "---
apiVersion: v1
kind: Service
metadata: {{name: svc, namespace: prod}}
spec:
  clusterIPs: [10.96.0.20, fd00:96::20]
  internalTrafficPolicy: {policy}
  ports: [{{port: 80, targetPort: 8080, nodePort: 30080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: svc-4, namespace: prod, labels: {{kubernetes.io/service-name: svc}}}}
addressType: IPv4
ports: [{{port: 8080, protocol: TCP}}]
endpoints:
{endpoints}---
apiVersion: v1
kind: Node
metadata: {{name: node-1}}
status: {{addresses: [{{type: InternalIP, address: 192.168.1.10}}]}}
"
    );
    cluster(&yaml)
}

/// A Service flow from `prod/api` to `dst` (port 80, or the node port on
/// the node's address) with the Service's `policy` and `endpoints`.
struct BackendRow {
    name: &'static str,
    policy: &'static str,
    endpoints: Vec<(&'static str, &'static str, &'static str)>,
    dst: &'static str,
    expected: &'static str,
    /// The explanation, when no backend is left.
    reason: Option<&'static str>,
}

#[test]
fn service_backends_follow_the_proxy_rules() {
    let ready = "{ready: true}";
    let terminating = "{ready: false, serving: true, terminating: true}";
    let gone = "{ready: false, serving: false, terminating: true}";
    let rows = [
        BackendRow {
            name: "ready endpoints only",
            policy: "Cluster",
            endpoints: vec![(DB, "node-2", ready), (WEB, "node-1", terminating)],
            dst: "10.96.0.20",
            expected: "allow | egress: open | ingress: open | backends: [10.0.1.3:8080 allow]",
            reason: None,
        },
        BackendRow {
            name: "no ready endpoint: those serving while terminating (KEP-1669)",
            policy: "Cluster",
            endpoints: vec![(DB, "node-2", terminating), (WEB, "node-1", gone)],
            dst: "10.96.0.20",
            expected: "allow | egress: open | ingress: open | backends: [10.0.1.3:8080 allow]",
            reason: None,
        },
        BackendRow {
            name: "nothing ready or serving",
            policy: "Cluster",
            endpoints: vec![(WEB, "node-1", gone)],
            dst: "10.96.0.20",
            expected: "not-applicable | egress: n/a | ingress: n/a",
            reason: Some("Service prod/svc has no ready or serving endpoints"),
        },
        BackendRow {
            name: "internalTrafficPolicy Local: the client's node only",
            policy: "Local",
            endpoints: vec![(DB, "node-2", ready), (WEB, "node-1", ready)],
            dst: "10.96.0.20",
            expected: "allow | egress: open | ingress: open | backends: [10.0.1.2:8080 allow]",
            reason: None,
        },
        BackendRow {
            name: "internalTrafficPolicy Local, none on the client's node",
            policy: "Local",
            endpoints: vec![(DB, "node-2", ready)],
            dst: "10.96.0.20",
            expected: "not-applicable | egress: n/a | ingress: n/a",
            reason: Some(
                "Service prod/svc has internalTrafficPolicy Local and no endpoint on node node-1",
            ),
        },
        BackendRow {
            name: "an IPv6 client has only IPv4 slices",
            policy: "Cluster",
            endpoints: vec![(DB, "node-2", ready)],
            dst: "fd00:96::20",
            expected: "not-applicable | egress: n/a | ingress: n/a",
            reason: Some("Service prod/svc has no IPv6 endpoints"),
        },
        BackendRow {
            name: "a node port reaches the same backends",
            policy: "Cluster",
            endpoints: vec![(DB, "node-2", ready)],
            dst: "192.168.1.10",
            expected: "allow | egress: open | ingress: open | backends: [10.0.1.3:8080 allow]",
            reason: None,
        },
    ];
    for row in rows {
        let state = service_cluster(row.policy, &row.endpoints);
        let port = if row.dst == "192.168.1.10" { 30080 } else { 80 };
        let verdict = evaluate(&state, &flow(API, row.dst, Tcp, port));
        assert_eq!(summary(&verdict), row.expected, "{}", row.name);
        if let Some(reason) = row.reason {
            assert_eq!(verdict.egress.reason, reason, "{}", row.name);
        }
    }
    // The node's address and node port name the Service port, as a
    // cluster IP and port do.
    let state = service_cluster("Cluster", &[(DB, "node-2", ready)]);
    for (address, port) in [("192.168.1.10", 30080), ("10.96.0.20", 80)] {
        let frontend = state
            .frontend(Tcp, (address.parse().expect("ip"), port))
            .expect("a frontend");
        assert_eq!((&*frontend.service.name, frontend.port.port), ("svc", 80));
    }
    assert!(
        state
            .frontend(Tcp, ("192.168.1.10".parse().expect("ip"), 80))
            .is_none()
    );
}

/// Two Services may share an external IP on different ports (MetalLB's
/// shared IPs): each port names its own Service, and deleting one keeps
/// the other.
#[test]
fn a_shared_external_ip_names_each_service_by_port() {
    let service = |name: &str, port: u16| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: prod}}\n\
             spec: {{clusterIP: 10.96.1.{port_low}, externalIPs: [198.51.100.7], ports: [{{port: {port}}}]}}\n",
            port_low = port % 250
        )
    };
    let mut state = cluster(&(base() + &service("http", 80) + &service("https", 443)));
    let name = |state: &ClusterState, port: u16| {
        state
            .frontend(Tcp, ("198.51.100.7".parse().expect("ip"), port))
            .map(|f| f.service.name.to_string())
    };
    assert_eq!(name(&state, 80).as_deref(), Some("http"));
    assert_eq!(name(&state, 443).as_deref(), Some("https"));
    assert!(
        state
            .frontend(Tcp, ("198.51.100.7".parse().expect("ip"), 80))
            .is_some_and(|f| f.external)
    );
    state.delete(ResourceKind::Service, "prod", "http");
    assert_eq!(name(&state, 80), None);
    assert_eq!(name(&state, 443).as_deref(), Some("https"));
}
