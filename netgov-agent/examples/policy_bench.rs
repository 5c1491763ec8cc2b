//! Policy engine benchmark (run by `cargo xtask bench policy`): a generated
//! cluster of 10,000 pods in 200 namespaces with 2,000 policies of
//! realistic shapes and 200 ClusterNetworkPolicies in the Admin and
//! Baseline tiers. Prints compile time, verdicts per second on one core
//! (cold, and through the verdict cache), and writes the cluster and a
//! flows file for the `netgov check` end-to-end figure.
//!
//! Usage: `policy_bench [OUTPUT_DIR]` — with a directory, also writes
//! `cluster.json` and `flows.jsonl` there.

use std::hint::black_box;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use netgov_agent::engine::evaluate::VerdictCache;
use netgov_agent::engine::{ClusterState, FlowQuery, evaluate};
use netgov_agent::model::Protocol;
use netgov_agent::sources::manifests::{Manifests, parse_file};
use serde_json::{Value, json};

const NAMESPACES: usize = 200;
const PODS_PER_NAMESPACE: usize = 50;
const POLICIES_PER_NAMESPACE: usize = 10;
const APPS: [&str; 5] = ["api", "web", "worker", "db", "cache"];
/// ClusterNetworkPolicies added (`NETGOV_BENCH_CLUSTER_POLICIES`, default
/// 200).
fn cluster_policy_count() -> usize {
    std::env::var("NETGOV_BENCH_CLUSTER_POLICIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200)
}

fn pod_ip(namespace: usize, pod: usize) -> Ipv4Addr {
    let n = namespace * PODS_PER_NAMESPACE + pod;
    Ipv4Addr::new(
        10,
        100 + (n / 65536) as u8,
        (n / 256 % 256) as u8,
        (n % 256) as u8,
    )
}

/// Objects of the generated cluster, as the API server would return them.
fn generate() -> Vec<Value> {
    let mut objects = Vec::new();
    for ns in 0..NAMESPACES {
        let name = format!("team-{ns}");
        let tier = if ns % 4 == 0 { "prod" } else { "dev" };
        objects.push(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"tier": tier, "team": format!("t{}", ns % 20)}}}));
        for pod in 0..PODS_PER_NAMESPACE {
            let app = APPS[pod % APPS.len()];
            objects.push(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{app}-{pod}"), "namespace": name,
                    "labels": {"app": app, "version": format!("v{}", pod % 3), "role": if pod % 7 == 0 { "monitoring" } else { "app" }}},
                "spec": {"containers": [{"name": "main", "image": "img",
                    "ports": [{"name": "http", "containerPort": 8080 + (pod % 2) as i32}, {"name": "metrics", "containerPort": 9090}]}]},
                "status": {"phase": "Running", "podIP": pod_ip(ns, pod).to_string()}}));
        }
        // Ten policies a namespace: default deny, per-app allows with pod
        // and namespace peers, named ports, port ranges, egress with ipBlock.
        let policies = [
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
            json!({"podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}], "ports": [{"port": 5432}]}]}),
            json!({"podSelector": {"matchLabels": {"app": "api"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}},
                                      {"namespaceSelector": {"matchLabels": {"tier": "prod"}}, "podSelector": {"matchLabels": {"app": "web"}}}],
                             "ports": [{"port": "http"}]}]}),
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}], "ports": [{"port": 443}, {"port": 80}]}]}),
            json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": format!("t{}", ns % 20)}},
                "podSelector": {"matchLabels": {"role": "monitoring"}}}], "ports": [{"port": "metrics"}]}]}),
            json!({"podSelector": {"matchLabels": {"app": "cache"}},
                "ingress": [{"from": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["api", "worker"]}]}}],
                             "ports": [{"port": 6379}, {"protocol": "UDP", "port": 30000, "endPort": 32767}]}]}),
            json!({"podSelector": {"matchLabels": {"app": "worker"}}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "cache"}}}, {"podSelector": {"matchLabels": {"app": "db"}}}]},
                           {"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}], "ports": [{"port": 443}]}]}),
            json!({"podSelector": {"matchExpressions": [{"key": "version", "operator": "NotIn", "values": ["v0"]}]},
                "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}}], "ports": [{"port": 8443}]}]}),
            json!({"podSelector": {"matchLabels": {"app": "api"}}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": 5432}]},
                           {"ports": [{"protocol": "UDP", "port": 53}]}]}),
            json!({"podSelector": {"matchLabels": {"role": "monitoring"}}, "policyTypes": ["Ingress", "Egress"],
                "ingress": [], "egress": [{}]}),
        ];
        assert_eq!(policies.len(), POLICIES_PER_NAMESPACE);
        for (i, spec) in policies.into_iter().enumerate() {
            objects.push(
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": format!("policy-{i}"), "namespace": name}, "spec": spec}),
            );
        }
    }
    objects.extend(cluster_policies());
    objects
}

/// 200 ClusterNetworkPolicies, three in four in the Admin tier, each for
/// the namespaces of one team (every pod is the subject of ten): a Pass
/// for production callers, a Deny of another team's workers on a port
/// range, and an egress Deny of a network.
fn cluster_policies() -> Vec<Value> {
    (0..cluster_policy_count())
        .map(|i| {
            let tier = if i % 4 == 3 { "Baseline" } else { "Admin" };
            json!({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
                "metadata": {"name": format!("guard-{i}")},
                "spec": {"tier": tier, "priority": i * 5,
                    "subject": {"namespaces": {"matchLabels": {"team": format!("t{}", i % 20)}}},
                    "ingress": [
                        {"name": "prod-callers", "action": "Pass", "from": [{"namespaces": {"matchLabels": {"tier": "prod"}}}],
                         "protocols": [{"tcp": {"destinationPort": {"number": 8443}}}]},
                        {"name": "no-foreign-workers", "action": "Deny",
                         "from": [{"pods": {"namespaceSelector": {"matchLabels": {"team": format!("t{}", (i + 1) % 20)}},
                                            "podSelector": {"matchLabels": {"app": "worker"}}}}],
                         "protocols": [{"tcp": {"destinationPort": {"range": {"start": 6000, "end": 7000}}}}]}],
                    "egress": [{"name": "no-test-net", "action": "Deny", "to": [{"networks": ["198.51.100.0/24"]}]}]}})
        })
        .collect()
}

