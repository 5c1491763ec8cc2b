//! Table tests of the policy engine, written from the Kubernetes
//! documentation (concepts/services-networking/network-policies and the
//! networking.k8s.io/v1 API reference).

use std::net::IpAddr;
use std::path::Path;

use super::manifests::{Manifests, parse_file};
use super::*;
use crate::state::{ClusterState, Protocol};

/// Builds a cluster from YAML documents; panics on any error.
fn cluster(yaml: &str) -> ClusterState {
    let mut manifests = Manifests::default();
    let mut errors = Vec::new();
    parse_file(Path::new("test.yaml"), yaml, &mut manifests, &mut errors);
    assert!(errors.is_empty(), "{errors:#?}");
    let (cluster, errors) = manifests.into_cluster();
    assert!(errors.is_empty(), "{errors:#?}");
    cluster
}

fn pod(namespace: &str, name: &str, ip: &str, labels: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, labels: {labels}}}\n\
         spec: {{containers: [{{name: c, image: i}}]}}\nstatus: {{podIP: {ip}}}\n"
    )
}

fn namespace(name: &str, labels: &str) -> String {
    format!("---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {labels}}}\n")
}

fn policy(namespace: &str, name: &str, spec: &str) -> String {
    let spec = spec.replace('\n', "\n  ");
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  {spec}\n"
    )
}

/// A flow `src -> dst:port/proto`.
fn flow(src: &str, dst: &str, protocol: Protocol, port: u16) -> FlowQuery {
    FlowQuery {
        src: src.parse::<IpAddr>().expect("ip"),
        dst: dst.parse().expect("ip"),
        protocol,
        dst_port: port,
    }
}

use Protocol::{Icmp, Sctp, Tcp, Udp};

/// The base cluster of most rows: namespaces `prod` (env=prod) and `dev`
/// (env=dev), pods `prod/api` (app=api, 10.0.1.1), `prod/web` (app=web,
/// 10.0.1.2), `prod/db` (app=db, 10.0.1.3), `dev/web` (app=web, 10.0.2.2),
/// `dev/tool` (app=tool, 10.0.2.3).
fn base() -> String {
    [
        namespace("prod", "{env: prod}"),
        namespace("dev", "{env: dev}"),
        pod("prod", "api", "10.0.1.1", "{app: api}"),
        pod("prod", "web", "10.0.1.2", "{app: web}"),
        pod("prod", "db", "10.0.1.3", "{app: db}"),
        pod("dev", "web", "10.0.2.2", "{app: web}"),
        pod("dev", "tool", "10.0.2.3", "{app: tool}"),
    ]
    .concat()
}

const API: &str = "10.0.1.1";
const WEB: &str = "10.0.1.2";
const DB: &str = "10.0.1.3";
const DEV_WEB: &str = "10.0.2.2";
const DEV_TOOL: &str = "10.0.2.3";
const OUTSIDE: &str = "203.0.113.10";

struct Row {
    name: &'static str,
    policies: Vec<String>,
    flow: FlowQuery,
    expected: Decision,
}

fn row(name: &'static str, policies: Vec<String>, flow: FlowQuery, expected: Decision) -> Row {
    Row {
        name,
        policies,
        flow,
        expected,
    }
}

