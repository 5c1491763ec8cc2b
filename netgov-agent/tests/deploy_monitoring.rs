//! The monitoring of `deploy/monitoring`: the alert rules pass promtool's
//! checks and unit tests, every alert is tested firing and silent and has a
//! runbook, and the rules and the dashboard use only metrics the agent
//! exports. (Their PromQL runs against a real Prometheus scraping the demo
//! in `cargo xtask test`'s end-to-end step.)

#[path = "deploy/support.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use netgov_agent::engine::Decision;
use netgov_agent::engine::ResourceKind;
use netgov_agent::engine::tiers::Tier;
use netgov_agent::export::metrics::{LossStage, Metrics};
use netgov_agent::judge::{DeniedBy, Enforcement};
use netgov_agent::model::{Direction, Identity, Protocol};
use netgov_agent::names::{DnsOutcome, LearnOutcome, NameError, NameSource};
use netgov_testbed::metrics_text::netgov_metric_names as metric_names;
use serde_json::Value as Json;
use serde_yaml_ng::Value;
use support::{alerts, output, rule_file, string, workspace_root};

/// Runs promtool with `args` in a directory holding the extracted rule file
/// and a copy of the unit tests.
fn promtool(args: &[&str]) -> String {
    let dir = std::env::temp_dir().join(format!("netgov-promtool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(
        dir.join("netgov.rules.yaml"),
        serde_yaml_ng::to_string(&rule_file()).expect("YAML"),
    )
    .expect("write the rule file");
    std::fs::copy(
        workspace_root().join("deploy/monitoring/tests/alerts.test.yaml"),
        dir.join("alerts.test.yaml"),
    )
    .expect("copy the unit tests");
    let result = output(Command::new("promtool").args(args).current_dir(&dir));
    let printed = String::from_utf8_lossy(&result.stdout).into_owned()
        + &String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "promtool {args:?}:\n{printed}");
    printed
}

#[test]
fn the_rules_pass_promtool_check_and_unit_tests() {
    let checked = promtool(&["check", "rules", "netgov.rules.yaml"]);
    let count = alerts(&rule_file()).len();
    assert!(
        checked.contains(&format!("SUCCESS: {count} rules found")),
        "{checked}"
    );
    let tested = promtool(&["test", "rules", "alerts.test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_alert_is_tested_firing_and_silent_and_has_a_runbook() {
    let rules = rule_file();
    let path = workspace_root().join("deploy/monitoring/tests/alerts.test.yaml");
    let tests: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).expect("read")).expect("YAML");
    // alert → (cases where it fires, cases where it is silent)
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for test in tests["tests"].as_sequence().expect("tests") {
        for case in test["alert_rule_test"]
            .as_sequence()
            .expect("alert_rule_test")
        {
            let name = string(&case["alertname"], "alertname").to_owned();
            let fires = !case["exp_alerts"]
                .as_sequence()
                .expect("exp_alerts")
                .is_empty();
            let entry = cases.entry(name).or_default();
            if fires {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
    }
    let runbook = std::fs::read_to_string(workspace_root().join("deploy/README.md"))
        .expect("deploy/README.md");
    for alert in alerts(&rules) {
        let name = string(&alert["alert"], "alert");
        let (fires, silent) = cases.get(name).copied().unwrap_or_default();
        assert!(fires > 0, "{name}: no unit test where it fires");
        assert!(silent > 0, "{name}: no unit test where it stays silent");
        let severity = string(&alert["labels"]["severity"], "severity");
        assert!(["critical", "warning"].contains(&severity), "{name}");
        for annotation in ["summary", "description", "runbook_url"] {
            assert!(
                alert["annotations"][annotation].is_string(),
                "{name}: no {annotation}"
            );
        }
        let url = format!(
            "https://github.com/netgov/netgov/blob/main/deploy/README.md#{}",
            name.to_lowercase()
        );
        assert_eq!(
            alert["annotations"]["runbook_url"].as_str(),
            Some(url.as_str())
        );
        assert!(
            runbook.contains(&format!("### {name}\n")),
            "deploy/README.md has no runbook section for {name}"
        );
    }
}

/// The names of every series the agent exports (each family populated
/// once), plus Prometheus's own `up`.
fn exported_series() -> BTreeSet<String> {
    let metrics = Metrics::new(10);
    let (a, c) = (Identity::world(), Identity::world());
    metrics.count_flow(&a, &c, Protocol::Tcp, Decision::Deny);
    metrics.count_violation(
        (&a, &c),
        (Protocol::Tcp, 80),
        (DeniedBy::Ingress, Tier::NetworkPolicy),
        Enforcement::Gap,
    );
    metrics.count_egress(
        &a,
        ("203.0.113.1".parse().expect("ip"), None),
        (true, true, true),
    );
    for outcome in [
        LearnOutcome::Dns(DnsOutcome::Addresses, 1),
        LearnOutcome::Error(NameSource::Sni, NameError::Truncated),
    ] {
        metrics.count_learned(outcome);
    }
    metrics.record_name_cache(1, 1);
    metrics.set_unprotected_pods(&BTreeMap::from([(("a".into(), Direction::Egress), 1)]));
    metrics.set_governed_namespaces(["a"]);
    metrics.record_resource(
        ResourceKind::Pod,
        true,
        1,
        Some(std::time::Duration::from_secs(1)),
    );
    metrics.count_lost(LossStage::Evaluate, 1);
    metrics.count_flow_log_error();
    let mut names: BTreeSet<String> = metrics
        .encode()
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    names.insert("up".into());
    names
}

/// Every target expression of the dashboard, with its panel's title.
fn dashboard_queries(dashboard: &Json) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().expect("panel title").to_owned();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("target expr").to_owned();
            queries.push((title.clone(), expr));
        }
    }
    queries
}

