//! `netgov agent` on a simulated node with the seed scenario as its
//! cluster state: an allowed flow, a denied flow that gets through (gap),
//! a denied flow a firewall in the node drops (enforced), and egress to an
//! address outside the cluster (unexpected) — read back from `/metrics`,
//! `/flows` and the flow log.
//!
//! Privileged: needs root. These tests fail (never skip) without it.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::agent::{
    AGENT_PORT, Agent, call, cpu_seconds, http_get, limit_descriptors, metric, serve, start_agent,
    start_agent_listening, start_agent_with, try_get,
};
use common::{nft_load, testbed};
use netgov_testbed::Pod;

/// A fresh directory with the seed scenario (pods on `node-1`) as the
/// cluster state and an agent configuration with a 1 s answer window:
/// `(directory, cluster-state file, configuration file, seed text)`.
fn agent_files(tag: &str) -> (PathBuf, PathBuf, PathBuf, String) {
    let seed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/seed-scenario/cluster.yaml"
    ))
    .expect("seed");
    let dir = std::env::temp_dir().join(format!("netgov-agent-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cluster_state = dir.join("cluster.yaml");
    std::fs::write(&cluster_state, &seed).expect("write");
    let config = dir.join("agent.yaml");
    std::fs::write(&config, "answerWindowSeconds: 1\n").expect("write");
    (dir, cluster_state, config, seed)
}

/// A server in `server` that answers one request on `port`.
fn answer_once(server: &Pod, port: u16) -> std::thread::JoinHandle<()> {
    serve(server, port, 1)
}

#[test]
fn agent_flags_gaps_enforcement_and_unexpected_egress() {
    // Pods 1..6: model-serving .11, monitoring .12, data-ingestion .13,
    // database .14, unauthorised .15, an "internet" host .16 that the
    // cluster state does not know.
    let testbed = testbed("agent", 6);
    let pods = testbed.pods();
    let (serving, monitoring, unauthorised, internet) = (&pods[0], &pods[1], &pods[4], &pods[5]);
    assert_eq!(serving.ipv4.to_string(), "10.244.0.11");
    assert_eq!(unauthorised.ipv4.to_string(), "10.244.0.15");

    let (dir, cluster_state, config, _) = agent_files("test");
    // A firewall in the node stands in for an enforcing CNI: it drops
    // port 9090 towards model serving before delivery.
    nft_load(
        testbed.node(),
        "table bridge ngtest {\n chain forward { type filter hook forward priority 0; ip daddr 10.244.0.11 tcp dport 9090 drop; }\n}",
    );

    let agent = start_agent(&testbed, &cluster_state, &config);
    let server = answer_once(serving, 8080);
    assert!(
        call(monitoring, serving.ipv4.into(), 8080),
        "allowed scrape"
    );
    server.join().expect("server");
    let server = answer_once(serving, 8080);
    assert!(
        call(unauthorised, serving.ipv4.into(), 8080),
        "nothing enforces policy here: it gets through"
    );
    server.join().expect("server");
    assert!(
        !call(unauthorised, serving.ipv4.into(), 9090),
        "the firewall drops it"
    );
    let server = answer_once(internet, 443);
    assert!(call(unauthorised, internet.ipv4.into(), 443));
    server.join().expect("server");

    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let (status, text) = http_get(testbed.node(), "/metrics");
        assert_eq!(status, 200);
        let done = metric(
            &text,
            "netgov_policy_violations_total",
            &[("dst_port", "9090"), ("enforcement", "enforced")],
        )
        .is_some()
            && metric(
                &text,
                "netgov_unexpected_egress_total",
                &[("src_workload", "unauthorised-0")],
            )
            .is_some();
        if done || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let violation = |port: &str, enforcement: &str| {
        metric(
            &text,
            "netgov_policy_violations_total",
            &[
                ("src_namespace", "ai-platform"),
                ("src_workload", "unauthorised-0"),
                ("dst_namespace", "ai-platform"),
                ("dst_workload", "model-serving-0"),
                ("protocol", "TCP"),
                ("dst_port", port),
                ("denied_by", "ingress"),
                ("enforcement", enforcement),
            ],
        )
    };
    assert_eq!(violation("8080", "gap"), Some(1.0), "{text}");
    assert_eq!(violation("9090", "enforced"), Some(1.0), "{text}");
    assert_eq!(
        metric(
            &text,
            "netgov_unexpected_egress_total",
            &[
                ("src_workload", "unauthorised-0"),
                ("destination", "10.244.0.0/24")
            ]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "netgov_flows_total",
            &[
                ("src_workload", "monitoring-0"),
                ("dst_workload", "model-serving-0"),
                ("verdict", "allow")
            ]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("netgov_policy_violations_total")
                && l.contains("src_workload=\"monitoring-0\"")),
        "an allowed flow is never a violation: {text}"
    );
    assert_eq!(http_get(testbed.node(), "/readyz").0, 200);
    assert_eq!(http_get(testbed.node(), "/healthz").0, 200);
    let (_, flows) = http_get(testbed.node(), "/flows?enforcement=gap");
    let flows: serde_json::Value = serde_json::from_str(&flows).expect("flows JSON");
    assert!(
        flows
            .as_array()
            .expect("array")
            .iter()
            .all(|f| f["enforcement"] == "gap")
            && !flows.as_array().expect("array").is_empty(),
        "{flows}"
    );
    let log = std::fs::read_to_string(&agent.flow_log).expect("flow log");
    let gap = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
        .find(|e| e["enforcement"] == "gap")
        .expect("a gap in the flow log");
    assert_eq!(gap["src_identity"]["pod"], "unauthorised-0");
    assert_eq!(gap["dst_identity"]["workload"], "model-serving-0");
    assert_eq!(
        gap["ingress"]["isolating_policies"][0],
        "ai-platform/allow-monitoring"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_long_lived_flow_is_judged_again_when_policies_change() {
    let testbed = testbed("rejudge", 5);
    let pods = testbed.pods();
    let (serving, unauthorised) = (&pods[0], &pods[4]);
    let (dir, cluster_state, config, seed) = agent_files("rejudge");
    let _agent = start_agent(&testbed, &cluster_state, &config);

    // A connection that stays open, quiet after its first exchange.
    let (close_tx, close_rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel();
    let ip: IpAddr = serving.ipv4.into();
    let server = serving
        .netns
        .spawn_in(move || {
            let listener = TcpListener::bind(SocketAddr::new(ip, 8080)).expect("bind");
            ready_tx.send(()).expect("ready");
            let (mut stream, _) = listener.accept().expect("accept");
            let mut buffer = [0; 5];
            stream.read_exact(&mut buffer).expect("read");
            stream.write_all(b"ok").expect("write");
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
        })
        .expect("server");
    ready_rx.recv().expect("server ready");
    let client = unauthorised
        .netns
        .spawn_in(move || {
            let mut stream = TcpStream::connect(SocketAddr::new(ip, 8080)).expect("connect");
            stream.write_all(b"hello").expect("write");
            let mut reply = [0; 2];
            stream.read_exact(&mut reply).expect("reply");
            let _ = close_rx.recv();
        })
        .expect("client");

    let pair = [
        ("src_workload", "unauthorised-0"),
        ("dst_workload", "model-serving-0"),
        ("protocol", "TCP"),
    ];
    let wait_for = |verdict: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, text) = http_get(testbed.node(), "/metrics");
            let mut labels = pair.to_vec();
            labels.push(("verdict", verdict));
            if let Some(value) = metric(&text, "netgov_flows_total", &labels) {
                return (value, text);
            }
            assert!(
                Instant::now() < deadline,
                "no {verdict} for the live flow: {text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    assert_eq!(wait_for("deny").0, 1.0);

    // A new policy admits the notebook: the live flow, with no new packet,
    // is judged again.
    let allow = "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-notebook, namespace: ai-platform}\n\
                 spec: {podSelector: {matchLabels: {app: model-serving}}, ingress: [{from: [{podSelector: {matchLabels: {app: notebook}}}]}]}\n";
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&cluster_state, format!("{seed}{allow}")).expect("write");
    let (allowed, text) = wait_for("allow");
    assert_eq!(allowed, 1.0, "{text}");

    let _ = close_tx.send(());
    client.join().expect("client");
    server.join().expect("server");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn agent_reads_the_cluster_from_the_kubernetes_api() {
    use netgov_fakeapi::{FakeApiServer, Resource};
    use serde_json::json;

    let testbed = testbed("agentkube", 5);
    let pods = testbed.pods();
    let (serving, monitoring, unauthorised) = (&pods[0], &pods[1], &pods[4]);
    let dir = std::env::temp_dir().join(format!("netgov-agent-kube-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let kubeconfig = dir.join("kubeconfig");
    // The fake API server runs in the node namespace, where the agent is.
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let (up_tx, up_rx) = std::sync::mpsc::channel();
    let kubeconfig_path = kubeconfig.clone();
    let server = testbed
        .node()
        .spawn_in(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let server = FakeApiServer::start().await;
                server.apply(Resource::Namespaces, json!({"metadata": {"name": "ai-platform"}}));
                for (name, ip, labels) in [
                    ("model-serving-0", "10.244.0.11", json!({"app": "model-serving"})),
                    ("monitoring-0", "10.244.0.12", json!({"role": "monitoring"})),
                    ("unauthorised-0", "10.244.0.15", json!({"app": "notebook"})),
                ] {
                    server.apply(
                        Resource::Pods,
                        json!({"metadata": {"name": name, "namespace": "ai-platform", "labels": labels},
                               "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i"}]},
                               "status": {"phase": "Running", "podIP": ip}}),
                    );
                }
                server.apply(
                    Resource::NetworkPolicies,
                    json!({"metadata": {"name": "allow-monitoring", "namespace": "ai-platform"},
                           "spec": {"podSelector": {"matchLabels": {"app": "model-serving"}},
                                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "monitoring"}}}],
                                                 "ports": [{"port": 8080}]}]}}),
                );
                // The cluster guard-rail of the README: only monitoring may
                // reach model-serving's admin port.
                server.apply(
                    Resource::ClusterNetworkPolicies,
                    json!({"metadata": {"name": "protect-admin-port"},
                           "spec": {"tier": "Admin", "priority": 10,
                                    "subject": {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "model-serving"}}}},
                                    "ingress": [
                                        {"name": "monitoring", "action": "Pass", "from": [{"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "monitoring"}}}}]},
                                        {"name": "admin-port", "action": "Deny", "from": [{"namespaces": {}}],
                                         "protocols": [{"tcp": {"destinationPort": {"number": 9090}}}]}]}}),
                );
                server.write_kubeconfig(&kubeconfig_path).expect("kubeconfig");
                up_tx.send(()).expect("up");
                tokio::task::spawn_blocking(move || {
                    let _ = stop_rx.recv();
                })
                .await
                .expect("stop");
            });
        })
        .expect("node namespace");
    up_rx.recv().expect("fake API server up");

    let flow_log = dir.join("flows.jsonl");
    let child = testbed
        .node()
        .command(env!("CARGO_BIN_EXE_netgov"))
        .args(["agent", "--iface", "vethp*", "--node-name", "node-1"])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--flow-log")
        .arg(&flow_log)
        .args(["--metrics-addr", &format!("127.0.0.1:{AGENT_PORT}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn netgov agent");
    // Killed on drop, should an assertion fail first.
    let mut agent = Agent {
        child,
        flow_log: flow_log.clone(),
        // Its standard error goes nowhere.
        stderr: mpsc::channel().1,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = try_get(testbed.node(), "/readyz").map_or(0, |(status, _)| status);
        if ready == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never became ready with the API server's state"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let handle = answer_once(serving, 8080);
    assert!(call(monitoring, serving.ipv4.into(), 8080));
    handle.join().expect("server");
    let handle = answer_once(serving, 8080);
    assert!(call(unauthorised, serving.ipv4.into(), 8080));
    handle.join().expect("server");
    let handle = answer_once(serving, 9090);
    assert!(call(unauthorised, serving.ipv4.into(), 9090));
    handle.join().expect("server");
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let (_, text) = http_get(testbed.node(), "/metrics");
        if metric(
            &text,
            "netgov_policy_violations_total",
            &[("enforcement", "gap")],
        ) == Some(2.0)
            || Instant::now() > deadline
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        metric(
            &text,
            "netgov_policy_violations_total",
            &[
                ("src_workload", "unauthorised-0"),
                ("dst_workload", "model-serving-0"),
                ("dst_port", "8080"),
                ("enforcement", "gap"),
                ("tier", "networkpolicy")
            ]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "netgov_policy_violations_total",
            &[
                ("src_workload", "unauthorised-0"),
                ("dst_workload", "model-serving-0"),
                ("dst_port", "9090"),
                ("denied_by", "ingress"),
                ("enforcement", "gap"),
                ("tier", "admin")
            ]
        ),
        Some(1.0),
        "the ClusterNetworkPolicy from the API denies the admin port: {text}"
    );
    assert_eq!(
        metric(&text, "netgov_policy_violations_total", &[]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "netgov_cluster_synced",
            &[("resource", "AdminNetworkPolicy")]
        ),
        Some(1.0),
        "an absent CRD does not block readiness: {text}"
    );
    assert_eq!(
        metric(
            &text,
            "netgov_flows_total",
            &[
                ("src_workload", "monitoring-0"),
                ("dst_workload", "model-serving-0"),
                ("verdict", "allow")
            ]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "netgov_cluster_synced", &[("resource", "Pod")]),
        Some(1.0),
        "{text}"
    );

    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(agent.child.id() as libc::pid_t, libc::SIGTERM) };
    assert!(agent.child.wait().expect("wait").success());
    let _ = stop_tx.send(());
    server.join().expect("fake API server");
    let _ = std::fs::remove_dir_all(dir);
}

