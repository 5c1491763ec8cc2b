//! A verdict as JSON, written field by field into a byte buffer: the same
//! bytes as its `Serialize` derive gives (a test holds the two together),
//! at a fraction of the cost. `netgov check` writes one per flow, and
//! through serde the writing cost twice the judging: every string was
//! scanned byte by byte for escapes, and every field went through the
//! serializer's state machine. Here a string is checked for the bytes JSON
//! escapes in one pass, and written as it is when it has none (names and
//! reasons never do); the rare parts (a cluster-wide tier's decision) go
//! through serde.

use std::io::Write;

use crate::engine::verdict::{
    BackendVerdict, Decision, EndpointKind, RuleRef, SideVerdict, Verdict,
};
use crate::model::PodRef;

/// Appends `verdict` as a JSON object to `out`.
pub fn write_verdict(out: &mut Vec<u8>, verdict: &Verdict) {
    out.push(b'{');
    decision_and_sides(out, verdict.verdict, &verdict.egress, &verdict.ingress);
    out.extend_from_slice(b",\"source\":");
    endpoint(out, &verdict.source);
    out.extend_from_slice(b",\"destination\":");
    endpoint(out, &verdict.destination);
    if !verdict.backends.is_empty() {
        out.extend_from_slice(b",\"backends\":");
        list(out, &verdict.backends, backend);
    }
    if verdict.backends_disagree {
        out.extend_from_slice(b",\"backends_disagree\":true");
    }
    out.push(b'}');
}

fn side(out: &mut Vec<u8>, side: &SideVerdict) {
    out.extend_from_slice(b"{\"verdict\":");
    string(out, side.verdict.as_str());
    if let Some(pod) = &side.pod {
        out.extend_from_slice(b",\"pod\":");
        pod_ref(out, pod);
    }
    out.extend_from_slice(if side.isolated {
        b",\"isolated\":true"
    } else {
        b",\"isolated\":false"
    });
    out.extend_from_slice(b",\"isolating_policies\":");
    list(out, &side.isolating_policies, |out, name| string(out, name));
    out.extend_from_slice(b",\"allowed_by\":");
    list(out, &side.allowed_by, rule_ref);
    out.extend_from_slice(b",\"reason\":");
    string(out, &side.reason);
    if let Some(tier) = &side.tier {
        out.extend_from_slice(b",\"tier\":");
        serde_json::to_writer(&mut *out, tier).expect("writing to a vector cannot fail");
    }
    if !side.skipped_policies.is_empty() {
        out.extend_from_slice(b",\"skipped_policies\":");
        list(out, &side.skipped_policies, |out, name| string(out, name));
    }
    out.push(b'}');
}

fn rule_ref(out: &mut Vec<u8>, rule: &RuleRef) {
    out.extend_from_slice(b"{\"policy\":");
    string(out, &rule.policy);
    // Writing a number to a vector cannot fail.
    let _ = write!(out, ",\"rule\":{}}}", rule.rule);
}

fn endpoint(out: &mut Vec<u8>, kind: &EndpointKind) {
    let named = |out: &mut Vec<u8>, kind: &[u8], namespace: &str, name: &str| {
        out.extend_from_slice(b"{\"kind\":\"");
        out.extend_from_slice(kind);
        out.extend_from_slice(b"\",\"namespace\":");
        string(out, namespace);
        out.extend_from_slice(b",\"name\":");
        string(out, name);
        out.push(b'}');
    };
    match kind {
        EndpointKind::Pod { namespace, name } => named(out, b"pod", namespace, name),
        EndpointKind::Service { namespace, name } => named(out, b"service", namespace, name),
        EndpointKind::Host { node: None } => out.extend_from_slice(b"{\"kind\":\"host\"}"),
        EndpointKind::Host { node: Some(node) } => {
            out.extend_from_slice(b"{\"kind\":\"host\",\"node\":");
            string(out, node);
            out.push(b'}');
        }
        EndpointKind::External => out.extend_from_slice(b"{\"kind\":\"external\"}"),
    }
}

fn backend(out: &mut Vec<u8>, backend: &BackendVerdict) {
    // Writing numbers and addresses to a vector cannot fail.
    let _ = write!(
        out,
        "{{\"ip\":\"{}\",\"port\":{},",
        backend.ip, backend.port
    );
    decision_and_sides(out, backend.verdict, &backend.egress, &backend.ingress);
    out.push(b'}');
}

/// The `verdict`, `egress` and `ingress` fields of a flow or a backend.
fn decision_and_sides(
    out: &mut Vec<u8>,
    decision: Decision,
    egress: &SideVerdict,
    ingress: &SideVerdict,
) {
    out.extend_from_slice(b"\"verdict\":");
    string(out, decision.as_str());
    out.extend_from_slice(b",\"egress\":");
    side(out, egress);
    out.extend_from_slice(b",\"ingress\":");
    side(out, ingress);
}

fn list<T>(out: &mut Vec<u8>, items: &[T], item: impl Fn(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, each) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        item(out, each);
    }
    out.push(b']');
}

/// A JSON string: as it is when no byte of it needs an escape (a quote,
/// a backslash, a control character), else as serde escapes it.
fn string(out: &mut Vec<u8>, text: &str) {
    if !needs_escape(text.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, text).expect("writing to a vector cannot fail");
    }
}

