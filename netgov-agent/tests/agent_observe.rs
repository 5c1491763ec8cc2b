//! `netgov observe` against a live agent: the agent filters, the live
//! stream brings exactly the matching flows as they are judged, `--last`
//! the kept ones, the table reads well, a bad filter is refused plainly;
//! and the same agent reached by node, through the (fake) API server's
//! port-forward.
//!
//! Privileged: needs root. These tests fail (never skip) without it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::agent::{AGENT_PORT, call, serve, start_agent_on, write_agent_files};
use common::testbed;
use netgov_testbed::{Pod, Testbed};

fn cluster_state(pods: &[Pod]) -> String {
    let pod = |name: &str, pod: &Pod| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: ml, labels: {{app: {name}}}}}\n\
             spec: {{nodeName: node-1, containers: [{{name: c, image: i}}]}}\nstatus: {{podIP: {}}}\n",
            pod.ipv4
        )
    };
    pod("server-0", &pods[0])
        + &pod("client-a-0", &pods[1])
        + &pod("client-b-0", &pods[2])
        + "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
           metadata: {name: server-admits-a, namespace: ml}\n\
           spec: {podSelector: {matchLabels: {app: server-0}}, ingress: [{from: [{podSelector: {matchLabels: {app: client-a-0}}}]}]}\n"
}

fn observe(testbed: &Testbed, args: &[&str]) -> std::process::Output {
    testbed
        .node()
        .command(env!("CARGO_BIN_EXE_netgov"))
        .arg("observe")
        .args(args)
        .output()
        .expect("run netgov observe")
}

#[test]
fn observe_follows_and_filters_on_the_agent() {
    let testbed = testbed("observe", 3);
    let pods = testbed.pods();
    let (server, client_a, client_b) = (&pods[0], &pods[1], &pods[2]);
    let (state, config) =
        write_agent_files("observe", &cluster_state(pods), "answerWindowSeconds: 1\n");
    let _agent = start_agent_on(
        &testbed,
        "node-1",
        &state,
        &config,
        &["--drain-interval", "0.3"],
    );

    let mut follower = testbed
        .node()
        .command(env!("CARGO_BIN_EXE_netgov"))
        .args(["observe", "-f", "--from-pod", "client-b-0", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn netgov observe");
    let (tx, lines) = mpsc::channel();
    let stdout = follower.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(Duration::from_secs(1));

    for (client, port) in [(client_a, 8080), (client_b, 8080), (client_b, 8081)] {
        let answered = serve(server, port, 1);
        assert!(call(client, server.ipv4.into(), port));
        answered.join().expect("server");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while seen.len() < 2 && Instant::now() < deadline {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
            let flow: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
            let port = flow["judged_dst_port"].as_u64().expect("port");
            assert_eq!(
                flow["src_identity"]["pod"], "client-b-0",
                "filtered by the agent: {flow}"
            );
            if !seen.contains(&port) {
                seen.push(port);
            }
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    seen.sort_unstable();
    assert_eq!(seen, [8080, 8081], "both of client-b's flows, live");

    // The kept flows: the last one of client-a.
    let output = observe(
        &testbed,
        &["--last", "1", "--from-pod", "client-a-0", "-o", "json"],
    );
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    let kept: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(kept.len(), 1, "{text}");
    assert_eq!(kept[0]["src_identity"]["pod"], "client-a-0");
    assert_eq!(kept[0]["verdict"], "allow");

    observe_by_node(&testbed);

    // A table of what server-0 denied, the pod named as Hubble names it.
    let output = observe(&testbed, &["--to-pod", "ml/server", "--verdict", "deny"]);
    let text = String::from_utf8_lossy(&output.stdout);
    let rows: Vec<&str> = text.lines().collect();
    assert!(rows[0].starts_with("TIME"), "{text}");
    assert!(rows.len() >= 3, "{text}");
    for row in &rows[1..] {
        assert!(
            row.contains("ml/client-b-0") && row.contains("ml/server-0") && row.contains(" deny "),
            "{row}"
        );
    }

    // A filter that cannot match anything is refused before asking, with
    // the same words the agent's 400 has.
    for (args, expected) in [
        (
            ["--verdict", "maybe"],
            "`maybe` is not one of allow, deny, not-applicable",
        ),
        (["--to-pod", "ML/server"], "`ML` is not a namespace name"),
    ] {
        let output = observe(&testbed, &args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(
            stderr.contains(args[0]) && stderr.contains(expected),
            "{stderr}"
        );
    }
    let output = observe(
        &testbed,
        &["--to-pod", "ml/server", "--to-namespace", "shop"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("`to_pod` names namespace `ml` but `to_namespace` is `shop`"),
        "{stderr}"
    );
}

/// `observe --node`: the agent pod on node-1 is found through the API
/// server and reached through its port-forward, from outside the node.
fn observe_by_node(testbed: &Testbed) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let api = runtime.block_on(netgov_fakeapi::FakeApiServer::start());
    api.apply(
        netgov_fakeapi::Resource::Pods,
        serde_json::json!({
            "metadata": {"name": "netgov-agent-x7k2p", "namespace": "netgov",
                         "labels": {"app.kubernetes.io/name": "netgov", "app.kubernetes.io/component": "agent"}},
            // As deploy/components/metrics-auth has it: the agent's own
            // port is "observe", a proxy's (here dead) is "metrics".
            "spec": {"nodeName": "node-1", "hostNetwork": true,
                     "containers": [{"name": "agent", "ports": [{"name": "observe", "containerPort": AGENT_PORT}]},
                                    {"name": "kube-rbac-proxy", "ports": [{"name": "metrics", "containerPort": 9}]}]},
            "status": {"phase": "Running"}}),
    );
    api.set_pod_network(Some(
        std::path::Path::new("/run/netns").join(testbed.node().name()),
    ));
    let kubeconfig =
        std::env::temp_dir().join(format!("netgov-observe-kubeconfig-{}", std::process::id()));
    api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let by_node = |node: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_netgov"))
            .args(["observe", "--node", node, "--kubeconfig"])
            .arg(&kubeconfig)
            .args(["--last", "1", "--from-pod", "client-a-0", "-o", "json"])
            .output()
            .expect("run netgov observe --node")
    };

    let output = by_node("node-1");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let kept: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(kept.len(), 1, "{text}");
    assert_eq!(
        (&kept[0]["src_identity"]["pod"], &kept[0]["verdict"]),
        (
            &serde_json::json!("client-a-0"),
            &serde_json::json!("allow")
        )
    );

    // No agent there: said with the node, namespace and selector.
    let output = by_node("node-9");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("no running pod app.kubernetes.io/name=netgov,app.kubernetes.io/component=agent on node node-9 in namespace netgov"),
        "{stderr}"
    );

    // An agent pod whose port nobody listens on: the kubelet's (here the
    // fake's) words come through.
    api.apply(
        netgov_fakeapi::Resource::Pods,
        serde_json::json!({
            "metadata": {"name": "netgov-agent-down", "namespace": "netgov",
                         "labels": {"app.kubernetes.io/name": "netgov", "app.kubernetes.io/component": "agent"}},
            "spec": {"nodeName": "node-2",
                     "containers": [{"name": "agent", "ports": [{"name": "metrics", "containerPort": 9}]}]},
            "status": {"phase": "Running"}}),
    );
    let output = by_node("node-2");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr
            .contains("port-forward to netgov/netgov-agent-down (node node-2): dial 127.0.0.1:9:"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(&kubeconfig);
}
