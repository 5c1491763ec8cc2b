//! The deploy end-to-end test, run by `cargo xtask test` (and alone as
//! `cargo xtask test-prometheus`): the demo's agent scraped by a real
//! Prometheus server (Debian's package) with netgov's alert rules loaded,
//! both inside the demo's node namespace on loopback.
//!
//! Asserted through Prometheus's HTTP API: the enforcement-gap and
//! unexpected-egress alerts fire for the demo's offending flows and no
//! other alert fires; every Grafana variable offers values and every
//! panel's query runs, returning data wherever the demo exports the
//! metrics it reads (the service map drawable, the gap a red edge); and
//! `netgov observe` on the demo agent returns its denied flows, filtered.

use std::collections::BTreeSet;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use netgov_testbed::metrics_text::netgov_metric_names;

use crate::demo::{DemoNode, http_get};
use crate::{XtaskError, build_netgov, require_root, spawn, workspace_root};

const PROMETHEUS_PORT: u16 = 9090;
/// The alerts the demo's traffic must raise; every other must stay silent.
const EXPECTED_ALERTS: [&str; 2] = ["NetgovEnforcementGap", "NetgovUnexpectedEgress"];

fn failure(detail: String) -> XtaskError {
    XtaskError::Output {
        tool: "prometheus end-to-end",
        detail,
    }
}

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> XtaskError {
    move |source| XtaskError::Io { what, source }
}

/// A Prometheus server, killed on drop.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the test.
///
/// # Errors
/// Without root, when a tool is missing, or when an assertion fails.
pub fn prometheus_e2e() -> Result<(), XtaskError> {
    require_root(
        "test-prometheus",
        "it runs the demo: network namespaces and eBPF programs",
    )?;
    let netgov = build_netgov(false)?;
    let dir = std::env::temp_dir().join("netgov-prometheus-e2e");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io_error(format!("creating {}", dir.display())))?;
    write_config(&dir)?;

    let node = DemoNode::start(&netgov, false)?;
    let log = std::fs::File::create(dir.join("prometheus.log"))
        .map_err(io_error("creating the Prometheus log".into()))?;
    let log_err = log
        .try_clone()
        .map_err(io_error("creating the Prometheus log".into()))?;
    let _prometheus = Prometheus(spawn(
        node.node()
            .command("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"))
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err)),
    )?);
    let api = Api { node: &node };
    api.wait_for(
        "the agent's target to be up",
        Duration::from_secs(60),
        || {
            let up = api.query(r#"up{job="netgov"}"#)?;
            Ok(up.first().is_some_and(|s| s["value"][1] == "1"))
        },
    )?;

    node.run_traffic(false)?;

    api.wait_for(
        "the enforcement-gap and unexpected-egress alerts",
        Duration::from_secs(60),
        || {
            let firing = api.firing()?;
            Ok(EXPECTED_ALERTS
                .iter()
                .all(|name| firing.iter().any(|a| a["labels"]["alertname"] == *name)))
        },
    )?;
    // A few more evaluations, then the verdict on every alert.
    std::thread::sleep(Duration::from_secs(3));
    let firing = api.firing()?;
    check_alerts(&firing)?;
    let pending = api.alerts("pending")?;
    println!(
        "prometheus-e2e: firing {}; pending (held by their `for:`) {}",
        describe(&firing),
        describe(&pending)
    );

    let panels = check_dashboard(&api)?;
    check_observe(&node, &netgov)?;
    check_replay(&netgov)?;
    println!(
        "prometheus-e2e: passed ({} alerts fired as expected, none other; {panels} dashboard queries ran)",
        firing.len()
    );
    Ok(())
}

fn describe(alerts: &[Value]) -> String {
    let names: BTreeSet<&str> = alerts
        .iter()
        .filter_map(|a| a["labels"]["alertname"].as_str())
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.into_iter().collect::<Vec<_>>().join(", ")
    }
}

fn write_config(dir: &std::path::Path) -> Result<(), XtaskError> {
    let source = workspace_root().join("deploy/monitoring/prometheusrule.yaml");
    let text = std::fs::read_to_string(&source)
        .map_err(io_error(format!("reading {}", source.display())))?;
    let rule: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| failure(format!("{}: {e}", source.display())))?;
    let rules = serde_yaml_ng::to_string(&rule["spec"])
        .map_err(|e| failure(format!("{}: spec: {e}", source.display())))?;
    let rules_path = dir.join("netgov.rules.yaml");
    std::fs::write(&rules_path, rules).map_err(io_error("writing the rules".into()))?;
    // Fast scrapes and evaluations so the test takes seconds; the job name
    // is the one the ServiceMonitor produces (the Service's name), the
    // node label the one its relabeling adds, and the cluster label what
    // a multi-cluster Prometheus adds.
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files: [{rules}]\n\
         scrape_configs:\n  - job_name: netgov\n    static_configs:\n      - targets: ['127.0.0.1:9464']\n\
         \x20       labels: {{node: {DEMO_NODE}, cluster: {DEMO_CLUSTER}}}\n",
        rules = rules_path.display()
    );
    std::fs::write(dir.join("prometheus.yml"), config)
        .map_err(io_error("writing the Prometheus configuration".into()))
}

