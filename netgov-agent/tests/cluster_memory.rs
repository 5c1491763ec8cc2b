//! Memory bound with any API server: 50,000 pods listed by a server that
//! ignores `limit` (every list whole) are synced while the agent's heap
//! stays far under the DaemonSet's 512 MiB limit. Before lists were read as
//! they arrive, this took 2.1–2.3 GB. (`cargo xtask bench cluster` prints
//! the peak resident memory; this test bounds the heap the sync adds.)

use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use netgov_agent::engine::ClusterState;
use netgov_agent::sources::{ClusterHealth, kube_source};
use netgov_fakeapi::FakeApiServer;
use netgov_fakeapi::synthetic::{Scale, populate};

/// Counts live heap bytes and their peak.
struct PeakAllocator;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl std::alloc::GlobalAlloc for PeakAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let live =
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed) + layout.size() as isize;
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: PeakAllocator = PeakAllocator;

const MIB: isize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaginated_list_of_50k_pods_stays_bounded() {
    const PODS: usize = 50_000;
    let server = FakeApiServer::start().await;
    populate(
        &server,
        Scale {
            namespaces: 500,
            pods: PODS,
            replica_sets: 20,
            nodes: 20,
            policies: 500,
            services: 500,
        },
    );
    server.set_ignore_limit(true);
    let dir = std::env::temp_dir().join(format!("netgov-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let client = kube_source::client(Some(&kubeconfig))
        .await
        .expect("client");

    // The server's objects are already allocated; what grows from here is
    // the sync (the server streams each list an item at a time).
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let state = Arc::new(RwLock::new(ClusterState::new()));
    let health = Arc::new(RwLock::new(ClusterHealth::default()));
    let tasks = kube_source::start(client, Arc::clone(&state), Arc::clone(&health));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    while !health.read().expect("lock").ready() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not synced in 240 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let kept = LIVE.load(Ordering::Relaxed) - before;
    for task in tasks {
        task.abort();
    }
    assert_eq!(state.read().expect("lock").pod_count(), PODS);
    eprintln!(
        "sync of {PODS} pods, unpaginated: heap peak +{} MiB, kept +{} MiB",
        peak / MIB,
        kept / MIB
    );
    // The state itself is about 22 MiB per 10k pods (see the bench); the
    // list in flight must add little to it.
    assert!(
        peak < 256 * MIB,
        "the sync's heap peaked at {} MiB over its start",
        peak / MIB
    );
    let _ = std::fs::remove_dir_all(&dir);
}
