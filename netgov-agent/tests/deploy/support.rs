//! Shared helpers of the deploy tests: rendering `deploy/` with kustomize
//! and finding the validators `cargo xtask setup` installs.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;
use serde_yaml_ng::Value;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Where `cargo xtask setup` installs the validators (xtask's
/// `setup::deploy_tools_dir`).
pub fn tools_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    let dir = home.join(".local/share/netgov/deploy-tools");
    assert!(
        dir.is_dir(),
        "{} is missing: run `cargo xtask setup` (these tests must not be skipped)",
        dir.display()
    );
    dir
}

/// Runs a tool, failing the test loudly when it is not installed.
pub fn output(command: &mut Command) -> std::process::Output {
    command.output().unwrap_or_else(|error| {
        panic!(
            "cannot run {:?} ({error}): run `cargo xtask setup` (these tests must not be skipped)",
            command.get_program()
        )
    })
}

/// The objects `kubectl kustomize deploy/<dir>` renders.
pub fn render(dir: &str) -> Vec<Value> {
    let path = workspace_root().join("deploy").join(dir);
    let rendered = output(Command::new("kubectl").arg("kustomize").arg(&path));
    assert!(
        rendered.status.success(),
        "kubectl kustomize {}: {}",
        path.display(),
        String::from_utf8_lossy(&rendered.stderr)
    );
    let text = String::from_utf8(rendered.stdout).expect("utf-8");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).expect("rendered YAML"))
        .filter(|object| !object.is_null())
        .collect()
}

/// The one rendered object of `kind`, optionally named `name`.
pub fn object<'a>(objects: &'a [Value], kind: &str, name: Option<&str>) -> &'a Value {
    let found: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"].as_str() == Some(kind))
        .filter(|o| name.is_none_or(|n| o["metadata"]["name"].as_str() == Some(n)))
        .collect();
    assert_eq!(found.len(), 1, "exactly one {kind} {name:?}");
    found[0]
}

/// A string field, or a failure naming it.
pub fn string<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value:?}"))
}

/// The PrometheusRule's `spec`: a plain Prometheus rule file.
pub fn rule_file() -> Value {
    let path = workspace_root().join("deploy/monitoring/prometheusrule.yaml");
    let text = std::fs::read_to_string(&path).expect("read the PrometheusRule");
    let rule: Value = serde_yaml_ng::from_str(&text).expect("PrometheusRule YAML");
    rule["spec"].clone()
}

/// Every alerting rule of the rule file.
pub fn alerts(rules: &Value) -> Vec<&Value> {
    rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_sequence().expect("rules"))
        .filter(|rule| rule.get("alert").is_some())
        .collect()
}