/// `pod` as the string `namespace/name`.
fn pod_ref(out: &mut Vec<u8>, pod: &PodRef) {
    if needs_escape(pod.namespace.as_bytes()) || needs_escape(pod.name.as_bytes()) {
        serde_json::to_writer(&mut *out, pod).expect("writing to a vector cannot fail");
    } else {
        out.push(b'"');
        out.extend_from_slice(pod.namespace.as_bytes());
        out.push(b'/');
        out.extend_from_slice(pod.name.as_bytes());
        out.push(b'"');
    }
}

/// Whether a byte of `text` is one JSON escapes: a quote, a backslash, a
/// control character. Eight bytes at a time: each test below is true when
/// some byte of the word is zero (or less than 0x20), with no false
/// positive for the word as a whole.
fn needs_escape(text: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = ONES * 0x80;
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS != 0;
    let (words, rest) = text.as_chunks::<8>();
    words.iter().any(|word| {
        let x = u64::from_ne_bytes(*word);
        below(x, 0x20)
            || below(x ^ (ONES * u64::from(b'"')), 1)
            || below(x ^ (ONES * u64::from(b'\\')), 1)
    }) || rest.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ClusterState, FlowQuery, evaluate};
    use crate::model::Protocol;

    const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: a}}
---
apiVersion: v1
kind: Node
metadata: {name: node-1}
status: {addresses: [{type: InternalIP, address: 10.0.0.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: node-1, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.1.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {nodeName: node-1, containers: [{name: c}]}
status: {podIP: 10.1.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: "api", namespace: shop, labels: {app: api}}
spec: {nodeName: node-1, containers: [{name: c}]}
status: {podIP: 10.1.0.3}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress: [{to: [{podSelector: {}}]}, {ports: [{port: 53, protocol: UDP}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-open, namespace: shop}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress: [{}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.10, selector: {app: web}, ports: [{port: 80, targetPort: http}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: [10.1.0.1], conditions: {ready: true}}]
ports: [{port: 8080, protocol: TCP}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: guard}
spec:
  tier: Admin
  priority: 10
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: api}}}}
  ingress: [{name: no-web, action: Deny, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}]}]
"#;

    /// Every kind of verdict the engine gives, written both ways.
    #[test]
    fn writes_what_serde_writes() {
        let cluster = ClusterState::from_yaml(CLUSTER);
        let ip = |text: &str| text.parse().unwrap();
        let flows = [
            ("10.1.0.1", "10.1.0.2", Protocol::Tcp, 5432), // allowed by a rule
            ("10.1.0.3", "10.1.0.2", Protocol::Tcp, 5432), // denied: isolated
            ("10.1.0.1", "10.1.0.3", Protocol::Tcp, 80),   // the Admin tier denies
            ("10.1.0.3", "10.96.0.10", Protocol::Tcp, 80), // a Service's backends
            ("10.1.0.1", "192.0.2.1", Protocol::Udp, 53),  // to outside
            ("10.1.0.1", "192.0.2.1", Protocol::Tcp, 443), // denied to outside
            ("10.0.0.1", "10.1.0.1", Protocol::Tcp, 8080), // from a node
            ("10.1.0.1", "10.1.0.1", Protocol::Icmp, 0),   // to itself
            ("192.0.2.1", "10.96.0.10", Protocol::Tcp, 81), // no such Service port
        ];
        let mut written = Vec::new();
        let mut all = String::new();
        for (src, dst, protocol, dst_port) in flows {
            let query = FlowQuery {
                src: ip(src),
                dst: ip(dst),
                protocol,
                dst_port,
            };
            let verdict = evaluate(&cluster, &query);
            written.clear();
            write_verdict(&mut written, &verdict);
            assert_eq!(
                String::from_utf8(written.clone()).unwrap(),
                serde_json::to_string(&verdict).unwrap(),
                "{src} -> {dst}:{dst_port}/{protocol}"
            );
            all.push_str(std::str::from_utf8(&written).unwrap());
        }
        for part in [
            "\"tier\":{",
            "\"skipped_policies\":[",
            "\"backends\":[",
            "\"allowed_by\":[{",
            "\"kind\":\"host\",\"node\":\"node-1\"",
            "\"kind\":\"service\"",
            "\"kind\":\"external\"",
            "\"verdict\":\"not-applicable\"",
        ] {
            assert!(all.contains(part), "no verdict has {part}");
        }
    }

    #[test]
    fn strings_that_need_escapes_are_escaped_as_serde_escapes_them() {
        let mut texts = vec![
            "plain".to_owned(),
            "a \"quoted\" name".into(),
            "back\\slash".into(),
            "tab\there".into(),
            "é ✓ \u{7f}".into(),
            "admitted by a rule of a policy that selects the pod".into(),
        ];
        // One byte to escape at every place of a word, and none.
        for special in ['"', '\\', '\n', '\u{1f}', ' ', '~', 'ÿ'] {
            for at in 0..17 {
                let mut text: String = "abcdefghijklmnopq".into();
                text.replace_range(at..=at, &special.to_string());
                texts.push(text);
            }
        }
        for text in &texts {
            let mut written = Vec::new();
            string(&mut written, text);
            assert_eq!(
                String::from_utf8(written).unwrap(),
                serde_json::to_string(text).unwrap()
            );
            let escaped = text.chars().any(|c| c < ' ' || c == '"' || c == '\\');
            assert_eq!(needs_escape(text.as_bytes()), escaped, "{text:?}");
        }
    }
}
