//! Cluster state through kube-rs against the in-process fake API server
//! (real list/watch wire protocol, reached through an ordinary
//! kubeconfig): initial sync, churn with IP reuse, label and policy
//! changes, API server restart, 410 Gone → relist, malformed objects.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use netgov_agent::engine::ClusterState;
use netgov_agent::engine::ResourceKind;
use netgov_agent::engine::verdict::EndpointKind;
use netgov_agent::engine::{Decision, FlowQuery, evaluate};
use netgov_agent::model::Protocol;
use netgov_agent::sources::ClusterHealth;
use netgov_agent::sources::kube_source;
use netgov_fakeapi::{FakeApiServer, Resource};
use serde_json::{Value, json};

struct Harness {
    server: FakeApiServer,
    state: Arc<RwLock<ClusterState>>,
    health: Arc<RwLock<ClusterHealth>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn pod(namespace: &str, name: &str, ip: &str, labels: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": namespace, "labels": labels},
           "spec": {"containers": [{"name": "c", "image": "i"}]},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

fn namespace(name: &str, labels: Value) -> Value {
    json!({"metadata": {"name": name, "labels": labels}})
}

fn policy(namespace: &str, name: &str, spec: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": namespace}, "spec": spec})
}

impl Harness {
    async fn start(seed: impl FnOnce(&FakeApiServer)) -> Self {
        let harness = Self::start_unsynced(seed, kube_source::Timeouts::default()).await;
        harness
            .eventually("initial sync", |h| h.health.read().expect("lock").ready())
            .await;
        harness
    }

    /// The source started against the seeded server, not waiting for it.
    async fn start_unsynced(
        seed: impl FnOnce(&FakeApiServer),
        timeouts: kube_source::Timeouts,
    ) -> Self {
        let server = FakeApiServer::start().await;
        seed(&server);
        let kubeconfig = std::env::temp_dir().join(format!(
            "netgov-kubeconfig-{}-{}",
            std::process::id(),
            server.address().port()
        ));
        server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        let client = kube_source::client_with(Some(&kubeconfig), timeouts)
            .await
            .expect("client");
        let state = Arc::new(RwLock::new(ClusterState::new()));
        let health = Arc::new(RwLock::new(ClusterHealth::default()));
        let tasks =
            kube_source::start_with(client, Arc::clone(&state), Arc::clone(&health), timeouts);
        Self {
            server,
            state,
            health,
            tasks,
        }
    }

    fn pod_errors(&self) -> (u64, String) {
        let health = self.health.read().expect("lock");
        health
            .resources
            .get(&ResourceKind::Pod)
            .map_or((0, String::new()), |pods| {
                (pods.errors, pods.last_error.clone().unwrap_or_default())
            })
    }

    async fn eventually(&self, what: &str, condition: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !condition(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {:#?}",
                self.health.read().expect("lock")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn verdict(&self, src: &str, dst: &str, port: u16) -> Decision {
        let state = self.state.read().expect("lock");
        evaluate(&state, &query(src, dst, port)).verdict
    }

    fn destination(&self, dst: &str) -> EndpointKind {
        let state = self.state.read().expect("lock");
        evaluate(&state, &query("203.0.113.1", dst, 80)).destination
    }
}

fn query(src: &str, dst: &str, port: u16) -> FlowQuery {
    FlowQuery {
        src: src.parse::<IpAddr>().expect("ip"),
        dst: dst.parse().expect("ip"),
        protocol: Protocol::Tcp,
        dst_port: port,
    }
}

fn seed(server: &FakeApiServer) {
    server.apply(
        Resource::Namespaces,
        namespace("prod", json!({"env": "prod"})),
    );
    server.apply(
        Resource::Namespaces,
        namespace("dev", json!({"env": "dev"})),
    );
    server.apply(
        Resource::Pods,
        pod("prod", "db", "10.0.1.3", json!({"app": "db"})),
    );
    server.apply(
        Resource::Pods,
        pod("dev", "tool", "10.0.2.3", json!({"app": "tool"})),
    );
    server.apply(
        Resource::NetworkPolicies,
        policy(
            "prod",
            "db",
            json!({"podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "data"}}}]}]}),
        ),
    );
    server.apply(
        Resource::Nodes,
        json!({"metadata": {"name": "node-1"}, "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.10"}]}}),
    );
    server.apply(
        Resource::Services,
        json!({"metadata": {"name": "db", "namespace": "prod"}, "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 5432}]}}),
    );
    server.apply(
        Resource::EndpointSlices,
        json!({"metadata": {"name": "db-1", "namespace": "prod", "labels": {"kubernetes.io/service-name": "db"}},
               "addressType": "IPv4", "ports": [{"port": 5432, "protocol": "TCP"}], "endpoints": [{"addresses": ["10.0.1.3"]}]}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_sync_label_and_policy_changes() {
    let h = Harness::start(seed).await;
    {
        let health = h.health.read().expect("lock");
        assert_eq!(health.resources[&ResourceKind::Pod].objects, 2);
        assert_eq!(health.resources[&ResourceKind::NetworkPolicy].objects, 1);
    }
    assert_eq!(h.verdict("10.0.2.3", "10.0.1.3", 5432), Decision::Deny);
    assert_eq!(
        h.destination("192.168.1.10"),
        EndpointKind::Host {
            node: Some("node-1".into())
        }
    );
    assert!(matches!(
        h.destination("10.96.0.10"),
        EndpointKind::Service { .. }
    ));

    // A namespace label change flips the verdict.
    h.server.apply(
        Resource::Namespaces,
        namespace("dev", json!({"env": "dev", "team": "data"})),
    );
    h.eventually("namespace relabel", |h| {
        h.verdict("10.0.2.3", "10.0.1.3", 5432) == Decision::Allow
    })
    .await;

    // A policy changed, then a new one, then both removed.
    h.server.apply(
        Resource::NetworkPolicies,
        policy("prod", "db", json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"ports": [{"port": 5432}]}]})),
    );
    h.eventually("policy change", |h| {
        h.verdict("10.0.2.3", "10.0.1.3", 22) == Decision::Deny
    })
    .await;
    assert_eq!(h.verdict("10.0.2.3", "10.0.1.3", 5432), Decision::Allow);
    h.server.apply(
        Resource::NetworkPolicies,
        policy(
            "prod",
            "deny-all",
            json!({"podSelector": {}, "ingress": []}),
        ),
    );
    h.server.delete(Resource::NetworkPolicies, "prod", "db");
    h.eventually("policy swap", |h| {
        h.verdict("10.0.2.3", "10.0.1.3", 5432) == Decision::Deny
    })
    .await;
    h.server
        .delete(Resource::NetworkPolicies, "prod", "deny-all");
    h.eventually("policies removed", |h| {
        h.verdict("10.0.2.3", "10.0.1.3", 22) == Decision::Allow
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_churn_with_ip_reuse() {
    let h = Harness::start(seed).await;
    // The old owner finishes, a new pod takes its IP: the IP is the new pod.
    let mut finished = pod("prod", "db", "10.0.1.3", json!({"app": "db"}));
    finished["status"]["phase"] = json!("Succeeded");
    h.server.apply(Resource::Pods, finished);
    h.server.apply(
        Resource::Pods,
        pod("dev", "new", "10.0.1.3", json!({"app": "new"})),
    );
    let new_owner = EndpointKind::Pod {
        namespace: "dev".into(),
        name: "new".into(),
    };
    h.eventually("IP reuse", |h| h.destination("10.0.1.3") == new_owner)
        .await;
    // The stale owner's deletion does not unmap the new one.
    h.server.delete(Resource::Pods, "prod", "db");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.destination("10.0.1.3"), new_owner);
    h.server.delete(Resource::Pods, "dev", "new");
    h.eventually("deletion", |h| {
        h.destination("10.0.1.3") == EndpointKind::External
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_and_gone_relist_lose_and_duplicate_nothing() {
    let mut h = Harness::start(seed).await;
    // API server restart mid-watch: a change made while it was down is seen.
    h.server.restart(Duration::from_millis(300)).await;
    h.server.apply(
        Resource::Pods,
        pod("dev", "after-restart", "10.0.2.9", json!({"app": "x"})),
    );
    h.eventually("change after restart", |h| {
        matches!(h.destination("10.0.2.9"), EndpointKind::Pod { .. })
    })
    .await;

    // History compacted and every watch dropped: the watcher gets 410 Gone,
    // relists, and removes what was deleted in between.
    let (lists_before, _) = h.server.requests(Resource::Pods);
    // Hold the watchers' reconnections (a slow server) while the pod is
    // deleted and history compacted, so they resume from a version that
    // is gone.
    h.server.set_delay(Duration::from_millis(600));
    h.server.drop_connections();
    tokio::time::sleep(Duration::from_millis(150)).await;
    h.server.delete(Resource::Pods, "dev", "tool");
    // Of every kind the state holds one for one, not only pods: the
    // relist finds them in the state, not in a list of its own.
    h.server.delete(Resource::Services, "prod", "db");
    h.server.delete(Resource::EndpointSlices, "prod", "db-1");
    h.server.delete(Resource::NetworkPolicies, "prod", "db");
    h.server.delete(Resource::Nodes, "", "node-1");
    h.server.compact();
    h.server.set_delay(Duration::ZERO);
    h.eventually("relist after 410", |h| {
        h.server.requests(Resource::Pods).0 > lists_before
    })
    .await;
    h.eventually("deletion seen through the relist", |h| {
        h.destination("10.0.2.3") == EndpointKind::External
    })
    .await;
    assert_eq!(
        h.state.read().expect("lock").pod_count(),
        2,
        "db and after-restart, nothing duplicated"
    );
    h.eventually("the other deletions seen through their relists", |h| {
        let state = h.state.read().expect("lock");
        state.service("prod", "db").is_none()
            && state.slices_of("prod", "db").count() == 0
            && state.policies().count() == 0
            && state.node_addresses("node-1").is_empty()
    })
    .await;
    let health = h.health.read().expect("lock");
    let objects = |kind| health.resources[&kind].objects;
    assert_eq!(
        [
            ResourceKind::Pod,
            ResourceKind::Service,
            ResourceKind::EndpointSlice,
            ResourceKind::NetworkPolicy,
            ResourceKind::Node,
        ]
        .map(objects),
        [2, 0, 0, 0, 0]
    );
    drop(health);
    // The first list came from the watch cache; the relist after 410 Gone
    // is a consistent read, as the cache may be older than what was seen.
    let versions = h.server.list_versions(Resource::Pods);
    assert_eq!(
        (
            versions.first().map(String::as_str),
            versions.last().map(String::as_str)
        ),
        (Some("0"), Some("")),
        "{versions:?}"
    );
    assert!(h.health.read().expect("lock").ready());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_objects_are_skipped_and_named() {
    let h = Harness::start(|server| {
        seed(server);
        let mut bad = pod("prod", "broken", "10.0.1.99", json!({"app": "x"}));
        bad["spec"]["containers"][0]["ports"] = json!([{"containerPort": "eighty"}]);
        server.apply(Resource::Pods, bad);
        server.apply(
            Resource::NetworkPolicies,
            policy(
                "prod",
                "bad-cidr",
                json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "nope"}}]}]}),
            ),
        );
    })
    .await;
    let health = h.health.read().expect("lock").clone();
    let pods = &health.resources[&ResourceKind::Pod];
    assert_eq!(pods.skipped_objects, 1);
    let reason = &pods.problems["Pod prod/broken"];
    assert!(
        reason.contains("spec.containers[0].ports[0].containerPort"),
        "{reason}"
    );
    let policies = &health.resources[&ResourceKind::NetworkPolicy];
    assert!(policies.problems["NetworkPolicy prod/bad-cidr"].contains("ipBlock.cidr"));
    // Skipped objects count as objects, once.
    assert_eq!((pods.objects, policies.objects), (3, 2));
    // Everything else applies.
    assert_eq!(h.verdict("10.0.2.3", "10.0.1.3", 5432), Decision::Deny);
    assert_eq!(h.destination("10.0.1.99"), EndpointKind::External);
    // Fixing the object clears its problem.
    h.server.apply(
        Resource::Pods,
        pod("prod", "broken", "10.0.1.99", json!({"app": "x"})),
    );
    h.eventually("fixed object", |h| {
        matches!(h.destination("10.0.1.99"), EndpointKind::Pod { .. })
    })
    .await;
    assert!(
        h.health.read().expect("lock").resources[&ResourceKind::Pod]
            .problems
            .is_empty()
    );
    // A malformed update of a pod the state holds is skipped; the pod
    // keeps its last valid version and is still one object.
    let mut bad = pod("prod", "broken", "10.0.1.99", json!({"app": "y"}));
    bad["spec"]["containers"][0]["ports"] = json!([{"containerPort": "eighty"}]);
    h.server.apply(Resource::Pods, bad);
    h.eventually("skipped update", |h| {
        h.health.read().expect("lock").resources[&ResourceKind::Pod].skipped_objects == 2
    })
    .await;
    assert_eq!(
        h.health.read().expect("lock").resources[&ResourceKind::Pod].objects,
        3
    );
    assert!(matches!(
        h.destination("10.0.1.99"),
        EndpointKind::Pod { .. }
    ));
}

/// ClusterNetworkPolicies come from the API like NetworkPolicies; the
/// v1alpha1 kinds, whose CRDs this server does not have, count as synced
/// with no objects and keep the agent ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_network_policies_apply_and_absent_crds_do_not_block() {
    let h = Harness::start(seed).await;
    {
        let health = h.health.read().expect("lock");
        for kind in [
            ResourceKind::AdminNetworkPolicy,
            ResourceKind::BaselineAdminNetworkPolicy,
        ] {
            let resource = &health.resources[&kind];
            assert!(resource.absent && resource.synced, "{kind:?}: {resource:?}");
        }
        assert!(!health.resources[&ResourceKind::ClusterNetworkPolicy].absent);
    }
    // dev/tool → prod/db is denied by the NetworkPolicy; an Admin Accept
    // from every namespace overrides it, and its removal restores it.
    assert_eq!(h.verdict("10.0.2.3", "10.0.1.3", 5432), Decision::Deny);
    let guard_rail = json!({"metadata": {"name": "open-db"}, "spec": {
        "tier": "Admin", "priority": 5,
        "subject": {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "db"}}}},
        "ingress": [{"name": "from-anywhere", "action": "Accept", "from": [{"namespaces": {}}]}]}});
    h.server.apply(Resource::ClusterNetworkPolicies, guard_rail);
    h.eventually("the Admin Accept applies", |h| {
        h.verdict("10.0.2.3", "10.0.1.3", 5432) == Decision::Allow
    })
    .await;
    h.server
        .delete(Resource::ClusterNetworkPolicies, "", "open-db");
    h.eventually("its removal", |h| {
        h.verdict("10.0.2.3", "10.0.1.3", 5432) == Decision::Deny
    })
    .await;
}