fn check_rows(rows: Vec<Row>) {
    let mut failures = Vec::new();
    for row in rows {
        let state = cluster(&(base() + &row.policies.concat()));
        let verdict = evaluate(&state, &row.flow);
        if verdict.verdict != row.expected {
            failures.push(format!(
                "{}: expected {:?}, got {:?}\n  egress: {:?}\n  ingress: {:?}",
                row.name, row.expected, verdict.verdict, verdict.egress, verdict.ingress
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn isolation_and_rule_shapes() {
    use Decision::{Allow, Deny};
    let deny_all_ingress = policy("prod", "deny", "podSelector: {}\npolicyTypes: [Ingress]");
    check_rows(vec![
        row(
            "no policy: not isolated",
            vec![],
            flow(API, DB, Tcp, 5432),
            Allow,
        ),
        row(
            "default deny ingress",
            vec![deny_all_ingress.clone()],
            flow(API, DB, Tcp, 5432),
            Deny,
        ),
        row(
            "default deny ingress leaves egress open",
            vec![deny_all_ingress.clone()],
            flow(API, OUTSIDE, Tcp, 443),
            Allow,
        ),
        row(
            "ingress: [] admits nothing",
            vec![policy("prod", "p", "podSelector: {}\ningress: []")],
            flow(API, DB, Tcp, 5432),
            Deny,
        ),
        row(
            "ingress: [{}] admits everything",
            vec![
                deny_all_ingress.clone(),
                policy("prod", "all", "podSelector: {}\ningress: [{}]"),
            ],
            flow(DEV_TOOL, DB, Udp, 53),
            Allow,
        ),
        row(
            "from: [] (empty) admits every source",
            vec![policy(
                "prod",
                "p",
                "podSelector: {}\ningress: [{from: [], ports: [{port: 5432}]}]",
            )],
            flow(OUTSIDE, DB, Tcp, 5432),
            Allow,
        ),
        row(
            "ports: [] (empty) admits every port",
            vec![policy(
                "prod",
                "p",
                "podSelector: {}\ningress: [{from: [{podSelector: {}}], ports: []}]",
            )],
            flow(API, DB, Udp, 9999),
            Allow,
        ),
        row(
            "policy selecting other pods does not isolate this one",
            vec![policy(
                "prod",
                "p",
                "podSelector: {matchLabels: {app: web}}\ningress: []",
            )],
            flow(API, DB, Tcp, 5432),
            Allow,
        ),
        row(
            "policyTypes omitted with egress rules: egress isolated",
            vec![policy(
                "prod",
                "p",
                "podSelector: {matchLabels: {app: api}}\negress: [{to: [{podSelector: {matchLabels: {app: db}}}]}]",
            )],
            flow(API, WEB, Tcp, 80),
            Deny,
        ),
        row(
            "policyTypes omitted with egress rules: ingress isolated too",
            vec![policy(
                "prod",
                "p",
                "podSelector: {matchLabels: {app: api}}\negress: [{to: [{podSelector: {matchLabels: {app: db}}}]}]",
            )],
            flow(WEB, API, Tcp, 80),
            Deny,
        ),
        row(
            "policyTypes omitted, egress: [] does not isolate egress",
            vec![policy(
                "prod",
                "p",
                "podSelector: {matchLabels: {app: api}}\ningress: [{}]\negress: []",
            )],
            flow(API, OUTSIDE, Tcp, 443),
            Allow,
        ),
        row(
            "policyTypes [Egress] only leaves ingress open",
            vec![policy(
                "prod",
                "p",
                "podSelector: {matchLabels: {app: api}}\npolicyTypes: [Egress]",
            )],
            flow(WEB, API, Tcp, 80),
            Allow,
        ),
        row(
            "policyTypes [Egress] with no rules denies all egress",
            vec![policy(
                "prod",
                "p",
                "podSelector: {matchLabels: {app: api}}\npolicyTypes: [Egress]",
            )],
            flow(API, DB, Tcp, 5432),
            Deny,
        ),
        row(
            "egress allowed but destination ingress denies",
            vec![
                deny_all_ingress.clone(),
                policy(
                    "prod",
                    "e",
                    "podSelector: {}\npolicyTypes: [Egress]\negress: [{}]",
                ),
            ],
            flow(API, DB, Tcp, 5432),
            Deny,
        ),
        row(
            "rules are a union across policies",
            vec![
                policy(
                    "prod",
                    "a",
                    "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{podSelector: {matchLabels: {app: web}}}]}]",
                ),
                policy(
                    "prod",
                    "b",
                    "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{podSelector: {matchLabels: {app: api}}}]}]",
                ),
            ],
            flow(API, DB, Tcp, 5432),
            Allow,
        ),
    ]);
}

#[test]
fn peers_and_selectors() {
    use Decision::{Allow, Deny};
    let db = |from: &str| {
        policy(
            "prod",
            "db",
            &format!("podSelector: {{matchLabels: {{app: db}}}}\ningress: [{{from: [{from}]}}]"),
        )
    };
    check_rows(vec![
        row(
            "podSelector: own namespace",
            vec![db("{podSelector: {matchLabels: {app: web}}}")],
            flow(WEB, DB, Tcp, 5432),
            Allow,
        ),
        row(
            "podSelector: same labels in another namespace do not match",
            vec![db("{podSelector: {matchLabels: {app: web}}}")],
            flow(DEV_WEB, DB, Tcp, 5432),
            Deny,
        ),
        row(
            "namespaceSelector only: every pod of matching namespaces",
            vec![db("{namespaceSelector: {matchLabels: {env: dev}}}")],
            flow(DEV_TOOL, DB, Tcp, 5432),
            Allow,
        ),
        row(
            "namespaceSelector only: other namespaces do not match",
            vec![db("{namespaceSelector: {matchLabels: {env: dev}}}")],
            flow(API, DB, Tcp, 5432),
            Deny,
        ),
        row(
            "AND: both selectors in one peer, pod matches",
            vec![db(
                "{namespaceSelector: {matchLabels: {env: dev}}, podSelector: {matchLabels: {app: web}}}",
            )],
            flow(DEV_WEB, DB, Tcp, 5432),
            Allow,
        ),
        row(
            "AND: both selectors in one peer, other pod of that namespace",
            vec![db(
                "{namespaceSelector: {matchLabels: {env: dev}}, podSelector: {matchLabels: {app: web}}}",
            )],
            flow(DEV_TOOL, DB, Tcp, 5432),
            Deny,
        ),
        row(
            "AND: both selectors in one peer, same pod labels elsewhere",
            vec![db(
                "{namespaceSelector: {matchLabels: {env: dev}}, podSelector: {matchLabels: {app: web}}}",
            )],
            flow(WEB, DB, Tcp, 5432),
            Deny,
        ),
        row(
            "OR: separate peers, namespace peer admits any pod there",
            vec![db(
                "{namespaceSelector: {matchLabels: {env: dev}}}, {podSelector: {matchLabels: {app: web}}}",
            )],
            flow(DEV_TOOL, DB, Tcp, 5432),
            Allow,
        ),
        row(
            "OR: separate peers, pod peer admits own-namespace pod",
            vec![db(
                "{namespaceSelector: {matchLabels: {env: dev}}}, {podSelector: {matchLabels: {app: web}}}",
            )],
            flow(WEB, DB, Tcp, 5432),
            Allow,
        ),
        row(
            "empty namespaceSelector: every namespace",
            vec![db("{namespaceSelector: {}}")],
            flow(DEV_TOOL, DB, Tcp, 5432),
            Allow,
        ),
        row(
            "namespace name label is implicit",
            vec![db(
                "{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: dev}}}",
            )],
            flow(DEV_WEB, DB, Tcp, 5432),
            Allow,
        ),
        row(
            "matchExpressions In",
            vec![db(
                "{podSelector: {matchExpressions: [{key: app, operator: In, values: [web, api]}]}}",
            )],
            flow(API, DB, Tcp, 5432),
            Allow,
        ),
        row(
            "matchExpressions NotIn (key absent matches)",
            vec![db(
                "{namespaceSelector: {matchExpressions: [{key: tier, operator: NotIn, values: [gold]}]}}",
            )],
            flow(DEV_WEB, DB, Tcp, 5432),
            Allow,
        ),
        row(
            "matchExpressions Exists",
            vec![db(
                "{podSelector: {matchExpressions: [{key: app, operator: Exists}]}}",
            )],
            flow(WEB, DB, Tcp, 5432),
            Allow,
        ),
        row(
            "matchExpressions DoesNotExist",
            vec![db(
                "{podSelector: {matchExpressions: [{key: app, operator: DoesNotExist}]}}",
            )],
            flow(WEB, DB, Tcp, 5432),
            Deny,
        ),
        row(
            "matchLabels and matchExpressions are ANDed",
            vec![db(
                "{podSelector: {matchLabels: {app: web}, matchExpressions: [{key: app, operator: In, values: [api]}]}}",
            )],
            flow(WEB, DB, Tcp, 5432),
            Deny,
        ),
        row(
            "ipBlock admits an outside address",
            vec![db("{ipBlock: {cidr: 203.0.113.0/24}}")],
            flow(OUTSIDE, DB, Tcp, 5432),
            Allow,
        ),
        row(
            "ipBlock except",
            vec![db(
                "{ipBlock: {cidr: 203.0.113.0/24, except: [203.0.113.8/29]}}",
            )],
            flow(OUTSIDE, DB, Tcp, 5432),
            Deny,
        ),
        row(
            "ipBlock matches pod IPs too",
            vec![db("{ipBlock: {cidr: 10.0.2.0/24}}")],
            flow(DEV_TOOL, DB, Tcp, 5432),
            Allow,
        ),
        row(
            "pod selectors never match outside addresses",
            vec![db("{namespaceSelector: {}}")],
            flow(OUTSIDE, DB, Tcp, 5432),
            Deny,
        ),
        row(
            "egress ipBlock",
            vec![policy(
                "prod",
                "e",
                "podSelector: {matchLabels: {app: api}}\npolicyTypes: [Egress]\negress: [{to: [{ipBlock: {cidr: 203.0.113.0/24}}], ports: [{port: 443}]}]",
            )],
            flow(API, OUTSIDE, Tcp, 443),
            Allow,
        ),
        row(
            "egress podSelector towards another namespace needs namespaceSelector",
            vec![policy(
                "prod",
                "e",
                "podSelector: {matchLabels: {app: api}}\npolicyTypes: [Egress]\negress: [{to: [{podSelector: {matchLabels: {app: web}}}]}]",
            )],
            flow(API, DEV_WEB, Tcp, 80),
            Deny,
        ),
    ]);
}

#[test]
fn ports_and_protocols() {
    use Decision::{Allow, Deny};
    let db = |ports: &str| {
        policy(
            "prod",
            "db",
            &format!("podSelector: {{matchLabels: {{app: db}}}}\ningress: [{{ports: [{ports}]}}]"),
        )
    };
    check_rows(vec![
        row(
            "protocol defaults to TCP",
            vec![db("{port: 5432}")],
            flow(API, DB, Tcp, 5432),
            Allow,
        ),
        row(
            "default TCP does not admit UDP",
            vec![db("{port: 5432}")],
            flow(API, DB, Udp, 5432),
            Deny,
        ),
        row(
            "UDP",
            vec![db("{protocol: UDP, port: 53}")],
            flow(API, DB, Udp, 53),
            Allow,
        ),
        row(
            "SCTP",
            vec![db("{protocol: SCTP, port: 36412}")],
            flow(API, DB, Sctp, 36412),
            Allow,
        ),
        row(
            "other port denied",
            vec![db("{port: 5432}")],
            flow(API, DB, Tcp, 5433),
            Deny,
        ),
        row(
            "endPort range start",
            vec![db("{port: 32000, endPort: 32768}")],
            flow(API, DB, Tcp, 32000),
            Allow,
        ),
        row(
            "endPort range end (inclusive)",
            vec![db("{port: 32000, endPort: 32768}")],
            flow(API, DB, Tcp, 32768),
            Allow,
        ),
        row(
            "endPort range above",
            vec![db("{port: 32000, endPort: 32768}")],
            flow(API, DB, Tcp, 32769),
            Deny,
        ),
        row(
            "protocol without port: every port",
            vec![db("{protocol: UDP}")],
            flow(API, DB, Udp, 1234),
            Allow,
        ),
        row(
            "rule with ports never admits ICMP",
            vec![db("{protocol: TCP}")],
            flow(API, DB, Icmp, 0),
            Deny,
        ),
        row(
            "rule without ports admits ICMP",
            vec![policy(
                "prod",
                "db",
                "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{podSelector: {}}]}]",
            )],
            flow(API, DB, Icmp, 0),
            Allow,
        ),
    ]);
}

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
fn hosts_are_not_applicable() {
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
    for (src, dst) in [
        ("192.168.1.10", API),
        (API, "192.168.1.10"),
        ("192.168.1.11", DB),
        (DB, "192.168.1.11"),
    ] {
        let verdict = evaluate(&state, &flow(src, dst, Tcp, 10250));
        assert_eq!(verdict.verdict, Decision::NotApplicable, "{src} -> {dst}");
        assert_eq!(verdict.egress.verdict, Decision::NotApplicable);
    }
    // A hostNetwork pod is its node.
    let verdict = evaluate(&state, &flow(API, "192.168.1.11", Tcp, 10250));
    assert_eq!(
        verdict.destination,
        evaluate::EndpointKind::Host {
            node: Some("node-1".into())
        }
    );
    // Outside to outside: no pod at either end.
    let verdict = evaluate(&state, &flow(OUTSIDE, "198.51.100.1", Tcp, 80));
    assert_eq!(verdict.verdict, Decision::NotApplicable);
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
    assert_eq!(allowed.verdict, Decision::Allow);
    assert!(allowed.ingress.isolated);
    assert_eq!(allowed.ingress.pod.as_deref(), Some("prod/db"));
    assert_eq!(
        allowed.ingress.allowed_by,
        vec![evaluate::RuleRef {
            policy: "prod/db".into(),
            rule: 1
        }]
    );
    assert_eq!(
        allowed.ingress.isolating_policies,
        [Name::from("prod/db"), Name::from("prod/deny")]
    );
    assert!(!allowed.egress.isolated);

    let denied = evaluate(&state, &flow(API, DB, Tcp, 22));
    assert_eq!(denied.verdict, Decision::Deny);
    assert!(denied.ingress.allowed_by.is_empty());
    assert_eq!(
        denied.ingress.isolating_policies,
        [Name::from("prod/db"), Name::from("prod/deny")]
    );
}

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
fn services_are_judged_per_backend() {
    // db and web back the service (ready); 10.0.1.9 is not ready.
    let allow_db_only = policy(
        "prod",
        "p",
        "podSelector: {matchLabels: {app: db}}\ningress: [{ports: [{port: 15432}]}]",
    );
    let state = cluster(&(base() + SERVICE + &allow_db_only));
    let verdict = evaluate(&state, &flow(API, "10.96.0.10", Tcp, 5432));
    assert_eq!(verdict.backends.len(), 2, "{verdict:#?}");
    assert!(verdict.backends.iter().all(|b| b.port == 15432));
    // db is isolated and admits 15432; web is not isolated: both allow.
    assert_eq!(verdict.verdict, Decision::Allow);
    assert!(!verdict.backends_disagree);
    assert!(matches!(
        verdict.destination,
        evaluate::EndpointKind::Service { .. }
    ));

    // Isolate web without admitting the port: the backends disagree.
    let deny_web = policy(
        "prod",
        "w",
        "podSelector: {matchLabels: {app: web}}\ningress: []",
    );
    let state = cluster(&(base() + SERVICE + &allow_db_only + &deny_web));
    let verdict = evaluate(&state, &flow(API, "10.96.0.10", Tcp, 5432));
    assert!(verdict.backends_disagree);
    assert_eq!(verdict.verdict, Decision::Deny);
    let by_ip = |ip: &str| {
        verdict
            .backends
            .iter()
            .find(|b| b.ip.to_string() == ip)
            .map(|b| b.verdict)
    };
    assert_eq!(by_ip(DB), Some(Decision::Allow));
    assert_eq!(by_ip(WEB), Some(Decision::Deny));

    // A port the service does not expose.
    let verdict = evaluate(&state, &flow(API, "10.96.0.10", Tcp, 80));
    assert_eq!(verdict.verdict, Decision::NotApplicable);
}

#[test]
fn invalid_policies_are_rejected_with_object_and_field_and_others_still_apply() {
    let cases = [
        (
            "ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]",
            "spec.ingress[0].from[0].ipBlock.cidr",
        ),
        (
            "ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}]}]",
            "spec.ingress[0].from[0].ipBlock.except[0]",
        ),
        (
            "ingress: [{from: [{podSelector: {matchExpressions: [{key: a, operator: Equals, values: [b]}]}}]}]",
            "spec.ingress[0].from[0].podSelector.matchExpressions[0]",
        ),
        (
            "ingress: [{from: [{podSelector: {matchExpressions: [{key: a, operator: In}]}}]}]",
            "spec.ingress[0].from[0].podSelector.matchExpressions[0]",
        ),
        (
            "ingress: [{ports: [{port: 70000}]}]",
            "spec.ingress[0].ports[0].port",
        ),
        (
            "ingress: [{ports: [{port: 0}]}]",
            "spec.ingress[0].ports[0].port",
        ),
        (
            "ingress: [{ports: [{port: http, endPort: 90}]}]",
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            "ingress: [{ports: [{port: 90, endPort: 80}]}]",
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            "ingress: [{ports: [{protocol: ICMP}]}]",
            "spec.ingress[0].ports[0].protocol",
        ),
        (
            "ingress: [{ports: [{port: \"80\"}]}]",
            "spec.ingress[0].ports[0].port",
        ),
        ("egress: [{to: [{}]}]", "spec.egress[0].to[0]"),
        (
            "egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]",
            "spec.egress[0].to[0].ipBlock",
        ),
        ("policyTypes: [Ingress, Sideways]", "spec.policyTypes[1]"),
        (
            "ingress: [{from: [{podSelector: {matchLabels: {app: \"a b\"}}}]}]",
            "spec.ingress[0].from[0].podSelector.matchLabels.app",
        ),
        (
            "ingress: [{from: [{podSelector: {matchLabels: {\"bad key!\": x}}}]}]",
            "spec.ingress[0].from[0].podSelector.matchLabels",
        ),
        (
            "ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: \"-x\", operator: Exists}]}}]}]",
            "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0]",
        ),
    ];
    for (spec, field) in cases {
        let mut manifests = Manifests::default();
        let mut errors = Vec::new();
        let yaml = base()
            + &policy("prod", "bad", &format!("podSelector: {{}}\n{spec}"))
            + &policy(
                "prod",
                "good",
                "podSelector: {matchLabels: {app: db}}\ningress: []",
            );
        parse_file(Path::new("test.yaml"), &yaml, &mut manifests, &mut errors);
        assert!(errors.is_empty(), "{spec}: {errors:?}");
        let (state, errors) = manifests.into_cluster();
        assert_eq!(errors.len(), 1, "{spec}: {errors:?}");
        let PolicyError::Invalid {
            object, field: got, ..
        } = &state.policy_errors()["prod/bad"];
        assert_eq!(object, "NetworkPolicy prod/bad", "{spec}");
        assert_eq!(got, field, "{spec}");
        assert!(errors[0].to_string().contains(field), "{}", errors[0]);
        // The valid policy applies; the invalid one does not.
        assert_eq!(
            evaluate(&state, &flow(API, DB, Tcp, 1)).verdict,
            Decision::Deny,
            "{spec}"
        );
        assert_eq!(
            evaluate(&state, &flow(API, WEB, Tcp, 1)).verdict,
            Decision::Allow,
            "{spec}"
        );
    }
}

#[test]
fn incremental_updates_flip_verdicts() {
    let mut state = cluster(
        &(base()
            + &policy(
                "prod",
                "db",
                "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{namespaceSelector: {matchLabels: {team: data}}}]}]",
            )),
    );
    let from_dev = flow(DEV_TOOL, DB, Tcp, 5432);
    assert_eq!(evaluate(&state, &from_dev).verdict, Decision::Deny);
    // A namespace label change flips the verdict.
    let relabelled: k8s_openapi::api::core::v1::Namespace = serde_json::from_str(
        r#"{"metadata": {"name": "dev", "labels": {"env": "dev", "team": "data"}}}"#,
    )
    .expect("json");
    state.upsert_namespace(&relabelled);
    assert_eq!(evaluate(&state, &from_dev).verdict, Decision::Allow);
    // A pod label change moves it out of the policy's selection.
    let moved: k8s_openapi::api::core::v1::Pod = serde_json::from_str(
        r#"{"metadata": {"name": "db", "namespace": "prod", "labels": {"app": "db-v2"}}, "status": {"podIP": "10.0.1.3"}}"#,
    )
    .expect("json");
    state.upsert_pod(&moved);
    assert_eq!(
        evaluate(&state, &flow(API, DB, Tcp, 5432)).verdict,
        Decision::Allow
    );
    // Removing the pod: its IP is outside the cluster now.
    state.delete_pod("prod", "db");
    assert!(matches!(
        evaluate(&state, &from_dev).destination,
        evaluate::EndpointKind::External
    ));
    // Deleting the policy un-isolates.
    state.delete_policy("prod", "db");
    assert!(state.policies().next().is_none());
}

#[test]
fn ip_reuse_resolves_to_the_new_pod_and_finished_pods_leave() {
    let mut state = cluster(&base());
    let new_owner: k8s_openapi::api::core::v1::Pod = serde_json::from_str(
        r#"{"metadata": {"name": "new", "namespace": "dev", "labels": {"app": "new"}}, "status": {"podIP": "10.0.1.3", "phase": "Running"}}"#,
    )
    .expect("json");
    state.upsert_pod(&new_owner);
    let verdict = evaluate(&state, &flow(API, DB, Tcp, 1));
    assert_eq!(
        verdict.destination,
        evaluate::EndpointKind::Pod {
            namespace: "dev".into(),
            name: "new".into()
        }
    );
    // The stale owner's deletion does not unmap the new owner.
    state.delete_pod("prod", "db");
    assert!(matches!(
        evaluate(&state, &flow(API, DB, Tcp, 1)).destination,
        evaluate::EndpointKind::Pod { .. }
    ));
    // A finished pod leaves the index.
    let finished: k8s_openapi::api::core::v1::Pod = serde_json::from_str(
        r#"{"metadata": {"name": "new", "namespace": "dev"}, "status": {"podIP": "10.0.1.3", "phase": "Succeeded"}}"#,
    )
    .expect("json");
    state.upsert_pod(&finished);
    assert_eq!(
        evaluate(&state, &flow(API, DB, Tcp, 1)).destination,
        evaluate::EndpointKind::External
    );
}

#[test]
fn seed_scenario() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/seed-scenario/cluster.yaml"
    ))
    .expect("seed");
    let state = cluster(&text);
    let (serving, monitoring, ingestion, unauthorised) =
        ("10.244.0.11", "10.244.0.12", "10.244.0.13", "10.244.0.15");
    let judge = |src, dst, port| evaluate(&state, &flow(src, dst, Tcp, port)).verdict;
    assert_eq!(judge(monitoring, serving, 8080), Decision::Allow);
    assert_eq!(judge(monitoring, serving, 9090), Decision::Deny);
    assert_eq!(judge(unauthorised, serving, 8080), Decision::Deny);
    assert_eq!(judge(ingestion, "10.0.3.4", 5432), Decision::Allow);
    assert_eq!(judge(ingestion, "10.0.3.4", 6379), Decision::Deny);
    assert_eq!(judge(ingestion, OUTSIDE, 443), Decision::Deny);
    assert_eq!(
        judge(unauthorised, OUTSIDE, 443),
        Decision::Allow,
        "egress not isolated"
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Small random clusters: pods with labels from a tiny alphabet in two
    /// namespaces, and policies built from the rule shapes above.
    fn label() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("{app: a}"),
            Just("{app: b}"),
            Just("{app: a, tier: x}"),
            Just("{}")
        ]
        .prop_map(str::to_owned)
    }

    fn selector() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("{}"),
            Just("{matchLabels: {app: a}}"),
            Just("{matchLabels: {app: b}}"),
            Just("{matchExpressions: [{key: tier, operator: Exists}]}"),
        ]
        .prop_map(str::to_owned)
    }

    fn rule() -> impl Strategy<Value = String> {
        let peer = prop_oneof![
            selector().prop_map(|s| format!("{{podSelector: {s}}}")),
            selector().prop_map(|s| format!("{{namespaceSelector: {s}}}")),
            Just("{ipBlock: {cidr: 10.0.0.0/24}}".to_owned()),
        ];
        let ports = prop_oneof![
            Just(""),
            Just(", ports: [{port: 80}]"),
            Just(", ports: [{protocol: UDP}]")
        ];
        (peer, ports).prop_map(|(peer, ports)| format!("{{from: [{peer}]{ports}}}"))
    }

    fn policies() -> impl Strategy<Value = Vec<(String, Vec<String>, bool)>> {
        // (pod selector, ingress rules, also egress-typed)
        prop::collection::vec(
            (
                selector(),
                prop::collection::vec(rule(), 0..3),
                any::<bool>(),
            ),
            0..4,
        )
    }

    fn render(pod_labels: &[String], policies: &[(String, Vec<String>, bool)]) -> String {
        let mut yaml = namespace("n1", "{env: one}") + &namespace("n2", "{env: two}");
        for (i, labels) in pod_labels.iter().enumerate() {
            let ns = if i.is_multiple_of(2) { "n1" } else { "n2" };
            yaml += &pod(ns, &format!("p{i}"), &format!("10.0.0.{}", i + 1), labels);
        }
        for (i, (selector, rules, egress)) in policies.iter().enumerate() {
            let types = if *egress {
                "[Ingress, Egress]"
            } else {
                "[Ingress]"
            };
            yaml += &policy(
                "n1",
                &format!("pol{i}"),
                &format!(
                    "podSelector: {selector}\npolicyTypes: {types}\ningress: [{}]",
                    rules.join(", ")
                ),
            );
        }
        yaml
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn adding_an_allow_rule_never_turns_allow_into_deny(
            pod_labels in prop::collection::vec(label(), 2..6),
            policies in policies(),
            extra in rule(),
            target in 0usize..4,
            src in 0usize..6,
            dst in 0usize..6,
            udp in any::<bool>(),
        ) {
            let count = pod_labels.len();
            let before = cluster(&render(&pod_labels, &policies));
            let mut widened = policies.clone();
            if let Some(policy) = widened.get_mut(target % policies.len().max(1)) {
                policy.1.push(extra);
            }
            let after = cluster(&render(&pod_labels, &widened));
            let query = flow(&format!("10.0.0.{}", src % count + 1), &format!("10.0.0.{}", dst % count + 1), if udp { Udp } else { Tcp }, 80);
            if evaluate(&before, &query).verdict == Decision::Allow {
                prop_assert_eq!(evaluate(&after, &query).verdict, Decision::Allow);
            }
        }

        #[test]
        fn a_pod_no_policy_selects_is_never_isolated(
            pod_labels in prop::collection::vec(label(), 2..6),
            policies in policies(),
            src in 0usize..6,
            dst in 0usize..6,
        ) {
            let count = pod_labels.len();
            let state = cluster(&render(&pod_labels, &policies));
            let (src, dst) = (src % count, dst % count);
            let verdict = evaluate(&state, &flow(&format!("10.0.0.{}", src + 1), &format!("10.0.0.{}", dst + 1), Tcp, 80));
            let selected = |i: usize| {
                let pod = state.pod(if i.is_multiple_of(2) { "n1" } else { "n2" }, &format!("p{i}")).expect("pod");
                state.policies().any(|p| *p.namespace == *pod.namespace && p.pod_selector.matches(&pod.labels))
            };
            if !selected(dst) {
                prop_assert!(!verdict.ingress.isolated);
            }
            if !selected(src) {
                prop_assert!(!verdict.egress.isolated);
            }
        }
    }
}

