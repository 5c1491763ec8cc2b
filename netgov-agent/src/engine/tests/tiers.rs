//! The cluster-wide tiers around NetworkPolicy, rows written from the
//! network-policy-api documentation (ClusterNetworkPolicy v1alpha2 and
//! AdminNetworkPolicy / BaselineAdminNetworkPolicy v1alpha1): tier order,
//! priority and rule order, Pass in each tier, Accept against a
//! NetworkPolicy deny, Baseline for pods no NetworkPolicy selects, node
//! and network peers, port ranges, named ports, unknown fields failing
//! closed.

use crate::sources::manifests;
use proptest::prelude::*;

use super::*;

/// A ClusterNetworkPolicy.
fn cnp(name: &str, tier: &str, priority: u32, spec: &str) -> String {
    let spec = spec.replace('\n', "\n  ");
    format!(
        "---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {{name: {name}}}\nspec:\n  tier: {tier}\n  priority: {priority}\n  {spec}\n"
    )
}

/// Every pod of `prod` is a subject.
const PROD: &str = "subject: {namespaces: {matchLabels: {env: prod}}}";
const NODE_IP: &str = "192.168.1.10";
/// `prod/pg` (app=pg) names its port 5432 `postgres`.
const PG: &str = "10.0.1.4";

/// The base cluster plus a node (role=cp) and `prod/pg`.
fn extras() -> String {
    format!(
        "---\napiVersion: v1\nkind: Node\nmetadata: {{name: cp-1, labels: {{role: cp}}}}\nstatus: {{addresses: [{{type: InternalIP, address: {NODE_IP}}}]}}\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata: {{name: pg, namespace: prod, labels: {{app: pg}}}}\n\
         spec: {{containers: [{{name: c, image: i, ports: [{{name: postgres, containerPort: 5432}}]}}]}}\nstatus: {{podIP: {PG}}}\n"
    )
}

fn deny_db_ingress() -> String {
    policy(
        "prod",
        "db-deny",
        "podSelector: {matchLabels: {app: db}}\npolicyTypes: [Ingress]",
    )
}

fn allow_db_from_api() -> String {
    policy(
        "prod",
        "db-api",
        "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{podSelector: {matchLabels: {app: api}}}]}]",
    )
}

