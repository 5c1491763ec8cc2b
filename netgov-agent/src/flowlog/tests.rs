//! What the writer writes, the reader reads whole.

use std::collections::BTreeMap;

use super::*;
use crate::agent::test_support::judged;
use crate::capture::record::FlowRecord;
use crate::engine::Decision;
use crate::judge::Enforcement;
use crate::judge::Judgement;
use crate::judge::context::{EndContext, RecordedPort};
use crate::model::{Identity, Name, Protocol};
use crate::names::{DestinationName, Hostname, NameSource};

fn pod(namespace: &str, pod: &str, workload: &str) -> Identity {
    Identity {
        namespace: Name::from(namespace),
        pod: Some(Name::from(pod)),
        workload: Name::from(workload),
    }
}

fn context(ip: &str, app: &str) -> Box<EndContext> {
    Box::new(EndContext {
        ip: ip.parse().expect("ip"),
        labels: BTreeMap::from([("app".to_owned(), app.to_owned())]),
        namespace_labels: BTreeMap::from([(
            "kubernetes.io/metadata.name".to_owned(),
            "ml".to_owned(),
        )]),
        named_ports: vec![RecordedPort {
            name: "http".into(),
            port: 8080,
            protocol: "TCP".into(),
        }],
    })
}

/// Writes each judged flow as a line of a new flow log, then reads it
/// back.
fn round_trip(
    tag: &str,
    lines: &[(&FlowRecord, &Judgement)],
) -> (Vec<RecordedFlow>, Vec<LineError>) {
    let dir = std::env::temp_dir().join(format!("netgov-flowlog-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("flows.jsonl");
    let mut log = FlowLog::open(FlowLogTarget::File {
        path: path.clone(),
        max_bytes: None,
    })
    .expect("open");
    for (record, judgement) in lines {
        log.write(&FlowEntry::new(record, judgement))
            .expect("write");
    }
    let read = read(std::slice::from_ref(&path));
    std::fs::remove_dir_all(&dir).expect("cleanup");
    read
}

#[test]
fn a_written_line_reads_back_whole() {
    let (mut record, mut judgement) = judged(
        pod("ml", "client-0", "client"),
        pod("ml", "server-0", "server"),
    );
    // A masqueraded node-port flow, denied and delivered (a gap), to a
    // destination with a name.
    record.original_dst = Some("192.168.1.10:30080".parse().expect("addr"));
    record.translated_src = Some("192.168.1.10:61000".parse().expect("addr"));
    record.first_seen = 1_764_410_400_000_000_000;
    record.last_seen = 1_764_410_400_500_000_000;
    judgement.verdict.verdict = Decision::Deny;
    judgement.enforcement = Some(Enforcement::Gap);
    judgement.dst_port = 8080;
    judgement.dst_names = vec![DestinationName {
        name: Hostname::parse("server.ml.example").expect("a hostname"),
        learned: NameSource::Dns,
    }];
    judgement.src_context = Some(context("10.0.0.1", "client"));
    judgement.dst_context = Some(context("10.0.0.2", "server"));

    let (flows, errors) = round_trip("whole", &[(&record, &judgement)]);

    assert!(errors.is_empty(), "{errors:?}");
    let identity = |namespace: &str, pod: &str, workload: &str| RecordedIdentity {
        namespace: namespace.into(),
        pod: Some(pod.into()),
        workload: workload.into(),
    };
    assert_eq!(
        flows,
        [RecordedFlow {
            format: FORMAT,
            src: "10.0.0.1".parse().expect("ip"),
            src_port: 40000,
            dst: "10.0.0.2".parse().expect("ip"),
            dst_port: 80,
            original_dst: Some("192.168.1.10:30080".parse().expect("addr")),
            translated_src: Some("192.168.1.10:61000".parse().expect("addr")),
            protocol: Protocol::Tcp,
            first_seen: "2025-11-29T10:00:00Z".parse().expect("time"),
            last_seen: "2025-11-29T10:00:00.5Z".parse().expect("time"),
            src_identity: identity("ml", "client-0", "client"),
            dst_identity: identity("ml", "server-0", "server"),
            verdict: Decision::Deny,
            enforcement: Some(Enforcement::Gap),
            dst_names: vec![RecordedName {
                name: "server.ml.example".into(),
                learned: "dns".into(),
            }],
            judged_dst_port: 8080,
            src_context: Some(*context("10.0.0.1", "client")),
            dst_context: Some(*context("10.0.0.2", "server")),
        }]
    );
    // Times print as the writer wrote them.
    assert_eq!(flows[0].last_seen.to_string(), "2025-11-29T10:00:00.5Z");
}

#[test]
fn a_masqueraded_flow_before_and_after_its_client_joined_is_one_flow() {
    // A node port's backend first reports the connection as from the node
    // (kube-proxy masqueraded it); once the client's view joins, the same
    // connection is the client pod's, with the node's address as
    // `translated_src`. Replay must read one flow: the latest line.
    let node_side = "192.168.1.10:61000"
        .parse::<std::net::SocketAddr>()
        .expect("addr");
    let (mut before, before_judged) = judged(Identity::world(), pod("ml", "server-0", "server"));
    (before.src, before.src_port) = (node_side.ip(), node_side.port());
    let (mut after, after_judged) = judged(
        pod("ml", "client-0", "client"),
        pod("ml", "server-0", "server"),
    );
    after.translated_src = Some(node_side);
    after.original_dst = Some("192.168.1.10:30080".parse().expect("addr"));
    after.last_seen = 1_000_000_000;
    assert_eq!(before.flow_id(), after.flow_id());

    let (flows, errors) = round_trip("nat", &[(&before, &before_judged), (&after, &after_judged)]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        flows
            .iter()
            .map(|flow| (flow.src_identity.to_string(), flow.translated_src))
            .collect::<Vec<_>>(),
        [("ml/client".to_owned(), Some(node_side))]
    );
}