/// Flows for `netgov check`: 300,000 of the mix, about 60 % of them
/// denied, the shape its throughput is stated on (the mix alone denies
/// about 89 %: denied flows are left out until the share is reached).
fn check_flows(cluster: &ClusterState, mix: &[FlowQuery]) -> Vec<FlowQuery> {
    const FLOWS: usize = 300_000;
    const DENIED: usize = FLOWS * 6 / 10;
    let (mut denied, mut others) = (0, 0);
    mix.iter()
        .filter(|query| {
            if evaluate(cluster, query).verdict == netgov_agent::engine::Decision::Deny {
                denied += 1;
                denied <= DENIED
            } else {
                others += 1;
                others <= FLOWS - DENIED
            }
        })
        .copied()
        .collect()
}

/// A deterministic mix of flows between pods, across namespaces and to the
/// outside.
fn flows(count: usize) -> Vec<FlowQuery> {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let ports = [5432, 8080, 8081, 443, 80, 6379, 9090, 8443, 53, 31000];
    (0..count)
        .map(|_| {
            let src = IpAddr::V4(pod_ip(
                next() as usize % NAMESPACES,
                next() as usize % PODS_PER_NAMESPACE,
            ));
            let dst = if next() % 10 == 0 {
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, (next() % 250) as u8 + 1))
            } else {
                IpAddr::V4(pod_ip(
                    if next() % 4 == 0 {
                        next() as usize % NAMESPACES
                    } else {
                        0
                    },
                    next() as usize % PODS_PER_NAMESPACE,
                ))
            };
            let port = ports[next() as usize % ports.len()];
            let protocol = if port == 53 || port == 31000 {
                Protocol::Udp
            } else {
                Protocol::Tcp
            };
            FlowQuery {
                src,
                dst,
                protocol,
                dst_port: port,
            }
        })
        .collect()
}

fn main() {
    let output_dir = std::env::args().nth(1);
    let objects = generate();
    let text =
        serde_json::to_string(&json!({"apiVersion": "v1", "kind": "List", "items": objects}))
            .expect("json");

    // Compile: parse typed objects, compile policies, index everything.
    let started = Instant::now();
    let mut manifests = Manifests::default();
    let mut errors = Vec::new();
    parse_file(
        std::path::Path::new("cluster.json"),
        &text,
        &mut manifests,
        &mut errors,
    );
    let parsed = started.elapsed();
    let (cluster, compile_errors) = manifests.into_cluster();
    let total = started.elapsed();
    assert!(
        errors.is_empty() && compile_errors.is_empty(),
        "{errors:?} {compile_errors:?}"
    );
    println!(
        "cluster: {} pods, {NAMESPACES} namespaces, {} policies, {} ClusterNetworkPolicies",
        cluster.pod_count(),
        cluster.policies().count(),
        cluster.cluster_policies().count()
    );
    println!(
        "compile (objects -> indexed, compiled policies): {:.1} ms (JSON parsing before it: {:.1} ms)",
        (total - parsed).as_secs_f64() * 1e3,
        parsed.as_secs_f64() * 1e3
    );

    let queries = flows(1_000_000);
    let started = Instant::now();
    let mut allowed = 0usize;
    for query in &queries {
        if evaluate(&cluster, black_box(query)).verdict == netgov_agent::engine::Decision::Allow {
            allowed += 1;
        }
    }
    let cold = started.elapsed();
    println!(
        "verdicts, cold (full evaluation with explanation): {:.0} /s on one core ({allowed} of {} allowed)",
        queries.len() as f64 / cold.as_secs_f64(),
        queries.len()
    );

    let mut cache = VerdictCache::new(1 << 20);
    for query in &queries {
        black_box(cache.get_or_evaluate(&cluster, query));
    }
    let started = Instant::now();
    for query in &queries {
        black_box(cache.get_or_evaluate(&cluster, black_box(query)));
    }
    let warm = started.elapsed();
    println!(
        "verdicts, through the verdict cache ({} distinct flows cached): {:.0} /s on one core",
        cache.len(),
        queries.len() as f64 / warm.as_secs_f64()
    );

    if let Some(dir) = output_dir {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("output dir");
        std::fs::write(dir.join("cluster.json"), &text).expect("write cluster");
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(dir.join("flows.jsonl")).expect("flows file"),
        );
        let queries = check_flows(&cluster, &flows(2_000_000));
        for query in &queries {
            let protocol = serde_json::to_value(query.protocol).expect("protocol");
            writeln!(out, "{}", json!({"src": query.src.to_string(), "dst": query.dst.to_string(), "protocol": protocol, "dst_port": query.dst_port})).expect("write");
        }
        out.flush().expect("flush");
        println!(
            "wrote {} flows to {} ({} denied)",
            queries.len(),
            dir.join("flows.jsonl").display(),
            queries
                .iter()
                .filter(|q| evaluate(&cluster, q).verdict == netgov_agent::engine::Decision::Deny)
                .count()
        );
    }
}
