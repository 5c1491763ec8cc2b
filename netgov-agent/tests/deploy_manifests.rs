//! The Kubernetes manifests of `deploy/`: rendered with kustomize, validated
//! against the Kubernetes and prometheus-operator schemas, and checked
//! against the code — RBAC against the resources the agent watches, the
//! DaemonSet's arguments and configuration against the agent's parsers, its
//! capabilities against what loading the programs needs.

#[path = "deploy/support.rs"]
mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use clap::Parser;
use netgov_agent::cli::{Cli, Command as Subcommand};
use netgov_agent::config::AgentConfig;
use netgov_agent::engine::ResourceKind;
use serde_yaml_ng::Value;
use support::{object, output, render, string, tools_dir, workspace_root};

/// The Kubernetes version the manifests are validated against (the oldest
/// one supported upstream at the time of writing is 1.32).
const KUBERNETES_VERSION: &str = "1.32.0";

/// Runs kubernetes-validate (strict: unknown fields are errors) on
/// `objects`; returns (success, output).
fn kubernetes_validate(objects: &[&Value]) -> (bool, String) {
    let dir = tempdir("kubernetes-validate");
    let file = dir.join("objects.yaml");
    let text: String = objects
        .iter()
        .map(|o| format!("---\n{}", serde_yaml_ng::to_string(o).expect("YAML")))
        .collect();
    std::fs::write(&file, text).expect("write the objects");
    let result = output(
        Command::new(tools_dir().join("venv/bin/kubernetes-validate"))
            .args(["--strict", "-k", KUBERNETES_VERSION])
            .arg(&file),
    );
    let printed = String::from_utf8_lossy(&result.stdout).into_owned()
        + &String::from_utf8_lossy(&result.stderr);
    (result.status.success(), printed)
}

/// Asserts that every object validates against the Kubernetes schemas,
/// each with a "passed" line of its own: none skipped for want of a schema.
fn assert_every_object_valid(objects: &[&Value]) {
    let (valid, printed) = kubernetes_validate(objects);
    assert!(valid, "{printed}");
    assert_eq!(
        printed.matches(" passed for resource ").count(),
        objects.len(),
        "{printed}"
    );
}

/// Runs the schema validator of the custom resources of `apiVersion` on
/// `objects`, with the @kubernetes-models package `models`.
fn crd_validate(models: &str, api_version: &str, objects: &[&Value]) -> (bool, String) {
    let models = tools_dir()
        .join("node/node_modules/@kubernetes-models")
        .join(models);
    let mut child = Command::new("node")
        .arg(workspace_root().join("netgov-agent/tests/deploy/validate_crds.mjs"))
        .arg(&models)
        .arg(api_version)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (run `cargo xtask setup`)");
    let json = serde_json::to_string(objects).expect("JSON");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(json.as_bytes())
        .expect("write objects");
    let result = child.wait_with_output().expect("node");
    let printed = String::from_utf8_lossy(&result.stdout).into_owned()
        + &String::from_utf8_lossy(&result.stderr);
    (result.status.success(), printed)
}

/// Runs the prometheus-operator schema validator on `objects`.
fn prometheus_operator_validate(objects: &[&Value]) -> (bool, String) {
    crd_validate("prometheus-operator", "monitoring.coreos.com/v1", objects)
}

/// Runs the cert-manager schema validator on `objects`.
fn cert_manager_validate(objects: &[&Value]) -> (bool, String) {
    crd_validate("cert-manager", "cert-manager.io/v1", objects)
}

/// A fresh directory: one per call, as tests run in parallel threads of
/// one process.
fn tempdir(tag: &str) -> std::path::PathBuf {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("netgov-{tag}-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn is_prometheus_operator(object: &Value) -> bool {
    object["apiVersion"].as_str() == Some("monitoring.coreos.com/v1")
}

#[test]
fn every_rendered_object_validates_against_its_schema() {
    let objects = render(".");
    let kinds: BTreeSet<&str> = objects.iter().map(|o| string(&o["kind"], "kind")).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "Namespace",
            "PrometheusRule",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
        ])
    );
    let (operator, core): (Vec<&Value>, Vec<&Value>) =
        objects.iter().partition(|o| is_prometheus_operator(o));
    assert_every_object_valid(&core);
    let (valid, printed) = prometheus_operator_validate(&operator);
    assert!(valid, "{printed}");
    assert_eq!(printed.matches("ok ").count(), 2, "{printed}");
    // The base alone renders too (clusters without prometheus-operator).
    assert!(!render("base").iter().any(is_prometheus_operator));
}

