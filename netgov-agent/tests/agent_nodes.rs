//! Two simulated nodes with an agent each, as a DaemonSet runs them:
//! node-1 bridged, node-2 routed (no bridge, /32 host routes, proxy ARP,
//! Calico style), joined by an underlay. Cross-node flows — allowed,
//! denied and delivered, denied and dropped on the destination's node,
//! denied and dropped on the source's node — over TCP, one-way UDP and
//! IPv6 with neighbour discovery running, and the sums of both agents'
//! metrics: each flow and each violation counted once cluster-wide.
//!
//! Privileged: needs root. These tests fail (never skip) without it.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::agent::{Agent, call, http_get, serve, start_agent_on, write_agent_files};
use common::nft_load;
use netgov_testbed::metrics_text::sum_samples;
use netgov_testbed::{NodeStyle, Pod, Testbed, Underlay};

/// The pods: on node-1 trainer (allowed to reach the models), intruder
/// (allowed nowhere) and ingest (egress only to a database range); on
/// node-2 model and vault, which admit trainer and ingest on TCP 8080 and
/// UDP 9000.
fn cluster_state(node1: &Testbed, node2: &Testbed, underlay: &Underlay) -> String {
    let pod = |name: &str, app: &str, node: &str, pod: &Pod| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: ml, labels: {{app: {app}}}}}\n\
             spec: {{nodeName: {node}, containers: [{{name: c, image: i}}]}}\n\
             status: {{podIP: {v4}, podIPs: [{{ip: {v4}}}, {{ip: {v6}}}]}}\n",
            v4 = pod.ipv4,
            v6 = pod.ipv6
        )
    };
    let node = |name: &str, address| {
        format!(
            "---\napiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n\
             status: {{addresses: [{{type: InternalIP, address: {address}}}]}}\n"
        )
    };
    let (a, b) = (node1.pods(), node2.pods());
    [
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: ml}\n".to_owned(),
        node("node-1", underlay.first_v4),
        node("node-2", underlay.second_v4),
        pod("trainer-0", "trainer", "node-1", &a[0]),
        pod("intruder-0", "intruder", "node-1", &a[1]),
        pod("ingest-0", "ingest", "node-1", &a[2]),
        pod("model-0", "model", "node-2", &b[0]),
        pod("vault-0", "vault", "node-2", &b[1]),
        "---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: models-admit-clients, namespace: ml}
spec:
  podSelector: {matchExpressions: [{key: app, operator: In, values: [model, vault]}]}
  policyTypes: [Ingress]
  ingress:
    - from: [{podSelector: {matchExpressions: [{key: app, operator: In, values: [trainer, ingest]}]}}]
      ports: [{port: 8080, protocol: TCP}, {port: 9000, protocol: UDP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ingest-to-database-only, namespace: ml}
spec:
  podSelector: {matchLabels: {app: ingest}}
  policyTypes: [Egress]
  egress:
    - to: [{ipBlock: {cidr: 10.0.0.0/16}}]
      ports: [{port: 5432}]
"
        .to_owned(),
    ]
    .concat()
}

/// Three datagrams from `client` to `server:port`, never answered.
fn udp_send(client: &Pod, server: IpAddr, port: u16) {
    client
        .netns
        .run_in(|| {
            let any = if server.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let socket = UdpSocket::bind(any).expect("bind");
            for _ in 0..3 {
                socket
                    .send_to(b"one-way", SocketAddr::new(server, port))
                    .expect("send");
            }
        })
        .expect("client namespace");
}

/// A UDP socket in `pod` that takes datagrams on `port` and never
/// answers (so no port-unreachable comes back either).
fn udp_sink(pod: &Pod, port: u16) -> std::thread::JoinHandle<usize> {
    let ip = pod.ipv4;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = pod
        .netns
        .spawn_in(move || {
            let socket = UdpSocket::bind((ip, port)).expect("bind");
            socket
                .set_read_timeout(Some(Duration::from_secs(4)))
                .expect("timeout");
            ready_tx.send(()).expect("ready");
            let mut received = 0;
            let mut buffer = [0; 64];
            while socket.recv(&mut buffer).is_ok() {
                received += 1;
            }
            received
        })
        .expect("pod namespace");
    ready_rx.recv().expect("sink ready");
    handle
}

