//! `netgov check` as users run it: manifests and flows in, one result per
//! flow out, clear errors with non-zero exit on bad input.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/seed-scenario");

fn netgov(args: &[&str], stdin: Option<&str>) -> Output {
    netgov_with_env(args, stdin, &[])
}

/// `netgov` with the log variables cleared, then `env` set.
fn netgov_with_env(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_netgov"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("NETGOV_LOG")
        .env_remove("NETGOV_LOG_FORMAT")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn netgov");
    let mut child_stdin = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        child_stdin.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(child_stdin);
    child.wait_with_output().expect("wait")
}

fn lines(output: &Output) -> Vec<Value> {
    assert!(
        output.status.success(),
        "netgov check failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("netgov-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn judges_flows_from_stdin_in_order_and_echoes_input_fields() {
    let flows = r#"{"src":"10.244.0.12","dst":"10.244.0.11","protocol":"TCP","dst_port":8080,"ticket":"A-1"}
{"src":"10.244.0.15","dst":"10.244.0.11","protocol":"TCP","dst_port":8080,"src_port":40000}

{"src":"10.244.0.13","dst":"10.0.3.4","protocol":"TCP","dst_port":5432}
{"src":"10.244.0.13","dst":"203.0.113.10","protocol":"TCP","dst_port":443}
{"src":"10.244.0.15","dst":"203.0.113.10","protocol":"ICMP"}
"#;
    let results = lines(&netgov(
        &["check", "--manifests", SEED, "--flows", "-"],
        Some(flows),
    ));
    let verdicts: Vec<&str> = results
        .iter()
        .map(|r| r["verdict"].as_str().expect("verdict"))
        .collect();
    assert_eq!(verdicts, ["allow", "deny", "allow", "deny", "allow"]);
    assert_eq!(
        results[0]["ticket"], "A-1",
        "unknown input fields are echoed"
    );
    assert_eq!(results[1]["src_port"], 40000);
    assert_eq!(
        results[0]["ingress"]["allowed_by"][0]["policy"],
        "ai-platform/allow-monitoring"
    );
    assert_eq!(results[0]["ingress"]["allowed_by"][0]["rule"], 0);
    assert_eq!(results[1]["ingress"]["verdict"], "deny");
    assert_eq!(
        results[1]["ingress"]["isolating_policies"],
        serde_json::json!(["ai-platform/allow-monitoring", "ai-platform/default-deny"])
    );
    assert_eq!(
        results[3]["egress"]["isolating_policies"][0],
        "ai-platform/restrict-egress"
    );
    assert_eq!(results[4]["destination"]["kind"], "external");
}

#[test]
fn flow_flags_accept_pod_names_and_the_table_reads_well() {
    let output = netgov(
        &[
            "check",
            "--manifests",
            SEED,
            "--format",
            "table",
            "--flow",
            "ai-platform/monitoring-0 -> ai-platform/model-serving-0:8080/TCP",
            "--flow",
            "ai-platform/unauthorised-0 -> 10.244.0.11:8080/TCP",
        ],
        None,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(rows[0].starts_with("SOURCE"));
    assert!(
        rows[1].contains("allow by ai-platform/allow-monitoring#0"),
        "{text}"
    );
    assert!(rows[2].contains("deny: isolated by"), "{text}");

    let json = lines(&netgov(
        &[
            "check",
            "--manifests",
            SEED,
            "--flow",
            "ai-platform/monitoring-0 -> ai-platform/model-serving-0:8080/TCP",
        ],
        None,
    ));
    assert_eq!(json[0]["src_ip"], "10.244.0.12");
    assert_eq!(json[0]["dst_ip"], "10.244.0.11");
}

#[test]
fn kind_list_and_json_manifests_work() {
    let list = r#"{"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "x", "labels": {"app": "a"}}, "status": {"podIP": "10.9.0.1"}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b", "namespace": "x"}, "status": {"podIP": "10.9.0.2"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ignored", "namespace": "x"}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": "x"},
         "spec": {"podSelector": {"matchLabels": {"app": "a"}}, "ingress": []}}]}"#;
    let path = temp_file("list.json", list);
    let results = lines(&netgov(
        &[
            "check",
            "--manifests",
            path.to_str().expect("utf-8"),
            "--flow",
            "x/b -> x/a:80/TCP",
        ],
        None,
    ));
    assert_eq!(results[0]["verdict"], "deny");
}