fn dashboard() -> Json {
    let path = workspace_root().join("deploy/monitoring/grafana-dashboard.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("read the dashboard"))
        .expect("dashboard JSON")
}

#[test]
fn rules_and_dashboard_use_only_metrics_the_agent_exports() {
    let exported = exported_series();
    let rules = rule_file();
    let mut used = BTreeSet::new();
    for alert in alerts(&rules) {
        let expr = string(&alert["expr"], "expr");
        for name in metric_names(expr) {
            assert!(
                exported.contains(name),
                "alert {:?} uses {name}, which the agent does not export ({exported:?})",
                alert["alert"]
            );
            used.insert(name.to_owned());
        }
    }
    for (title, expr) in dashboard_queries(&dashboard()) {
        for name in metric_names(&expr) {
            assert!(
                exported.contains(name),
                "panel {title:?} uses {name}, which the agent does not export"
            );
            used.insert(name.to_owned());
        }
    }
    // The judgement metrics of the issue are all alerted on or shown.
    for name in [
        "netgov_flows_total",
        "netgov_policy_violations_total",
        "netgov_unexpected_egress_total",
        "netgov_unprotected_pods",
        "netgov_events_lost_total",
        "netgov_ready",
    ] {
        assert!(
            used.contains(name),
            "{name} is neither alerted on nor shown"
        );
    }
}

/// Grafana's built-in panel ids (`public/app/plugins/panel/*/plugin.json`,
/// as its documentation lists the visualizations). They are
/// case-sensitive: a panel of an unknown type renders as "Panel plugin not
/// found", and nothing here renders a dashboard to notice.
const GRAFANA_PANEL_TYPES: &[&str] = &[
    "alertlist",
    "annolist",
    "barchart",
    "bargauge",
    "candlestick",
    "canvas",
    "dashlist",
    "datagrid",
    "flamegraph",
    "gauge",
    "geomap",
    "gettingstarted",
    "graph",
    "heatmap",
    "histogram",
    "logs",
    "news",
    "nodeGraph",
    "piechart",
    "row",
    "stat",
    "state-timeline",
    "status-history",
    "table",
    "text",
    "timeseries",
    "traces",
    "trend",
    "welcome",
    "xychart",
];

#[test]
fn every_panel_type_is_a_grafana_panel_id() {
    let dashboard = dashboard();
    let panels = dashboard["panels"].as_array().expect("panels");
    let unknown: Vec<String> = panels
        .iter()
        .filter(|p| !GRAFANA_PANEL_TYPES.contains(&p["type"].as_str().unwrap_or("")))
        .map(|p| format!("{}: {}", p["title"], p["type"]))
        .collect();
    assert!(unknown.is_empty(), "not Grafana panel ids: {unknown:?}");
    assert!(
        panels.iter().any(|p| p["type"] == "nodeGraph"),
        "the service map is a node graph"
    );
}

#[test]
fn dashboard_panels_are_complete() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"].as_str(), Some("netgov-overview"));
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().expect("title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("id")),
            "duplicate id: {title}"
        );
        assert!(panel["gridPos"].is_object(), "{title}: gridPos");
        if panel["type"] == "row" {
            continue;
        }
        assert!(
            panel["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{title}: description"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            assert!(target["refId"].is_string(), "{title}: refId");
            assert_eq!(
                target["datasource"]["uid"].as_str(),
                Some("${datasource}"),
                "{title}"
            );
        }
    }
    // Only the dashboard's own variables and the builtins the end-to-end
    // test substitutes (`$1` is label_replace's capture).
    let mut known: Vec<String> = dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_owned))
        .collect();
    known.extend(["__rate_interval", "__range", "1"].map(String::from));
    for (title, expr) in dashboard_queries(&dashboard) {
        let mut rest = expr.as_str();
        while let Some(start) = rest.find('$') {
            let tail = &rest[start + 1..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            assert!(
                known.iter().any(|k| k == &tail[..end]),
                "{title}: unexpected variable ${}",
                &tail[..end]
            );
            rest = &tail[end..];
        }
    }
}