/// A CNI's enforcement on `node`: drops what `from` sends `to`.
fn drop_forwarded(node: &Testbed, from: &Pod, to: &Pod) {
    nft_load(
        node.node(),
        &format!(
            "table inet cni {{ chain forward {{ type filter hook forward priority 0; \
             ip saddr {} ip daddr {} drop\n}}\n}}",
            from.ipv4, to.ipv4
        ),
    );
}

/// Both agents' `/metrics`, concatenated: summing a series over it is
/// what `sum()` over the DaemonSet does.
fn cluster_metrics(nodes: &[&Testbed; 2]) -> (String, [String; 2]) {
    let texts = nodes.map(|node| http_get(node.node(), "/metrics").1);
    (texts.concat(), texts)
}

#[test]
fn each_flow_and_violation_is_counted_once_across_nodes() {
    let prefix = Testbed::unique_prefix("nodes");
    let mut node1 = Testbed::node_numbered(&format!("{prefix}a"), 0, NodeStyle::Bridged)
        .expect("building namespaces needs root (these tests must not be skipped)");
    let mut node2 =
        Testbed::node_numbered(&format!("{prefix}b"), 1, NodeStyle::Routed).expect("node-2");
    for name in ["trainer", "intruder", "ingest"] {
        node1.add_pod(name).expect("pod");
    }
    for name in ["model", "vault"] {
        node2.add_pod(name).expect("pod");
    }
    let underlay = Underlay::join(&node1, &node2).expect("underlay");
    let (trainer, intruder, ingest) = (&node1.pods()[0], &node1.pods()[1], &node1.pods()[2]);
    let (model, vault) = (&node2.pods()[0], &node2.pods()[1]);

    // The CNI's enforcement, at each end: node-2 drops intruder's traffic
    // to vault (ingress), node-1 drops everything ingest sends to model
    // (egress).
    drop_forwarded(&node2, intruder, vault);
    drop_forwarded(&node1, ingest, model);

    let (state, config) = write_agent_files(
        &prefix,
        &cluster_state(&node1, &node2, &underlay),
        "answerWindowSeconds: 1\nclusterCIDRs: [10.244.0.0/16, fd00:244::/32]\n",
    );
    // UDP flows end after 3 s (their violations are counted then, as
    // unknown); TCP flows keep the default 60 s, so their enforcement must
    // come from the answer window (1 s), not from their end.
    // Both simulated nodes share this machine's kernel: a socket hook
    // (root cgroup) would see the other node's pods receive datagrams,
    // which a real node never can. The nodes run without it.
    let short_timeouts = [
        "--cgroup-root",
        "none",
        "--drain-interval",
        "0.3",
        "--udp-idle-timeout",
        "3",
        "--close-grace",
        "0.5",
    ];
    let _agents: [Agent; 2] = [
        start_agent_on(&node1, "node-1", &state, &config, &short_timeouts),
        start_agent_on(&node2, "node-2", &state, &config, &short_timeouts),
    ];

    // TCP: allowed, denied and delivered, denied and dropped at either end.
    let server = serve(model, 8080, 2);
    assert!(call(trainer, model.ipv4.into(), 8080));
    assert!(call(intruder, model.ipv4.into(), 8080));
    server.join().expect("server");
    assert!(!call(intruder, vault.ipv4.into(), 8080));
    assert!(!call(ingest, model.ipv4.into(), 8080));
    // IPv6 through the routed node's link-local gateway: neighbour
    // discovery runs on both nodes.
    let server = model
        .netns
        .spawn_in({
            let ip = model.ipv6;
            move || {
                let listener = std::net::TcpListener::bind((ip, 8080)).expect("bind v6");
                let (mut stream, _) = listener.accept().expect("accept");
                let _ = stream.read(&mut [0; 16]);
                let _ = stream.write_all(b"ok");
            }
        })
        .expect("model namespace");
    std::thread::sleep(Duration::from_millis(200));
    assert!(call(trainer, model.ipv6.into(), 8080));
    server.join().expect("v6 server");

    // One-way UDP: the same four cases.
    let sinks = [udp_sink(model, 9000), udp_sink(vault, 9000)];
    udp_send(trainer, model.ipv4.into(), 9000);
    udp_send(intruder, model.ipv4.into(), 9000);
    udp_send(intruder, vault.ipv4.into(), 9000);
    udp_send(ingest, model.ipv4.into(), 9000);
    // Allowed, to an address nobody listens on: model answers with an
    // ICMPv6 port unreachable, which is no flow and no violation.
    udp_send(trainer, model.ipv6.into(), 9000);
    let [model_received, vault_received] = sinks.map(|s| s.join().expect("sink"));
    assert_eq!(
        (model_received, vault_received),
        (6, 0),
        "trainer's and intruder's datagrams reach model; the CNIs drop the rest"
    );

    // Every UDP flow ends (3 s idle) and is counted then; the TCP
    // violations are counted once their answer window passed, well before
    // this deadline and the 60 s TCP idle timeout.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (all, [text1, text2]) = loop {
        let (all, texts) = cluster_metrics(&[&node1, &node2]);
        let violations = sum_samples(&all, "netgov_policy_violations_total", &[]);
        if violations >= 6.0 || Instant::now() > deadline {
            break (all, texts);
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let violations =
        |labels: &[(&str, &str)]| sum_samples(&all, "netgov_policy_violations_total", labels);
    let flows = |labels: &[(&str, &str)]| sum_samples(&all, "netgov_flows_total", labels);
    let tcp = ("protocol", "TCP");
    let udp = ("protocol", "UDP");
    assert_eq!(
        (
            flows(&[tcp, ("verdict", "allow")]),
            flows(&[tcp, ("verdict", "deny")]),
            flows(&[udp, ("verdict", "allow")]),
            flows(&[udp, ("verdict", "deny")]),
        ),
        (2.0, 3.0, 2.0, 3.0),
        "each flow once cluster-wide (two allowed each, v4 and v6):\n{all}"
    );
    assert_eq!(
        sum_samples(
            &all,
            "netgov_flows_not_judged_total",
            &[("reason", "icmp_error")]
        ),
        2.0,
        "the port unreachable, seen leaving model and reaching trainer:\n{all}"
    );
    let pair =
        |src: &'static str, dst: &'static str| [("src_workload", src), ("dst_workload", dst)];
    let rows = [
        (pair("intruder-0", "model-0"), tcp, "ingress", "gap"),
        (pair("intruder-0", "vault-0"), tcp, "ingress", "enforced"),
        (pair("ingest-0", "model-0"), tcp, "egress", "enforced"),
        // One-way traffic to another node: the initiator's node cannot see
        // whether it was delivered, and says so.
        (pair("intruder-0", "model-0"), udp, "ingress", "unknown"),
        (pair("intruder-0", "vault-0"), udp, "ingress", "unknown"),
        (pair("ingest-0", "model-0"), udp, "egress", "unknown"),
    ];
    for (ends, protocol, denied_by, enforcement) in rows {
        let labels = [
            ends[0],
            ends[1],
            protocol,
            ("denied_by", denied_by),
            ("enforcement", enforcement),
        ];
        assert_eq!(violations(&labels), 1.0, "{labels:?}:\n{all}");
    }
    assert_eq!(violations(&[]), 6.0, "{all}");
    assert_eq!(
        sum_samples(&text2, "netgov_policy_violations_total", &[]),
        0.0,
        "node-2 counts nothing node-1's pods started:\n{text2}"
    );
    assert_eq!(
        sum_samples(
            &text2,
            "netgov_flows_not_judged_total",
            &[("reason", "counted_by_source_node")]
        ),
        6.0,
        "node-2 saw the flows to model (TCP v4 twice, v6, UDP v4 twice, v6), each left to node-1:\n{text2}"
    );
    assert_eq!(
        sum_samples(&all, "netgov_unexpected_egress_total", &[]),
        0.0,
        "neighbour discovery and link-local traffic are not egress:\n{all}"
    );
    assert!(
        sum_samples(&text1, "netgov_flows_not_judged_total", &[]) >= 1.0,
        "neighbour discovery was seen and set aside on node-1:\n{text1}"
    );
}
