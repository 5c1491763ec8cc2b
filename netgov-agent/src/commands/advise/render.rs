//! The advice as YAML manifests, commented with the evidence. Written by
//! hand (a YAML serializer writes no comments); every string is quoted as
//! JSON, which YAML reads the same, so no label value changes type.

use std::fmt::Write;

use super::{Advice, AdvisedPeer, AdvisedPolicy, AdvisedRule};
use crate::engine::selector::Labels;

/// The name of the policy advised for `workload`.
pub fn policy_name(workload: &str) -> String {
    let mut name = format!("netgov-advised-{workload}");
    name.truncate(253);
    name
}

/// The advice as a YAML stream of NetworkPolicies; `header` is the first
/// comment (what it was derived from).
pub fn to_yaml(advice: &Advice, header: &str) -> String {
    let mut out = String::new();
    for line in header.lines() {
        let _ = writeln!(out, "# {line}");
    }
    for flow in &advice.not_covered {
        let _ = writeln!(out, "# not covered: {flow}");
    }
    for policy in &advice.policies {
        out.push_str("---\n");
        write_policy(&mut out, policy);
    }
    out
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

fn write_labels(out: &mut String, indent: &str, labels: &Labels) {
    if labels.is_empty() {
        let _ = writeln!(out, "{indent}matchLabels: {{}}");
        return;
    }
    let _ = writeln!(out, "{indent}matchLabels:");
    for (key, value) in labels {
        let _ = writeln!(out, "{indent}  {}: {}", quoted(key), quoted(value));
    }
}

fn write_policy(out: &mut String, policy: &AdvisedPolicy) {
    let flows = |rules: &[AdvisedRule]| rules.iter().map(|r| r.flows).sum::<u64>();
    let _ = writeln!(
        out,
        "# {}/{}: {} flows in, {} out, as recorded",
        policy.namespace,
        policy.workload,
        flows(&policy.ingress),
        flows(&policy.egress)
    );
    let _ = writeln!(
        out,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {}\n  namespace: {}\n  labels:\n    app.kubernetes.io/managed-by: netgov-advise\nspec:\n  podSelector:",
        quoted(&policy_name(&policy.workload)),
        quoted(&policy.namespace)
    );
    write_labels(out, "    ", &policy.selector);
    out.push_str("  policyTypes: [Ingress, Egress]\n");
    for (direction, peer_key, rules) in [
        ("ingress", "from", &policy.ingress),
        ("egress", "to", &policy.egress),
    ] {
        if rules.is_empty() {
            let _ = writeln!(out, "  {direction}: []  # none seen: nothing allowed");
            continue;
        }
        let _ = writeln!(out, "  {direction}:");
        for rule in rules {
            write_rule(out, peer_key, rule);
        }
    }
}

fn write_rule(out: &mut String, peer_key: &str, rule: &AdvisedRule) {
    let who = match &rule.peer {
        AdvisedPeer::Pods { workload, .. } => workload.clone(),
        AdvisedPeer::Address(ip) => ip.to_string(),
    };
    let _ = writeln!(
        out,
        "  # {who}: {} flows, first {}, last {}",
        rule.flows, rule.first_seen, rule.last_seen
    );
    let _ = writeln!(out, "  - {peer_key}:");
    match &rule.peer {
        AdvisedPeer::Pods {
            namespace, labels, ..
        } => {
            out.push_str("    - namespaceSelector:\n        matchLabels:\n");
            let _ = writeln!(
                out,
                "          \"kubernetes.io/metadata.name\": {}",
                quoted(namespace)
            );
            out.push_str("      podSelector:\n");
            write_labels(out, "        ", labels);
        }
        AdvisedPeer::Address(ip) => {
            let bits = if ip.is_ipv4() { 32 } else { 128 };
            let _ = writeln!(
                out,
                "    - ipBlock:\n        cidr: {}",
                quoted(&format!("{ip}/{bits}"))
            );
        }
    }
    // ICMP has no ports: a peer seen with it gets every protocol.
    if rule.ports.iter().any(|(protocol, _)| !protocol.has_ports()) {
        out.push_str("    # ICMP seen: not limited to ports (NetworkPolicy cannot name ICMP)\n");
        return;
    }
    out.push_str("    ports:\n");
    for (protocol, port) in &rule.ports {
        let _ = writeln!(out, "    - protocol: {protocol}\n      port: {port}");
    }
}
