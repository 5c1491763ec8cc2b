//! Table tests of the judge on the seed scenario: violations by side,
//! enforcement from what was observed, unexpected egress.

use std::time::Duration;

use super::{NodeContext, judge};
use crate::capture::record::{FlowRecord, FlowState, Observation, Protocol, Role, TcpFlags};
use crate::config::AgentConfig;
use crate::engine::ClusterState;
use crate::model::Identity;
use crate::model::Name;

const SERVING: &str = "10.244.0.11";
const MONITORING: &str = "10.244.0.12";
const INGESTION: &str = "10.244.0.13";
const UNAUTHORISED: &str = "10.244.0.15";
const REMOTE_DB: &str = "10.244.1.20";
const INTERNET: &str = "203.0.113.10";

/// The seed scenario (on `node-1`), plus a database pod on `node-2`
/// (isolated for ingress by the namespace's default deny, so flows to it
/// from data-ingestion's restricted egress are denied by both sides).
fn cluster() -> ClusterState {
    let seed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/seed-scenario/cluster.yaml"
    ))
    .expect("seed");
    let extra = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: db-0, namespace: ai-platform, labels: {app: db}}\n\
                 spec: {nodeName: node-2, containers: [{name: c, image: i}]}\nstatus: {podIP: 10.244.1.20}\n";
    ClusterState::from_yaml(&(seed + extra))
}

fn observation(interface: &str, role: Role, out: u64, back: u64) -> Observation {
    Observation {
        interface: interface.into(),
        ifindex: 0,
        role,
        packets_out: out,
        bytes_out: out * 60,
        packets_in: back,
        bytes_in: back * 60,
    }
}

fn record(src: &str, dst: &str, port: u16, observations: Vec<Observation>) -> FlowRecord {
    let packets_out = observations
        .iter()
        .map(|o| o.packets_out)
        .max()
        .unwrap_or(0);
    let packets_in = observations.iter().map(|o| o.packets_in).max().unwrap_or(0);
    FlowRecord {
        packets_out,
        bytes_out: packets_out * 60,
        packets_in,
        bytes_in: packets_in * 60,
        state: if packets_in > 0 {
            FlowState::Established
        } else {
            FlowState::Attempted
        },
        observations,
        ..FlowRecord::attempt(src, 40000, dst, port)
    }
}

fn udp(record: FlowRecord) -> FlowRecord {
    FlowRecord {
        protocol: Protocol::Udp,
        tcp_flags_out: TcpFlags(0),
        ..record
    }
}

/// An echo request: the identifier is the requester's port.
fn echo(record: FlowRecord) -> FlowRecord {
    FlowRecord {
        protocol: Protocol::Icmp,
        src_port: 7,
        dst_port: 0,
        tcp_flags_out: TcpFlags(0),
        ..record
    }
}

/// One judged flow and what the judge must make of it.
struct Row {
    name: &'static str,
    record: FlowRecord,
    /// How long ago the flow's first packet was seen.
    age: Duration,
    /// Everything a judgement decides, in one line (see [`outcome`]).
    expected: &'static str,
}

/// What a judgement decides, in one line: `VERDICT[ by SIDE][,
/// ENFORCEMENT][, unexpected egress]` (the identities are checked on their
/// own below).
fn outcome(judgement: &super::Judgement) -> String {
    let mut text = judgement.verdict.verdict.to_string();
    if let Some(side) = judgement.denied_by {
        text += &format!(" by {side}");
    }
    if let Some(enforcement) = judgement.enforcement {
        text += &format!(", {enforcement}");
    }
    if judgement.unexpected_egress {
        text += ", unexpected egress";
    }
    text
}

