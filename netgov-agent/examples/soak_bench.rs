//! Churn soak (run by `cargo xtask bench soak [--minutes N]`, as root): a
//! live `netgov agent` on a simulated node, its cluster state served by the
//! fake API server inside the node's network namespace, for N minutes of:
//!
//! - steady new flows (about 1,000 a second: UDP datagrams to distinct
//!   ports from every pod to one);
//! - a pod identity churned every 4 s with IP reuse (the pod object of one
//!   address deleted and a new one, with other labels, created on the same
//!   address);
//! - a NetworkPolicy and a namespace's labels changed every 10 s.
//!
//! Every minute it prints the agent's resident memory, its peak, the flow
//! table, the exported series, open descriptors and threads, and the
//! flows judged and lost — what must stay flat after warm-up.
//!
//! Usage: `soak_bench NETGOV_BINARY MINUTES`.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use netgov_fakeapi::{FakeApiServer, Resource};
use netgov_testbed::Testbed;
use netgov_testbed::metrics_text::sum_samples as sum;
use serde_json::{Value, json};

const PODS: usize = 12;
const AGENT_PORT: u16 = 9464;
const NAMESPACE: &str = "soak";
/// New flows a second, over all senders.
const FLOW_RATE: f64 = 1_000.0;

fn pod_object(slot: usize, generation: u64, ip: &str) -> Value {
    json!({
        "metadata": {"name": format!("pod{slot}-g{generation}"), "namespace": NAMESPACE,
                     "labels": {"app": format!("app{}", slot % 4), "generation": format!("g{}", generation % 3)}},
        "spec": {"nodeName": "soak-node",
                 "containers": [{"name": "main", "ports": [{"name": "data", "containerPort": 7000}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
    })
}

fn policy(turn: u64) -> Value {
    // Alternately admits one app or two: verdicts of live flows change.
    let apps: Vec<String> = (0..1 + turn % 2).map(|i| format!("app{i}")).collect();
    json!({
        "metadata": {"name": "receiver-ingress", "namespace": NAMESPACE},
        "spec": {"podSelector": {"matchLabels": {"app": format!("app{}", (PODS - 1) % 4)}},
                 "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": apps}]}}]}]}
    })
}

fn namespace(turn: u64) -> Value {
    json!({"metadata": {"name": NAMESPACE, "labels": {"team": format!("t{}", turn % 2), "kubernetes.io/metadata.name": NAMESPACE}}})
}

fn scrape(testbed: &Testbed) -> String {
    testbed
        .node()
        .http_get(AGENT_PORT, "/metrics")
        .unwrap_or_default()
}

/// A `/proc/PID/status` figure of the agent.
fn status(child: &Child, field: &str) -> u64 {
    netgov_testbed::process::status(child.id(), field)
}

