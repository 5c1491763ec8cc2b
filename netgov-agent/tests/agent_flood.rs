//! Floods through `netgov agent` — new UDP flows as fast as the senders
//! can, and short TCP connections: every flow that reached the node is
//! judged once, or the agent's lost counters account for it. The agent
//! loses nothing silently and counts nothing twice.
//!
//! Privileged: needs root. This test fails (never skips) without it.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::agent::{http_get, start_agent};
use common::testbed;
use netgov_testbed::metrics_text::sum_samples as sum;

/// Sender pods.
const SENDERS: usize = 8;
/// New UDP flows each sender sends, as fast as it can.
const FLOWS_PER_SENDER: usize = 4000;
/// Short TCP connections each sender opens and closes, one after another.
const CONNECTIONS_PER_SENDER: usize = 500;

/// A node whose last pod receives (UDP is dropped there silently, no ICMP
/// errors back), the others send; every pod in one namespace under a
/// policy that denies all but UDP 53, so every flow is a violation too and
/// the judge's whole path runs. The agent is ready when this returns.
fn flood_node(tag: &str) -> (netgov_testbed::Testbed, common::agent::Agent) {
    let testbed = testbed(tag, SENDERS + 1);
    let dir = std::env::temp_dir().join(format!("netgov-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut cluster = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: flood}\n");
    for pod in testbed.pods() {
        cluster += &format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: flood, labels: {{app: {}}}}}\n\
             spec: {{nodeName: node-1, containers: [{{name: c, image: i}}]}}\nstatus: {{podIP: {}}}\n",
            pod.name, pod.name, pod.ipv4
        );
    }
    cluster += "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: flood}\nspec: {podSelector: {}, ingress: [{ports: [{port: 53, protocol: UDP}]}]}\n";
    let cluster_state = dir.join("cluster.yaml");
    std::fs::write(&cluster_state, cluster).expect("write");
    let config = dir.join("agent.yaml");
    std::fs::write(&config, "answerWindowSeconds: 1\n").expect("write");
    common::nft_load(
        &testbed.pods()[SENDERS].netns,
        "table inet flood {\n chain input { type filter hook input priority 0; meta l4proto udp drop; }\n}\n",
    );
    let target = testbed.pods()[SENDERS].ipv4;
    for pod in &testbed.pods()[..SENDERS] {
        // Resolve the neighbour first, so nothing is dropped inside the
        // sender before it reaches the node.
        pod.netns
            .exec("ping", &["-c", "1", "-W", "1", &target.to_string()])
            .expect("ping");
    }
    let agent = start_agent(&testbed, &cluster_state, &config);
    (testbed, agent)
}

/// Waits until the judged count of `protocol` settles, then checks that
/// each of the `flows` sent was judged at most once, and that the lost
/// counters account for every flow not judged.
fn assert_judged_or_counted_lost(testbed: &netgov_testbed::Testbed, protocol: &str, flows: f64) {
    let started = Instant::now();
    let mut last = -1.0;
    let mut text = String::new();
    let mut changed = Instant::now();
    while changed.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(500));
        text = http_get(testbed.node(), "/metrics").1;
        let judged = sum(&text, "netgov_flows_total", &[("protocol", protocol)]);
        if judged > last {
            last = judged;
            changed = Instant::now();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never settled");
    }
    let judged = last;
    let lost = sum(&text, "netgov_events_lost_total", &[])
        + sum(&text, "netgov_flow_table_evictions_total", &[]);
    eprintln!("{protocol} flood: {flows} flows, {judged} judged, {lost} events counted lost");
    // Every kernel counter is a metric, and each loss among them is the
    // same number in netgov_events_lost_total.
    let datapath = |counter: &str| {
        sum(
            &text,
            "netgov_datapath_counter_total",
            &[("counter", counter)],
        )
    };
    assert!(datapath("packets") > flows, "{text}");
    for (stage, counter) in [
        ("kernel_ringbuf", "ringbuf_drops"),
        ("kernel_flow_map", "flow_map_update_failures"),
        ("kernel_flow_cache", "cached_packets_lost"),
        ("kernel_parse", "parse_errors"),
    ] {
        assert_eq!(
            sum(&text, "netgov_events_lost_total", &[("stage", stage)]),
            datapath(counter),
            "{stage}"
        );
    }
    // Never counted twice...
    assert!(judged <= flows, "judged {judged} of {flows}");
    // ...and never lost without a trace.
    assert!(
        judged + lost >= flows,
        "{flows} flows sent, {judged} judged, {lost} counted lost: {} lost silently\n{text}",
        flows - judged - lost
    );
}

#[test]
fn a_flood_of_new_udp_flows_is_judged_or_counted_lost() {
    let (testbed, agent) = flood_node("fludp");
    let target = testbed.pods()[SENDERS].ipv4;
    std::thread::scope(|scope| {
        for (index, pod) in testbed.pods()[..SENDERS].iter().enumerate() {
            scope.spawn(move || {
                pod.netns
                    .run_in(move || {
                        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
                        // As fast as the sender can: distinct destination
                        // ports, each datagram a new flow.
                        for n in 0..FLOWS_PER_SENDER {
                            let port = (1 + index * FLOWS_PER_SENDER + n) as u16;
                            socket
                                .send_to(b"x", SocketAddr::new(target.into(), port))
                                .expect("send");
                        }
                    })
                    .expect("sender namespace")
            });
        }
    });
    assert_judged_or_counted_lost(&testbed, "UDP", (SENDERS * FLOWS_PER_SENDER) as f64);
    drop(agent);
}

#[test]
fn a_flood_of_short_tcp_connections_is_judged_or_counted_lost() {
    let (testbed, agent) = flood_node("fltcp");
    let receiver = &testbed.pods()[SENDERS];
    let target = receiver.ipv4;
    let connections = SENDERS * CONNECTIONS_PER_SENDER;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = receiver
        .netns
        .spawn_in(move || {
            let listener = TcpListener::bind((target, 8080)).expect("listen");
            ready_tx.send(()).expect("ready");
            for _ in 0..connections {
                // Accept and close at once: the shortest connection.
                drop(listener.accept().expect("accept"));
            }
        })
        .expect("receiver namespace");
    ready_rx.recv().expect("server ready");
    std::thread::scope(|scope| {
        for pod in &testbed.pods()[..SENDERS] {
            scope.spawn(move || {
                pod.netns
                    .run_in(move || {
                        for _ in 0..CONNECTIONS_PER_SENDER {
                            let mut stream = TcpStream::connect((target, 8080)).expect("connect");
                            let _ = stream.write_all(b"x");
                            let _ = stream.read_to_end(&mut Vec::new());
                        }
                    })
                    .expect("sender namespace")
            });
        }
    });
    server.join().expect("server");
    assert_judged_or_counted_lost(&testbed, "TCP", connections as f64);
    drop(agent);
}
