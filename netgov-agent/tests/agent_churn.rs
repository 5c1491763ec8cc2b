//! Pod churn with IP reuse under live traffic: a pod is deleted and a new
//! pod with other labels takes its IP while the old pod's flows are still
//! live (a long TCP connection, UDP flows waiting for their idle
//! timeout). Every flow must stay with the pod that existed when it was
//! seen — judged again on the cluster changes, judged at its end after
//! the reuse — and the new pod's flows with the new pod.
//!
//! Privileged: needs root. These tests fail (never skip) without it.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::agent::{http_get, metric, start_agent_on, write_agent_files};
use common::testbed;
use netgov_testbed::Pod;

/// The cluster: server-0 admitting only `app=old` on TCP 8080 and UDP
/// 9000, and `client` (the client pod's IP), if any, as `name app`.
fn cluster_state(server: &Pod, client: Option<(&str, &str, &Pod)>) -> String {
    let pod = |name: &str, app: &str, pod: &Pod| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: ml, labels: {{app: {app}}}}}\n\
             spec: {{nodeName: node-1, containers: [{{name: c, image: i}}]}}\nstatus: {{podIP: {}}}\n",
            pod.ipv4
        )
    };
    let mut text = pod("server-0", "server", server);
    if let Some((name, app, client)) = client {
        text += &pod(name, app, client);
    }
    text + "---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-admits-old, namespace: ml}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
    - from: [{podSelector: {matchLabels: {app: old}}}]
      ports: [{port: 8080, protocol: TCP}, {port: 9000, protocol: UDP}]
"
}

/// Writes the cluster state and waits until the agent has loaded it:
/// the pods of `ml` that no policy isolates for ingress (every pod but
/// the server) number `unprotected`.
fn apply(node: &netgov_testbed::Netns, path: &std::path::Path, text: &str, unprotected: f64) {
    std::fs::write(path, text).expect("write cluster state");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = http_get(node, "/metrics");
        let labels = [("namespace", "ml"), ("direction", "ingress")];
        if metric(&metrics, "netgov_unprotected_pods", &labels) == Some(unprotected) {
            return;
        }
        assert!(Instant::now() < deadline, "the agent never reloaded");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `count` one-datagram UDP flows from `client` to `server:9000`; their
/// source ports.
fn udp_flows(client: &Pod, server: IpAddr, count: usize) -> Vec<u16> {
    client
        .netns
        .run_in(|| {
            (0..count)
                .map(|_| {
                    let socket = UdpSocket::bind(("0.0.0.0", 0)).expect("bind");
                    socket
                        .send_to(b"sample", SocketAddr::new(server, 9000))
                        .expect("send");
                    socket.local_addr().expect("address").port()
                })
                .collect()
        })
        .expect("client namespace")
}

#[test]
fn flows_keep_the_pod_they_were_seen_with_when_its_ip_is_reused() {
    let testbed = testbed("churn", 2);
    let (server, client) = (&testbed.pods()[0], &testbed.pods()[1]);
    let (state, config) = write_agent_files(
        "churn",
        &cluster_state(server, Some(("old-0", "old", client))),
        "answerWindowSeconds: 1\n",
    );
    let agent = start_agent_on(
        &testbed,
        "node-1",
        &state,
        &config,
        &[
            "--drain-interval",
            "0.3",
            "--udp-idle-timeout",
            "4",
            "--close-grace",
            "0.5",
        ],
    );

    // The server: a UDP sink, and one TCP connection held open.
    let server_ip: IpAddr = server.ipv4.into();
    let (udp, tcp) = server
        .netns
        .run_in(|| {
            let udp = UdpSocket::bind((server_ip, 9000)).expect("udp");
            let tcp = TcpListener::bind((server_ip, 8080)).expect("tcp");
            (udp, tcp)
        })
        .expect("server namespace");
    let held = std::thread::spawn(move || {
        let (mut stream, _) = tcp.accept().expect("accept");
        let mut buffer = [0; 16];
        // Until the client closes.
        while stream.read(&mut buffer).is_ok_and(|n| n > 0) {}
    });

    // Phase 1: old-0's flows.
    let mut long_connection = client
        .netns
        .run_in(|| TcpStream::connect((server_ip, 8080)).expect("connect"))
        .expect("client namespace");
    long_connection.write_all(b"before").expect("write");
    let old_ports: BTreeSet<u16> = udp_flows(client, server_ip, 5)
        .into_iter()
        .chain([long_connection.local_addr().expect("address").port()])
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = http_get(testbed.node(), "/metrics");
        let labels = [("src_workload", "old-0"), ("verdict", "allow")];
        if metric(&text, "netgov_flows_total", &labels) == Some(6.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old-0's flows never counted: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // old-0 is deleted; a moment later new-0 takes its IP — while old-0's
    // flows are live.
    apply(testbed.node(), &state, &cluster_state(server, None), 0.0);
    apply(
        testbed.node(),
        &state,
        &cluster_state(server, Some(("new-0", "new", client))),
        1.0,
    );

    // Phase 2: new-0's flows; old-0's connection ends now.
    let new_ports: BTreeSet<u16> = udp_flows(client, server_ip, 3).into_iter().collect();
    long_connection.write_all(b"after").expect("write");
    drop(long_connection);
    held.join().expect("server");
    let mut buffer = [0; 16];
    udp.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let received = std::iter::from_fn(|| udp.recv(&mut buffer).ok()).count();
    assert_eq!(received, 8, "every datagram was delivered");

    // Every UDP flow ends (4 s idle) and is judged again then.
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = std::fs::read_to_string(&agent.flow_log).unwrap_or_default();
        let ended = log
            .lines()
            .filter(|l| {
                l.contains("\"end_reason\":\"idle\"") || l.contains("\"end_reason\":\"closed\"")
            })
            .count();
        if ended >= 9 || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let mut seen = BTreeSet::new();
    for line in log.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        let port = entry["src_port"].as_u64().expect("port") as u16;
        let pod = entry["src_identity"]["pod"]
            .as_str()
            .unwrap_or("-")
            .to_owned();
        let expected = if old_ports.contains(&port) {
            "old-0"
        } else if new_ports.contains(&port) {
            "new-0"
        } else {
            continue;
        };
        assert_eq!(pod, expected, "flow from port {port}: {entry:#}");
        seen.insert((
            port,
            entry["end_reason"].as_str().expect("reason").to_owned(),
        ));
    }
    let ended = seen.iter().filter(|(_, reason)| reason != "active").count();
    assert_eq!(ended, 9, "every flow ended and was logged: {seen:?}\n{log}");

    let (_, text) = http_get(testbed.node(), "/metrics");
    // old-0's series went with it (a deleted workload); nothing of its
    // flows was counted again, under new-0 or anyone.
    assert_eq!(
        metric(&text, "netgov_flows_total", &[]),
        Some(3.0),
        "only new-0's flows since: {text}"
    );
    assert_eq!(
        metric(
            &text,
            "netgov_flows_total",
            &[("src_workload", "new-0"), ("verdict", "deny")]
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "netgov_policy_violations_total", &[]),
        Some(3.0),
        "only new-0's flows are violations: {text}"
    );
    assert_eq!(
        metric(
            &text,
            "netgov_policy_violations_total",
            &[("src_workload", "new-0"), ("enforcement", "gap")]
        ),
        Some(3.0),
        "{text}"
    );
}
