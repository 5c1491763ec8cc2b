//! Rule shapes, peers and selectors, ports and protocols: table rows
//! written from the NetworkPolicy documentation, each asserting the
//! whole verdict.

use super::*;

#[test]
fn isolation_and_rule_shapes() {
    let deny_all_ingress = policy("prod", "deny", "podSelector: {}\npolicyTypes: [Ingress]");
    check_rows(vec![
        row(
            "no policy: not isolated",
            vec![],
            flow(API, DB, Tcp, 5432),
            "allow | egress: open | ingress: open",
        ),
        row(
            "default deny ingress",
            vec![deny_all_ingress.clone()],
            flow(API, DB, Tcp, 5432),
            "deny | egress: open | ingress: denied by [prod/deny]",
        ),
        row(
            "a pod's traffic to itself: default deny both ways does not apply",
            vec![policy(
                "prod",
                "deny",
                "podSelector: {}\npolicyTypes: [Ingress, Egress]",
            )],
            flow(API, API, Tcp, 8080),
            "allow | egress: open | ingress: open",
        ),
        row(
            "default deny ingress leaves egress open",
            vec![deny_all_ingress.clone()],
            flow(API, OUTSIDE, Tcp, 443),
            "allow | egress: open | ingress: n/a",
        ),
        row(
            "ingress: [] admits nothing",
            vec![policy("prod", "p", "podSelector: {}\ningress: []")],
            flow(API, DB, Tcp, 5432),
            "deny | egress: open | ingress: denied by [prod/p]",
        ),
        row(
            "ingress: [{}] admits everything",
            vec![
                deny_all_ingress.clone(),
                policy("prod", "all", "podSelector: {}\ningress: [{}]"),
            ],
            flow(DEV_TOOL, DB, Udp, 53),
            "allow | egress: open | ingress: allowed by [prod/all#0]",
        ),
        row(
            "from: [] (empty) admits every source",
            vec![policy(
                "prod",
                "p",
                "podSelector: {}\ningress: [{from: [], ports: [{port: 5432}]}]",
            )],
            flow(OUTSIDE, DB, Tcp, 5432),
            "allow | egress: n/a | ingress: allowed by [prod/p#0]",
        ),
        row(
            "ports: [] (empty) admits every port",
            vec![policy(
                "prod",
                "p",
                "podSelector: {}\ningress: [{from: [{podSelector: {}}], ports: []}]",
            )],
            flow(API, DB, Udp, 9999),
            "allow | egress: open | ingress: allowed by [prod/p#0]",
        ),
        row(
            "policy selecting other pods does not isolate this one",
            vec![policy(
                "prod",
                "p",
                "podSelector: {matchLabels: {app: web}}\ningress: []",
            )],
            flow(API, DB, Tcp, 5432),
            "allow | egress: open | ingress: open",
        ),
        row(
            "policyTypes omitted with egress rules: egress isolated",
            vec![policy(
                "prod",
                "p",
                "podSelector: {matchLabels: {app: api}}\negress: [{to: [{podSelector: {matchLabels: {app: db}}}]}]",
            )],
            flow(API, WEB, Tcp, 80),
            "deny | egress: denied by [prod/p] | ingress: open",
        ),
        row(
            "policyTypes omitted with egress rules: ingress isolated too",
            vec![policy(
                "prod",
                "p",
                "podSelector: {matchLabels: {app: api}}\negress: [{to: [{podSelector: {matchLabels: {app: db}}}]}]",
            )],
            flow(WEB, API, Tcp, 80),
            "deny | egress: open | ingress: denied by [prod/p]",
        ),
        row(
            "policyTypes omitted, egress: [] does not isolate egress",
            vec![policy(
                "prod",
                "p",
                "podSelector: {matchLabels: {app: api}}\ningress: [{}]\negress: []",
            )],
            flow(API, OUTSIDE, Tcp, 443),
            "allow | egress: open | ingress: n/a",
        ),
        row(
            "policyTypes [Egress] only leaves ingress open",
            vec![policy(
                "prod",
                "p",
                "podSelector: {matchLabels: {app: api}}\npolicyTypes: [Egress]",
            )],
            flow(WEB, API, Tcp, 80),
            "allow | egress: open | ingress: open",
        ),
        row(
            "policyTypes [Egress] with no rules denies all egress",
            vec![policy(
                "prod",
                "p",
                "podSelector: {matchLabels: {app: api}}\npolicyTypes: [Egress]",
            )],
            flow(API, DB, Tcp, 5432),
            "deny | egress: denied by [prod/p] | ingress: open",
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
            "deny | egress: allowed by [prod/e#0] | ingress: denied by [prod/deny]",
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
            "allow | egress: open | ingress: allowed by [prod/b#0]",
        ),
    ]);
}