#[test]
fn tiers_decide_in_order() {
    let rows = vec![
        row(
            "Admin Deny wins over a NetworkPolicy allow",
            vec![
                allow_db_from_api(),
                cnp(
                    "guard",
                    "Admin",
                    10,
                    &format!(
                        "{PROD}\ningress: [{{name: no-api, action: Deny, from: [{{pods: {{podSelector: {{matchLabels: {{app: api}}}}}}}}]}}]"
                    ),
                ),
            ],
            flow(API, DB, Tcp, 5432),
            "deny | egress: open | ingress: deny by admin [ClusterNetworkPolicy guard rule no-api] skipping [prod/db-api]",
        ),
        row(
            "Admin Accept wins over a NetworkPolicy deny",
            vec![
                deny_db_ingress(),
                cnp(
                    "open",
                    "Admin",
                    10,
                    &format!("{PROD}\ningress: [{{action: Accept, from: [{{namespaces: {{}}}}]}}]"),
                ),
            ],
            flow(API, DB, Tcp, 5432),
            "allow | egress: open | ingress: allow by admin [ClusterNetworkPolicy open rule #0] skipping [prod/db-deny]",
        ),
        row(
            "Admin Pass hands the decision to the NetworkPolicy",
            vec![
                deny_db_ingress(),
                cnp(
                    "pass",
                    "Admin",
                    10,
                    &format!(
                        "{PROD}\ningress: [{{action: Pass, from: [{{namespaces: {{}}}}]}}, {{action: Accept, from: [{{namespaces: {{}}}}]}}]"
                    ),
                ),
            ],
            flow(API, DB, Tcp, 5432),
            "deny | egress: open | ingress: denied by [prod/db-deny]",
        ),
        row(
            "Admin Pass with no NetworkPolicy: Baseline decides",
            vec![
                cnp(
                    "pass",
                    "Admin",
                    10,
                    &format!("{PROD}\ningress: [{{action: Pass, from: [{{namespaces: {{}}}}]}}]"),
                ),
                cnp(
                    "default-deny",
                    "Baseline",
                    0,
                    &format!("{PROD}\ningress: [{{action: Deny, from: [{{namespaces: {{}}}}]}}]"),
                ),
            ],
            flow(API, DB, Tcp, 5432),
            "deny | egress: open | ingress: deny by baseline [ClusterNetworkPolicy default-deny rule #0]",
        ),
        row(
            "Baseline Deny does not apply to a pod a NetworkPolicy selects",
            vec![
                allow_db_from_api(),
                cnp(
                    "default-deny",
                    "Baseline",
                    0,
                    &format!("{PROD}\ningress: [{{action: Deny, from: [{{namespaces: {{}}}}]}}]"),
                ),
            ],
            flow(API, DB, Tcp, 5432),
            "allow | egress: open | ingress: allowed by [prod/db-api#0]",
        ),
        row(
            "Baseline Pass goes to the default: allow",
            vec![cnp(
                "pass",
                "Baseline",
                0,
                &format!(
                    "{PROD}\ningress: [{{action: Pass, from: [{{namespaces: {{}}}}]}}, {{action: Deny, from: [{{namespaces: {{}}}}]}}]"
                ),
            )],
            flow(API, DB, Tcp, 5432),
            "allow | egress: open | ingress: open",
        ),
        row(
            "lower priority value first",
            vec![
                cnp(
                    "late",
                    "Admin",
                    10,
                    &format!("{PROD}\ningress: [{{action: Accept, from: [{{namespaces: {{}}}}]}}]"),
                ),
                cnp(
                    "early",
                    "Admin",
                    5,
                    &format!("{PROD}\ningress: [{{action: Deny, from: [{{namespaces: {{}}}}]}}]"),
                ),
            ],
            flow(API, DB, Tcp, 5432),
            "deny | egress: open | ingress: deny by admin [ClusterNetworkPolicy early rule #0]",
        ),
        row(
            "rules in written order: the first match decides",
            vec![cnp(
                "ordered",
                "Admin",
                1,
                &format!(
                    "{PROD}\ningress: [{{action: Accept, from: [{{pods: {{podSelector: {{matchLabels: {{app: api}}}}}}}}]}}, {{action: Deny, from: [{{namespaces: {{}}}}]}}]"
                ),
            )],
            flow(API, DB, Tcp, 5432),
            "allow | egress: open | ingress: allow by admin [ClusterNetworkPolicy ordered rule #0]",
        ),
        row(
            "rules in written order: the next rule for another peer",
            vec![cnp(
                "ordered",
                "Admin",
                1,
                &format!(
                    "{PROD}\ningress: [{{action: Accept, from: [{{pods: {{podSelector: {{matchLabels: {{app: api}}}}}}}}]}}, {{action: Deny, from: [{{namespaces: {{}}}}]}}]"
                ),
            )],
            flow(WEB, DB, Tcp, 5432),
            "deny | egress: open | ingress: deny by admin [ClusterNetworkPolicy ordered rule #1]",
        ),
        row(
            "an egress Accept ends egress only: the destination's ingress still applies",
            vec![
                deny_db_ingress(),
                cnp(
                    "out",
                    "Admin",
                    1,
                    &format!("{PROD}\negress: [{{action: Accept, to: [{{namespaces: {{}}}}]}}]"),
                ),
            ],
            flow(API, DB, Tcp, 5432),
            "deny | egress: allow by admin [ClusterNetworkPolicy out rule #0] | ingress: denied by [prod/db-deny]",
        ),
        row(
            "a subject selector that does not match leaves the pod alone",
            vec![cnp(
                "dev-only",
                "Admin",
                1,
                "subject: {namespaces: {matchLabels: {env: dev}}}\ningress: [{action: Deny, from: [{namespaces: {}}]}]",
            )],
            flow(API, DB, Tcp, 5432),
            "allow | egress: open | ingress: open",
        ),
        row(
            "pods subject: namespaceSelector and podSelector together",
            vec![cnp(
                "db-only",
                "Admin",
                1,
                "subject: {pods: {namespaceSelector: {matchLabels: {env: prod}}, podSelector: {matchLabels: {app: db}}}}\ningress: [{action: Deny, from: [{namespaces: {}}]}]",
            )],
            flow(API, WEB, Tcp, 80),
            "allow | egress: open | ingress: open",
        ),
    ];
    check_tier_rows(rows);
}

