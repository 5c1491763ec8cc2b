//! Property tests of the engine.

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
            state.policies().any(|p| p.namespace() == &*pod.namespace && p.pod_selector.matches(&pod.labels))
        };
        if !selected(dst) {
            prop_assert!(!verdict.ingress.isolated);
        }
        if !selected(src) {
            prop_assert!(!verdict.egress.isolated);
        }
    }
}