#[test]
fn peers_and_selectors() {
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
            "allow | egress: open | ingress: allowed by [prod/db#0]",
        ),
        row(
            "podSelector: same labels in another namespace do not match",
            vec![db("{podSelector: {matchLabels: {app: web}}}")],
            flow(DEV_WEB, DB, Tcp, 5432),
            "deny | egress: open | ingress: denied by [prod/db]",
        ),
        row(
            "namespaceSelector only: every pod of matching namespaces",
            vec![db("{namespaceSelector: {matchLabels: {env: dev}}}")],
            flow(DEV_TOOL, DB, Tcp, 5432),
            "allow | egress: open | ingress: allowed by [prod/db#0]",
        ),
        row(
            "namespaceSelector only: other namespaces do not match",
            vec![db("{namespaceSelector: {matchLabels: {env: dev}}}")],
            flow(API, DB, Tcp, 5432),
            "deny | egress: open | ingress: denied by [prod/db]",
        ),
        row(
            "AND: both selectors in one peer, pod matches",
            vec![db(
                "{namespaceSelector: {matchLabels: {env: dev}}, podSelector: {matchLabels: {app: web}}}",
            )],
            flow(DEV_WEB, DB, Tcp, 5432),
            "allow | egress: open | ingress: allowed by [prod/db#0]",
        ),
        row(
            "AND: both selectors in one peer, other pod of that namespace",
            vec![db(
                "{namespaceSelector: {matchLabels: {env: dev}}, podSelector: {matchLabels: {app: web}}}",
            )],
            flow(DEV_TOOL, DB, Tcp, 5432),
            "deny | egress: open | ingress: denied by [prod/db]",
        ),
        row(
            "AND: both selectors in one peer, same pod labels elsewhere",
            vec![db(
                "{namespaceSelector: {matchLabels: {env: dev}}, podSelector: {matchLabels: {app: web}}}",
            )],
            flow(WEB, DB, Tcp, 5432),
            "deny | egress: open | ingress: denied by [prod/db]",
        ),
        row(
            "OR: separate peers, namespace peer admits any pod there",
            vec![db(
                "{namespaceSelector: {matchLabels: {env: dev}}}, {podSelector: {matchLabels: {app: web}}}",
            )],
            flow(DEV_TOOL, DB, Tcp, 5432),
            "allow | egress: open | ingress: allowed by [prod/db#0]",
        ),
        row(
            "OR: separate peers, pod peer admits own-namespace pod",
            vec![db(
                "{namespaceSelector: {matchLabels: {env: dev}}}, {podSelector: {matchLabels: {app: web}}}",
            )],
            flow(WEB, DB, Tcp, 5432),
            "allow | egress: open | ingress: allowed by [prod/db#0]",
        ),
        row(
            "empty namespaceSelector: every namespace",
            vec![db("{namespaceSelector: {}}")],
            flow(DEV_TOOL, DB, Tcp, 5432),
            "allow | egress: open | ingress: allowed by [prod/db#0]",
        ),
        row(
            "namespace name label is implicit",
            vec![db(
                "{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: dev}}}",
            )],
            flow(DEV_WEB, DB, Tcp, 5432),
            "allow | egress: open | ingress: allowed by [prod/db#0]",
        ),
        row(
            "matchExpressions In",
            vec![db(
                "{podSelector: {matchExpressions: [{key: app, operator: In, values: [web, api]}]}}",
            )],
            flow(API, DB, Tcp, 5432),
            "allow | egress: open | ingress: allowed by [prod/db#0]",
        ),
        row(
            "matchExpressions NotIn (key absent matches)",
            vec![db(
                "{namespaceSelector: {matchExpressions: [{key: tier, operator: NotIn, values: [gold]}]}}",
            )],
            flow(DEV_WEB, DB, Tcp, 5432),
            "allow | egress: open | ingress: allowed by [prod/db#0]",
        ),
        row(
            "matchExpressions Exists",
            vec![db(
                "{podSelector: {matchExpressions: [{key: app, operator: Exists}]}}",
            )],
            flow(WEB, DB, Tcp, 5432),
            "allow | egress: open | ingress: allowed by [prod/db#0]",
        ),
        row(
            "matchExpressions DoesNotExist",
            vec![db(
                "{podSelector: {matchExpressions: [{key: app, operator: DoesNotExist}]}}",
            )],
            flow(WEB, DB, Tcp, 5432),
            "deny | egress: open | ingress: denied by [prod/db]",
        ),
        row(
            "matchLabels and matchExpressions are ANDed",
            vec![db(
                "{podSelector: {matchLabels: {app: web}, matchExpressions: [{key: app, operator: In, values: [api]}]}}",
            )],
            flow(WEB, DB, Tcp, 5432),
            "deny | egress: open | ingress: denied by [prod/db]",
        ),
        row(
            "ipBlock admits an outside address",
            vec![db("{ipBlock: {cidr: 203.0.113.0/24}}")],
            flow(OUTSIDE, DB, Tcp, 5432),
            "allow | egress: n/a | ingress: allowed by [prod/db#0]",
        ),
        row(
            "ipBlock except",
            vec![db(
                "{ipBlock: {cidr: 203.0.113.0/24, except: [203.0.113.8/29]}}",
            )],
            flow(OUTSIDE, DB, Tcp, 5432),
            "deny | egress: n/a | ingress: denied by [prod/db]",
        ),
        row(
            "ipBlock matches pod IPs too",
            vec![db("{ipBlock: {cidr: 10.0.2.0/24}}")],
            flow(DEV_TOOL, DB, Tcp, 5432),
            "allow | egress: open | ingress: allowed by [prod/db#0]",
        ),
        row(
            "pod selectors never match outside addresses",
            vec![db("{namespaceSelector: {}}")],
            flow(OUTSIDE, DB, Tcp, 5432),
            "deny | egress: n/a | ingress: denied by [prod/db]",
        ),
        row(
            "egress ipBlock",
            vec![policy(
                "prod",
                "e",
                "podSelector: {matchLabels: {app: api}}\npolicyTypes: [Egress]\negress: [{to: [{ipBlock: {cidr: 203.0.113.0/24}}], ports: [{port: 443}]}]",
            )],
            flow(API, OUTSIDE, Tcp, 443),
            "allow | egress: allowed by [prod/e#0] | ingress: n/a",
        ),
        row(
            "egress podSelector towards another namespace needs namespaceSelector",
            vec![policy(
                "prod",
                "e",
                "podSelector: {matchLabels: {app: api}}\npolicyTypes: [Egress]\negress: [{to: [{podSelector: {matchLabels: {app: web}}}]}]",
            )],
            flow(API, DEV_WEB, Tcp, 80),
            "deny | egress: denied by [prod/e] | ingress: open",
        ),
    ]);
}