/// The demo's offending flows, and only they, raise alerts.
fn check_alerts(firing: &[Value]) -> Result<(), XtaskError> {
    let label = |alert: &Value, name: &str| alert["labels"][name].as_str().unwrap_or("").to_owned();
    let unexpected: Vec<String> = firing
        .iter()
        .map(|a| label(a, "alertname"))
        .filter(|name| !EXPECTED_ALERTS.contains(&name.as_str()))
        .collect();
    if !unexpected.is_empty() {
        return Err(failure(format!(
            "alerts that must stay silent fire: {unexpected:?}"
        )));
    }
    let has = |alertname: &str, labels: &[(&str, &str)]| {
        firing.iter().any(|a| {
            label(a, "alertname") == alertname
                && labels.iter().all(|(name, value)| label(a, name) == *value)
        })
    };
    // The unauthorised client's inference call got through the ingress
    // default-deny; data-ingestion's upload got through restrict-egress.
    // (The seed scenario's pods have no owner, so each is its own
    // workload.)
    let gaps: [&[(&str, &str)]; 2] = [
        &[
            ("src_workload", "unauthorised-0"),
            ("dst_workload", "model-serving-0"),
            ("dst_port", "8080"),
            ("denied_by", "ingress"),
        ],
        &[
            ("src_workload", "data-ingestion-0"),
            ("dst_workload", "world"),
            ("dst_port", "443"),
            ("denied_by", "egress"),
        ],
    ];
    for labels in gaps {
        if !has("NetgovEnforcementGap", labels) {
            return Err(failure(format!(
                "no NetgovEnforcementGap alert with {labels:?}: {firing:#?}"
            )));
        }
    }
    // The dropped admin-port call is enforced: no gap alert for it.
    if has("NetgovEnforcementGap", &[("dst_port", "9090")]) {
        return Err(failure("an enforced violation raised a gap alert".into()));
    }
    // Both egress flows are named: the upload by the DNS answer
    // data-ingestion got, the direct HTTPS call by its ClientHello.
    for (workload, destination) in [
        ("unauthorised-0", "api.model-hub.example"),
        ("data-ingestion-0", "upload.example"),
    ] {
        if !has(
            "NetgovUnexpectedEgress",
            &[("src_workload", workload), ("destination", destination)],
        ) {
            return Err(failure(format!(
                "no NetgovUnexpectedEgress alert for {workload} -> {destination}: {firing:#?}"
            )));
        }
    }
    Ok(())
}

/// The demo agent's `node` and `cluster` target labels.
const DEMO_NODE: &str = "demo-node";
const DEMO_CLUSTER: &str = "demo";

/// Grafana's variables as a user picking the demo's cluster and node would
/// have them expanded: all namespaces, a rate window of four 1 s scrapes,
/// a 5 min range.
fn expand(expr: &str) -> String {
    expr.replace("$__rate_interval", "15s")
        .replace("$__range", "5m")
        .replace("$cluster", DEMO_CLUSTER)
        .replace("$node", DEMO_NODE)
        .replace("$namespace", ".*")
        .replace("$dst_namespace", ".*")
}

/// Each `label_values(SELECTOR, LABEL)` variable must offer values: the
/// label exists on what the selector finds. Returns how many ran.
fn check_variables(api: &Api, dashboard: &Value) -> Result<usize, XtaskError> {
    let mut ran = 0;
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(query) = variable["query"].as_str() else {
            continue;
        };
        let Some(args) = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
        else {
            continue;
        };
        let (selector, label) = args
            .rsplit_once(',')
            .ok_or_else(|| failure(format!("variable {}: {query}", variable["name"])))?;
        let promql = expand(&format!(
            "count by ({label}) ({selector})",
            label = label.trim()
        ));
        let offered = api.query(&promql)?;
        ran += 1;
        if !offered.iter().any(|s| {
            s["metric"][label.trim()]
                .as_str()
                .is_some_and(|v| !v.is_empty())
        }) {
            return Err(failure(format!(
                "dashboard variable {} offers no value: {promql}",
                variable["name"]
            )));
        }
    }
    Ok(ran)
}