/// Sends about [`FLOW_RATE`] new flows a second from every pod but the
/// last to the last, until `stop`; counts what it sent.
fn send_steadily(testbed: &Testbed, stop: &AtomicBool, sent: &AtomicU64) {
    let target = testbed.pods()[PODS - 1].ipv4;
    let senders = &testbed.pods()[..PODS - 1];
    for pod in senders {
        let _ = pod
            .netns
            .exec("ping", &["-c", "1", "-W", "1", &target.to_string()]);
    }
    let per_sender = FLOW_RATE / senders.len() as f64;
    std::thread::scope(|scope| {
        for (i, pod) in senders.iter().enumerate() {
            scope.spawn(move || {
                let _ = pod.netns.run_in(move || -> std::io::Result<()> {
                    let socket = UdpSocket::bind(("0.0.0.0", 20_000 + i as u16))?;
                    let begin = Instant::now();
                    let mut n: u64 = 0;
                    while !stop.load(Ordering::Relaxed) {
                        // A new destination port each time: a new flow,
                        // coming round again after an hour at this rate.
                        let port = 1 + (n % 60_000) as u16;
                        socket.send_to(b"x", SocketAddr::new(target.into(), port))?;
                        sent.fetch_add(1, Ordering::Relaxed);
                        n += 1;
                        if n.is_multiple_of(16) {
                            let due = Duration::from_secs_f64(n as f64 / per_sender);
                            if let Some(wait) = due.checked_sub(begin.elapsed()) {
                                std::thread::sleep(wait);
                            }
                        }
                    }
                    Ok(())
                });
            });
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let netgov = args
        .get(1)
        .expect("usage: soak_bench NETGOV MINUTES")
        .clone();
    let minutes: u64 = args.get(2).and_then(|m| m.parse().ok()).unwrap_or(30);

    let mut testbed = Testbed::new(&Testbed::unique_prefix("soak")).expect("test bed");
    for i in 0..PODS {
        testbed.add_pod(&format!("pod{i}")).expect("pod");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = testbed
        .node()
        .run_in(|| std::net::TcpListener::bind("127.0.0.1:0"))
        .expect("enter the node")
        .expect("bind in the node");
    let api = {
        let _guard = runtime.enter();
        FakeApiServer::start_on(listener)
    };
    let ips: Vec<String> = testbed.pods().iter().map(|p| p.ipv4.to_string()).collect();
    api.apply(Resource::Namespaces, namespace(0));
    api.apply(
        Resource::Nodes,
        json!({"metadata": {"name": "soak-node"}, "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.1"}]}}),
    );
    for (slot, ip) in ips.iter().enumerate() {
        api.apply(Resource::Pods, pod_object(slot, 0, ip));
    }
    api.apply(Resource::NetworkPolicies, policy(0));
    let dir = std::env::temp_dir().join(format!("netgov-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let kubeconfig = dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).expect("kubeconfig");

    let mut agent = testbed
        .node()
        .command(&netgov)
        .args(["agent", "--iface", "vethp*", "--node-name", "soak-node"])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--metrics-addr", &format!("127.0.0.1:{AGENT_PORT}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the agent");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !scrape(&testbed).lines().any(|l| l == "netgov_ready 1") {
        assert!(Instant::now() < deadline, "agent not ready in 30 s");
        std::thread::sleep(Duration::from_millis(200));
    }

    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let api = Arc::new(api);
    println!(
        "soak: {minutes} min; ~{FLOW_RATE:.0} new flows/s, a pod identity churned every 4 s (IP reused), a policy and namespace labels changed every 10 s"
    );
    println!(
        "{:>4} {:>9} {:>9} {:>9} {:>10} {:>7} {:>4} {:>7} {:>10} {:>10} {:>6}",
        "min",
        "rss MiB",
        "peak MiB",
        "heap MiB",
        "flow tbl",
        "series",
        "fds",
        "threads",
        "sent",
        "judged",
        "lost"
    );
    std::thread::scope(|scope| {
        scope.spawn(|| send_steadily(&testbed, &stop, &sent));
        let started = Instant::now();
        let mut generations = [0u64; PODS];
        let mut tick: u64 = 0;
        let mut minute = 0;
        while minute < minutes {
            std::thread::sleep(Duration::from_secs(1));
            tick += 1;
            if tick.is_multiple_of(4) {
                // The receiver keeps its identity; the senders churn.
                let slot = (tick / 4) as usize % (PODS - 1);
                api.delete(
                    Resource::Pods,
                    NAMESPACE,
                    &format!("pod{slot}-g{}", generations[slot]),
                );
                generations[slot] += 1;
                api.apply(
                    Resource::Pods,
                    pod_object(slot, generations[slot], &ips[slot]),
                );
            }
            if tick.is_multiple_of(10) {
                api.apply(Resource::NetworkPolicies, policy(tick / 10));
                api.apply(Resource::Namespaces, namespace(tick / 10));
            }
            if started.elapsed() >= Duration::from_secs(60 * (minute + 1)) {
                minute += 1;
                let text = scrape(&testbed);
                let series = text.lines().filter(|l| l.starts_with("netgov_")).count();
                let fds = std::fs::read_dir(format!("/proc/{}/fd", agent.id()))
                    .map(|d| d.count())
                    .unwrap_or(0);
                println!(
                    "{minute:>4} {:>9.1} {:>9.1} {:>9.1} {:>10} {series:>7} {fds:>4} {:>7} {:>10} {:>10} {:>6}",
                    status(&agent, "VmRSS") as f64 / 1024.0,
                    status(&agent, "VmHWM") as f64 / 1024.0,
                    sum(&text, "netgov_heap_in_use_bytes", &[]) / (1024.0 * 1024.0),
                    sum(&text, "netgov_flow_table_entries", &[]),
                    status(&agent, "Threads"),
                    sent.load(Ordering::Relaxed),
                    sum(&text, "netgov_flows_total", &[]),
                    sum(&text, "netgov_events_lost_total", &[])
                        + sum(&text, "netgov_flow_table_evictions_total", &[]),
                );
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let _ = Command::new("kill").arg(agent.id().to_string()).status();
    let _ = agent.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