/// An API server that fails every request from the start is retried with
/// a growing backoff — not once a second, as when the watcher's own
/// backoff was reset by every relist it started — and the source syncs
/// once it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_api_server_is_retried_with_backoff_then_synced() {
    let harness = Harness::start_unsynced(
        |server| {
            seed(server);
            server.set_failing(Some(500));
        },
        kube_source::Timeouts::default(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (lists, _) = harness.server.requests(Resource::Pods);
    // Waits of 0.25-0.5, 0.5-1, 1-2, 2-4 and 4-8 s: at most six lists in
    // 10 s, at least four.
    assert!((4..=6).contains(&lists), "{lists} pod lists in 10 s");
    let (errors, last) = harness.pod_errors();
    assert_eq!(errors, lists, "every failure counted");
    assert!(last.contains("injected failure"), "{last}");
    assert!(!harness.health.read().expect("lock").ready());
    harness.server.set_failing(None);
    harness
        .eventually("sync once the server answers", |h| {
            h.health.read().expect("lock").ready()
        })
        .await;
}

/// A server that accepts requests and never answers is given up on after
/// the read timeout (not waited for forever), counted, and the source
/// syncs once it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_api_server_times_out_and_is_retried() {
    let timeouts = kube_source::Timeouts {
        connect: Duration::from_secs(2),
        read: Duration::from_secs(2),
    };
    let harness = Harness::start_unsynced(
        |server| {
            seed(server);
            server.set_delay(Duration::from_secs(3600));
        },
        timeouts,
    )
    .await;
    harness
        .eventually("a timeout counted", |h| h.pod_errors().0 >= 1)
        .await;
    let (_, last) = harness.pod_errors();
    assert!(
        last.to_lowercase().contains("timed out") || last.to_lowercase().contains("timeout"),
        "{last}"
    );
    harness.server.set_delay(Duration::ZERO);
    harness
        .eventually("sync once the server answers", |h| {
            h.health.read().expect("lock").ready()
        })
        .await;
}