/// Error rows: the validators are not no-ops — they reject a broken copy of
/// each object, naming the field.
#[test]
fn the_schema_validators_reject_broken_objects() {
    let objects = render(".");
    let mut daemonset = object(&objects, "DaemonSet", Some("netgov")).clone();
    daemonset["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] =
        Value::from("metrics");
    let mut service = object(&objects, "Service", Some("netgov")).clone();
    service["spec"]["clusterIp"] = Value::from("None");
    for (broken, field) in [(&daemonset, "containerPort"), (&service, "clusterIp")] {
        let (valid, printed) = kubernetes_validate(&[broken]);
        assert!(!valid, "{printed}");
        assert!(printed.contains(field), "{printed}");
    }
    let mut monitor = object(&objects, "ServiceMonitor", Some("netgov")).clone();
    monitor["spec"]["endpoints"][0]["interval"] = Value::from("every minute");
    let mut rule = object(&objects, "PrometheusRule", Some("netgov")).clone();
    rule["spec"]["groups"][0]["rules"][0]
        .as_mapping_mut()
        .expect("rule")
        .remove("expr");
    for (broken, field) in [(&monitor, "interval"), (&rule, "expr")] {
        let (valid, printed) = prometheus_operator_validate(&[broken]);
        assert!(!valid, "{printed}");
        assert!(printed.contains(field), "{printed}");
    }
}

#[test]
fn the_cluster_role_grants_exactly_what_the_agent_watches() {
    let objects = render("base");
    let role = object(&objects, "ClusterRole", Some("netgov"));
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_sequence().expect("rules") {
        let keys: BTreeSet<&str> = rule
            .as_mapping()
            .expect("rule")
            .keys()
            .map(|k| string(k, "rule key"))
            .collect();
        // No resourceNames, nonResourceURLs or wildcards widen it.
        assert_eq!(keys, BTreeSet::from(["apiGroups", "resources", "verbs"]));
        let list = |key: &str| -> Vec<&str> {
            rule[key]
                .as_sequence()
                .expect(key)
                .iter()
                .map(|v| string(v, key))
                .collect()
        };
        for group in list("apiGroups") {
            for resource in list("resources") {
                for verb in list("verbs") {
                    granted.insert((group.to_owned(), resource.to_owned(), verb.to_owned()));
                }
            }
        }
    }
    let watched: BTreeSet<(String, String, String)> = ResourceKind::ALL
        .iter()
        .flat_map(|kind| {
            let (group, resource) = kind.api_resource();
            ["get", "list", "watch"]
                .map(|verb| (group.to_owned(), resource.to_owned(), verb.to_owned()))
        })
        .collect();
    assert_eq!(granted, watched);

    let binding = object(&objects, "ClusterRoleBinding", Some("netgov"));
    assert_eq!(binding["roleRef"]["kind"].as_str(), Some("ClusterRole"));
    assert_eq!(binding["roleRef"]["name"].as_str(), Some("netgov"));
    let subjects = binding["subjects"].as_sequence().expect("subjects");
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0]["kind"].as_str(), Some("ServiceAccount"));
    assert_eq!(subjects[0]["name"].as_str(), Some("netgov"));
    assert_eq!(subjects[0]["namespace"].as_str(), Some("netgov"));
    let daemonset = object(&objects, "DaemonSet", Some("netgov"));
    assert_eq!(
        daemonset["spec"]["template"]["spec"]["serviceAccountName"].as_str(),
        Some("netgov")
    );
}