#[test]
fn the_namespace_name_label_cannot_be_forged() {
    let yaml = base()
        + &namespace("forged", "{kubernetes.io/metadata.name: prod}")
        + &pod("forged", "x", "10.0.9.1", "{app: x}")
        + &policy(
            "prod",
            "db",
            "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: prod}}}]}]",
        );
    let state = cluster(&yaml);
    assert_eq!(
        evaluate(&state, &flow("10.0.9.1", DB, Tcp, 5432)).verdict,
        Decision::Deny
    );
    assert_eq!(
        evaluate(&state, &flow(API, DB, Tcp, 5432)).verdict,
        Decision::Allow
    );
}

#[test]
fn named_ports_ignore_ordinary_init_containers() {
    let yaml = base()
        + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: s, namespace: prod, labels: {app: s}}\n\
           spec: {initContainers: [{name: setup, image: i, ports: [{name: metrics, containerPort: 9090}]},\n\
                                   {name: proxy, image: i, restartPolicy: Always, ports: [{name: proxy, containerPort: 15001}]}],\n\
                  containers: [{name: c, image: i}]}\nstatus: {podIP: 10.0.1.50}\n"
        + &policy(
            "prod",
            "s",
            "podSelector: {matchLabels: {app: s}}\ningress: [{ports: [{port: metrics}, {port: proxy}]}]",
        );
    let state = cluster(&yaml);
    assert_eq!(
        evaluate(&state, &flow(API, "10.0.1.50", Tcp, 9090)).verdict,
        Decision::Deny
    );
    assert_eq!(
        evaluate(&state, &flow(API, "10.0.1.50", Tcp, 15001)).verdict,
        Decision::Allow,
        "sidecars count"
    );
}

