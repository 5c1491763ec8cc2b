//! Table tests of the policy engine, written from the Kubernetes
//! documentation (concepts/services-networking/network-policies and the
//! networking.k8s.io/v1 API reference).

use std::net::IpAddr;
use std::path::Path;

use super::*;
use crate::engine::{ClusterState, ResourceKind};
use crate::model::Protocol;
use crate::sources::manifests::{Manifests, parse_file};

/// Builds a cluster from YAML documents; panics on any error.
fn cluster(yaml: &str) -> ClusterState {
    ClusterState::from_yaml(yaml)
}

fn pod(namespace: &str, name: &str, ip: &str, labels: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, labels: {labels}}}\n\
         spec: {{containers: [{{name: c, image: i}}]}}\nstatus: {{podIP: {ip}}}\n"
    )
}

fn namespace(name: &str, labels: &str) -> String {
    format!("---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {labels}}}\n")
}

fn policy(namespace: &str, name: &str, spec: &str) -> String {
    let spec = spec.replace('\n', "\n  ");
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  {spec}\n"
    )
}

/// A flow `src -> dst:port/proto`.
fn flow(src: &str, dst: &str, protocol: Protocol, port: u16) -> FlowQuery {
    FlowQuery {
        src: src.parse::<IpAddr>().expect("ip"),
        dst: dst.parse().expect("ip"),
        protocol,
        dst_port: port,
    }
}

use Protocol::{Icmp, Sctp, Tcp, Udp};

/// The base cluster of most rows: namespaces `prod` (env=prod) and `dev`
/// (env=dev), pods `prod/api` (app=api, 10.0.1.1), `prod/web` (app=web,
/// 10.0.1.2), `prod/db` (app=db, 10.0.1.3), `dev/web` (app=web, 10.0.2.2),
/// `dev/tool` (app=tool, 10.0.2.3).
fn base() -> String {
    [
        namespace("prod", "{env: prod}"),
        namespace("dev", "{env: dev}"),
        pod("prod", "api", "10.0.1.1", "{app: api}"),
        pod("prod", "web", "10.0.1.2", "{app: web}"),
        pod("prod", "db", "10.0.1.3", "{app: db}"),
        pod("dev", "web", "10.0.2.2", "{app: web}"),
        pod("dev", "tool", "10.0.2.3", "{app: tool}"),
    ]
    .concat()
}

const API: &str = "10.0.1.1";
const WEB: &str = "10.0.1.2";
const DB: &str = "10.0.1.3";
const DEV_WEB: &str = "10.0.2.2";
const DEV_TOOL: &str = "10.0.2.3";
const OUTSIDE: &str = "203.0.113.10";

/// One side in a summary: `open` (not isolated: allowed), `allowed by
/// [ns/policy#rule, ...]`, `denied by [ns/policy, ...]` (the isolating
/// policies, none of whose rules admits the flow), `n/a`, or when a
/// cluster-wide tier decided, `VERDICT by TIER [Kind name rule R]` with
/// ` skipping [ns/policy, ...]` for the NetworkPolicies it overrode.
fn side_summary(side: &verdict::SideVerdict) -> String {
    if let Some(decision) = &side.tier {
        let mut text = format!(
            "{} by {} [{} rule {}]",
            side.verdict, decision.tier, decision.policy, decision.rule
        );
        if !side.skipped_policies.is_empty() {
            text += &format!(" skipping [{}]", side.skipped_policies.join(", "));
        }
        return text;
    }
    match (side.verdict, side.isolated) {
        (Decision::NotApplicable, _) => "n/a".into(),
        (Decision::Allow, false) => "open".into(),
        (Decision::Allow, true) => {
            let rules: Vec<String> = side.allowed_by.iter().map(ToString::to_string).collect();
            format!("allowed by [{}]", rules.join(", "))
        }
        (Decision::Deny, _) => {
            assert!(side.allowed_by.is_empty(), "a denying side names no rule");
            format!("denied by [{}]", side.isolating_policies.join(", "))
        }
    }
}

/// The whole verdict in one line: `VERDICT | egress: SIDE | ingress:
/// SIDE` (see [`side_summary`]); a flow to a Service adds `| backends:
/// [ip:port VERDICT, ...]`, and `(disagree)` when they differ.
fn summary(verdict: &Verdict) -> String {
    let mut text = format!(
        "{} | egress: {} | ingress: {}",
        verdict.verdict,
        side_summary(&verdict.egress),
        side_summary(&verdict.ingress)
    );
    if !verdict.backends.is_empty() {
        let backends: Vec<String> = verdict
            .backends
            .iter()
            .map(|b| format!("{}:{} {}", b.ip, b.port, b.verdict))
            .collect();
        text += &format!(" | backends: [{}]", backends.join(", "));
    }
    if verdict.backends_disagree {
        text += " (disagree)";
    }
    text
}

/// A table row: the policies added to [`base`], a flow, and the whole
/// verdict expected (its [`summary`]).
struct Row {
    name: &'static str,
    policies: Vec<String>,
    flow: FlowQuery,
    expected: &'static str,
}

fn row(name: &'static str, policies: Vec<String>, flow: FlowQuery, expected: &'static str) -> Row {
    Row {
        name,
        policies,
        flow,
        expected,
    }
}

fn check_rows(rows: Vec<Row>) {
    let mut failures = Vec::new();
    for row in rows {
        let state = cluster(&(base() + &row.policies.concat()));
        let got = summary(&evaluate(&state, &row.flow));
        if std::env::var_os("NETGOV_DUMP_ROWS").is_some() {
            println!("ROW\t{}\t{}", row.name, got);
        }
        if got != row.expected {
            failures.push(format!(
                "{}:\n  expected {}\n  got      {got}",
                row.name, row.expected
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

mod changes;
mod properties;
mod resolution;
mod rules;
mod tiers;

/// Applies an object that is not a policy, or a valid one.
fn apply(state: &mut ClusterState, object: impl Into<crate::engine::Object>) {
    state.apply(&object.into()).expect("the object applies");
}