#[test]
fn the_daemonset_runs_the_agent_with_its_configuration() {
    let objects = render("base");
    let daemonset = object(&objects, "DaemonSet", Some("netgov"));
    let pod = &daemonset["spec"]["template"]["spec"];
    let containers = pod["containers"].as_sequence().expect("containers");
    assert_eq!(containers.len(), 1);
    let agent = &containers[0];

    // The image is this version of netgov.
    let image = string(&agent["image"], "image");
    assert_eq!(
        image,
        format!("ghcr.io/netgov/netgov:{}", env!("CARGO_PKG_VERSION"))
    );

    // The arguments are the agent's own.
    let args: Vec<&str> = agent["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| string(a, "args"))
        .collect();
    let cli = Cli::try_parse_from(std::iter::once("netgov").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("the DaemonSet's args do not parse: {e}"));
    let Subcommand::Agent(agent_args) = cli.command else {
        panic!("the DaemonSet does not run `netgov agent`");
    };
    assert!(
        agent_args.cluster_state.is_empty(),
        "reads the API, not files"
    );
    assert!(agent_args.kubeconfig.is_none(), "in-cluster configuration");

    // The port the agent listens on is the one probed, exposed and scraped.
    let port = agent["ports"][0]["containerPort"].as_u64().expect("port");
    assert_eq!(u64::from(agent_args.metrics_addr.port()), port);
    assert_eq!(agent["ports"][0]["name"].as_str(), Some("metrics"));
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(agent[probe]["httpGet"]["path"].as_str(), Some(path));
        assert_eq!(agent[probe]["httpGet"]["port"].as_str(), Some("metrics"));
    }
    let service = object(&objects, "Service", Some("netgov"));
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"].as_str(),
        Some("metrics")
    );
    let selector = service["spec"]["selector"].as_mapping().expect("selector");
    for (key, value) in selector {
        assert_eq!(
            &pod_labels(daemonset)[key],
            value,
            "the Service selects the agent's pods"
        );
    }

    // The configuration file is the generated ConfigMap, and the agent
    // accepts it.
    let config_path = agent_args.config.clone().expect("--config");
    let mount = agent["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
        .iter()
        .find(|m| config_path.starts_with(string(&m["mountPath"], "mountPath")))
        .expect("a volume mounted at the --config path");
    let volume = pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    let config_map_name = string(&volume["configMap"]["name"], "configMap.name");
    let config_map = object(&objects, "ConfigMap", Some(config_map_name));
    let file = config_path
        .file_name()
        .expect("file")
        .to_str()
        .expect("utf-8");
    let text = string(&config_map["data"][file], "config data");
    AgentConfig::parse(text, "deploy/base/agent-config.yaml")
        .unwrap_or_else(|e| panic!("the agent rejects its ConfigMap: {e}"));

    // The node name comes from the downward API.
    let env = agent["env"].as_sequence().expect("env");
    let node_name = env
        .iter()
        .find(|e| e["name"].as_str() == Some("NODE_NAME"))
        .expect("NODE_NAME");
    assert_eq!(
        node_name["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("spec.nodeName")
    );

    // Least privilege: not privileged, read-only root, every capability
    // dropped but the needed ones (proven by the next test).
    let security = &agent["securityContext"];
    assert_eq!(security["privileged"].as_bool(), Some(false));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["capabilities"]["drop"][0].as_str(), Some("ALL"));
    // The one host path: the host's cgroup hierarchy, read-only, where
    // the socket-delivery hook attaches (--cgroup-root).
    let host_paths: Vec<&Value> = pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .filter(|v| v.get("hostPath").is_some())
        .collect();
    assert_eq!(host_paths.len(), 1, "{host_paths:?}");
    assert_eq!(
        host_paths[0]["hostPath"]["path"].as_str(),
        Some("/sys/fs/cgroup")
    );
    let cgroup_mount = agent["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["name"] == host_paths[0]["name"])
        .expect("the cgroup hierarchy is mounted");
    assert_eq!(cgroup_mount["readOnly"].as_bool(), Some(true));
    assert_eq!(
        agent_args.datapath.cgroup_root,
        netgov_agent::capture::socket_hook::CgroupRoot::Path(
            string(&cgroup_mount["mountPath"], "mountPath").into()
        ),
        "--cgroup-root names the mount"
    );
    // On every node.
    assert_eq!(pod["hostNetwork"].as_bool(), Some(true));
    assert_eq!(pod["tolerations"][0]["operator"].as_str(), Some("Exists"));
    for kind in ["requests", "limits"] {
        assert!(agent["resources"][kind]["memory"].is_string(), "{kind}");
    }
}

fn pod_labels(daemonset: &Value) -> &serde_yaml_ng::Mapping {
    daemonset["spec"]["template"]["metadata"]["labels"]
        .as_mapping()
        .expect("pod labels")
}

/// The capabilities the DaemonSet adds are exactly those loading and
/// attaching the programs needs: with them (and nothing else, as root in a
/// node namespace) the capture works; without any one of them it fails.
#[test]
fn the_daemonset_capabilities_are_exactly_the_needed_ones() {
    let objects = render("base");
    let daemonset = object(&objects, "DaemonSet", Some("netgov"));
    let added: Vec<String> = daemonset["spec"]["template"]["spec"]["containers"][0]
        ["securityContext"]["capabilities"]["add"]
        .as_sequence()
        .expect("capabilities.add")
        .iter()
        .map(|c| string(c, "capability").to_lowercase())
        .collect();
    assert!(!added.is_empty());
    let run = |capabilities: &[&String]| -> (bool, String) {
        let testbed = netgov_testbed::Testbed::new(&netgov_testbed::Testbed::unique_prefix("caps"))
            .expect("building namespaces needs root (this test must not be skipped)");
        let bounding: String = std::iter::once("-all".to_owned())
            .chain(capabilities.iter().map(|c| format!("+{c}")))
            .collect::<Vec<_>>()
            .join(",");
        let result = output(
            testbed
                .node()
                .command("setpriv")
                .args(["--bounding-set", &bounding, "--inh-caps", "-all"])
                .arg(env!("CARGO_BIN_EXE_netgov"))
                .args(["capture", "--iface", "br*", "--duration", "0.5"]),
        );
        let printed = String::from_utf8_lossy(&result.stderr).into_owned();
        (result.status.success(), printed)
    };
    let all: Vec<&String> = added.iter().collect();
    let (works, printed) = run(&all);
    assert!(works, "the capture fails with {added:?}: {printed}");
    assert!(printed.contains("ready"), "{printed}");
    assert!(printed.contains(r#""interfaces":["br0"]"#), "{printed}");
    for missing in &added {
        let fewer: Vec<&String> = added.iter().filter(|c| *c != missing).collect();
        let (works, printed) = run(&fewer);
        assert!(
            !works,
            "{missing} is not needed: the capture works with {fewer:?} alone"
        );
        // Named, with where to add it: not a raw verifier dump.
        assert!(
            printed.contains(&format!("missing CAP_{}", missing.to_uppercase()))
                && printed.contains("securityContext.capabilities.add"),
            "without {missing}: {printed}"
        );
    }
}

/// kube-prometheus-stack selects ServiceMonitors and PrometheusRules by
/// its Helm release's label: its overlay labels those two (and nothing
/// else), so they are scraped and loaded. The optional node-critical
/// component gives the DaemonSet its priority class.
#[test]
fn components_for_kube_prometheus_stack_and_node_critical() {
    let objects = render("overlays/kube-prometheus-stack");
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        assert_eq!(
            object(&objects, kind, None)["metadata"]["labels"]["release"].as_str(),
            Some("kube-prometheus-stack"),
            "{kind}"
        );
    }
    let labelled: Vec<&str> = objects
        .iter()
        .filter(|o| !o["metadata"]["labels"]["release"].is_null())
        .filter_map(|o| o["kind"].as_str())
        .collect();
    assert_eq!(labelled, ["PrometheusRule", "ServiceMonitor"]);
    assert!(
        object(&objects, "DaemonSet", Some("netgov"))["spec"]["template"]["spec"]
            ["priorityClassName"]
            .is_null(),
        "not critical unless asked"
    );

    // An overlay of a user's, with the component (kustomize wants it below
    // a common root with the bases: the workspace's target directory).
    let overlay = workspace_root().join(format!("target/netgov-overlay-{}", std::process::id()));
    std::fs::create_dir_all(&overlay).expect("overlay dir");
    std::fs::write(
        overlay.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         resources: [../../deploy/base]\ncomponents: [../../deploy/components/node-critical]\n",
    )
    .expect("write the overlay");
    let objects = render(overlay.to_str().expect("utf-8"));
    let _ = std::fs::remove_dir_all(&overlay);
    assert_eq!(
        object(&objects, "DaemonSet", Some("netgov"))["spec"]["template"]["spec"]
            ["priorityClassName"]
            .as_str(),
        Some("system-node-critical")
    );
}

/// The optional kube-rbac-proxy component: the agent on loopback only, the
/// proxy on the metrics port with TLS and token checks (probes exempt,
/// `/flows` refused), the ServiceMonitor scraping over HTTPS with a token,
/// and the proxy's review permissions — every object valid.
#[test]
fn the_metrics_auth_component_guards_the_metrics_port() {
    let overlay = workspace_root().join(format!("target/netgov-auth-{}", std::process::id()));
    std::fs::create_dir_all(&overlay).expect("overlay dir");
    std::fs::write(
        overlay.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         resources: [../../deploy]\ncomponents: [../../deploy/components/metrics-auth]\n",
    )
    .expect("write the overlay");
    let objects = render(overlay.to_str().expect("utf-8"));
    let _ = std::fs::remove_dir_all(&overlay);

    let (kubernetes, operator): (Vec<&Value>, Vec<&Value>) =
        objects.iter().partition(|o| !is_prometheus_operator(o));
    let (valid, report) = kubernetes_validate(&kubernetes);
    assert!(valid, "{report}");
    let (valid, report) = prometheus_operator_validate(&operator);
    assert!(valid, "{report}");

    let pod = &object(&objects, "DaemonSet", Some("netgov"))["spec"]["template"]["spec"];
    let containers = pod["containers"].as_sequence().expect("containers");
    let agent = &containers[0];
    let strings = |v: &Value| -> Vec<String> {
        v.as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    assert!(strings(&agent["args"]).contains(&"--metrics-addr=127.0.0.1:9465".to_owned()));
    assert_eq!(agent["ports"][0]["name"].as_str(), Some("observe"));
    assert!(agent["livenessProbe"].is_null() && agent["readinessProbe"].is_null());
    let proxy = &containers[1];
    assert_eq!(
        strings(&proxy["args"]),
        [
            "--secure-listen-address=0.0.0.0:9464",
            "--upstream=http://127.0.0.1:9465/",
            "--allow-paths=/metrics,/healthz,/readyz",
            "--ignore-paths=/healthz,/readyz",
        ]
    );
    assert_eq!(proxy["ports"][0]["name"].as_str(), Some("metrics"));
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            proxy[probe]["httpGet"]["scheme"].as_str(),
            Some("HTTPS"),
            "{probe}"
        );
    }
    let endpoint = &object(&objects, "ServiceMonitor", None)["spec"]["endpoints"][0];
    assert_eq!(endpoint["scheme"].as_str(), Some("https"));
    assert!(endpoint["bearerTokenFile"].is_string());
    let binding = object(&objects, "ClusterRoleBinding", Some("netgov-metrics-auth"));
    assert_eq!(binding["subjects"][0]["name"].as_str(), Some("netgov"));
    let role = object(&objects, "ClusterRole", Some("netgov-metrics-auth"));
    assert_eq!(
        role["rules"]
            .as_sequence()
            .expect("rules")
            .iter()
            .map(|r| strings(&r["resources"]))
            .collect::<Vec<_>>(),
        [
            vec!["tokenreviews".to_owned()],
            vec!["subjectaccessreviews".to_owned()]
        ]
    );
}

/// The runbook base documented in deploy/README.md ("Your own runbook"),
/// as written there, moves every alert's runbook_url and keeps its anchor.
#[test]
fn the_documented_runbook_base_moves_every_runbook_url() {
    let readme = std::fs::read_to_string(workspace_root().join("deploy/README.md"))
        .expect("read deploy/README.md");
    let section = &readme[readme.find("### Your own runbook").expect("section")..];
    let snippet = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the yaml snippet");
    let overlay = workspace_root().join(format!("target/netgov-runbook-{}", std::process::id()));
    std::fs::create_dir_all(&overlay).expect("overlay dir");
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources: [../../deploy]\n{snippet}"
        ),
    )
    .expect("write the overlay");
    let objects = render(overlay.to_str().expect("utf-8"));
    let _ = std::fs::remove_dir_all(&overlay);
    let rule = object(&objects, "PrometheusRule", Some("netgov"));
    let urls: Vec<(String, String)> = rule["spec"]["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().into_iter().flatten())
        .map(|r| {
            (
                r["alert"].as_str().expect("alert").to_lowercase(),
                r["annotations"]["runbook_url"]
                    .as_str()
                    .expect("runbook_url")
                    .to_owned(),
            )
        })
        .collect();
    assert!(urls.len() >= 10, "{urls:?}");
    for (alert, url) in urls {
        assert_eq!(
            url,
            format!("https://wiki.example.com/netgov/runbook#{alert}")
        );
    }
}