/// With host networking the agent listens on the node's address: `/flows`
/// (who talks to whom) answers loopback clients only, `/metrics` and the
/// probes everyone.
#[test]
fn flows_answer_loopback_clients_only() {
    let testbed = testbed("agflows", 1);
    let (_dir, cluster_state, config, _) = agent_files("flows");
    let _agent = start_agent_listening(&testbed, &cluster_state, &config, "0.0.0.0");
    let get_from_pod = |path: &str| {
        let path = path.to_owned();
        testbed.pods()[0]
            .netns
            .run_in(move || {
                let address = (netgov_testbed::GATEWAY_V4, AGENT_PORT);
                let mut stream = TcpStream::connect(address).expect("connect to the node");
                write!(stream, "GET {path} HTTP/1.0\r\n\r\n").expect("request");
                let mut response = String::new();
                stream.read_to_string(&mut response).expect("response");
                response
            })
            .expect("pod namespace")
    };
    let remote = get_from_pod("/flows");
    assert!(remote.starts_with("HTTP/1.0 403"), "{remote}");
    assert!(remote.contains("loopback clients only"), "{remote}");
    for path in ["/metrics", "/healthz", "/readyz"] {
        let response = get_from_pod(path);
        assert!(response.starts_with("HTTP/1.0 200"), "{path}: {response}");
    }
    let (status, body) = http_get(testbed.node(), "/flows");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with('['), "{body}");
}