/// Runs every dashboard query; a query must return data when every
/// `netgov_*` metric it reads has series in Prometheus. Returns how many
/// queries ran.
fn check_dashboard(api: &Api) -> Result<usize, XtaskError> {
    let mut without_data = Vec::new();
    let path = workspace_root().join("deploy/monitoring/grafana-dashboard.json");
    let text =
        std::fs::read_to_string(&path).map_err(io_error(format!("reading {}", path.display())))?;
    let dashboard: Value =
        serde_json::from_str(&text).map_err(|e| failure(format!("{}: {e}", path.display())))?;
    let mut ran = check_variables(api, &dashboard)?;
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("?");
        if panel["type"] == "nodegraph" {
            check_service_map(api, panel)?;
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            let query = expand(expr);
            let result = api
                .query(&query)
                .map_err(|e| failure(format!("panel {title:?}: {query}: {e}")))?;
            ran += 1;
            if result.is_empty() {
                let mut exported = true;
                for name in netgov_metric_names(expr) {
                    exported &= !api.query(&format!("count({name})"))?.is_empty();
                }
                if exported {
                    return Err(failure(format!(
                        "panel {title:?} returns no data although the demo exports what it reads: {query}"
                    )));
                }
                without_data.push(title.to_owned());
            }
        }
    }
    println!(
        "prometheus-e2e: dashboard queries without data (the demo exports nothing they read): {}",
        if without_data.is_empty() {
            "none".to_owned()
        } else {
            without_data.join(", ")
        }
    );
    Ok(ran)
}