/// The args of a container, as strings.
fn args_of(container: &Value) -> Vec<&str> {
    container["args"]
        .as_sequence()
        .map(|args| args.iter().map(|a| string(a, "args")).collect())
        .unwrap_or_default()
}

/// The secret mounted at the directory of `file` in `pod`'s `container`.
fn secret_behind<'a>(pod: &'a Value, container: &Value, file: &str) -> &'a str {
    let mount = container["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
        .iter()
        .find(|m| file.starts_with(string(&m["mountPath"], "mountPath")))
        .unwrap_or_else(|| panic!("no volume holds {file}"));
    let volume = pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    string(&volume["secret"]["secretName"], "secretName")
}

/// The Hubble overlay, TLS on: every object valid (cert-manager's too);
/// the agent's Hubble flags are its own and parse; Relay dials the peer
/// Service at its port, with a client certificate from the CA that signed
/// the agents' (whose names cover what the peer service announces); the UI
/// reads Relay; images pinned.
#[test]
fn the_hubble_overlay_wires_agents_relay_and_ui_with_mutual_tls() {
    let objects = render("overlays/hubble");
    let (cert_manager, core): (Vec<&Value>, Vec<&Value>) = objects
        .iter()
        .partition(|o| o["apiVersion"].as_str() == Some("cert-manager.io/v1"));
    assert_every_object_valid(&core);
    let (valid, printed) = cert_manager_validate(&cert_manager);
    assert!(valid, "{printed}");
    assert_eq!(printed.matches("ok ").count(), 5, "{printed}");

    let daemonset = object(&objects, "DaemonSet", Some("netgov"));
    let pod = &daemonset["spec"]["template"]["spec"];
    let agent = &pod["containers"][0];
    let args = args_of(agent);
    let cli = Cli::try_parse_from(std::iter::once("netgov").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("the DaemonSet's args do not parse: {e}"));
    let Subcommand::Agent(agent_args) = cli.command else {
        panic!("not `netgov agent`");
    };
    let hubble = agent_args
        .hubble
        .options()
        .expect("valid")
        .expect("Hubble on");
    let listen = hubble.listen.expect("a listener");
    assert_eq!(listen.port(), 4244);
    let hubble_port = agent["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .find(|p| p["name"].as_str() == Some("hubble"))
        .expect("port hubble");
    assert_eq!(hubble_port["containerPort"].as_u64(), Some(4244));
    let env: Vec<(&str, &str)> = agent["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?,
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str()?,
            ))
        })
        .collect();
    assert!(
        env.contains(&("POD_NAME", "metadata.name"))
            && env.contains(&("POD_NAMESPACE", "metadata.namespace")),
        "{env:?}"
    );

    // The agents' certificate, key and client CA come from the server
    // certificate's secret, whose names cover every peer's TLS name.
    let tls = hubble.tls.expect("TLS on");
    let server_secret = secret_behind(pod, agent, tls.cert.to_str().expect("utf-8"));
    assert_eq!(
        secret_behind(pod, agent, tls.key.to_str().expect("utf-8")),
        server_secret
    );
    assert_eq!(
        secret_behind(pod, agent, tls.client_cas[0].to_str().expect("utf-8")),
        server_secret
    );
    let certificates: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "Certificate")
        .collect();
    let by_secret = |secret: &str| {
        *certificates
            .iter()
            .find(|c| c["spec"]["secretName"].as_str() == Some(secret))
            .unwrap_or_else(|| panic!("no Certificate makes {secret}"))
    };
    let server = by_secret(server_secret);
    let names: Vec<&str> = server["spec"]["dnsNames"]
        .as_sequence()
        .expect("dnsNames")
        .iter()
        .map(|n| string(n, "dnsName"))
        .collect();
    for peer in ["ip-10-0-0-1.ec2.internal", "node-1", "hubble-peer"] {
        let name = netgov_agent::hubble::peer::tls_server_name(peer);
        let covered = names.iter().any(|n| {
            n.strip_prefix("*.")
                .is_some_and(|domain| name.split_once('.').is_some_and(|(_, rest)| rest == domain))
        });
        assert!(covered, "{name} is not covered by {names:?}");
    }

    // Peer Service: node-local, the agents' Hubble port, TLS's 443.
    let peer = object(&objects, "Service", Some("hubble-peer"));
    assert_eq!(
        peer["spec"]["internalTrafficPolicy"].as_str(),
        Some("Local")
    );
    assert_eq!(
        peer["spec"]["ports"][0]["targetPort"].as_str(),
        Some("hubble")
    );
    assert_eq!(peer["spec"]["ports"][0]["port"].as_u64(), Some(443));
    for (key, value) in peer["spec"]["selector"].as_mapping().expect("selector") {
        assert_eq!(
            &pod_labels(daemonset)[key],
            value,
            "the peer Service selects the agents"
        );
    }

    // Relay: dials the peer Service over TLS with a client certificate of
    // the agents' CA.
    let relay = object(&objects, "Deployment", Some("hubble-relay"));
    let relay_pod = &relay["spec"]["template"]["spec"];
    let relay_container = &relay_pod["containers"][0];
    let relay_args = args_of(relay_container);
    let flag = |name: &str| {
        relay_args
            .iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")))
            .unwrap_or_else(|| panic!("Relay has no --{name}: {relay_args:?}"))
    };
    assert_eq!(
        flag("peer-service"),
        "hubble-peer.netgov.svc.cluster.local:443"
    );
    assert!(
        !relay_args.contains(&"--disable-client-tls"),
        "{relay_args:?}"
    );
    let client_secret = secret_behind(
        relay_pod,
        relay_container,
        flag("tls-hubble-client-cert-file"),
    );
    assert_eq!(
        secret_behind(
            relay_pod,
            relay_container,
            flag("tls-hubble-client-key-file")
        ),
        client_secret
    );
    assert_eq!(
        secret_behind(
            relay_pod,
            relay_container,
            flag("tls-hubble-server-ca-files")
        ),
        client_secret
    );
    let client = by_secret(client_secret);
    assert_eq!(
        client["spec"]["issuerRef"], server["spec"]["issuerRef"],
        "one CA signs both"
    );
    assert!(
        client["spec"]["usages"]
            .as_sequence()
            .expect("usages")
            .iter()
            .any(|u| u.as_str() == Some("client auth"))
    );
    let relay_service = object(&objects, "Service", Some("hubble-relay"));

    // The UI reads Relay's Service.
    let ui = object(&objects, "Deployment", Some("hubble-ui"));
    let backend = ui["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers")
        .iter()
        .find(|c| c["name"].as_str() == Some("backend"))
        .expect("backend");
    let flows_api = backend["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .find(|e| e["name"].as_str() == Some("FLOWS_API_ADDR"))
        .expect("FLOWS_API_ADDR");
    assert_eq!(
        flows_api["value"].as_str(),
        Some(
            format!(
                "hubble-relay.netgov.svc:{}",
                relay_service["spec"]["ports"][0]["port"]
                    .as_u64()
                    .expect("port")
            )
            .as_str()
        )
    );

    // Upstream images, each pinned to a release.
    for deployment in [relay, ui] {
        for container in deployment["spec"]["template"]["spec"]["containers"]
            .as_sequence()
            .expect("containers")
        {
            let image = string(&container["image"], "image");
            let (repository, tag) = image.rsplit_once(':').expect("a tag");
            assert!(repository.starts_with("quay.io/cilium/"), "{image}");
            assert!(
                tag.starts_with('v') && tag[1..].split('.').count() == 3,
                "{image} is not pinned"
            );
        }
    }
}

