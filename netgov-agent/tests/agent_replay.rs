//! `netgov replay` on traffic a live agent recorded: a tightening policy
//! shows exactly the flows it would break (and fails CI with
//! `--fail-on would-deny`), the recorded policies change nothing, and a bad
//! flow-log line is reported with file and line, skipped, or fatal with
//! `--strict`; and the same tightening policy staged in a live agent
//! (`--staged`) counts exactly the flows it would deny, changing nothing
//! else.
//!
//! Privileged: needs root. These tests fail (never skip) without it.

mod common;
#[path = "deploy/support.rs"]
mod support;

use std::time::{Duration, Instant};

use common::agent::{call, http_get, serve, start_agent_on, write_agent_files};
use common::testbed;
use netgov_testbed::Pod;

/// Three pods in `ml`, no policy: everything is recorded as
/// not-applicable.
fn cluster_state(pods: &[Pod]) -> String {
    let pod = |name: &str, pod: &Pod| {
        format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ml}}\n\
             ---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: ml, labels: {{app: {name}}}}}\n\
             spec: {{nodeName: node-1, containers: [{{name: c, image: i, ports: [{{name: http, containerPort: 8080}}]}}]}}\nstatus: {{podIP: {}}}\n",
            pod.ipv4
        )
    };
    pod("server-0", &pods[0]) + &pod("client-a-0", &pods[1]) + &pod("client-b-0", &pods[2])
}

/// Admits only client-a to the server's named port `http`.
const TIGHTENING: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
metadata: {name: server-admits-a, namespace: ml}\n\
spec: {podSelector: {matchLabels: {app: server-0}}, ingress: [{from: [{podSelector: {matchLabels: {app: client-a-0}}}], ports: [{port: http}]}]}\n";

