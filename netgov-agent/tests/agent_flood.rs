//! A flood of short flows through `netgov agent`: every flow that reached
//! the node is judged, or the agent's lost counters account for it — the
//! agent loses nothing silently.
//!
//! Privileged: needs root. This test fails (never skips) without it.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::agent::{http_get, start_agent};
use common::testbed;

/// Sender pods, and new flows each sends.
const SENDERS: usize = 8;
const FLOWS_PER_SENDER: usize = 4000;

/// Sum of the samples of `name` whose line contains every `filter`.
fn sum(text: &str, name: &str, filters: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_flood_of_short_flows_is_judged_or_counted_lost() {
    let testbed = testbed("flood", SENDERS + 1);
    let dir = std::env::temp_dir().join(format!("netgov-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut cluster = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: flood}\n");
    for pod in testbed.pods() {
        cluster += &format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: flood, labels: {{app: {}}}}}\n\
             spec: {{nodeName: node-1, containers: [{{name: c, image: i}}]}}\nstatus: {{podIP: {}}}\n",
            pod.name, pod.name, pod.ipv4
        );
    }
    // Every flow is a violation too: the judge's whole path runs.
    cluster += "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: flood}\nspec: {podSelector: {}, ingress: [{ports: [{port: 53, protocol: UDP}]}]}\n";
    let cluster_state = dir.join("cluster.yaml");
    std::fs::write(&cluster_state, cluster).expect("write");
    let config = dir.join("agent.yaml");
    std::fs::write(&config, "answerWindowSeconds: 1\n").expect("write");
    // The receiver drops the datagrams silently (no ICMP errors back).
    common::nft_load(
        &testbed.pods()[SENDERS].netns,
        "table inet flood {\n chain input { type filter hook input priority 0; meta l4proto udp drop; }\n}\n",
    );
    let target = testbed.pods()[SENDERS].ipv4;
    let senders = &testbed.pods()[..SENDERS];
    for pod in senders {
        // Resolve the neighbour first, so nothing is dropped inside the
        // sender before it reaches the node.
        pod.netns
            .exec("ping", &["-c", "1", "-W", "1", &target.to_string()])
            .expect("ping");
    }
    let agent = start_agent(&testbed, &cluster_state, &config);

    let sent_at = Instant::now();
    std::thread::scope(|scope| {
        for (index, pod) in senders.iter().enumerate() {
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
    let flows = (SENDERS * FLOWS_PER_SENDER) as f64;

    // Wait until the judged count settles.
    let mut last = -1.0;
    let mut text = String::new();
    let mut changed = Instant::now();
    while changed.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(500));
        text = http_get(testbed.node(), "/metrics").1;
        let judged = sum(&text, "netgov_flows_total", &[r#"protocol="UDP""#]);
        if judged > last {
            last = judged;
            changed = Instant::now();
        }
        assert!(sent_at.elapsed() < Duration::from_secs(60), "never settled");
    }
    let judged = last;
    let lost = sum(&text, "netgov_events_lost_total", &[])
        + sum(&text, "netgov_flow_table_evictions_total", &[]);
    drop(agent);
    eprintln!("flood: {flows} flows sent, {judged} judged, {lost} events counted lost");
    // Never counted twice...
    assert!(judged <= flows, "judged {judged} of {flows}");
    // ...and never lost without a trace.
    assert!(
        judged + lost >= flows,
        "{flows} flows sent, {judged} judged, {lost} counted lost: {} lost silently\n{text}",
        flows - judged - lost
    );
}
