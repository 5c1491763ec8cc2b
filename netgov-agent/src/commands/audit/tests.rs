//! The audit on recorded flows: a used rule, an unused one, an over-broad
//! ipBlock, an unprotected workload.

use super::*;

fn flow(src: (&str, &str, &str), dst: (&str, Option<&str>, &str), port: u16) -> RecordedFlow {
    let context = |namespace: &str, pod: &str, ip: &str| serde_json::json!({"ip": ip, "labels": {"app": pod}, "namespace_labels": {"kubernetes.io/metadata.name": namespace}});
    let (dst_identity, dst_context) = match dst.1 {
        Some(pod) => (
            serde_json::json!({"namespace": dst.0, "pod": pod, "workload": pod}),
            context(dst.0, pod, dst.2),
        ),
        None => (
            serde_json::json!({"namespace": "", "workload": "world"}),
            serde_json::Value::Null,
        ),
    };
    serde_json::from_value(serde_json::json!({
        "format": 1, "src": src.2, "src_port": 40000, "dst": dst.2, "dst_port": port,
        "protocol": "TCP", "first_seen": "2026-11-29T10:00:00Z", "last_seen": "2026-11-29T10:00:00Z",
        "src_identity": {"namespace": src.0, "pod": src.1, "workload": src.1},
        "dst_identity": dst_identity, "verdict": "allow", "judged_dst_port": port,
        "src_context": context(src.0, src.1, src.2), "dst_context": dst_context}))
    .expect("a recorded flow")
}

const POLICIES: &str = r"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: trainer-egress, namespace: ml}
spec:
  podSelector: {matchLabels: {app: trainer}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 0.0.0.0/0}}]
    ports: [{port: 443}]
  - to: [{podSelector: {matchLabels: {app: db}}}]
    ports: [{port: 5432}]
  - to: [{ipBlock: {cidr: 203.0.113.0/24}}]
    ports: [{port: 8443}]
";

#[test]
fn used_unused_broad_and_unprotected() {
    let mut cluster = ClusterState::from_yaml(POLICIES);
    let trainer = ("ml", "trainer", "10.0.0.1");
    let flows = [
        flow(trainer, ("", None, "198.51.100.7"), 443),
        flow(trainer, ("", None, "192.0.2.10"), 443),
        flow(trainer, ("ml", Some("db"), "10.0.0.2"), 5432),
    ];
    let report = audit(&mut cluster, &flows);
    let rule = |rule, flows| RuleUse {
        policy: "ml/trainer-egress".into(),
        direction: Direction::Egress,
        rule,
        flows,
    };
    assert_eq!(
        report,
        AuditReport {
            flows: 3,
            rules: vec![rule(0, 2), rule(1, 1), rule(2, 0)],
            broad: vec![BroadBlock {
                policy: "ml/trainer-egress".into(),
                direction: Direction::Egress,
                rule: 0,
                cidr: "0.0.0.0/0".into(),
                used_by: vec![
                    "192.0.2.10".parse().expect("ip"),
                    "198.51.100.7".parse().expect("ip")
                ],
            }],
            // db receives with no ingress policy.
            unprotected: vec![Unprotected {
                workload: "ml/db".into(),
                direction: Direction::Ingress,
                flows: 1,
            }],
        }
    );
}
