//! The judge stage's counting: egress once per flow, by name when one
//! comes in time, unexpected once even when it becomes so later; flows not
//! judged once per connection.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use netgov_testbed::metrics_text::sample;

use super::Pipeline;
use crate::agent::shared::Shared;
use crate::capture::record::{EndReason, FlowRecord, FlowState, TcpFlags};
use crate::config::AgentConfig;
use crate::engine::ClusterState;
use crate::export::metrics::Metrics;
use crate::judge::NodeContext;
use crate::model::clock::unix_now_nanos;
use crate::names::{Hostname, NameLimits};
use crate::sources::ClusterHealth;

const SECOND: i128 = 1_000_000_000;

fn seed() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/seed-scenario/cluster.yaml"
    ))
    .expect("seed")
}

/// The seed scenario, without the policies named in `without`.
fn cluster(without: &[&str]) -> ClusterState {
    cluster_of(&seed(), without)
}

/// The cluster of `seed`'s manifests, without the policies named in
/// `without`.
fn cluster_of(seed: &str, without: &[&str]) -> ClusterState {
    let kept: Vec<&str> = seed
        .split("\n---\n")
        .filter(|doc| {
            !without
                .iter()
                .any(|name| doc.contains(&format!("name: {name}\n")))
        })
        .collect();
    ClusterState::from_yaml(&kept.join("\n---\n"))
}

fn pipeline(config: &str) -> Pipeline {
    let shared = Arc::new(Shared::new(
        Arc::new(RwLock::new(cluster(&[]))),
        Arc::new(RwLock::new(ClusterHealth::default())),
        Metrics::new(100),
        false,
        NameLimits::default(),
    ));
    let config = AgentConfig::parse(config, "test").expect("config");
    let node = NodeContext {
        node_name: Some("node-1".into()),
    };
    Pipeline::new(shared, config, node, None, Duration::from_secs(1), None)
}

/// A live TCP flow from `src` to `dst:port` that began `age` ago.
fn live(src: &str, dst: &str, port: u16, age: i128) -> FlowRecord {
    let first_seen = unix_now_nanos() - age;
    FlowRecord {
        packets_out: 3,
        bytes_out: 300,
        packets_in: 2,
        bytes_in: 120,
        state: FlowState::Established,
        tcp_flags_out: TcpFlags(0x12),
        tcp_flags_in: TcpFlags(0x12),
        first_seen,
        last_seen: first_seen,
        end_reason: EndReason::Active,
        ..FlowRecord::attempt(src, 40000, dst, port)
    }
}

fn egress(pipeline: &Pipeline, workload: &str, destination: &str, expected: &str) -> Option<f64> {
    let labels = [
        ("src_workload", workload),
        ("destination", destination),
        ("expected", expected),
    ];
    sample(
        &pipeline.shared.metrics.encode(),
        "netgov_egress_flows_total",
        &labels,
    )
}

fn unexpected(pipeline: &Pipeline, workload: &str, destination: &str) -> Option<f64> {
    let labels = [("src_workload", workload), ("destination", destination)];
    sample(
        &pipeline.shared.metrics.encode(),
        "netgov_unexpected_egress_total",
        &labels,
    )
}

#[test]
fn a_new_tcp_flow_waits_for_its_server_name_and_is_counted_once() {
    let mut pipeline = pipeline("{}");
    let record = live("10.244.0.15", "203.0.113.10", 443, 0);
    pipeline.process(record.clone());
    assert_eq!(
        egress(&pipeline, "unauthorised-0", "203.0.113.0/24", "false"),
        None
    );
    let name = Hostname::parse("api.model-hub.example").expect("hostname");
    let client = std::net::SocketAddr::new(record.src, record.src_port);
    let server = std::net::SocketAddr::new(record.dst, record.dst_port);
    pipeline
        .shared
        .names
        .server_name(client, server, name, record.first_seen + 1);
    for _ in 0..3 {
        pipeline.process(record.clone());
    }
    let ended = FlowRecord {
        end_reason: EndReason::Closed,
        ..record
    };
    pipeline.process(ended);
    assert_eq!(
        egress(
            &pipeline,
            "unauthorised-0",
            "api.model-hub.example",
            "false"
        ),
        Some(1.0)
    );
    assert_eq!(
        unexpected(&pipeline, "unauthorised-0", "api.model-hub.example"),
        Some(1.0)
    );
    assert_eq!(
        egress(&pipeline, "unauthorised-0", "203.0.113.0/24", "false"),
        None
    );
}

#[test]
fn without_a_name_egress_is_counted_by_block_once_the_wait_is_over() {
    let mut pipeline = pipeline("{}");
    let record = live("10.244.0.15", "203.0.113.10", 443, 0);
    pipeline.process(record.clone());
    pipeline.process(FlowRecord {
        first_seen: record.first_seen - 3 * SECOND,
        ..record.clone()
    });
    // The flow's identity does not include its first packet's time: the
    // same flow, now past the wait.
    pipeline.process(FlowRecord {
        first_seen: record.first_seen - 3 * SECOND,
        ..record
    });
    assert_eq!(
        egress(&pipeline, "unauthorised-0", "203.0.113.0/24", "false"),
        Some(1.0)
    );
    assert_eq!(
        unexpected(&pipeline, "unauthorised-0", "203.0.113.0/24"),
        Some(1.0)
    );
}

