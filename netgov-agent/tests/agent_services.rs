//! Service traffic through `netgov agent` on a simulated node whose
//! nftables rules translate like kube-proxy's nftables mode: a ClusterIP
//! with a named and a numeric target port, a NodePort (masqueraded, as
//! kube-proxy does), an allowed client, a denied client delivered (gap)
//! and a denied client dropped after DNAT (enforced). Every connection
//! is one flow, judged and labelled by the backend that received it, and
//! at most one violation; the same connections in the Hubble export.
//!
//! Privileged: needs root. These tests fail (never skip) without it.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::agent::{http_get, metric, serve, start_agent_on};
use common::{nft_load, testbed};
use netgov_testbed::{GATEWAY_V4, Pod};
use serde_json::Value;

const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const NODE_PORT: u16 = 30080;

/// The cluster: backend `shop/web-7d4b9c-x1` (Deployment `web`, named
/// port `http` = 8080, and 9100) at pod 1, clients `allowed-0` and
/// `denied-0` at pods 2 and 3, all on `node-1` (the bridge address);
/// ingress to `web` from `role: frontend` on 8080 and 9100 only; Service
/// `web-svc` on 10.96.0.10 (80 → `http`, 9100 → 9100; node port 30080 for
/// 80).
fn cluster_yaml() -> String {
    format!(
        "---
apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
---
apiVersion: v1
kind: Node
metadata: {{name: node-1}}
status: {{addresses: [{{type: InternalIP, address: {GATEWAY_V4}}}]}}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-7d4b9c-x1
  namespace: shop
  labels: {{app: web, pod-template-hash: 7d4b9c}}
  ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, name: web-7d4b9c, uid: u1, controller: true}}]
spec:
  nodeName: node-1
  containers: [{{name: web, image: i, ports: [{{name: http, containerPort: 8080}}, {{name: metrics, containerPort: 9100}}]}}]
status: {{podIP: 10.244.0.11}}
---
apiVersion: v1
kind: Pod
metadata: {{name: allowed-0, namespace: shop, labels: {{role: frontend}}}}
spec: {{nodeName: node-1, containers: [{{name: c, image: i}}]}}
status: {{podIP: 10.244.0.12}}
---
apiVersion: v1
kind: Pod
metadata: {{name: denied-0, namespace: shop, labels: {{role: intruder}}}}
spec: {{nodeName: node-1, containers: [{{name: c, image: i}}]}}
status: {{podIP: 10.244.0.13}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: web-ingress, namespace: shop}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  ingress: [{{from: [{{podSelector: {{matchLabels: {{role: frontend}}}}}}], ports: [{{port: http}}, {{port: 9100}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-svc, namespace: shop}}
spec:
  type: NodePort
  clusterIP: {CLUSTER_IP}
  ports:
    - {{name: http, port: 80, targetPort: http, nodePort: {NODE_PORT}}}
    - {{name: metrics, port: 9100, targetPort: 9100}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-svc-abc, namespace: shop, labels: {{kubernetes.io/service-name: web-svc}}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}, {{name: metrics, port: 9100, protocol: TCP}}]
endpoints:
  - {{addresses: [10.244.0.11], nodeName: node-1, conditions: {{ready: true}}}}
"
    )
}

/// kube-proxy's nftables mode, reduced: DNAT of the cluster IP's ports
/// and of the node port (marked for masquerade), and a CNI-like filter
/// that drops `denied-0` → the backend's 9100 after DNAT.
fn ruleset(denied: &Pod, backend: &Pod) -> String {
    let backend = backend.ipv4;
    format!(
        "table ip netgov-test-kube-proxy {{
  chain services {{
    ip daddr {CLUSTER_IP} tcp dport 80 dnat to {backend}:8080
    ip daddr {CLUSTER_IP} tcp dport 9100 dnat to {backend}:9100
    ip daddr {GATEWAY_V4} tcp dport {NODE_PORT} meta mark set 0x4000 dnat to {backend}:8080
  }}
  chain prerouting {{ type nat hook prerouting priority dstnat; policy accept; jump services; }}
  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept; meta mark 0x4000 masquerade; }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    ip saddr {} ip daddr {backend} tcp dport 9100 drop
  }}
}}
",
        denied.ipv4
    )
}