#[test]
fn bad_input_names_file_object_and_field() {
    let bad_policy = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: broken, namespace: x}\n\
                      spec:\n  podSelector: {}\n  ingress:\n    - from:\n        - ipBlock: {cidr: 10.0.0.0/99}\n";
    let path = temp_file("broken-policy.yaml", bad_policy);
    let output = netgov(
        &[
            "check",
            "--manifests",
            path.to_str().expect("utf-8"),
            "--flow",
            "10.0.0.1 -> 10.0.0.2:80/TCP",
        ],
        None,
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("broken-policy.yaml"), "{stderr}");
    assert!(stderr.contains("NetworkPolicy x/broken"), "{stderr}");
    assert!(
        stderr.contains("spec.ingress[0].from[0].ipBlock.cidr"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());

    // A schema error: the field path comes from the typed parse.
    let bad_pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: x}\nspec: {containers: [{name: c, ports: [{containerPort: eighty}]}]}\n";
    let path = temp_file("broken-pod.yaml", bad_pod);
    let output = netgov(
        &[
            "check",
            "--manifests",
            path.to_str().expect("utf-8"),
            "--flow",
            "10.0.0.1 -> 10.0.0.2:80/TCP",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("broken-pod.yaml") && stderr.contains("Pod x/p"),
        "{stderr}"
    );
    assert!(
        stderr.contains("spec.containers[0].ports[0].containerPort"),
        "{stderr}"
    );

    // YAML syntax.
    let path = temp_file("syntax.yaml", "kind: Pod\nmetadata: {name: [\n");
    let output = netgov(
        &[
            "check",
            "--manifests",
            path.to_str().expect("utf-8"),
            "--flow",
            "10.0.0.1 -> 10.0.0.2:80/TCP",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("syntax.yaml") && stderr.contains("line"),
        "{stderr}"
    );

    // A bad flow line names its line and field.
    let output = netgov(
        &["check", "--manifests", SEED, "--flows", "-"],
        Some(
            "{\"src\":\"10.244.0.12\",\"dst\":\"10.244.0.11\",\"protocol\":\"TCP\",\"dst_port\":8080}\n{\"src\":\"10.244.0.12\",\"dst\":\"10.244.0.11\",\"protocol\":\"TCP\",\"dst_port\":99999}\n",
        ),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("stdin:2") && stderr.contains("dst_port"),
        "{stderr}"
    );

    // No flows at all.
    let output = netgov(&["check", "--manifests", SEED], None);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no flows"));

    // A pod name that is not in the manifests.
    let output = netgov(
        &[
            "check",
            "--manifests",
            SEED,
            "--flow",
            "ai-platform/ghost -> 10.244.0.11:8080/TCP",
        ],
        None,
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no pod ai-platform/ghost"));
}

/// The whole output of both formats, pinned: every column, every field.
#[test]
fn check_output_is_pinned() {
    let flows = [
        "ai-platform/monitoring-0 -> ai-platform/model-serving-0:8080/TCP",
        "ai-platform/unauthorised-0 -> ai-platform/model-serving-0:8080/TCP",
        "ai-platform/data-ingestion-0 -> 203.0.113.10:443/TCP",
        "ai-platform/unauthorised-0 -> 203.0.113.10/ICMP",
    ];
    for format in ["table", "json"] {
        let mut args = vec!["check", "--manifests", SEED, "--format", format];
        for flow in &flows {
            args.extend(["--flow", flow]);
        }
        let output = netgov(&args, None);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        insta::assert_snapshot!(
            format!("check_{format}"),
            String::from_utf8_lossy(&output.stdout)
        );
    }
}

/// `RUST_LOG` (standard) and `NETGOV_LOG` (which wins) set the level;
/// `--log-format json` writes one JSON object per line.
#[test]
fn logging_honours_rust_log_and_netgov_log_and_speaks_json() {
    let flow = "ai-platform/monitoring-0 -> ai-platform/model-serving-0:8080/TCP";
    let args = ["check", "--manifests", SEED, "--flow", flow];
    let stderr = |env: &[(&str, &str)], json: bool| {
        let mut all: Vec<&str> = Vec::new();
        if json {
            all.extend(["--log-format", "json"]);
        }
        all.extend(args);
        let output = netgov_with_env(&all, None, env);
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let loaded = "cluster state loaded from manifests";
    assert!(
        !stderr(&[], false).contains(loaded),
        "default level is warn"
    );
    assert!(stderr(&[("RUST_LOG", "info")], false).contains(loaded));
    assert!(stderr(&[("NETGOV_LOG", "info")], false).contains(loaded));
    assert!(
        !stderr(&[("RUST_LOG", "info"), ("NETGOV_LOG", "warn")], false).contains(loaded),
        "NETGOV_LOG wins over RUST_LOG"
    );
    let json = stderr(&[("RUST_LOG", "info")], true);
    let line: Value =
        serde_json::from_str(json.lines().next().expect("a log line")).expect("a JSON log line");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["fields"]["message"], loaded);
    assert_eq!(line["fields"]["pods"], 4, "the seed scenario has four pods");
}

/// A configuration file that is not a mapping (here: a hostname) is
/// rejected naming the file and the field, in the user's words.
#[test]
fn a_config_that_is_not_a_mapping_is_named_plainly() {
    let path = temp_file("hostname", "vm\n");
    let output = netgov(
        &[
            "agent",
            "--config",
            path.to_str().expect("utf-8"),
            "--cluster-state",
            SEED,
        ],
        None,
    );
    assert!(!output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim_end(),
        format!(
            "netgov: {}: (top level): invalid type: string \"vm\", expected a mapping with clusterCIDRs, expectedEgress, maxWorkloads, answerWindowSeconds, names",
            path.display()
        )
    );
}

/// An error's cause is printed once, even when its own text shows it.
#[test]
fn an_unopenable_flow_log_is_reported_once() {
    let output = netgov(
        &[
            "agent",
            "--cluster-state",
            SEED,
            "--flow-log",
            "/nonexistent-netgov-dir/flows.jsonl",
        ],
        None,
    );
    assert!(!output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim_end(),
        "netgov: flow log /nonexistent-netgov-dir/flows.jsonl: No such file or directory (os error 2)"
    );
}

/// `netgov check` reads ClusterNetworkPolicies from manifests: an Admin
/// Deny overrides the seed's NetworkPolicy allow, and says so.
#[test]
fn check_judges_with_cluster_network_policies() {
    let dir = std::env::temp_dir().join(format!("netgov-check-cnp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::copy(format!("{SEED}/cluster.yaml"), dir.join("cluster.yaml")).expect("copy seed");
    std::fs::write(
        dir.join("guard-rail.yaml"),
        "apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: no-scrapes-from-ai}
spec:
  tier: Admin
  priority: 1
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: model-serving}}}}
  ingress:
    - {name: no-monitoring, action: Deny, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {role: monitoring}}}}]}
