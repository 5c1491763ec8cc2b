//! Cluster-state benchmark (run by `cargo xtask bench cluster [--pods N]`).
//! The fake API server runs in a child process, so the figures are the
//! agent's own, and what the server sent is what one agent costs it:
//!
//! 1. Initial sync of 10,000 pods, 500 namespaces, 2,000 policies and
//!    3,000 services (with their EndpointSlices): time to ready, the memory
//!    the sync keeps (per 10k pods), the requests it made and the objects
//!    and bytes it received, the time to copy the state (what `agent
//!    --staged` pays per rebuild), and IP resolutions per second on one
//!    core. With `--pods N`: N pods in a cluster shaped as at Kubernetes'
//!    limits ([`Scale::at_the_limits`]), then a minute (`--churn-minutes
//!    M`: M, with figures each minute) of 100 pod changes a second
//!    (relabels, deletes, creates reusing a deleted pod's IP): the CPU the
//!    agent's side spends on them, the bytes it receives, its memory.
//! 2. The same shape (50,000 pods without `--pods`) from an API server
//!    that ignores `limit` (every list whole): time to ready and peak
//!    resident memory, against the DaemonSet's 512 MiB limit.
//! 3. With `--agent PATH` (root: it loads its eBPF programs): the `netgov
//!    agent` binary at PATH against the first shape, as a user runs it:
//!    time to ready (`/readyz`), and its resident memory once ready and
//!    after its periodic trim.

use std::hint::black_box;
use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use netgov_agent::engine::ClusterState;
use netgov_agent::engine::Resolved;
use netgov_agent::sources::ClusterHealth;
use netgov_agent::sources::kube_source;
use netgov_fakeapi::synthetic::{Scale, pod, pod_ip, populate};
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
    status_kib_of(std::process::id(), field)
}

/// Child mode (`serve PODS whole|paged classic|limits`): serve the
/// generated cluster, print the kubeconfig path, then answer each line of
/// standard input until it closes: an empty line with what was served so
/// far (`lists watches objects bytes` over every resource), `churn RATE
/// SECONDS` by making RATE pod changes a second for SECONDS, then `done`.
fn serve(scale: Scale, whole: bool) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let server = FakeApiServer::start().await;
        populate(&server, scale);
        server.set_ignore_limit(whole);
        let kubeconfig =
            std::env::temp_dir().join(format!("netgov-bench-kubeconfig-{}", std::process::id()));
        server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        println!("{}", kubeconfig.display());
        let server = Arc::new(server);
        let counter = Arc::clone(&server);
        tokio::task::spawn_blocking(move || {
            let mut churned = 0;
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                let mut words = line.split_whitespace();
                if words.next() == Some("churn") {
                    let mut figure = || words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                    let (rate, seconds) = (figure(), figure() as u64);
                    churned = make_pod_changes(&counter, scale, churned, rate, seconds);
                    println!("done");
                    continue;
                }
                let (lists, watches) = Resource::ALL
                    .iter()
                    .map(|r| counter.requests(*r))
                    .fold((0, 0), |(l, w), (dl, dw)| (l + dl, w + dw));
                let (objects, bytes) = counter.served();
                println!("{lists} {watches} {objects} {bytes}");
            }
        })
        .await
        .expect("stdin");
        drop(server);
    });
}