/// Runs `netgov` with `args`: its exit status, output and errors.
fn netgov(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_netgov"))
        .args(args)
        .output()
        .expect("run netgov");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn replay_shows_what_a_tightening_policy_would_break() {
    let testbed = testbed("replay", 3);
    let pods = testbed.pods();
    let (server, client_a, client_b) = (&pods[0], &pods[1], &pods[2]);
    let (state, config) =
        write_agent_files("replay", &cluster_state(pods), "answerWindowSeconds: 1\n");
    let agent = start_agent_on(
        &testbed,
        "node-1",
        &state,
        &config,
        &["--drain-interval", "0.3"],
    );
    // client-a once, client-b twice: three flows, two of them client-b's.
    for client in [client_a, client_b, client_b] {
        let answered = serve(server, 8080, 1);
        assert!(call(client, server.ipv4.into(), 8080));
        answered.join().expect("server");
    }
    let flow_log = agent.flow_log.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&flow_log).map_or(0, |t| t.lines().count()) < 3 {
        assert!(Instant::now() < deadline, "three flows logged");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(agent);
    let dir = state.parent().expect("dir").to_owned();
    let policies = dir.join("tightening.yaml");
    std::fs::write(&policies, TIGHTENING).expect("write the policy");
    let log = flow_log.to_str().expect("utf-8");

    let (status, stdout, stderr) = netgov(&[
        "replay",
        "--flow-log",
        log,
        "-f",
        policies.to_str().expect("utf-8"),
        "-o",
        "json",
        "--fail-on",
        "would-deny",
    ]);
    assert_eq!(status.code(), Some(3), "{stderr}");
    let changes: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(changes.len(), 1, "{stdout}");
    let change = &changes[0];
    assert_eq!(
        (
            &change["change"],
            &change["src"],
            &change["dst"],
            &change["port"],
            &change["flows"],
            &change["because"]
        ),
        (
            &serde_json::json!("would-deny"),
            &serde_json::json!("ml/client-b-0"),
            &serde_json::json!("ml/server-0"),
            &serde_json::json!(8080),
            &serde_json::json!(2),
            &serde_json::json!("ingress: isolated by ml/server-admits-a, no rule admits it"),
        )
    );
    assert!(
        stderr.contains("3 flows replayed: 2 would be denied, 0 would be allowed, 1 unchanged; 0 lines not replayed"),
        "{stderr}"
    );

    // Against what was recorded with (no policy): nothing changes.
    let (status, stdout, stderr) = netgov(&[
        "replay",
        "--flow-log",
        log,
        "-f",
        state.to_str().expect("utf-8"),
        "--fail-on",
        "would-deny,would-allow",
    ]);
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "only the table header: {stdout}");

    // The audit of the same recording under the tightening policy: its one
    // rule admitted client-a's flow; nothing isolates the clients' egress.
    let policies_path = policies.to_str().expect("utf-8");
    let (status, stdout, stderr) = netgov(&[
        "audit",
        "--flow-log",
        log,
        "-f",
        policies_path,
        "-o",
        "json",
        "--fail-on",
        "unused-rule",
    ]);
    assert!(status.success(), "{stderr}");
    let findings: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(
        findings,
        [
            serde_json::json!({"kind": "rule", "policy": "ml/server-admits-a", "direction": "ingress", "rule": 0, "flows": 1}),
            serde_json::json!({"kind": "unprotected", "workload": "ml/client-a-0", "direction": "egress", "flows": 1}),
            serde_json::json!({"kind": "unprotected", "workload": "ml/client-b-0", "direction": "egress", "flows": 2}),
        ]
    );
    let (status, _, _) = netgov(&[
        "audit",
        "--flow-log",
        log,
        "-f",
        policies_path,
        "--fail-on",
        "unprotected",
    ]);
    assert_eq!(status.code(), Some(3));

    // Advice from the recording: valid NetworkPolicies (kubernetes-validate,
    // strict), one per workload, and replaying the recording against them
    // denies nothing that was seen.
    let (status, advice, stderr) = netgov(&["advise", "--flow-log", log, "--namespace", "ml"]);
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("3 policies from 3 flows; 0 not covered"),
        "{stderr}"
    );
    let advice_path = dir.join("advice.yaml");
    std::fs::write(&advice_path, &advice).expect("write the advice");
    let validated = support::output(
        std::process::Command::new(support::tools_dir().join("venv/bin/kubernetes-validate"))
            .args(["--strict", "-k", "1.32.0"])
            .arg(&advice_path),
    );
    assert!(
        validated.status.success(),
        "{}{}\n{advice}",
        String::from_utf8_lossy(&validated.stdout),
        String::from_utf8_lossy(&validated.stderr)
    );
    let (status, _, stderr) = netgov(&[
        "replay",
        "--flow-log",
        log,
        "-f",
        advice_path.to_str().expect("utf-8"),
        "--fail-on",
        "would-deny",
    ]);
    assert!(status.success(), "{stderr}\n{advice}");
    assert!(
        stderr.contains("3 flows replayed: 0 would be denied"),
        "{stderr}"
    );

    // A broken line: named with file and line, skipped; fatal with --strict.
    let broken = dir.join("broken.jsonl");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&flow_log).expect("log") + "{\"src\": \n",
    )
    .expect("write");
    let lines = std::fs::read_to_string(&broken)
        .expect("read")
        .lines()
        .count();
    let broken = broken.to_str().expect("utf-8");
    let (status, _, stderr) = netgov(&[
        "replay",
        "--flow-log",
        broken,
        "-f",
        policies.to_str().expect("utf-8"),
    ]);
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{broken}:{lines}: not a flow-log record")),
        "{stderr}"
    );
    assert!(
        stderr.contains("3 flows replayed: 2 would be denied"),
        "{stderr}"
    );
    let (status, _, stderr) = netgov(&[
        "replay",
        "--flow-log",
        broken,
        "-f",
        policies.to_str().expect("utf-8"),
        "--strict",
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
}

#[test]
fn staged_policies_change_the_staged_metric_and_nothing_else() {
    let testbed = testbed("staged", 3);
    let pods = testbed.pods();
    let (server, client_a, client_b) = (&pods[0], &pods[1], &pods[2]);
    let (state, config) =
        write_agent_files("staged", &cluster_state(pods), "answerWindowSeconds: 1\n");
    let staged = state.parent().expect("dir").join("staged");
    std::fs::create_dir_all(&staged).expect("staged dir");
    std::fs::write(staged.join("tightening.yaml"), TIGHTENING).expect("write the staged policy");
    let agent = start_agent_on(
        &testbed,
        "node-1",
        &state,
        &config,
        &[
            "--drain-interval",
            "0.3",
            "--staged",
            staged.to_str().expect("utf-8"),
        ],
    );
    for client in [client_a, client_b, client_b] {
        let answered = serve(server, 8080, 1);
        assert!(call(client, server.ipv4.into(), 8080));
        answered.join().expect("server");
    }
    let metric = |text: &str, name: &str, labels: &[(&str, &str)]| {
        netgov_testbed::metrics_text::sum_samples(text, name, labels)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (_, text) = http_get(testbed.node(), "/metrics");
        if metric(&text, "netgov_flows_total", &[]) >= 3.0 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let would_deny = |src: &str| {
        metric(
            &text,
            "netgov_staged_changes_total",
            &[
                ("src_workload", src),
                ("dst_workload", "server-0"),
                ("dst_port", "8080"),
                ("change", "would_deny"),
            ],
        )
    };
    assert_eq!(
        (
            would_deny("client-b-0"),
            would_deny("client-a-0"),
            metric(&text, "netgov_staged_changes_total", &[])
        ),
        (2.0, 0.0, 2.0),
        "{text}"
    );
    // The verdicts in force are untouched: three flows allowed (no policy
    // isolates either end).
    assert_eq!(
        (
            metric(&text, "netgov_flows_total", &[("verdict", "allow")]),
            metric(&text, "netgov_flows_total", &[]),
            metric(&text, "netgov_policy_violations_total", &[]),
        ),
        (3.0, 3.0, 0.0),
        "{text}"
    );
    // The flow log carries the staged verdict beside the one in force.
    let log = std::fs::read_to_string(&agent.flow_log).expect("flow log");
    let mut verdicts: Vec<(String, String, String)> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
        .map(|f| {
            let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
            (
                text(&f["src_identity"]["pod"]),
                text(&f["verdict"]),
                text(&f["staged_verdict"]),
            )
        })
        .collect();
    // Written as drained: in no particular order.
    verdicts.sort();
    let expected =
        |pod: &str, staged: &str| (pod.to_owned(), "allow".to_owned(), staged.to_owned());
    assert_eq!(
        verdicts,
        [
            expected("client-a-0", "allow"),
            expected("client-b-0", "deny"),
            expected("client-b-0", "deny")
        ]
    );
}
