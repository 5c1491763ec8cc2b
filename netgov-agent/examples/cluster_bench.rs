//! Cluster-state benchmark (run by `cargo xtask bench cluster`): initial
//! sync of 10,000 pods, 500 namespaces, 2,000 policies and 3,000 services
//! (with their EndpointSlices) from the in-process fake API server through
//! kube-rs; prints time to ready, the resident memory the sync added, and
//! IP resolutions per second on one core.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use netgov_agent::cluster::ClusterHealth;
use netgov_agent::cluster::kube_source;
use netgov_agent::state::ClusterState;
use netgov_agent::state::Resolved;
use netgov_fakeapi::{FakeApiServer, Resource};
use serde_json::json;

const NAMESPACES: usize = 500;
const PODS: usize = 10_000;
const POLICIES: usize = 2_000;
const SERVICES: usize = 3_000;

fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        10,
        100 + (i / 65536) as u8,
        (i / 256 % 256) as u8,
        (i % 256) as u8,
    )
}

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn populate(server: &FakeApiServer) {
    for ns in 0..NAMESPACES {
        server.apply(Resource::Namespaces, json!({"metadata": {"name": format!("ns-{ns}"), "labels": {"team": format!("t{}", ns % 50)}}}));
    }
    for i in 0..PODS {
        let ns = i % NAMESPACES;
        server.apply(Resource::Pods, json!({
            "metadata": {"name": format!("app-{i}"), "namespace": format!("ns-{ns}"),
                "labels": {"app": format!("app-{}", i % 20), "pod-template-hash": "abc12"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("app-{}-abc12", i % 20), "uid": "u", "controller": true}],
                "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                                   "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {}}, "f:spec": {"f:containers": {}}}}]},
            "spec": {"nodeName": format!("node-{}", i % 20),
                     "containers": [{"name": "main", "image": "registry.example/app:1.2.3", "ports": [{"name": "http", "containerPort": 8080}],
                                     "env": [{"name": "A", "value": "b"}], "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]},
            "status": {"phase": "Running", "podIP": pod_ip(i).to_string(), "podIPs": [{"ip": pod_ip(i).to_string()}],
                       "conditions": [{"type": "Ready", "status": "True"}]}}));
    }
    for i in 0..POLICIES {
        server.apply(Resource::NetworkPolicies, json!({
            "metadata": {"name": format!("policy-{i}"), "namespace": format!("ns-{}", i % NAMESPACES)},
            "spec": {"podSelector": {"matchLabels": {"app": format!("app-{}", i % 20)}},
                     "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": format!("t{}", i % 50)}}}], "ports": [{"port": "http"}]}]}}));
    }
    for i in 0..SERVICES {
        let ns = format!("ns-{}", i % NAMESPACES);
        server.apply(Resource::Services, json!({"metadata": {"name": format!("svc-{i}"), "namespace": ns},
            "spec": {"clusterIP": Ipv4Addr::new(10, 96, (i / 256) as u8, (i % 256) as u8).to_string(), "ports": [{"port": 80, "targetPort": "http"}]}}));
        server.apply(Resource::EndpointSlices, json!({"metadata": {"name": format!("svc-{i}-1"), "namespace": ns,
                "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
            "addressType": "IPv4", "ports": [{"port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [pod_ip(i % PODS).to_string()]}, {"addresses": [pod_ip((i + 1) % PODS).to_string()]}]}));
    }
    for i in 0..20 {
        server.apply(Resource::Nodes, json!({"metadata": {"name": format!("node-{i}")},
            "status": {"addresses": [{"type": "InternalIP", "address": format!("192.168.0.{}", i + 1)}]}}));
    }
}

/// Counts live heap bytes, to report what the sync keeps.
struct CountingAllocator;

static LIVE_BYTES: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn live_mib() -> f64 {
    LIVE_BYTES.load(std::sync::atomic::Ordering::Relaxed) as f64 / (1024.0 * 1024.0)
}

/// Child mode: serve the generated cluster until standard input closes.
fn serve() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let server = FakeApiServer::start().await;
        populate(&server);
        let kubeconfig =
            std::env::temp_dir().join(format!("netgov-bench-kubeconfig-{}", std::process::id()));
        server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        println!("{}", kubeconfig.display());
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut sink);
        })
        .await
        .expect("stdin");
    });
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("serve") {
        return serve();
    }
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .arg("serve")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the fake API server");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("kubeconfig path");
    let kubeconfig = std::path::PathBuf::from(line.trim());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = kube_source::client(Some(&kubeconfig)).await.expect("client");
        // SAFETY: malloc_trim only releases free memory.
        unsafe { libc::malloc_trim(0) };
        let before = resident_kib();
        let live_before = live_mib();

        let state = Arc::new(RwLock::new(ClusterState::new()));
        let health = Arc::new(RwLock::new(ClusterHealth::default()));
        let started = Instant::now();
        let tasks = kube_source::start(client, Arc::clone(&state), Arc::clone(&health));
        while !health.read().expect("lock").ready() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ready = started.elapsed();
        // Let the kube client's buffers be dropped, and glibc return freed
        // heap to the system, before measuring.
        tokio::time::sleep(Duration::from_millis(300)).await;
        // SAFETY: malloc_trim only releases free memory.
        unsafe { libc::malloc_trim(0) };
        let after = resident_kib();
        println!(
            "initial sync of {PODS} pods, {NAMESPACES} namespaces, {POLICIES} policies, {SERVICES} services (+ endpoint slices) from the fake API server:"
        );
        println!("  time to ready: {:.2} s", ready.as_secs_f64());
        println!(
            "  memory the sync keeps: {:.1} MiB live heap; resident memory grew by {:.1} MiB",
            live_mib() - live_before,
            after.saturating_sub(before) as f64 / 1024.0
        );
        for task in tasks {
            task.abort();
        }

        let state = state.read().expect("lock");
        let mut lookups: Vec<IpAddr> = (0..1_000_000).map(|i| IpAddr::V4(pod_ip(i * 7919 % PODS))).collect();
        lookups.extend((0..100_000).map(|i| IpAddr::V4(Ipv4Addr::new(10, 96, (i / 256 % 12) as u8, (i % 256) as u8))));
        lookups.extend((0..100_000).map(|i| IpAddr::V4(Ipv4Addr::new(203, 0, 113, (i % 256) as u8))));
        let started = Instant::now();
        let mut pods = 0usize;
        for ip in &lookups {
            if let Resolved::Pod(pod) = state.resolve(black_box(*ip)) {
                pods += black_box(pod.workload.name.len()).min(1);
            }
        }
        let elapsed = started.elapsed();
        println!(
            "  IP resolutions (to pod, workload, service or outside): {:.0} /s on one core ({pods} pods among {} lookups)",
            lookups.len() as f64 / elapsed.as_secs_f64(),
            lookups.len()
        );
    });
    drop(child.stdin.take());
    let _ = child.wait();
}