#[test]
fn ports_and_protocols() {
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
            "allow | egress: open | ingress: allowed by [prod/db#0]",
        ),
        row(
            "default TCP does not admit UDP",
            vec![db("{port: 5432}")],
            flow(API, DB, Udp, 5432),
            "deny | egress: open | ingress: denied by [prod/db]",
        ),
        row(
            "UDP",
            vec![db("{protocol: UDP, port: 53}")],
            flow(API, DB, Udp, 53),
            "allow | egress: open | ingress: allowed by [prod/db#0]",
        ),
        row(
            "SCTP",
            vec![db("{protocol: SCTP, port: 36412}")],
            flow(API, DB, Sctp, 36412),
            "allow | egress: open | ingress: allowed by [prod/db#0]",
        ),
        row(
            "other port denied",
            vec![db("{port: 5432}")],
            flow(API, DB, Tcp, 5433),
            "deny | egress: open | ingress: denied by [prod/db]",
        ),
        row(
            "endPort range start",
            vec![db("{port: 32000, endPort: 32768}")],
            flow(API, DB, Tcp, 32000),
            "allow | egress: open | ingress: allowed by [prod/db#0]",
        ),
        row(
            "endPort range end (inclusive)",
            vec![db("{port: 32000, endPort: 32768}")],
            flow(API, DB, Tcp, 32768),
            "allow | egress: open | ingress: allowed by [prod/db#0]",
        ),
        row(
            "endPort range above",
            vec![db("{port: 32000, endPort: 32768}")],
            flow(API, DB, Tcp, 32769),
            "deny | egress: open | ingress: denied by [prod/db]",
        ),
        row(
            "protocol without port: every port",
            vec![db("{protocol: UDP}")],
            flow(API, DB, Udp, 1234),
            "allow | egress: open | ingress: allowed by [prod/db#0]",
        ),
        row(
            "rule with ports never admits ICMP",
            vec![db("{protocol: TCP}")],
            flow(API, DB, Icmp, 0),
            "deny | egress: open | ingress: denied by [prod/db]",
        ),
        row(
            "rule without ports admits ICMP",
            vec![policy(
                "prod",
                "db",
                "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{podSelector: {}}]}]",
            )],
            flow(API, DB, Icmp, 0),
            "allow | egress: open | ingress: allowed by [prod/db#0]",
        ),
    ]);
}
