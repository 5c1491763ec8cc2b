//! Invalid policies, incremental updates, IP reuse and the seed scenario.

use super::*;

#[test]
fn invalid_policies_are_rejected_with_object_and_field_and_others_still_apply() {
    let cases = [
        (
            "ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]",
            "spec.ingress[0].from[0].ipBlock.cidr",
        ),
        (
            "ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}]}]",
            "spec.ingress[0].from[0].ipBlock.except[0]",
        ),
        (
            "ingress: [{from: [{podSelector: {matchExpressions: [{key: a, operator: Equals, values: [b]}]}}]}]",
            "spec.ingress[0].from[0].podSelector.matchExpressions[0]",
        ),
        (
            "ingress: [{from: [{podSelector: {matchExpressions: [{key: a, operator: In}]}}]}]",
            "spec.ingress[0].from[0].podSelector.matchExpressions[0]",
        ),
        (
            "ingress: [{ports: [{port: 70000}]}]",
            "spec.ingress[0].ports[0].port",
        ),
        (
            "ingress: [{ports: [{port: 0}]}]",
            "spec.ingress[0].ports[0].port",
        ),
        (
            "ingress: [{ports: [{port: http, endPort: 90}]}]",
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            "ingress: [{ports: [{port: 90, endPort: 80}]}]",
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            "ingress: [{ports: [{protocol: ICMP}]}]",
            "spec.ingress[0].ports[0].protocol",
        ),
        (
            "ingress: [{ports: [{port: \"80\"}]}]",
            "spec.ingress[0].ports[0].port",
        ),
        ("egress: [{to: [{}]}]", "spec.egress[0].to[0]"),
        (
            "egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]",
            "spec.egress[0].to[0].ipBlock",
        ),
        ("policyTypes: [Ingress, Sideways]", "spec.policyTypes[1]"),
        (
            "ingress: [{from: [{podSelector: {matchLabels: {app: \"a b\"}}}]}]",
            "spec.ingress[0].from[0].podSelector.matchLabels.app",
        ),
        (
            "ingress: [{from: [{podSelector: {matchLabels: {\"bad key!\": x}}}]}]",
            "spec.ingress[0].from[0].podSelector.matchLabels",
        ),
        (
            "ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: \"-x\", operator: Exists}]}}]}]",
            "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0]",
        ),
    ];
    for (spec, field) in cases {
        let mut manifests = Manifests::default();
        let mut errors = Vec::new();
        let yaml = base()
            + &policy("prod", "bad", &format!("podSelector: {{}}\n{spec}"))
            + &policy(
                "prod",
                "good",
                "podSelector: {matchLabels: {app: db}}\ningress: []",
            );
        parse_file(Path::new("test.yaml"), &yaml, &mut manifests, &mut errors);
        assert!(errors.is_empty(), "{spec}: {errors:?}");
        let (state, errors) = manifests.into_cluster();
        assert_eq!(errors.len(), 1, "{spec}: {errors:?}");
        let PolicyError::Invalid {
            object, field: got, ..
        } = &state.policy_errors()["prod/bad"];
        assert_eq!(object, "NetworkPolicy prod/bad", "{spec}");
        assert_eq!(got, field, "{spec}");
        assert!(errors[0].to_string().contains(field), "{}", errors[0]);
        // The valid policy applies; the invalid one does not.
        assert_eq!(
            evaluate(&state, &flow(API, DB, Tcp, 1)).verdict,
            Decision::Deny,
            "{spec}"
        );
        assert_eq!(
            evaluate(&state, &flow(API, WEB, Tcp, 1)).verdict,
            Decision::Allow,
            "{spec}"
        );
    }
}

