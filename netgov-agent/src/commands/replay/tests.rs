//! Replay against policies that tighten, loosen and keep the recorded
//! verdicts; pods gone and addresses reused in the recording.

use super::*;

/// A recorded flow between two pods (labels `app: <pod>`, a named port
/// `http` 8080).
pub(crate) fn recorded(
    src: (&str, &str, &str),
    dst: (&str, &str, &str),
    port: u16,
    verdict: &str,
    at: &str,
) -> RecordedFlow {
    let end = |(namespace, pod, ip): (&str, &str, &str)| {
        json!({"namespace": namespace, "pod": pod, "workload": pod})
            .as_object()
            .cloned()
            .map(|identity| (identity, ip.to_owned()))
            .expect("object")
    };
    let context = |(namespace, pod, ip): (&str, &str, &str)| {
        json!({"ip": ip, "labels": {"app": pod}, "namespace_labels": {"kubernetes.io/metadata.name": namespace},
               "named_ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
    };
    let ((src_identity, src_ip), (dst_identity, dst_ip)) = (end(src), end(dst));
    serde_json::from_value(json!({
        "format": 1, "src": src_ip, "src_port": 40000, "dst": dst_ip, "dst_port": port,
        "protocol": "TCP", "first_seen": at, "last_seen": at,
        "src_identity": src_identity, "dst_identity": dst_identity,
        "verdict": verdict, "judged_dst_port": port,
        "src_context": context(src), "dst_context": context(dst)}))
    .expect("a recorded flow")
}

const SERVER_ADMITS_A: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
metadata: {name: server-admits-a, namespace: ml}\n\
spec: {podSelector: {matchLabels: {app: server}}, ingress: [{from: [{podSelector: {matchLabels: {app: client-a}}}], ports: [{port: http}]}]}\n";

#[test]
fn tightening_shows_exactly_what_breaks() {
    let a = ("ml", "client-a", "10.0.0.1");
    let b = ("ml", "client-b", "10.0.0.2");
    let server = ("ml", "server", "10.0.0.3");
    let recorded = [
        recorded(a, server, 8080, "not-applicable", "2026-11-29T10:00:00Z"),
        recorded(b, server, 8080, "not-applicable", "2026-11-29T10:00:01Z"),
        recorded(b, server, 8080, "not-applicable", "2026-11-29T10:00:02Z"),
        // client-b is gone; a new pod, client-c, got its address.
        recorded(
            ("ml", "client-c", "10.0.0.2"),
            server,
            8080,
            "not-applicable",
            "2026-11-29T10:00:03Z",
        ),
    ];
    let report = replay(&mut ClusterState::from_yaml(SERVER_ADMITS_A), &recorded);
    let because = "ingress: isolated by ml/server-admits-a, no rule admits it".to_owned();
    let change = |src: &str, flows, first: &str, last: &str| ChangedFlows {
        change: Change::WouldDeny,
        src: format!("ml/{src}"),
        dst: "ml/server".into(),
        protocol: Protocol::Tcp,
        port: 8080,
        flows,
        first_seen: first.parse().expect("time"),
        last_seen: last.parse().expect("time"),
        because: because.clone(),
    };
    assert_eq!(
        report,
        ReplayReport {
            replayed: 4,
            unchanged: 1,
            changes: vec![
                change(
                    "client-b",
                    2,
                    "2026-11-29T10:00:01Z",
                    "2026-11-29T10:00:02Z"
                ),
                change(
                    "client-c",
                    1,
                    "2026-11-29T10:00:03Z",
                    "2026-11-29T10:00:03Z"
                ),
            ],
        }
    );
}

#[test]
fn loosening_and_keeping_the_policies() {
    let a = ("ml", "client-a", "10.0.0.1");
    let b = ("ml", "client-b", "10.0.0.2");
    let server = ("ml", "server", "10.0.0.3");
    let recorded = [
        recorded(a, server, 8080, "allow", "2026-11-29T10:00:00Z"),
        recorded(b, server, 8080, "deny", "2026-11-29T10:00:01Z"),
    ];
    // The same policies: nothing changes.
    let report = replay(&mut ClusterState::from_yaml(SERVER_ADMITS_A), &recorded);
    assert_eq!(
        (report.replayed, report.unchanged, report.changes.len()),
        (2, 2, 0)
    );
    // No policy at all: the denied flow would be allowed.
    let report = replay(&mut ClusterState::new(), &recorded);
    assert_eq!(
        report.changes,
        [ChangedFlows {
            change: Change::WouldAllow,
            src: "ml/client-b".into(),
            dst: "ml/server".into(),
            protocol: Protocol::Tcp,
            port: 8080,
            flows: 1,
            first_seen: "2026-11-29T10:00:01Z".parse().expect("time"),
            last_seen: "2026-11-29T10:00:01Z".parse().expect("time"),
            because: "no policy isolates either end".into(),
        }]
    );
}
