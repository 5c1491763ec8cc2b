use std::net::IpAddr;
use std::path::PathBuf;

use super::ResourceKind;
use super::file_source::FileSource;
use crate::engine::{Decision, FlowQuery, evaluate};
use crate::model::Protocol;

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netgov-cluster-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

const PODS: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {app: a}}\nstatus: {podIP: 10.9.0.1}\n---\n\
                    apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: x, labels: {app: b}}\nstatus: {podIP: 10.9.0.2}\n";
const DENY_A: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-a, namespace: x}\n\
                      spec: {podSelector: {matchLabels: {app: a}}, ingress: []}\n";

fn b_to_a(source: &FileSource) -> Decision {
    let state = source.state();
    let state = state.read().expect("lock");
    let flow = FlowQuery {
        src: "10.9.0.2".parse::<IpAddr>().expect("ip"),
        dst: "10.9.0.1".parse().expect("ip"),
        protocol: Protocol::Tcp,
        dst_port: 80,
    };
    evaluate(&state, &flow).verdict
}

/// Makes the next write visible to a size+mtime check even on coarse clocks.
fn rewrite(path: &std::path::Path, text: &str) {
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(path, text).expect("write");
}

#[test]
fn file_source_follows_its_files_and_keeps_the_last_good_state() {
    let dir = temp_dir("follow");
    std::fs::write(dir.join("pods.yaml"), PODS).expect("write");
    let mut source = FileSource::open(vec![dir.clone()]).expect("open");
    assert!(source.health().read().expect("lock").ready());
    assert_eq!(b_to_a(&source), Decision::Allow);
    assert!(!source.reload_if_changed(), "nothing changed");

    // A new policy file is picked up.
    std::fs::write(dir.join("policy.yaml"), DENY_A).expect("write");
    assert!(source.reload_if_changed());
    assert_eq!(b_to_a(&source), Decision::Deny);

    // A broken file: the previous state stays, the failure is reported.
    rewrite(
        &dir.join("policy.yaml"),
        "kind: NetworkPolicy\nmetadata: {name: [\n",
    );
    assert!(!source.reload_if_changed());
    assert_eq!(b_to_a(&source), Decision::Deny);
    let health = source.health().read().expect("lock").clone();
    let policies = &health.resources[&ResourceKind::NetworkPolicy];
    assert_eq!(policies.errors, 1);
    let error = policies.last_error.as_deref().unwrap_or_default();
    assert!(error.contains("policy.yaml"), "{error}");
    assert!(health.ready(), "the previous state is still complete");

    // An invalid policy next to a valid one: the valid one applies, the
    // invalid one is reported with its field.
    let invalid = "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: bad, namespace: x}\n\
                   spec: {podSelector: {}, ingress: [{ports: [{port: 0}]}]}\n";
    rewrite(&dir.join("policy.yaml"), &format!("{DENY_A}{invalid}"));
    assert!(source.reload_if_changed());
    assert_eq!(b_to_a(&source), Decision::Deny);
    let health = source.health().read().expect("lock").clone();
    let policies = &health.resources[&ResourceKind::NetworkPolicy];
    assert_eq!(policies.skipped_objects, 1);
    assert_eq!(policies.objects, 2);
    let why = &policies.problems["NetworkPolicy x/bad"];
    assert!(why.contains("spec.ingress[0].ports[0].port"), "{why}");
    assert_eq!(health.resources[&ResourceKind::Pod].objects, 2);

    // Removing the policy file un-isolates.
    std::fs::remove_file(dir.join("policy.yaml")).expect("remove");
    assert!(source.reload_if_changed());
    assert_eq!(b_to_a(&source), Decision::Allow);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unreadable_files_fail_the_first_load() {
    let dir = temp_dir("broken");
    std::fs::write(dir.join("pods.yaml"), "kind: Pod\nmetadata: {name: [\n").expect("write");
    let errors = FileSource::open(vec![dir.clone()]).expect_err("syntax error");
    assert!(errors.errors[0].to_string().contains("pods.yaml"));
    let errors = FileSource::open(vec![dir.join("missing.yaml")]).expect_err("missing");
    assert!(errors.errors[0].to_string().contains("missing.yaml"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn resource_kinds_name_their_api_group_and_resource() {
    let rules: Vec<_> = ResourceKind::ALL
        .iter()
        .map(|kind| kind.api_resource())
        .collect();
    assert_eq!(
        rules,
        [
            ("", "namespaces"),
            ("", "nodes"),
            ("networking.k8s.io", "networkpolicies"),
            ("", "pods"),
            ("", "services"),
            ("discovery.k8s.io", "endpointslices"),
            ("policy.networking.k8s.io", "clusternetworkpolicies"),
            ("policy.networking.k8s.io", "adminnetworkpolicies"),
            ("policy.networking.k8s.io", "baselineadminnetworkpolicies"),
        ]
    );
}