",
    )
    .expect("write");
    let results = lines(&netgov(
        &[
            "check",
            "--manifests",
            dir.to_str().expect("utf-8"),
            "--flow",
            "ai-platform/monitoring-0 -> ai-platform/model-serving-0:8080/TCP",
        ],
        None,
    ));
    assert_eq!(results[0]["verdict"], "deny");
    assert_eq!(
        results[0]["ingress"]["tier"],
        serde_json::json!({"tier": "admin", "policy": "ClusterNetworkPolicy no-scrapes-from-ai",
                           "priority": 1, "rule": "no-monitoring", "action": "Deny"})
    );
    assert_eq!(
        results[0]["ingress"]["skipped_policies"],
        serde_json::json!(["ai-platform/allow-monitoring", "ai-platform/default-deny"])
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Hostile input fails fast with its file (and line) named: a directory
/// that contains itself, a file nested thousands of levels deep (the YAML
/// parser's own limit takes quadratic time to reach: minutes for 200 KB),
/// a flows file that is not UTF-8.
#[test]
fn hostile_input_fails_fast_and_names_the_place() {
    let flow = "10.0.0.1 -> 10.0.0.2:80/TCP";
    let dir = std::env::temp_dir().join(format!("netgov-hostile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("ns.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
    )
    .expect("write");
    std::os::unix::fs::symlink(&dir, dir.join("loop")).expect("symlink");
    let started = std::time::Instant::now();
    let output = netgov(
        &[
            "check",
            "--manifests",
            dir.to_str().expect("utf-8"),
            "--flow",
            flow,
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "{}: a symlink loop (this directory contains itself); not followed",
            dir.join("loop").display()
        )),
        "{stderr}"
    );

    let deep = temp_file(
        "deep.yaml",
        &format!("a: 1\nb: {}{}\n", "[".repeat(200_000), "]".repeat(200_000)),
    );
    let output = netgov(
        &[
            "check",
            "--manifests",
            deep.to_str().expect("utf-8"),
            "--flow",
            flow,
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "{}:2: nested more than 100 levels deep; not parsed",
            deep.display()
        )),
        "{stderr}"
    );
    // Both in well under the seconds the parser alone would take.
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    let manifests = temp_file(
        "ok.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
    );
    let flows = temp_file("flows.jsonl", "");
    std::fs::write(
        &flows,
        b"{\"src\":\"10.0.0.1\",\"dst\":\"10.0.0.2\",\"protocol\":\"TCP\",\"dst_port\":80}\n{\"src\":\"\xff\xfe\"}\n",
    )
    .expect("write");
    let output = netgov(
        &[
            "check",
            "--manifests",
            manifests.to_str().expect("utf-8"),
            "--flows",
            flows.to_str().expect("utf-8"),
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(
        stderr.trim_end(),
        format!(
            "netgov: {}:2: not UTF-8 text (byte 9 of the line)",
            flows.display()
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// For CI: `--fail-on` turns verdicts into exit status 3 (after every
/// result is printed); `-f`/`-o` are the kubectl spellings of
/// `--manifests`/`--format`; `version` and `completion` serve packaging.
#[test]
fn fail_on_short_flags_version_and_completions() {
    let allowed = "ai-platform/monitoring-0 -> ai-platform/model-serving-0:8080/TCP";
    let denied = "ai-platform/unauthorised-0 -> 10.244.0.11:8080/TCP";
    let run = |flows: &[&str], fail_on: &str| {
        let mut args = vec!["check", "-f", SEED, "-o", "json"];
        for flow in flows {
            args.extend(["--flow", flow]);
        }
        if !fail_on.is_empty() {
            args.extend(["--fail-on", fail_on]);
        }
        netgov(&args, None)
    };
    let output = run(&[allowed, denied], "deny");
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).lines().count(),
        2,
        "every result is printed first"
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim_end(),
        "netgov check: 1 denied of 2 flows (--fail-on)"
    );
    assert_eq!(run(&[allowed], "deny").status.code(), Some(0));
    assert_eq!(run(&[allowed, denied], "").status.code(), Some(0));
    let ungoverned = "10.9.9.9 -> 10.9.9.8:80/TCP";
    let output = run(&[ungoverned, denied], "deny,not-applicable");
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim_end(),
        "netgov check: 1 denied, 1 not governed by any policy of 2 flows (--fail-on)"
    );
    // The long spellings stay.
    let output = netgov(
        &[
            "check",
            "--manifests",
            SEED,
            "--format",
            "table",
            "--flow",
            allowed,
        ],
        None,
    );
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("SOURCE"));

    let output = netgov(&["version"], None);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(
        text.starts_with(&format!("netgov {} (revision ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef netgov"),
        ("fish", "complete -c netgov"),
    ] {
        let output = netgov(&["completion", shell], None);
        let script = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{shell}");
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(
            script.contains("fail-on"),
            "{shell} completes the check flags"
        );
    }
}
