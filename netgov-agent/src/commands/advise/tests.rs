//! Advice from a recording: exact policies, checked by replay; a flow that
//! never happened stays denied.

use std::str::FromStr;

use super::*;
use crate::commands::replay::tests::recorded;
use crate::engine::evaluate::evaluate;
use crate::engine::{Decision, FlowQuery};
use crate::model::Protocol;

#[test]
fn advice_allows_what_was_seen_and_nothing_else() {
    let a = ("ml", "client-a", "10.0.0.1");
    let b = ("ml", "client-b", "10.0.0.2");
    let server = ("ml", "server", "10.0.0.3");
    let flows = [
        recorded(a, server, 8080, "not-applicable", "2026-11-29T10:00:00Z"),
        recorded(a, server, 8080, "allow", "2026-11-29T10:00:05Z"),
        // Denied when recorded: stays out of the advice.
        recorded(b, server, 9090, "deny", "2026-11-29T10:00:06Z"),
    ];
    let advice = advise(&flows, Some("ml"));
    let server_policy = advice
        .policies
        .iter()
        .find(|p| p.workload == "server")
        .expect("server's policy");
    assert_eq!(
        server_policy.ingress,
        [AdvisedRule {
            peer: AdvisedPeer::Pods {
                namespace: "ml".into(),
                labels: Labels::from([("app".to_owned(), "client-a".to_owned())]),
                workload: "ml/client-a".into(),
            },
            ports: BTreeSet::from([(Protocol::Tcp, 8080)]),
            flows: 2,
            first_seen: "2026-11-29T10:00:00Z".parse().expect("time"),
            last_seen: "2026-11-29T10:00:05Z".parse().expect("time"),
        }]
    );
    assert!(server_policy.egress.is_empty());

    // Checked like the command checks it, then judged directly.
    let yaml = to_yaml(&advice, "test");
    check(
        crate::sources::manifests::Manifests::default(),
        &yaml,
        &flows,
    )
    .expect("advice passes its check");
    let mut cluster = crate::engine::ClusterState::from_yaml(&yaml);
    let query = |src: &str, port| FlowQuery {
        src: src.parse().expect("ip"),
        dst: "10.0.0.3".parse().expect("ip"),
        protocol: Protocol::Tcp,
        dst_port: port,
    };
    // Place the recorded pods, then ask about flows never seen.
    crate::commands::replay::replay(&mut cluster, &flows);
    assert_eq!(
        evaluate(&cluster, &query("10.0.0.1", 8080)).verdict,
        Decision::Allow
    );
    assert_eq!(
        evaluate(&cluster, &query("10.0.0.1", 9090)).verdict,
        Decision::Deny
    );
    assert_eq!(
        evaluate(&cluster, &query("10.0.0.2", 8080)).verdict,
        Decision::Deny
    );
    assert_eq!(Decision::from_str("deny").ok(), Some(Decision::Deny));
}

#[test]
fn no_advice_that_would_select_more_than_its_workload() {
    // Two workloads whose pods carry only one label, the same one.
    let server = ("ml", "server", "10.0.0.3");
    let mut flows: Vec<RecordedFlow> = [("client-a", "10.0.0.1"), ("client-b", "10.0.0.2")]
        .into_iter()
        .map(|(pod, ip)| {
            recorded(
                ("ml", pod, ip),
                server,
                8080,
                "allow",
                "2026-11-29T10:00:00Z",
            )
        })
        .collect();
    for flow in &mut flows {
        let context = flow.src_context.as_mut().expect("a pod");
        context.labels = Labels::from([("team".to_owned(), "ml".to_owned())]);
    }
    flows[0].src_identity.workload = "clients".into();
    let advice = advise(&flows, Some("ml"));
    assert_eq!(
        advice.not_covered,
        [
            "ml/client-b: its labels also select the pods of ml/clients; no policy advised",
            "ml/clients: its labels also select the pods of ml/client-b; no policy advised"
        ]
    );
    // The server's policy admits both (by the shared label), and only them.
    let server = advice
        .policies
        .iter()
        .map(|p| p.workload.as_str())
        .collect::<Vec<_>>();
    assert_eq!(server, ["server"]);
}