#[test]
fn incremental_updates_flip_verdicts() {
    let mut state = cluster(
        &(base()
            + &policy(
                "prod",
                "db",
                "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{namespaceSelector: {matchLabels: {team: data}}}]}]",
            )),
    );
    let from_dev = flow(DEV_TOOL, DB, Tcp, 5432);
    assert_eq!(evaluate(&state, &from_dev).verdict, Decision::Deny);
    // A namespace label change flips the verdict.
    let relabelled: k8s_openapi::api::core::v1::Namespace = serde_json::from_str(
        r#"{"metadata": {"name": "dev", "labels": {"env": "dev", "team": "data"}}}"#,
    )
    .expect("json");
    apply(&mut state, relabelled.clone());
    assert_eq!(evaluate(&state, &from_dev).verdict, Decision::Allow);
    // A pod label change moves it out of the policy's selection.
    let moved: k8s_openapi::api::core::v1::Pod = serde_json::from_str(
        r#"{"metadata": {"name": "db", "namespace": "prod", "labels": {"app": "db-v2"}}, "status": {"podIP": "10.0.1.3"}}"#,
    )
    .expect("json");
    apply(&mut state, moved.clone());
    assert_eq!(
        evaluate(&state, &flow(API, DB, Tcp, 5432)).verdict,
        Decision::Allow
    );
    // Removing the pod: its IP is outside the cluster now.
    state.delete(ResourceKind::Pod, "prod", "db");
    assert!(matches!(
        evaluate(&state, &from_dev).destination,
        verdict::EndpointKind::External
    ));
    // Deleting the policy un-isolates.
    state.delete(ResourceKind::NetworkPolicy, "prod", "db");
    assert!(state.policies().next().is_none());
}

#[test]
fn ip_reuse_resolves_to_the_new_pod_and_finished_pods_leave() {
    let mut state = cluster(&base());
    let new_owner: k8s_openapi::api::core::v1::Pod = serde_json::from_str(
        r#"{"metadata": {"name": "new", "namespace": "dev", "labels": {"app": "new"}}, "status": {"podIP": "10.0.1.3", "phase": "Running"}}"#,
    )
    .expect("json");
    apply(&mut state, new_owner.clone());
    let verdict = evaluate(&state, &flow(API, DB, Tcp, 1));
    assert_eq!(
        verdict.destination,
        verdict::EndpointKind::Pod {
            namespace: "dev".into(),
            name: "new".into()
        }
    );
    // The stale owner's deletion does not unmap the new owner.
    state.delete(ResourceKind::Pod, "prod", "db");
    assert!(matches!(
        evaluate(&state, &flow(API, DB, Tcp, 1)).destination,
        verdict::EndpointKind::Pod { .. }
    ));
    // A finished pod leaves the index.
    let finished: k8s_openapi::api::core::v1::Pod = serde_json::from_str(
        r#"{"metadata": {"name": "new", "namespace": "dev"}, "status": {"podIP": "10.0.1.3", "phase": "Succeeded"}}"#,
    )
    .expect("json");
    apply(&mut state, finished.clone());
    assert_eq!(
        evaluate(&state, &flow(API, DB, Tcp, 1)).destination,
        verdict::EndpointKind::External
    );
}

#[test]
fn seed_scenario() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/seed-scenario/cluster.yaml"
    ))
    .expect("seed");
    let state = cluster(&text);
    let (serving, monitoring, ingestion, unauthorised) =
        ("10.244.0.11", "10.244.0.12", "10.244.0.13", "10.244.0.15");
    let judge = |src, dst, port| evaluate(&state, &flow(src, dst, Tcp, port)).verdict;
    assert_eq!(judge(monitoring, serving, 8080), Decision::Allow);
    assert_eq!(judge(monitoring, serving, 9090), Decision::Deny);
    assert_eq!(judge(unauthorised, serving, 8080), Decision::Deny);
    assert_eq!(judge(ingestion, "10.0.3.4", 5432), Decision::Allow);
    assert_eq!(judge(ingestion, "10.0.3.4", 6379), Decision::Deny);
    assert_eq!(judge(ingestion, OUTSIDE, 443), Decision::Deny);
    assert_eq!(
        judge(unauthorised, OUTSIDE, 443),
        Decision::Allow,
        "egress not isolated"
    );
}