#[test]
fn egress_expected_at_first_is_counted_unexpected_once_it_becomes_so() {
    // data-ingestion's restrict-egress names 10.0.0.0/16 on 5432.
    let mut pipeline = pipeline("{}");
    let record = live("10.244.0.13", "10.0.0.5", 5432, 3 * SECOND);
    pipeline.process(record.clone());
    assert_eq!(
        egress(&pipeline, "data-ingestion-0", "10.0.0.0/24", "true"),
        Some(1.0)
    );
    assert_eq!(
        unexpected(&pipeline, "data-ingestion-0", "10.0.0.0/24"),
        None
    );
    // The policy goes: the same live flow is now undeclared egress.
    *pipeline.shared.state.write().expect("state") = cluster(&["restrict-egress"]);
    for _ in 0..2 {
        pipeline.process(record.clone());
    }
    assert_eq!(
        egress(&pipeline, "data-ingestion-0", "10.0.0.0/24", "true"),
        Some(1.0)
    );
    assert_eq!(
        egress(&pipeline, "data-ingestion-0", "10.0.0.0/24", "false"),
        None
    );
    assert_eq!(
        unexpected(&pipeline, "data-ingestion-0", "10.0.0.0/24"),
        Some(1.0)
    );
}

/// A connection first not judged (its initiator ran on another node),
/// then judged (the cluster now places that pod here) is forgotten as not
/// judged: a later connection on the same ports that is not judged is
/// counted again, and the table of not-judged flows does not keep it.
#[test]
fn a_flow_judged_after_all_leaves_the_not_judged_flows() {
    // unauthorised-0 (10.244.0.15) on node-2: node-1 counts none of its flows.
    let elsewhere = seed().replace(
        "  nodeName: node-1\n  containers: [{name: notebook",
        "  nodeName: node-2\n  containers: [{name: notebook",
    );
    assert_ne!(elsewhere, seed(), "the seed still places unauthorised-0");
    let mut pipeline = pipeline("{}");
    *pipeline.shared.state.write().expect("state") = cluster_of(&elsewhere, &[]);
    let counts = |pipeline: &Pipeline| {
        let text = pipeline.shared.metrics.encode();
        (
            sample(
                &text,
                "netgov_flows_not_judged_total",
                &[("reason", "counted_by_source_node")],
            ),
            sample(
                &text,
                "netgov_flows_total",
                &[("src_workload", "unauthorised-0")],
            ),
        )
    };
    let connection = || live("10.244.0.15", "10.244.0.11", 8080, SECOND);

    pipeline.process(connection());
    assert_eq!(counts(&pipeline), (Some(1.0), None));

    *pipeline.shared.state.write().expect("state") = cluster(&[]);
    let mut ended = connection();
    ended.end_reason = EndReason::Closed;
    pipeline.process(ended);
    assert_eq!(counts(&pipeline), (Some(1.0), Some(1.0)));
    assert_eq!(pipeline.live.len(), 0, "forgotten, judged or not");

    *pipeline.shared.state.write().expect("state") = cluster_of(&elsewhere, &[]);
    pipeline.process(connection());
    assert_eq!(
        counts(&pipeline),
        (Some(2.0), Some(1.0)),
        "the later connection is counted"
    );
}

/// The stage holds no record of a live flow: when the cluster changes it
/// asks the capture for every judged live flow again (not for those not
/// judged, which no policy governs), and for a flow whose wait is over
/// once, until the flow is judged again.
#[test]
fn live_flows_are_asked_for_again_not_held() {
    let mut pipeline = pipeline("{}");
    let judged = live("10.244.0.15", "203.0.113.10", 443, 0);
    let mut not_judged = live("10.244.0.15", "169.254.1.1", 53, 0);
    not_judged.protocol = crate::model::Protocol::Udp;
    pipeline.process(judged.clone());
    pipeline.process(not_judged);
    assert_eq!(pipeline.live.len(), 2);

    *pipeline.shared.state.write().expect("state") = cluster(&["restrict-egress"]);
    pipeline.on_cluster_change();
    assert_eq!(pipeline.shared.asked_again.take(), [judged.flow_id()]);
    pipeline.on_cluster_change();
    assert_eq!(
        pipeline.shared.asked_again.take(),
        [],
        "the cluster did not change again"
    );

    // The egress to 203.0.113.10 waits for a name; its wait is over.
    pipeline.judge_due();
    assert_eq!(pipeline.shared.asked_again.take(), [], "not due yet");
    let Some(super::Held::Judged(waiting)) = pipeline
        .live
        .get_mut(&judged.flow_id())
        .map(|live| &mut live.held)
    else {
        panic!("judged and live");
    };
    waiting.first_seen -= 3 * SECOND as i64;
    pipeline.judge_due();
    pipeline.judge_due();
    assert_eq!(
        pipeline.shared.asked_again.take(),
        [judged.flow_id()],
        "asked once"
    );
    // The capture reports it again: judged, counted, and not due any more.
    pipeline.process(FlowRecord {
        first_seen: judged.first_seen - 3 * SECOND,
        ..judged
    });
    assert_eq!(
        egress(&pipeline, "unauthorised-0", "203.0.113.0/24", "false"),
        Some(1.0)
    );
    pipeline.judge_due();
    assert_eq!(pipeline.shared.asked_again.take(), []);
}