/// `netgov check --kubeconfig`: the same questions, against the live
/// cluster's state — pods named as `namespace/pod`, a Service address
/// judged against its backends — with `--fail-on` for CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_judges_against_the_live_cluster() {
    let harness = Harness::start(seed).await;
    let kubeconfig =
        std::env::temp_dir().join(format!("netgov-check-kubeconfig-{}", std::process::id()));
    harness
        .server
        .write_kubeconfig(&kubeconfig)
        .expect("kubeconfig");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_netgov"))
            .args(["check", "--kubeconfig"])
            .arg(&kubeconfig)
            .args([
                "-o",
                "json",
                "--fail-on",
                "deny",
                "--flow",
                "dev/tool -> prod/db:5432/TCP",
                "--flow",
                "dev/tool -> 10.96.0.10:5432/TCP",
            ])
            .output()
            .expect("run netgov check")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let verdicts: Vec<(String, String)> = stdout
        .lines()
        .map(|line| {
            let result: Value = serde_json::from_str(line).expect("JSON line");
            (
                result["verdict"].as_str().unwrap_or_default().to_owned(),
                result["destination"]["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("deny".to_owned(), "pod".to_owned()),
            ("deny".to_owned(), "service".to_owned())
        ],
        "{stdout}"
    );
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A watch that stalls — answered, then nothing, not even its end — is
/// given up on at the read timeout, counted and logged (not silently
/// reconnected minutes later), and the source keeps following changes
/// once watches flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watch_is_noticed_and_counted() {
    let timeouts = kube_source::Timeouts {
        connect: Duration::from_secs(2),
        read: Duration::from_secs(4),
    };
    let harness = Harness::start_unsynced(seed, timeouts).await;
    harness
        .eventually("initial sync", |h| h.health.read().expect("lock").ready())
        .await;
    harness.server.set_stall_watches(true);
    // Watches in flight end at their 1 s server timeout; the next ones
    // stall.
    harness
        .eventually("a stalled watch counted", |h| h.pod_errors().0 >= 1)
        .await;
    let (_, last) = harness.pod_errors();
    assert!(last.to_lowercase().contains("time"), "{last}");
    harness.server.set_stall_watches(false);
    harness.server.apply(
        Resource::Pods,
        pod("dev", "late", "10.0.2.9", json!({"app": "late"})),
    );
    harness
        .eventually("the change after the stall", |h| {
            h.state.read().expect("lock").pod("dev", "late").is_some()
        })
        .await;
}