#[test]
fn peers_and_ports() {
    let rows = vec![
        row(
            "port range, inclusive end",
            vec![cnp("range", "Admin", 1, &format!("{PROD}\ningress: [{{action: Deny, from: [{{namespaces: {{}}}}], protocols: [{{tcp: {{destinationPort: {{range: {{start: 5000, end: 5432}}}}}}}}]}}]"))],
            flow(API, DB, Tcp, 5432),
            "deny | egress: open | ingress: deny by admin [ClusterNetworkPolicy range rule #0]",
        ),
        row(
            "port range, one above",
            vec![cnp("range", "Admin", 1, &format!("{PROD}\ningress: [{{action: Deny, from: [{{namespaces: {{}}}}], protocols: [{{tcp: {{destinationPort: {{range: {{start: 5000, end: 5432}}}}}}}}]}}]"))],
            flow(API, DB, Tcp, 5433),
            "allow | egress: open | ingress: open",
        ),
        row(
            "the protocol must match too",
            vec![cnp("udp", "Admin", 1, &format!("{PROD}\ningress: [{{action: Deny, from: [{{namespaces: {{}}}}], protocols: [{{udp: {{destinationPort: {{number: 5432}}}}}}]}}]"))],
            flow(API, DB, Tcp, 5432),
            "allow | egress: open | ingress: open",
        ),
        row(
            "a named port resolves on the destination pod",
            vec![cnp("named", "Admin", 1, &format!("{PROD}\ningress: [{{action: Deny, from: [{{namespaces: {{}}}}], protocols: [{{destinationNamedPort: postgres}}]}}]"))],
            flow(API, PG, Tcp, 5432),
            "deny | egress: open | ingress: deny by admin [ClusterNetworkPolicy named rule #0]",
        ),
        row(
            "a pod without the named port does not match",
            vec![cnp("named", "Admin", 1, &format!("{PROD}\ningress: [{{action: Deny, from: [{{namespaces: {{}}}}], protocols: [{{destinationNamedPort: postgres}}]}}]"))],
            flow(API, DB, Tcp, 5432),
            "allow | egress: open | ingress: open",
        ),
        row(
            "networks peer: outside the cluster",
            vec![cnp("no-net", "Admin", 1, &format!("{PROD}\negress: [{{action: Deny, to: [{{networks: [203.0.113.0/24]}}]}}]"))],
            flow(API, OUTSIDE, Tcp, 443),
            "deny | egress: deny by admin [ClusterNetworkPolicy no-net rule #0] | ingress: n/a",
        ),
        row(
            "networks peer: pods inside it match too, ICMP included",
            vec![cnp("no-net", "Admin", 1, &format!("{PROD}\negress: [{{action: Deny, to: [{{networks: [10.0.1.0/24]}}]}}]"))],
            flow(API, DB, Icmp, 0),
            "deny | egress: deny by admin [ClusterNetworkPolicy no-net rule #0] | ingress: open",
        ),
        row(
            "nodes peer: a pod's traffic to a matching node",
            vec![cnp("no-cp", "Admin", 1, &format!("{PROD}\negress: [{{action: Deny, to: [{{nodes: {{matchLabels: {{role: cp}}}}}}]}}]"))],
            flow(API, NODE_IP, Tcp, 6443),
            "deny | egress: deny by admin [ClusterNetworkPolicy no-cp rule #0] | ingress: n/a",
        ),
        row(
            "nodes peer that does not match: a pod's traffic to a node that no rule denies is allowed",
            vec![cnp("no-workers", "Admin", 1, &format!("{PROD}\negress: [{{action: Deny, to: [{{nodes: {{matchLabels: {{role: worker}}}}}}]}}]"))],
            flow(API, NODE_IP, Tcp, 6443),
            "allow | egress: open | ingress: n/a",
        ),
        row(
            "node traffic of a pod a NetworkPolicy selects: Baseline is not reached, allowed",
            vec![
                policy("prod", "api-out", "podSelector: {matchLabels: {app: api}}\npolicyTypes: [Egress]\negress: [{}]"),
                cnp("no-nodes", "Baseline", 1, &format!("{PROD}\negress: [{{action: Deny, to: [{{nodes: {{}}}}]}}]")),
            ],
            flow(API, NODE_IP, Tcp, 6443),
            "allow | egress: open | ingress: n/a",
        ),
        row(
            "node traffic of a pod no NetworkPolicy selects: a Baseline Deny decides",
            vec![cnp("no-nodes", "Baseline", 1, &format!("{PROD}\negress: [{{action: Deny, to: [{{nodes: {{}}}}]}}]"))],
            flow(API, NODE_IP, Tcp, 6443),
            "deny | egress: deny by baseline [ClusterNetworkPolicy no-nodes rule #0] | ingress: n/a",
        ),
        row(
            "a pod's traffic to itself: an Admin Deny of everything does not apply",
            vec![cnp("lockdown", "Admin", 1, &format!("{PROD}\negress: [{{action: Deny, to: [{{networks: [0.0.0.0/0]}}]}}]\ningress: [{{action: Deny, from: [{{namespaces: {{}}}}]}}]"))],
            flow(API, API, Tcp, 8080),
            "allow | egress: open | ingress: open",
        ),
        row(
            "a pod's traffic to itself: a Baseline Deny does not apply",
            vec![cnp("quiet", "Baseline", 1, &format!("{PROD}\ningress: [{{action: Deny, from: [{{namespaces: {{}}}}]}}]"))],
            flow(DB, DB, Udp, 53),
            "allow | egress: open | ingress: open",
        ),
        row(
            "an unknown peer in an Accept rule matches nothing",
            vec![
                deny_db_ingress(),
                cnp("future", "Admin", 1, &format!("{PROD}\ningress: [{{action: Accept, from: [{{serviceAccounts: {{name: x}}}}]}}]")),
            ],
            flow(API, DB, Tcp, 5432),
            "deny | egress: open | ingress: denied by [prod/db-deny]",
        ),
        row(
            "an unknown peer in a Deny rule matches everything",
            vec![
                allow_db_from_api(),
                cnp("future", "Admin", 1, &format!("{PROD}\ningress: [{{action: Deny, from: [{{serviceAccounts: {{name: x}}}}]}}]")),
            ],
            flow(API, DB, Tcp, 5432),
            "deny | egress: open | ingress: deny by admin [ClusterNetworkPolicy future rule #0] skipping [prod/db-api]",
        ),
        row(
            "domainNames: no names known, no match",
            vec![cnp("names", "Admin", 1, &format!("{PROD}\negress: [{{action: Accept, to: [{{domainNames: [\"*.example.com\"]}}]}}, {{action: Deny, to: [{{networks: [0.0.0.0/0]}}]}}]"))],
            flow(API, OUTSIDE, Tcp, 443),
            "deny | egress: deny by admin [ClusterNetworkPolicy names rule #1] | ingress: n/a",
        ),
        row(
            "v1alpha1 AdminNetworkPolicy: Allow is Accept, ports as portNumber",
            vec![
                deny_db_ingress(),
                "---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: anp}\nspec:\n  priority: 3\n  subject: {namespaces: {}}\n  ingress: [{name: api-pg, action: Allow, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: api}}}}], ports: [{portNumber: {protocol: TCP, port: 5432}}]}]\n".into(),
            ],
            flow(API, DB, Tcp, 5432),
            "allow | egress: open | ingress: allow by admin [AdminNetworkPolicy anp rule api-pg] skipping [prod/db-deny]",
        ),
        row(
            "v1alpha1 BaselineAdminNetworkPolicy is the Baseline tier",
            vec!["---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\nmetadata: {name: default}\nspec:\n  subject: {namespaces: {}}\n  ingress: [{action: Deny, from: [{namespaces: {}}], ports: [{portRange: {start: 5000, end: 6000}}]}]\n".into()],
            flow(API, DB, Tcp, 5432),
            "deny | egress: open | ingress: deny by baseline [BaselineAdminNetworkPolicy default rule #0]",
        ),
    ];
    check_tier_rows(rows);
}