/// The overlay without TLS: no certificate anywhere, the agents in plain
/// text, Relay without client TLS on the peer Service's port 80.
#[test]
fn the_hubble_overlay_without_tls_has_no_certificates() {
    let objects = render("overlays/hubble-no-tls");
    let (valid, printed) = kubernetes_validate(&objects.iter().collect::<Vec<_>>());
    assert!(valid, "{printed}");
    assert!(
        !objects
            .iter()
            .any(|o| o["apiVersion"].as_str() == Some("cert-manager.io/v1"))
    );
    let agent =
        &object(&objects, "DaemonSet", Some("netgov"))["spec"]["template"]["spec"]["containers"][0];
    let args = args_of(agent);
    assert!(args.contains(&"--hubble-listen-address=:4244"));
    assert!(
        !args.iter().any(|a| a.starts_with("--hubble-tls")),
        "{args:?}"
    );
    let relay = &object(&objects, "Deployment", Some("hubble-relay"))["spec"]["template"]["spec"]["containers"]
        [0];
    let relay_args = args_of(relay);
    assert!(relay_args.contains(&"--disable-client-tls"));
    assert!(relay_args.contains(&"--peer-service=hubble-peer.netgov.svc.cluster.local:80"));
    assert_eq!(
        object(&objects, "Service", Some("hubble-peer"))["spec"]["ports"][0]["port"].as_u64(),
        Some(80)
    );
}
