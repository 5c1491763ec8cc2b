use super::*;

#[test]
fn parses_the_documented_example() {
    let config = AgentConfig::parse(
        "clusterCIDRs: [10.244.0.0/16]\nexpectedEgress:\n  - namespace: ai\n    workload: ingest\n    cidrs: [192.0.2.0/24]\n    ports: [\"443\", \"8000-8100\"]\nmaxWorkloads: 10\nanswerWindowSeconds: 2.5\n",
        "agent.yaml",
    )
    .expect("valid");
    assert_eq!(config.cluster_cidrs.len(), 1);
    assert_eq!(
        config.expected_egress[0].ports,
        [
            PortRange {
                start: 443,
                end: 443
            },
            PortRange {
                start: 8000,
                end: 8100
            }
        ]
    );
    assert_eq!(config.max_workloads, 10);
    assert_eq!(config.answer_window, Duration::from_millis(2500));
    assert_eq!(
        AgentConfig::parse("{}", "empty").expect("defaults"),
        AgentConfig::default()
    );
}

#[test]
fn errors_name_the_field() {
    let rows = [
        ("clusterCIDRs: [10.0.0.0/40]", "clusterCIDRs[0]"),
        (
            "expectedEgress: [{namespace: a, cidrs: [nope]}]",
            "expectedEgress[0].cidrs[0]",
        ),
        (
            "expectedEgress: [{namespace: a, cidrs: []}]",
            "expectedEgress[0].cidrs",
        ),
        (
            "expectedEgress: [{namespace: a, cidrs: [1.2.3.0/24], ports: [\"90-80\"]}]",
            "expectedEgress[0].ports[0]",
        ),
        (
            "expectedEgress: [{namespace: a, cidrs: [1.2.3.0/24], ports: [\"0\"]}]",
            "expectedEgress[0].ports[0]",
        ),
        ("maxWorkloads: 0", "maxWorkloads"),
        ("answerWindowSeconds: -1", "answerWindowSeconds"),
        (
            "expectedEgress: [{namespace: a, cidr: [1.2.3.0/24]}]",
            "expectedEgress[0]",
        ),
        ("clusterCidrs: []", "clusterCidrs"),
        ("vm", "(top level)"),
        ("expectedEgress: [vm]", "expectedEgress[0]"),
    ];
    for (text, field) in rows {
        let error = AgentConfig::parse(text, "agent.yaml")
            .expect_err(text)
            .to_string();
        assert!(error.starts_with("agent.yaml: "), "{error}");
        assert!(error.contains(field), "{text}: {error}");
        assert!(!error.contains("Raw"), "no Rust type names: {error}");
    }
}
