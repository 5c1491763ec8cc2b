//! Cluster-state benchmark (run by `cargo xtask bench cluster`). The fake
//! API server runs in a child process, so the figures are the agent's own:
//!
//! 1. Initial sync of 10,000 pods, 500 namespaces, 2,000 policies and
//!    3,000 services (with their EndpointSlices): time to ready, the memory
//!    the sync keeps (per 10k pods), the requests it made, the time to copy
//!    the state (what `agent --staged` pays per rebuild), and IP
//!    resolutions per second on one core.
//! 2. The same shape with 50,000 pods from an API server that ignores
//!    `limit` (every list whole): time to ready and peak resident memory,
//!    against the DaemonSet's 512 MiB limit.

use std::hint::black_box;
use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use netgov_agent::engine::ClusterState;
use netgov_agent::engine::Resolved;
use netgov_agent::sources::ClusterHealth;
use netgov_agent::sources::kube_source;
use netgov_fakeapi::synthetic::{Scale, pod_ip, populate};
use netgov_fakeapi::{FakeApiServer, Resource};

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

/// A `/proc/self/status` figure in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    netgov_testbed::process::status(std::process::id(), field)
}

/// Child mode (`serve PODS whole|paged`): serve the generated cluster,
/// print the kubeconfig path, then on each line of standard input print the
/// requests served so far (`lists watches` over every resource), until
/// standard input closes.
fn serve(pods: usize, whole: bool) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let server = FakeApiServer::start().await;
        populate(
            &server,
            Scale {
                namespaces: 500,
                pods,
                policies: 2_000,
                services: 3_000,
            },
        );
        server.set_ignore_limit(whole);
        let kubeconfig =
            std::env::temp_dir().join(format!("netgov-bench-kubeconfig-{}", std::process::id()));
        server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        println!("{}", kubeconfig.display());
        let server = Arc::new(server);
        let counter = Arc::clone(&server);
        tokio::task::spawn_blocking(move || {
            for _ in std::io::stdin().lock().lines().map_while(Result::ok) {
                let (lists, watches) = Resource::ALL
                    .iter()
                    .map(|r| counter.requests(*r))
                    .fold((0, 0), |(l, w), (dl, dw)| (l + dl, w + dw));
                println!("{lists} {watches}");
            }
        })
        .await
        .expect("stdin");
        drop(server);
    });
}

/// The fake API server in a child process.
struct Server {
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    kubeconfig: std::path::PathBuf,
}

impl Server {
    fn start(pods: usize, whole: bool) -> Self {
        let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
            .args([
                "serve",
                &pods.to_string(),
                if whole { "whole" } else { "paged" },
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the fake API server");
        let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let kubeconfig = lines.next().expect("kubeconfig line").expect("read");
        Self {
            child,
            lines,
            kubeconfig: kubeconfig.trim().into(),
        }
    }

    /// `(lists, watches)` served so far.
    fn requests(&mut self) -> (u64, u64) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin).expect("ask");
        let line = self.lines.next().expect("answer").expect("read");
        let mut figures = line.split(' ').map(|f| f.parse().expect("figure"));
        (
            figures.next().expect("lists"),
            figures.next().expect("watches"),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Syncs from `server` until ready; returns the state and the time it took.
async fn sync(server: &Server) -> (Arc<RwLock<ClusterState>>, Duration) {
    let client = kube_source::client(Some(&server.kubeconfig))
        .await
        .expect("client");
    let state = Arc::new(RwLock::new(ClusterState::new()));
    let health = Arc::new(RwLock::new(ClusterHealth::default()));
    let started = Instant::now();
    let tasks = kube_source::start(client, Arc::clone(&state), Arc::clone(&health));
    while !health.read().expect("lock").ready() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ready = started.elapsed();
    for task in tasks {
        task.abort();
    }
    (state, ready)
}

fn trim() {
    // SAFETY: malloc_trim only releases free memory.
    unsafe { libc::malloc_trim(0) };
}

async fn typical_cluster() {
    const PODS: usize = 10_000;
    let mut server = Server::start(PODS, false);
    trim();
    let before = status_kib("VmRSS");
    let live_before = live_mib();
    let (state, ready) = sync(&server).await;
    let (lists, watches) = server.requests();
    // Let the client's buffers go, and glibc return freed heap, first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    trim();
    let kept = live_mib() - live_before;
    println!(
        "initial sync of {PODS} pods, 500 namespaces, 2000 policies, 3000 services (+ endpoint slices):"
    );
    println!("  time to ready: {:.2} s", ready.as_secs_f64());
    println!(
        "  memory the sync keeps: {kept:.1} MiB live heap ({:.1} MiB per 10k pods at this shape); resident memory grew by {:.1} MiB",
        kept * 10_000.0 / PODS as f64,
        status_kib("VmRSS").saturating_sub(before) as f64 / 1024.0
    );
    println!(
        "  API requests for the sync (one agent): {lists} lists (the first of each resource from the watch cache), {watches} watches"
    );

    let state = state.read().expect("lock");
    // What `agent --staged` pays per rebuild of its copy.
    let started = Instant::now();
    let copy = black_box(state.clone());
    println!(
        "  copying the state (the staged policies' copy): {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    drop(copy);
    let mut lookups: Vec<IpAddr> = (0..1_000_000)
        .map(|i| IpAddr::V4(pod_ip(i * 7919 % PODS)))
        .collect();
    lookups.extend(
        (0..100_000)
            .map(|i| IpAddr::V4(Ipv4Addr::new(10, 96, (i / 256 % 12) as u8, (i % 256) as u8))),
    );
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
}

async fn huge_unpaginated_cluster() {
    const PODS: usize = 50_000;
    let server = Server::start(PODS, true);
    trim();
    // Peak resident memory from here on (writing 5 resets VmHWM).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_kib("VmRSS");
    let (state, ready) = sync(&server).await;
    let peak = status_kib("VmHWM");
    println!("initial sync of {PODS} pods from an API server that ignores `limit`:");
    println!(
        "  time to ready: {:.2} s ({} pods in the state)",
        ready.as_secs_f64(),
        state.read().expect("lock").pod_count()
    );
    println!(
        "  peak resident memory: {:.1} MiB (before the sync: {:.1} MiB; DaemonSet limit 512 MiB)",
        peak as f64 / 1024.0,
        before as f64 / 1024.0
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        let pods = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(10_000);
        return serve(pods, args.get(3).map(String::as_str) == Some("whole"));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        typical_cluster().await;
        huge_unpaginated_cluster().await;
    });
}