/// Connects from `client` to `address:port`, sends and reads the answer:
/// whether an answer came.
fn call(client: &Pod, address: Ipv4Addr, port: u16) -> bool {
    client
        .netns
        .run_in(move || {
            let target = SocketAddr::new(address.into(), port);
            match TcpStream::connect_timeout(&target, Duration::from_millis(1500)) {
                Ok(mut stream) => {
                    let _ = stream.write_all(b"hello");
                    let mut answer = Vec::new();
                    let _ = stream.read_to_end(&mut answer);
                    answer == b"ok"
                }
                Err(_) => false,
            }
        })
        .expect("client namespace")
}

#[test]
fn one_service_connection_is_one_flow_judged_by_its_backend() {
    let testbed = testbed("agsvc", 3);
    let [backend, allowed, denied] = [&testbed.pods()[0], &testbed.pods()[1], &testbed.pods()[2]];
    // kube-proxy needs bridged replies to pass netfilter to undo DNAT.
    testbed
        .node()
        .sysctl("net.bridge.bridge-nf-call-iptables", "1")
        .expect("br_netfilter must be loaded for Service tests");
    nft_load(testbed.node(), &ruleset(denied, backend));
    let dir = std::env::temp_dir().join(format!("netgov-agent-svc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cluster_state, config) = (dir.join("cluster.yaml"), dir.join("agent.yaml"));
    std::fs::write(&cluster_state, cluster_yaml()).expect("write");
    std::fs::write(&config, "answerWindowSeconds: 1\n").expect("write");
    let export = dir.join("hubble-export.json");
    let _ = std::fs::remove_file(&export);
    let agent = start_agent_on(
        &testbed,
        "node-1",
        &cluster_state,
        &config,
        &["--hubble-export-file-path", export.to_str().expect("UTF-8")],
    );

    let http = serve(backend, 8080, 3);
    let metrics_port = serve(backend, 9100, 1);
    // allowed: ClusterIP:80 (named target port), ClusterIP:9100 (numeric),
    // node port; denied: ClusterIP:80 (delivered), ClusterIP:9100 (dropped
    // after DNAT).
    assert!(call(allowed, CLUSTER_IP, 80), "allowed via the cluster IP");
    assert!(
        call(allowed, CLUSTER_IP, 9100),
        "allowed to the second port"
    );
    assert!(
        call(allowed, GATEWAY_V4, NODE_PORT),
        "allowed via the node port"
    );
    assert!(
        call(denied, CLUSTER_IP, 80),
        "nothing enforces port 80's policy"
    );
    assert!(
        !call(denied, CLUSTER_IP, 9100),
        "the filter drops it after DNAT"
    );
    http.join().expect("http server");
    metrics_port.join().expect("metrics server");

    // Every connection judged (the dropped one after its tracking wait and
    // answer window), then ended (close grace): counts must stay exact.
    let flows = |text: &str, labels: &[(&str, &str)]| {
        metric(text, "netgov_flows_total", labels).unwrap_or(0.0)
    };
    let violations = |text: &str, labels: &[(&str, &str)]| {
        metric(text, "netgov_policy_violations_total", labels).unwrap_or(0.0)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let text = http_get(testbed.node(), "/metrics").1;
        if flows(&text, &[("protocol", "TCP")]) >= 5.0 && violations(&text, &[]) >= 2.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_secs(4));
    let text = http_get(testbed.node(), "/metrics").1;
    let to_web = |src: &str, verdict: &str| {
        flows(
            &text,
            &[
                ("src_workload", src),
                ("dst_namespace", "shop"),
                ("dst_workload", "web"),
                ("protocol", "TCP"),
                ("verdict", verdict),
            ],
        )
    };
    assert_eq!(to_web("allowed-0", "allow"), 3.0, "{text}");
    assert_eq!(to_web("denied-0", "deny"), 2.0, "{text}");
    assert_eq!(
        flows(&text, &[("protocol", "TCP")]),
        5.0,
        "five connections, five flows: {text}"
    );
    assert_eq!(
        flows(&text, &[("dst_workload", "web-svc")]),
        0.0,
        "labelled by the backend, not the Service"
    );
    let violation = |port: &str, enforcement: &str| {
        violations(
            &text,
            &[
                ("src_workload", "denied-0"),
                ("dst_workload", "web"),
                ("dst_port", port),
                ("denied_by", "ingress"),
                ("enforcement", enforcement),
            ],
        )
    };
    assert_eq!(violation("8080", "gap"), 1.0, "{text}");
    assert_eq!(violation("9100", "enforced"), 1.0, "{text}");
    assert_eq!(violations(&text, &[]), 2.0, "{text}");
    assert_eq!(
        metric(&text, "netgov_conntrack_errors_total", &[]),
        Some(0.0)
    );

    // The flow log names the Service each flow went through.
    let log = std::fs::read_to_string(&agent.flow_log).expect("flow log");
    let entries: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .filter(|e: &Value| e["protocol"] == "TCP")
        .collect();
    let services: std::collections::BTreeSet<(String, String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["src_identity"]["pod"].as_str().unwrap_or("").to_owned(),
                e["service"]["name"].as_str().unwrap_or("-").to_owned(),
                e["service"]["address"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    let expected: std::collections::BTreeSet<(String, String, String)> = [
        ("allowed-0", "10.96.0.10:80"),
        ("allowed-0", "10.96.0.10:9100"),
        ("allowed-0", "10.244.0.1:30080"),
        ("denied-0", "10.96.0.10:80"),
        ("denied-0", "10.96.0.10:9100"),
    ]
    .into_iter()
    .map(|(pod, address)| (pod.to_owned(), "web-svc".to_owned(), address.to_owned()))
    .collect();
    assert_eq!(services, expected, "{log}");

    // The same connections as Hubble flows: the backend pod as the
    // destination with its port (the dropped one never reached it: the
    // backends' workload, as judged), the Service in
    // `destination_service`, the node's address the node port's client was
    // masqueraded to; one event per connection, and one more for the
    // dropped one only if its enforcement was first unknown.
    let export = std::fs::read_to_string(&export).expect("Hubble export");
    let mut events: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    for line in export.lines() {
        let line: Value = serde_json::from_str(line).expect("JSON line");
        let flow = &line["flow"];
        let Some(tcp) = flow["l4"].get("TCP") else {
            continue;
        };
        // A pod by name; a destination whose backend the capture never saw
        // (dropped after DNAT) by the workload the judge named.
        let end = |e: &Value| match e["pod_name"].as_str() {
            Some(pod) => format!("{}/{pod}", e["namespace"].as_str().unwrap_or("")),
            None => format!(
                "{}/workload:{}",
                e["namespace"].as_str().unwrap_or(""),
                e["workloads"][0]["name"].as_str().unwrap_or("")
            ),
        };
        let service = &flow["destination_service"];
        events
            .entry(tcp["source_port"].as_u64().expect("port"))
            .or_default()
            .push(format!(
                "{} -> {}:{} {} service={}/{} xlated={}",
                end(&flow["source"]),
                end(&flow["destination"]),
                tcp["destination_port"],
                flow["verdict"].as_str().unwrap_or("VERDICT_UNKNOWN"),
                service["namespace"].as_str().unwrap_or("-"),
                service["name"].as_str().unwrap_or("-"),
                flow["IP"]["source_xlated"].as_str().unwrap_or("-"),
            ));
    }
    let web = "shop/web-7d4b9c-x1";
    let unknown =
        format!("shop/denied-0 -> {web}:9100 VERDICT_UNKNOWN service=shop/web-svc xlated=-");
    let mut last: Vec<String> = events
        .values()
        .map(|connection| {
            let (final_event, earlier) = connection.split_last().expect("an event");
            assert!(
                earlier.is_empty() || earlier == [unknown.clone()],
                "one event per connection, and an unknown enforcement before a drop: {connection:#?}"
            );
            final_event.clone()
        })
        .collect();
    last.sort();
    assert_eq!(
        last,
        [
            format!("shop/allowed-0 -> {web}:8080 FORWARDED service=shop/web-svc xlated=-"),
            format!(
                "shop/allowed-0 -> {web}:8080 FORWARDED service=shop/web-svc xlated={GATEWAY_V4}"
            ),
            format!("shop/allowed-0 -> {web}:9100 FORWARDED service=shop/web-svc xlated=-"),
            format!("shop/denied-0 -> {web}:8080 AUDIT service=shop/web-svc xlated=-"),
            "shop/denied-0 -> shop/workload:web:9100 DROPPED service=shop/web-svc xlated=-"
                .to_owned(),
        ],
        "{export}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