/// The service map's frames are what Grafana's node graph reads: nodes with
/// `id` and `title`, edges with `id`, `source`, `target` among the nodes
/// and a `color`; the demo's enforcement gap is a red edge.
fn check_service_map(api: &Api, panel: &Value) -> Result<(), XtaskError> {
    let frame = |ref_id: &str| -> Result<Vec<Value>, XtaskError> {
        let target = panel["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["refId"] == ref_id)
            .ok_or_else(|| failure(format!("service map: no {ref_id} query")))?;
        api.query(&expand(target["expr"].as_str().unwrap_or_default()))
    };
    let field = |series: &Value, name: &str| series["metric"][name].as_str().map(str::to_owned);
    let nodes = frame("nodes")?;
    let ids: std::collections::BTreeSet<String> =
        nodes.iter().filter_map(|n| field(n, "id")).collect();
    if ids.is_empty() || nodes.iter().any(|n| field(n, "title") != field(n, "id")) {
        return Err(failure(format!(
            "service map nodes without id/title: {nodes:?}"
        )));
    }
    let edges = frame("edges")?;
    for edge in &edges {
        let (source, target) = (field(edge, "source"), field(edge, "target"));
        let linked =
            source.is_some_and(|s| ids.contains(&s)) && target.is_some_and(|t| ids.contains(&t));
        if !linked || field(edge, "id").is_none() || field(edge, "color").is_none() {
            return Err(failure(format!("service map edge not drawable: {edge}")));
        }
    }
    let colours: std::collections::BTreeSet<String> =
        edges.iter().filter_map(|e| field(e, "color")).collect();
    if !colours.contains("red") || !colours.contains("green") {
        return Err(failure(format!(
            "service map: the demo's gap and allowed traffic should be red and green edges, got {colours:?}"
        )));
    }
    println!(
        "prometheus-e2e: service map has {} workloads and {} edges ({})",
        ids.len(),
        edges.len(),
        colours.into_iter().collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

/// `netgov observe` against the live demo agent: the agent filters, and the
/// demo's denied calls to model-serving come back, exactly: the inference
/// call that got through (gap) and the admin call the firewall dropped.
/// The kept records are the flow log's lines, oldest first — a flow's
/// first judgement, each change and its end — so a flow is its latest
/// line (one flow per port here).
fn check_observe(node: &DemoNode, netgov: &std::path::Path) -> Result<(), XtaskError> {
    let observe = |filters: &[&str]| -> Result<Vec<(u64, String)>, XtaskError> {
        let output = node
            .node()
            .command(netgov.to_str().unwrap_or("netgov"))
            .args(["observe", "-o", "json", "--to-pod", "model-serving-0"])
            .args(filters)
            .output()
            .map_err(io_error("running netgov observe".into()))?;
        if !output.status.success() {
            return Err(failure(format!(
                "netgov observe {filters:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| {
                let flow: Value = serde_json::from_str(line)
                    .map_err(|e| failure(format!("netgov observe printed {line:?}: {e}")))?;
                Ok((
                    flow["judged_dst_port"].as_u64().unwrap_or(0),
                    format!(
                        "{} {}",
                        flow["verdict"].as_str().unwrap_or("?"),
                        flow["enforcement"].as_str().unwrap_or("-")
                    ),
                ))
            })
            .collect()
    };
    let latest = |lines: Vec<(u64, String)>| -> Vec<(u64, String)> {
        let flows: std::collections::BTreeMap<u64, String> = lines.into_iter().collect();
        flows.into_iter().collect()
    };
    let denied = latest(observe(&["--verdict", "deny"])?);
    let gaps = latest(observe(&["--enforcement", "gap"])?);
    let expected_denied = [
        (8080, "deny gap".to_owned()),
        (9090, "deny enforced".to_owned()),
    ];
    if denied != expected_denied || gaps != [(8080, "deny gap".to_owned())] {
        return Err(failure(format!(
            "netgov observe on the demo agent: denied to model-serving-0 {denied:?} (expected {expected_denied:?}), gaps {gaps:?}"
        )));
    }
    println!("prometheus-e2e: netgov observe on the demo agent: {denied:?}");
    Ok(())
}

/// The demo's recorded traffic replayed against the proposed change of the
/// seed scenario: exactly monitoring's scrape of model-serving on 8080
/// would break, and `--fail-on would-deny` says so with exit 3.
fn check_replay(netgov: &std::path::Path) -> Result<(), XtaskError> {
    let proposed = workspace_root().join("examples/proposed-change/policies.yaml");
    let output = std::process::Command::new(netgov)
        .arg("replay")
        .arg("--flow-log")
        .arg(crate::demo::flow_log_path())
        .arg("-f")
        .arg(&proposed)
        .args(["-o", "json", "--fail-on", "would-deny"])
        .output()
        .map_err(io_error("running netgov replay".into()))?;
    let changes: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let expected = [(
        "would-deny",
        "ai-platform/monitoring-0",
        "ai-platform/model-serving-0",
        8080,
        1,
    )];
    let found: Vec<(&str, &str, &str, u64, u64)> = changes
        .iter()
        .map(|c| {
            (
                c["change"].as_str().unwrap_or("?"),
                c["src"].as_str().unwrap_or("?"),
                c["dst"].as_str().unwrap_or("?"),
                c["port"].as_u64().unwrap_or(0),
                c["flows"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    if found != expected || output.status.code() != Some(3) {
        return Err(failure(format!(
            "netgov replay of the demo's traffic against the proposed change: {found:?} (exit {:?}), expected {expected:?} (exit 3): {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    println!("prometheus-e2e: netgov replay of the demo's traffic: {found:?}");
    Ok(())
}

/// Prometheus's HTTP API inside the demo's node namespace.
struct Api<'a> {
    node: &'a DemoNode,
}

impl Api<'_> {
    fn get(&self, path: &str) -> Result<Value, XtaskError> {
        let body = http_get(self.node.node(), PROMETHEUS_PORT, path)?;
        let value: Value =
            serde_json::from_str(&body).map_err(|e| failure(format!("GET {path}: {e}: {body}")))?;
        if value["status"] != "success" {
            return Err(failure(format!("GET {path}: {body}")));
        }
        Ok(value["data"].clone())
    }

    /// An instant query's result vector.
    fn query(&self, promql: &str) -> Result<Vec<Value>, XtaskError> {
        let data = self.get(&format!("/api/v1/query?query={}", percent_encode(promql)))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Alerts in `state` (`firing`, `pending`).
    fn alerts(&self, state: &str) -> Result<Vec<Value>, XtaskError> {
        let data = self.get("/api/v1/alerts")?;
        Ok(data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == state)
            .cloned()
            .collect())
    }

    fn firing(&self) -> Result<Vec<Value>, XtaskError> {
        self.alerts("firing")
    }

    /// Polls `done` every 500 ms (Prometheus not answering yet counts as
    /// not done) until it holds or `timeout` passes.
    fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut() -> Result<bool, XtaskError>,
    ) -> Result<(), XtaskError> {
        let start = Instant::now();
        let mut last_error = None;
        while start.elapsed() < timeout {
            match done() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(error) => last_error = Some(error.to_string()),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(failure(format!(
            "gave up waiting for {what} after {timeout:?} (last error: {last_error:?}; alerts: {:?})",
            self.get("/api/v1/alerts").ok()
        )))
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