/// Makes `rate` pod changes a second for `seconds`, from the `done`-th on:
/// of every four, two relabel a pod, one deletes a pod and one creates a
/// pod of a new name with the deleted pod's IP. Returns changes made in
/// all.
fn make_pod_changes(
    server: &FakeApiServer,
    scale: Scale,
    done: usize,
    rate: usize,
    seconds: u64,
) -> usize {
    let started = Instant::now();
    let total = rate * seconds as usize;
    // The pod as `populate` made it, with its namespace and name.
    let pod_of = |i: usize| {
        let pod = pod(
            i,
            i % scale.namespaces.max(1),
            i % scale.replica_sets.max(1),
            i % scale.nodes.max(1),
        );
        let field = |name: &str| {
            pod["metadata"][name]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        let (namespace, name) = (field("namespace"), field("name"));
        (pod, namespace, name)
    };
    for n in 0..total {
        let due = started + Duration::from_secs_f64(n as f64 / rate.max(1) as f64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let change = done + n;
        // Each group of four changes works on its own pod, across the
        // cluster: a stride prime to the pod count visits every pod once
        // before any again (a minute at 100 a second takes 1,500).
        let pods = scale.pods.max(1);
        let stride = if pods.is_multiple_of(7919) {
            7907
        } else {
            7919
        };
        let i = (change / 4 * stride) % pods;
        let (mut pod, namespace, name) = pod_of(i);
        match change % 4 {
            0 | 1 => {
                pod["metadata"]["labels"]["version"] = serde_json::json!(format!("v{change}"));
                server.apply(Resource::Pods, pod);
            }
            2 => server.delete(Resource::Pods, &namespace, &name),
            _ => {
                pod["metadata"]["name"] = serde_json::json!(format!("{name}-r{change}"));
                server.apply(Resource::Pods, pod);
            }
        }
    }
    done + total
}

/// The fake API server in a child process.
struct Server {
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    kubeconfig: std::path::PathBuf,
}

/// What the server has served: requests, and what it sent.
#[derive(Clone, Copy, Debug)]
struct Served {
    lists: u64,
    watches: u64,
    objects: u64,
    bytes: u64,
}

impl Server {
    fn start(pods: usize, whole: bool, limits: bool) -> Self {
        let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
            .args([
                "serve",
                &pods.to_string(),
                if whole { "whole" } else { "paged" },
                if limits { "limits" } else { "classic" },
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

    fn ask(&mut self, line: &str) -> String {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("ask");
        self.lines.next().expect("answer").expect("read")
    }

    /// What was served so far.
    fn served(&mut self) -> Served {
        let line = self.ask("");
        let mut figures = line.split(' ').map(|f| f.parse().expect("figure"));
        let mut next = || figures.next().expect("figure");
        Served {
            lists: next(),
            watches: next(),
            objects: next(),
            bytes: next(),
        }
    }

    /// Makes `rate` pod changes a second for `seconds`.
    fn churn(&mut self, rate: usize, seconds: u64) {
        assert_eq!(self.ask(&format!("churn {rate} {seconds}")), "done");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The cluster served for `pods`: the classic shape of this benchmark, or
/// one at Kubernetes' limits.
fn scale(pods: usize, limits: bool) -> Scale {
    if limits {
        Scale::at_the_limits(pods)
    } else {
        Scale {
            namespaces: 500,
            pods,
            replica_sets: 20,
            nodes: 20,
            policies: 2_000,
            services: 3_000,
        }
    }
}

/// CPU seconds this process has spent, user and system.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Syncs from `server` until ready; returns the state and the time it
/// took (the source stops watching).
async fn sync(server: &Server) -> (Arc<RwLock<ClusterState>>, Duration) {
    let (state, ready, tasks) = sync_and_watch(server).await;
    for task in tasks {
        task.abort();
    }
    (state, ready)
}

/// Syncs from `server` until ready; returns the state, the time it took
/// and the source's tasks, which go on watching until aborted.
async fn sync_and_watch(
    server: &Server,
) -> (
    Arc<RwLock<ClusterState>>,
    Duration,
    Vec<tokio::task::JoinHandle<()>>,
) {
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
    (state, ready, tasks)
}

fn trim() {
    // SAFETY: malloc_trim only releases free memory.
    unsafe { libc::malloc_trim(0) };
}

async fn typical_cluster(pods: usize, limits: bool, churn_minutes: u64) {
    let mut server = Server::start(pods, false, limits);
    let shape = scale(pods, limits);
    trim();
    let before = status_kib("VmRSS");
    let live_before = live_mib();
    let cpu_before = cpu_seconds();
    let (state, ready, tasks) = sync_and_watch(&server).await;
    let sync_cpu = cpu_seconds() - cpu_before;
    // Ready once every list is read: the last watches open just after.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let synced = server.served();
    // Let the client's buffers go, and glibc return freed heap, first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    trim();
    let kept = live_mib() - live_before;
    println!(
        "initial sync of {pods} pods, {} namespaces, {} ReplicaSets, {} nodes, {} policies, {} services (+ endpoint slices):",
        shape.namespaces, shape.replica_sets, shape.nodes, shape.policies, shape.services
    );
    println!(
        "  time to ready: {:.2} s ({sync_cpu:.1} s of CPU)",
        ready.as_secs_f64()
    );
    println!(
        "  memory the sync keeps: {kept:.1} MiB live heap ({:.1} MiB per 10k pods at this shape, {:.0} B a pod); resident {:.1} MiB, grown by {:.1} MiB",
        kept * 10_000.0 / pods as f64,
        kept * 1024.0 * 1024.0 / pods as f64,
        status_kib("VmRSS") as f64 / 1024.0,
        status_kib("VmRSS").saturating_sub(before) as f64 / 1024.0
    );
    println!(
        "  API requests for the sync (one agent): {} lists (the first of each resource from the watch cache), {} watches; received {} objects, {:.1} MiB ({:.0} B an object)",
        synced.lists,
        synced.watches,
        synced.objects,
        synced.bytes as f64 / MIB,
        synced.bytes as f64 / synced.objects.max(1) as f64
    );
    if limits {
        churn(&mut server, &state, synced, churn_minutes).await;
    }
    for task in tasks {
        task.abort();
    }

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
        .map(|i| IpAddr::V4(pod_ip(i * 7919 % pods)))
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

async fn huge_unpaginated_cluster(pods: usize, limits: bool) {
    let server = Server::start(pods, true, limits);
    trim();
    // Peak resident memory from here on (writing 5 resets VmHWM).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_kib("VmRSS");
    let (state, ready) = sync(&server).await;
    let peak = status_kib("VmHWM");
    println!("initial sync of {pods} pods from an API server that ignores `limit`:");
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

/// Pod changes a second while churning.
const CHURN_RATE: usize = 100;

/// `minutes` of [`CHURN_RATE`] pod changes a second against the synced
/// state: the CPU this side spends applying them (the kube source and the
/// cluster state; the server is the child's), what it receives, and its
/// memory after each minute.
async fn churn(
    server: &mut Server,
    state: &Arc<RwLock<ClusterState>>,
    synced: Served,
    minutes: u64,
) {
    let pods_before = state.read().expect("lock").pod_count();
    let (cpu_before, started) = (cpu_seconds(), Instant::now());
    let mut minute_before = (cpu_before, started, synced);
    for minute in 1..=minutes {
        // The churn runs in the child, while this side's runtime keeps
        // applying events.
        tokio::task::block_in_place(|| server.churn(CHURN_RATE, 60));
        // The last events in flight.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (cpu, now, served) = (cpu_seconds(), Instant::now(), server.served());
        trim();
        if minutes > 1 {
            let (cpu_then, then, served_then) = minute_before;
            println!(
                "    minute {minute}: {:.1} % of a core; received {:.2} MiB; resident {:.1} MiB, heap {:.1} MiB",
                (cpu - cpu_then) / (now - then).as_secs_f64() * 100.0,
                (served.bytes - served_then.bytes) as f64 / MIB,
                status_kib("VmRSS") as f64 / 1024.0,
                live_mib()
            );
        }
        minute_before = (cpu, now, served);
    }
    let (cpu, now, after) = minute_before;
    println!(
        "  {CHURN_RATE} pod changes a second for {minutes} min: {:.1} % of a core; received {:.2} MiB a minute ({} events); {} pods in the state (from {pods_before}); resident {:.1} MiB, heap {:.1} MiB",
        (cpu - cpu_before) / (now - started).as_secs_f64() * 100.0,
        (after.bytes - synced.bytes) as f64 / MIB / minutes as f64,
        after.objects - synced.objects,
        state.read().expect("lock").pod_count(),
        status_kib("VmRSS") as f64 / 1024.0,
        live_mib()
    );
}

const MIB: f64 = 1024.0 * 1024.0;

/// The metrics port of the agent binary under test.
const AGENT_PORT: u16 = 19_471;

/// The agent on [`AGENT_PORT`]'s answer to `GET path`, when 200.
fn agent_get(path: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", AGENT_PORT)).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).ok()?;
    answer.starts_with("HTTP/1.1 200").then_some(answer)
}

/// The agent's heap in use as it last exported it, in MiB.
fn agent_heap_mib() -> f64 {
    agent_get("/metrics")
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("netgov_heap_in_use_bytes ")?.parse().ok())
        })
        .map_or(f64::NAN, |bytes: f64| bytes / MIB)
}

/// The agent binary `netgov` against a fresh server of `pods` at the
/// limits' shape: time to ready, resident memory when ready and after
/// the agent's trim (every 10 s), and its peak.
fn agent_binary(netgov: &str, pods: usize) {
    let server = Server::start(pods, false, true);
    let started = Instant::now();
    let mut agent = std::process::Command::new(netgov)
        .arg("agent")
        .arg("--kubeconfig")
        .arg(&server.kubeconfig)
        // No interface of a node has this name: the agent loads its
        // programs and captures nothing.
        .args(["--iface", "netgov-bench-none*", "--cgroup-root", "none"])
        .args(["--node-name", "node-0"])
        .args(["--metrics-addr", &format!("127.0.0.1:{AGENT_PORT}")])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the agent");
    let deadline = started + Duration::from_secs(180);
    while agent_get("/readyz").is_none() {
        if Instant::now() > deadline || agent.try_wait().is_ok_and(|s| s.is_some()) {
            let _ = agent.kill();
            panic!("the agent was not ready within 180 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let ready = started.elapsed();
    let resident = || status_kib_of(agent.id(), "VmRSS") as f64 / 1024.0;
    let at_ready = resident();
    std::thread::sleep(Duration::from_secs(25));
    println!("the netgov agent binary against {pods} pods (same shape, paginated):");
    println!(
        "  ready (/readyz) after {:.2} s; resident {at_ready:.1} MiB when ready, {:.1} MiB 25 s later (after its trim; heap in use {:.1} MiB), peak {:.1} MiB",
        ready.as_secs_f64(),
        resident(),
        agent_heap_mib(),
        status_kib_of(agent.id(), "VmHWM") as f64 / 1024.0
    );
    let kib = |field| status_kib_of(agent.id(), field) as f64 / 1024.0;
    println!(
        "  of which anonymous {:.1} MiB, file and shared mappings {:.1} MiB (its binary's pages, and its BPF ring buffers, whose pages the kernel maps twice)",
        kib("RssAnon"),
        kib("RssFile") + kib("RssShmem")
    );
    // SAFETY: signals the child this function started.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let _ = agent.wait();
}

/// A `/proc/PID/status` figure in KiB.
fn status_kib_of(pid: u32, field: &str) -> u64 {
    netgov_testbed::process::status(pid, field)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        let pods = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(10_000);
        let limits = args.get(4).map(String::as_str) == Some("limits");
        return serve(
            scale(pods, limits),
            args.get(3).map(String::as_str) == Some("whole"),
        );
    }
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let pods = value("--pods").and_then(|p| p.parse().ok());
    let agent = value("--agent");
    let churn_minutes = value("--churn-minutes")
        .and_then(|m| m.parse().ok())
        .unwrap_or(1);
    // Only the agent binary's run (with `--agent`).
    let agent_only = args.iter().any(|a| a == "--agent-only");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        if agent_only {
            return;
        }
        match pods {
            None => {
                typical_cluster(10_000, false, 0).await;
                huge_unpaginated_cluster(50_000, false).await;
            }
            Some(pods) => {
                typical_cluster(pods, true, churn_minutes).await;
                huge_unpaginated_cluster(pods, true).await;
            }
        }
    });
    if let Some(netgov) = agent {
        agent_binary(netgov, pods.unwrap_or(10_000));
    }
}