#[test]
fn violations_enforcement_and_unexpected_egress() {
    let cluster = cluster();
    let config = AgentConfig::parse(
        "clusterCIDRs: [10.244.0.0/16]\nexpectedEgress: [{namespace: ai-platform, workload: monitoring-0, cidrs: [198.51.100.0/24], ports: [\"443\"]}]",
        "test",
    )
    .expect("config");
    let node = NodeContext {
        node_name: Some("node-1".into()),
    };
    let young = Duration::from_secs(1);
    let old = Duration::from_secs(30);
    let local_both = |out, back| {
        vec![
            observation("src", Role::Initiator, out, back),
            observation("dst", Role::Responder, out, back),
        ]
    };
    let rows = vec![
        Row {
            name: "allowed scrape",
            record: record(MONITORING, SERVING, 8080, local_both(5, 4)),
            age: young,
            expected: "allow",
        },
        Row {
            name: "denied, delivered and answered on this node: gap",
            record: record(UNAUTHORISED, SERVING, 8080, local_both(5, 4)),
            age: young,
            expected: "deny by ingress, gap",
        },
        Row {
            name: "TCP denied, seen at the destination's interface, no answer yet: unknown",
            record: record(UNAUTHORISED, SERVING, 9999, local_both(2, 0)),
            age: young,
            expected: "deny by ingress, unknown",
        },
        Row {
            name: "TCP denied, seen at the destination's interface, never answered: a later filter dropped it",
            record: record(UNAUTHORISED, SERVING, 9999, local_both(2, 0)),
            age: old,
            expected: "deny by ingress, enforced",
        },
        Row {
            name: "UDP denied, reached the local pod's interface, no socket hook: gap",
            record: udp(record(UNAUTHORISED, SERVING, 9999, local_both(2, 0))),
            age: old,
            expected: "deny by ingress, gap",
        },
        Row {
            name: "UDP denied, reached the local pod's interface, no socket received it: unknown",
            record: FlowRecord {
                delivered_to_stack: Some(false),
                ..udp(record(UNAUTHORISED, SERVING, 9999, local_both(2, 0)))
            },
            age: old,
            expected: "deny by ingress, unknown",
        },
        Row {
            name: "UDP denied, a socket received it past the interface hook (redirect to the peer): gap",
            record: FlowRecord {
                delivered_to_stack: Some(true),
                ..udp(record(
                    UNAUTHORISED,
                    SERVING,
                    9999,
                    vec![observation("src", Role::Initiator, 2, 0)],
                ))
            },
            age: young,
            expected: "deny by ingress, gap",
        },
        Row {
            name: "denied, destination on this node saw nothing for the window: enforced",
            record: record(
                UNAUTHORISED,
                SERVING,
                8080,
                vec![observation("src", Role::Initiator, 3, 0)],
            ),
            age: old,
            expected: "deny by ingress, enforced",
        },
        Row {
            name: "denied both ways to another node, no answer yet: unknown",
            record: record(
                INGESTION,
                REMOTE_DB,
                6379,
                vec![observation("src", Role::Initiator, 1, 0)],
            ),
            age: young,
            expected: "deny by both, unknown",
        },
        Row {
            name: "denied both ways to another node, no answer within the window: enforced",
            record: record(
                INGESTION,
                REMOTE_DB,
                6379,
                vec![observation("src", Role::Initiator, 3, 0)],
            ),
            age: old,
            expected: "deny by both, enforced",
        },
        Row {
            name: "one-way UDP denied to another node, no answer after the window: unknown",
            record: udp(record(
                INGESTION,
                REMOTE_DB,
                6379,
                vec![observation("src", Role::Initiator, 3, 0)],
            )),
            age: old,
            expected: "deny by both, unknown",
        },
        Row {
            name: "UDP denied to another node, answered: gap",
            record: udp(record(
                INGESTION,
                REMOTE_DB,
                6379,
                vec![observation("src", Role::Initiator, 1, 1)],
            )),
            age: young,
            expected: "deny by both, gap",
        },
        Row {
            name: "UDP denied on this node, never reached the pod: enforced after the window",
            record: udp(record(
                UNAUTHORISED,
                SERVING,
                8080,
                vec![observation("src", Role::Initiator, 2, 0)],
            )),
            age: old,
            expected: "deny by ingress, enforced",
        },
        Row {
            name: "echo request denied to another node, no reply after the window: enforced",
            record: echo(record(
                INGESTION,
                REMOTE_DB,
                0,
                vec![observation("src", Role::Initiator, 3, 0)],
            )),
            age: old,
            expected: "deny by both, enforced",
        },
        Row {
            name: "denied both ways to another node, answered: gap",
            record: record(
                INGESTION,
                REMOTE_DB,
                6379,
                vec![observation("src", Role::Initiator, 3, 2)],
            ),
            age: young,
            expected: "deny by both, gap",
        },
        Row {
            name: "denied egress to the internet, answered: gap and unexpected",
            record: record(
                INGESTION,
                INTERNET,
                443,
                vec![observation("src", Role::Initiator, 4, 3)],
            ),
            age: young,
            expected: "deny by egress, gap, unexpected egress",
        },
        Row {
            name: "allowed egress named by an ipBlock: expected",
            record: record(
                INGESTION,
                "10.0.3.4",
                5432,
                vec![observation("src", Role::Initiator, 4, 3)],
            ),
            age: young,
            expected: "allow",
        },
        Row {
            name: "not egress-isolated, to the internet: allowed but unexpected",
            record: record(
                UNAUTHORISED,
                INTERNET,
                443,
                vec![observation("src", Role::Initiator, 4, 3)],
            ),
            age: young,
            expected: "allow, unexpected egress",
        },
        Row {
            name: "listed in the expected-egress config: expected",
            record: record(
                MONITORING,
                "198.51.100.7",
                443,
                vec![observation("src", Role::Initiator, 4, 3)],
            ),
            age: young,
            expected: "allow",
        },
        Row {
            name: "config entry for another port: unexpected",
            record: record(
                MONITORING,
                "198.51.100.7",
                80,
                vec![observation("src", Role::Initiator, 4, 3)],
            ),
            age: young,
            expected: "allow, unexpected egress",
        },
        Row {
            name: "inside the cluster CIDRs but unknown: not egress",
            record: record(
                UNAUTHORISED,
                "10.244.9.9",
                443,
                vec![observation("src", Role::Initiator, 1, 0)],
            ),
            age: young,
            expected: "allow",
        },
    ];
    let mut failures = Vec::new();
    for row in rows {
        let judgement = judge(&row.record, &cluster, &config, &node, row.age, &|_| {
            Vec::new()
        })
        .expect("judged");
        let got = outcome(&judgement);
        if got != row.expected {
            failures.push(format!(
                "{}:\n  expected {}\n  got      {got}",
                row.name, row.expected
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

// Who the ends are, which node counts a flow, and names.
mod ends_and_names;