fn check_tier_rows(rows: Vec<Row>) {
    let rows = rows
        .into_iter()
        .map(|mut row| {
            row.policies.insert(0, extras());
            row
        })
        .collect();
    check_rows(rows);
}

#[test]
fn explanations_name_the_deciding_rule_and_what_is_unknown() {
    let state = cluster(
        &(base()
            + &cnp(
                "a",
                "Admin",
                7,
                &format!(
                    "{PROD}\ningress: [{{name: deny-all, action: Deny, from: [{{namespaces: {{}}}}]}}]"
                ),
            )
            + &cnp(
                "b",
                "Admin",
                7,
                &format!("{PROD}\ningress: [{{action: Accept, from: [{{namespaces: {{}}}}]}}]"),
            )
            + &cnp(
                "names",
                "Admin",
                9,
                &format!(
                    "{PROD}\negress: [{{action: Accept, to: [{{domainNames: [models.example.com]}}]}}]"
                ),
            )),
    );
    let verdict = evaluate(&state, &flow(API, DB, Tcp, 5432));
    assert_eq!(
        verdict.ingress.reason,
        "Deny by the admin tier: ClusterNetworkPolicy a (priority 7), rule deny-all; ClusterNetworkPolicy b share its priority and act differently (implementation-defined which applies)"
    );
    let verdict = evaluate(&state, &flow(API, OUTSIDE, Tcp, 443));
    assert_eq!(
        verdict.egress.reason,
        "no policy isolates the pod in this direction (ClusterNetworkPolicy names rule #0 names domains; no names are known for the destination, so it did not match)"
    );
    assert_eq!(
        state.cluster_policy_warnings(),
        [
            "ClusterNetworkPolicy a, ClusterNetworkPolicy b share admin priority 7: where their rules overlap, which applies is implementation-defined"
        ]
    );
}

