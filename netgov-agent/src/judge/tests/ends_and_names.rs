//! Identities, the node that counts a flow, and expected egress by name.

use super::*;

#[test]
fn identities_carry_workloads() {
    let cluster = cluster();
    let judgement = judge(
        &record(
            UNAUTHORISED,
            INTERNET,
            443,
            vec![observation("src", Role::Initiator, 1, 0)],
        ),
        &cluster,
        &AgentConfig::default(),
        &NodeContext::default(),
        Duration::ZERO,
        &|_| Vec::new(),
    )
    .expect("judged");
    assert_eq!(
        judgement.src,
        Identity {
            namespace: Name::from("ai-platform"),
            pod: Some(Name::from("unauthorised-0")),
            // A bare pod is its own workload.
            workload: Name::from("unauthorised-0"),
        }
    );
    assert_eq!(judgement.dst, Identity::world());
    let json = serde_json::to_value(&judgement).expect("json");
    assert_eq!(json["verdict"], "allow");
    assert_eq!(json["unexpected_egress"], true);
}

/// Each flow is counted by one node: the initiator's when it is a pod,
/// else the node that saw it (the responder's).
#[test]
fn the_initiators_node_counts_the_flow() {
    let cluster = cluster();
    let config = AgentConfig::default();
    let on = |name: &str| NodeContext {
        node_name: Some(name.into()),
    };
    let seen_at_destination = |src: &str, dst: &str| {
        record(
            src,
            dst,
            6379,
            vec![observation("dst", Role::Responder, 1, 1)],
        )
    };
    let rows = [
        (
            "pod on node-1 to pod on node-2, seen on node-2",
            seen_at_destination(INGESTION, REMOTE_DB),
            on("node-2"),
            Err(crate::judge::NotJudged::CountedBySourceNode),
        ),
        (
            "the same flow seen on node-1",
            seen_at_destination(INGESTION, REMOTE_DB),
            on("node-1"),
            Ok(()),
        ),
        (
            "from outside the cluster, seen at the destination's node",
            seen_at_destination(INTERNET, REMOTE_DB),
            on("node-2"),
            Ok(()),
        ),
        (
            "node name not configured: every flow counted",
            seen_at_destination(INGESTION, REMOTE_DB),
            NodeContext::default(),
            Ok(()),
        ),
    ];
    for (name, record, node, expected) in rows {
        let got = judge(&record, &cluster, &config, &node, Duration::ZERO, &|_| {
            Vec::new()
        })
        .map(|_| ());
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn expected_egress_by_domain_needs_a_resolved_name() {
    use crate::names::{DestinationName, Hostname, NameSource};
    let cluster = cluster();
    let config = AgentConfig::parse(
        "expectedEgress: [{namespace: ai-platform, domains: [\"*.mirror.example\"], ports: [\"443\"]}]",
        "test",
    )
    .expect("config");
    let name = |text: &str, learned| DestinationName {
        name: Hostname::parse(text).expect("hostname"),
        learned,
    };
    let rows = [
        ("no name", vec![], 443, Some(true)),
        (
            "resolved to a matching name",
            vec![name("models.mirror.example", NameSource::Dns)],
            443,
            Some(false),
        ),
        (
            "a CNAME target of the chain matches",
            vec![
                name("alias.example", NameSource::Dns),
                name("eu.mirror.example", NameSource::Dns),
            ],
            443,
            Some(false),
        ),
        (
            "the parent itself is not a subdomain",
            vec![name("mirror.example", NameSource::Dns)],
            443,
            Some(true),
        ),
        (
            "a server name alone is the client's word",
            vec![name("models.mirror.example", NameSource::Sni)],
            443,
            Some(true),
        ),
        (
            "another port",
            vec![name("models.mirror.example", NameSource::Dns)],
            80,
            Some(true),
        ),
    ];
    for (case, names, port, unexpected) in rows {
        let judgement = judge(
            &record(
                UNAUTHORISED,
                INTERNET,
                port,
                vec![observation("src", Role::Initiator, 1, 0)],
            ),
            &cluster,
            &config,
            &NodeContext::default(),
            Duration::ZERO,
            &|_| names.clone(),
        )
        .expect("judged");
        let got = judgement
            .outside_egress
            .then_some(judgement.unexpected_egress);
        assert_eq!(got, unexpected, "{case}");
        assert_eq!(judgement.dst_names, names, "{case}");
    }
}