#[test]
fn the_namespace_name_label_cannot_be_forged() {
    let yaml = base()
        + &namespace("forged", "{kubernetes.io/metadata.name: prod}")
        + &pod("forged", "x", "10.0.9.1", "{app: x}")
        + &policy(
            "prod",
            "db",
            "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: prod}}}]}]",
        );
    let state = cluster(&yaml);
    assert_eq!(
        evaluate(&state, &flow("10.0.9.1", DB, Tcp, 5432)).verdict,
        Decision::Deny
    );
    assert_eq!(
        evaluate(&state, &flow(API, DB, Tcp, 5432)).verdict,
        Decision::Allow
    );
}

#[test]
fn named_ports_ignore_ordinary_init_containers() {
    let yaml = base()
        + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: s, namespace: prod, labels: {app: s}}\n\
           spec: {initContainers: [{name: setup, image: i, ports: [{name: metrics, containerPort: 9090}]},\n\
                                   {name: proxy, image: i, restartPolicy: Always, ports: [{name: proxy, containerPort: 15001}]}],\n\
                  containers: [{name: c, image: i}]}\nstatus: {podIP: 10.0.1.50}\n"
        + &policy(
            "prod",
            "s",
            "podSelector: {matchLabels: {app: s}}\ningress: [{ports: [{port: metrics}, {port: proxy}]}]",
        );
    let state = cluster(&yaml);
    assert_eq!(
        evaluate(&state, &flow(API, "10.0.1.50", Tcp, 9090)).verdict,
        Decision::Deny
    );
    assert_eq!(
        evaluate(&state, &flow(API, "10.0.1.50", Tcp, 15001)).verdict,
        Decision::Allow,
        "sidecars count"
    );
}

#[test]
fn a_stale_update_of_the_old_owner_does_not_steal_a_reused_ip() {
    let mut state = cluster(&base());
    let pod = |json: &str| -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_str(json).expect("json")
    };
    // db (10.0.1.3) is being deleted; a new pod takes its IP.
    apply(
        &mut state,
        pod(
            r#"{"metadata": {"name": "db", "namespace": "prod", "creationTimestamp": "2026-01-01T00:00:00Z",
            "deletionTimestamp": "2026-01-02T00:00:00Z", "labels": {"app": "db"}}, "status": {"podIP": "10.0.1.3", "phase": "Running"}}"#,
        ),
    );
    apply(
        &mut state,
        pod(
            r#"{"metadata": {"name": "web-2", "namespace": "prod", "creationTimestamp": "2026-01-02T00:00:05Z", "labels": {"app": "web"}},
            "status": {"podIP": "10.0.1.3", "phase": "Running"}}"#,
        ),
    );
    // A late status update of the old owner arrives.
    apply(
        &mut state,
        pod(
            r#"{"metadata": {"name": "db", "namespace": "prod", "creationTimestamp": "2026-01-01T00:00:00Z",
            "deletionTimestamp": "2026-01-02T00:00:00Z", "labels": {"app": "db"}}, "status": {"podIP": "10.0.1.3", "phase": "Running"}}"#,
        ),
    );
    let owner = || evaluate(&state, &flow(API, DB, Tcp, 1)).destination;
    let web2 = verdict::EndpointKind::Pod {
        namespace: "prod".into(),
        name: "web-2".into(),
    };
    assert_eq!(owner(), web2);
    // Then its deletion: the IP stays with the new pod.
    state.delete(ResourceKind::Pod, "prod", "db");
    assert_eq!(evaluate(&state, &flow(API, DB, Tcp, 1)).destination, web2);
    // And when the new pod goes, nobody holds it.
    state.delete(ResourceKind::Pod, "prod", "web-2");
    assert_eq!(
        evaluate(&state, &flow(API, DB, Tcp, 1)).destination,
        verdict::EndpointKind::External
    );
}