#[test]
fn invalid_cluster_policies_name_object_and_field() {
    let rows = [
        (
            "tier: Middle\npriority: 1\nsubject: {namespaces: {}}",
            "spec.tier",
        ),
        (
            "tier: Admin\npriority: 1001\nsubject: {namespaces: {}}",
            "spec.priority",
        ),
        ("tier: Admin\npriority: 1\nsubject: {}", "spec.subject"),
        (
            "tier: Admin\npriority: 1\nsubject: {namespaces: {}}\ningress: [{action: Allow, from: [{namespaces: {}}]}]",
            "spec.ingress[0].action",
        ),
        (
            "tier: Admin\npriority: 1\nsubject: {namespaces: {}}\negress: [{action: Deny, to: []}]",
            "spec.egress[0].to",
        ),
        (
            "tier: Admin\npriority: 1\nsubject: {namespaces: {}}\negress: [{action: Deny, to: [{networks: [10.0.0.0/33]}]}]",
            "spec.egress[0].to[0].networks[0]",
        ),
        (
            "tier: Admin\npriority: 1\nsubject: {namespaces: {}}\negress: [{action: Deny, to: [{domainNames: [example.com]}]}]",
            "spec.egress[0].to",
        ),
        (
            "tier: Admin\npriority: 1\nsubject: {namespaces: {}}\ningress: [{action: Deny, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {range: {start: 90, end: 80}}}}]}]",
            "spec.ingress[0].protocols[0].tcp.destinationPort.range",
        ),
        (
            "tier: Admin\npriority: 1\nsubject: {namespaces: {}}\ningress: [{action: Deny, from: [{namespaces: {matchLabels: {\"bad key!\": x}}}]}]",
            "spec.ingress[0].from[0].namespaces",
        ),
    ];
    for (spec, field) in rows {
        let yaml = format!(
            "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {{name: bad}}\nspec:\n  {}\n",
            spec.replace('\n', "\n  ")
        );
        let mut manifests = manifests::Manifests::default();
        let mut errors = Vec::new();
        manifests::parse_file(Path::new("cnp.yaml"), &yaml, &mut manifests, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let (state, errors) = manifests.into_cluster();
        let message = errors
            .first()
            .unwrap_or_else(|| panic!("{field}: accepted"))
            .to_string();
        assert!(
            message.starts_with("cnp.yaml: ClusterNetworkPolicy bad: ") && message.contains(field),
            "{field}: {message}"
        );
        assert_eq!(state.cluster_policies().count(), 0);
        assert_eq!(state.cluster_policy_errors().len(), 1);
    }
}

#[test]
fn domain_names_match_exactly_or_by_leading_labels() {
    for (pattern, name, expected) in [
        ("example.com", "example.com", true),
        ("example.com", "www.example.com", false),
        ("*.example.com", "www.example.com", true),
        ("*.example.com", "a.b.example.com", true),
        ("*.example.com", "example.com", false),
        ("*.example.com", "badexample.com", false),
        ("kubernetes.io", "Kubernetes.IO.", true),
    ] {
        assert_eq!(
            domain_matches_name(pattern, name),
            expected,
            "{pattern} ~ {name}"
        );
    }
}

fn domain_matches_name(pattern: &str, name: &str) -> bool {
    crate::engine::tiers::domain_matches(pattern, &name.to_ascii_lowercase())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A Baseline policy never changes the ingress verdict of a pod a
    /// NetworkPolicy selects for ingress.
    #[test]
    fn baseline_never_overrides_a_selecting_network_policy(
        action in prop_oneof![Just("Accept"), Just("Deny"), Just("Pass")],
        from in prop_oneof![Just("{namespaces: {}}"), Just("{namespaces: {matchLabels: {env: dev}}}"), Just("{pods: {podSelector: {matchLabels: {app: api}}}}")],
        allow_api in any::<bool>(),
        source in prop_oneof![Just(API), Just(WEB), Just(DEV_WEB), Just(OUTSIDE)],
        port in prop_oneof![Just(5432u16), Just(80u16)],
    ) {
        let network_policy = if allow_api { allow_db_from_api() } else { deny_db_ingress() };
        let without = cluster(&(base() + &network_policy));
        let with = cluster(&(base() + &network_policy + &cnp("b", "Baseline", 0, &format!("subject: {{namespaces: {{}}}}\ningress: [{{action: {action}, from: [{from}]}}]"))));
        let query = flow(source, DB, Tcp, port);
        prop_assert_eq!(evaluate(&without, &query).ingress, evaluate(&with, &query).ingress);
    }
}