/// A flow log that cannot be written (`/dev/full`: every write fails)
/// loses no judgement: each unwritten record is counted, the flows are
/// still judged and counted once, and the agent stays healthy.
#[test]
fn flow_log_write_errors_are_counted_and_judging_goes_on() {
    let testbed = testbed("aglogerr", 2);
    let (_dir, cluster_state, config, _) = agent_files("logerr");
    let _agent = start_agent_with(
        &testbed,
        &cluster_state,
        &config,
        "127.0.0.1",
        PathBuf::from("/dev/full"),
    );
    let (client, server) = (&testbed.pods()[0], &testbed.pods()[1]);
    let handle = answer_once(server, 8080);
    assert!(call(client, server.ipv4.into(), 8080));
    handle.join().expect("server");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (flows, errors) = loop {
        let text = http_get(testbed.node(), "/metrics").1;
        let flows = metric(&text, "netgov_flows_total", &[("protocol", "TCP")]).unwrap_or(0.0);
        let errors = metric(&text, "netgov_flow_log_errors_total", &[]).unwrap_or(0.0);
        if flows >= 1.0 && errors >= 1.0 || Instant::now() > deadline {
            break (flows, errors);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(flows, 1.0, "one connection, one flow");
    assert!(errors >= 1.0, "every unwritten record is counted: {errors}");
    assert_eq!(http_get(testbed.node(), "/healthz").0, 200);
}

/// Out of file descriptors (idle connections held open past a lowered
/// limit), the agent's accept loop backs off instead of spinning, and it
/// answers again once the connections go.
#[test]
fn accept_errors_back_off_instead_of_spinning() {
    let testbed = testbed("agemfile", 1);
    let (_dir, cluster_state, config, _) = agent_files("emfile");
    let agent = start_agent(&testbed, &cluster_state, &config);
    let pid = agent.child.id();
    let limit = limit_descriptors(pid, 8);
    let held: Vec<TcpStream> = testbed
        .node()
        .run_in(move || {
            (0..limit + 32)
                .filter_map(|_| TcpStream::connect(("127.0.0.1", AGENT_PORT)).ok())
                .collect()
        })
        .expect("node namespace");
    assert!(held.len() > 8, "connections queue in the backlog");
    std::thread::sleep(Duration::from_millis(500));
    let in_use = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .count();
    assert!(
        in_use >= limit,
        "every descriptor the agent may open is in use: {in_use} of {limit}"
    );
    let before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_seconds(pid) - before;
    // A loop retrying accept at once burns a whole core (3 s here).
    assert!(
        used < 1.0,
        "the agent used {used} CPU seconds in 3 s while out of descriptors"
    );
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while try_get(testbed.node(), "/healthz").map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "the agent never answered again");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Only policy traffic is judged: the ICMP port unreachable that answers
/// a UDP datagram to a closed port, and the pods' own IPv6 neighbour
/// discovery and link-local traffic, are counted as not judged, never as
/// flows or violations.
#[test]
fn icmp_errors_and_neighbour_discovery_are_not_judged() {
    let testbed = testbed("agicmp", 2);
    let (_dir, cluster_state, config, _) = agent_files("icmp");
    let _agent = start_agent(&testbed, &cluster_state, &config);
    let (client, server) = (&testbed.pods()[0], &testbed.pods()[1]);
    let target = SocketAddr::new(server.ipv4.into(), 9);
    client
        .netns
        .run_in(move || {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
            socket.send_to(b"anyone?", target).expect("send");
        })
        .expect("client namespace");
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = http_get(testbed.node(), "/metrics").1;
        let udp = metric(&text, "netgov_flows_total", &[("protocol", "UDP")]);
        let errors = metric(
            &text,
            "netgov_flows_not_judged_total",
            &[("reason", "icmp_error")],
        );
        if (udp, errors) == (Some(1.0), Some(1.0)) || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        metric(&text, "netgov_flows_total", &[("protocol", "UDP")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "netgov_flows_not_judged_total",
            &[("reason", "icmp_error")]
        ),
        Some(1.0),
        "one port unreachable: {text}"
    );
    for protocol in ["ICMP", "ICMPv6"] {
        assert_eq!(
            metric(&text, "netgov_flows_total", &[("protocol", protocol)]),
            None,
            "no {protocol} flow is judged: {text}"
        );
    }
    // The datagram itself is denied by the seed's default deny (a gap:
    // it was delivered); the ICMP answer is no second violation.
    assert_eq!(
        metric(&text, "netgov_policy_violations_total", &[]),
        metric(
            &text,
            "netgov_policy_violations_total",
            &[
                ("protocol", "UDP"),
                ("dst_port", "9"),
                ("enforcement", "gap")
            ]
        ),
        "{text}"
    );
    assert_eq!(
        metric(&text, "netgov_policy_violations_total", &[]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "netgov_unexpected_egress_total", &[]),
        None,
        "{text}"
    );
}