#[test]
fn a_stale_update_of_the_old_owner_does_not_steal_a_reused_ip() {
    let mut state = cluster(&base());
    let pod = |json: &str| -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_str(json).expect("json")
    };
    // db (10.0.1.3) is being deleted; a new pod takes its IP.
    state.upsert_pod(&pod(
        r#"{"metadata": {"name": "db", "namespace": "prod", "creationTimestamp": "2026-01-01T00:00:00Z",
            "deletionTimestamp": "2026-01-02T00:00:00Z", "labels": {"app": "db"}}, "status": {"podIP": "10.0.1.3", "phase": "Running"}}"#,
    ));
    state.upsert_pod(&pod(
        r#"{"metadata": {"name": "web-2", "namespace": "prod", "creationTimestamp": "2026-01-02T00:00:05Z", "labels": {"app": "web"}},
            "status": {"podIP": "10.0.1.3", "phase": "Running"}}"#,
    ));
    // A late status update of the old owner arrives.
    state.upsert_pod(&pod(
        r#"{"metadata": {"name": "db", "namespace": "prod", "creationTimestamp": "2026-01-01T00:00:00Z",
            "deletionTimestamp": "2026-01-02T00:00:00Z", "labels": {"app": "db"}}, "status": {"podIP": "10.0.1.3", "phase": "Running"}}"#,
    ));
    let owner = || evaluate(&state, &flow(API, DB, Tcp, 1)).destination;
    let web2 = evaluate::EndpointKind::Pod {
        namespace: "prod".into(),
        name: "web-2".into(),
    };
    assert_eq!(owner(), web2);
    // Then its deletion: the IP stays with the new pod.
    state.delete_pod("prod", "db");
    assert_eq!(evaluate(&state, &flow(API, DB, Tcp, 1)).destination, web2);
    // And when the new pod goes, nobody holds it.
    state.delete_pod("prod", "web-2");
    assert_eq!(
        evaluate(&state, &flow(API, DB, Tcp, 1)).destination,
        evaluate::EndpointKind::External
    );
}
