//! `cargo xtask bench agent`: `netgov agent` on a simulated node of 20
//! pods, judging a burst of new flows (UDP datagrams to distinct ports: each
//! is a flow), then holding 10,000 active flows. Prints judged flows per
//! second, what was lost, and the agent's CPU and resident memory.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use netgov_testbed::Testbed;

use crate::{XtaskError, build_netgov, require_root, spawn};

const PODS: usize = 20;
const AGENT_PORT: u16 = 9464;

fn scrape(testbed: &Testbed) -> Result<String, XtaskError> {
    testbed
        .node()
        .run_in(|| -> std::io::Result<String> {
            let mut stream = TcpStream::connect(("127.0.0.1", AGENT_PORT))?;
            write!(
                stream,
                "GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n"
            )?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        })?
        .map_err(|source| XtaskError::Io {
            what: "scraping the agent".into(),
            source,
        })
}

/// Sum of a metric's samples whose line contains every `filter`.
fn sum(text: &str, name: &str, filters: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn judged(text: &str) -> f64 {
    sum(text, "netgov_flows_total", &["protocol=\"UDP\""])
}

fn lost(text: &str) -> f64 {
    sum(text, "netgov_events_lost_total", &[]) + sum(text, "netgov_flow_table_evictions_total", &[])
}

fn process_figures(child: &Child) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (ticks(11) + ticks(12)) / hz;
    let rss_kib = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, rss_kib / 1024.0)
}

/// Sends `flows` datagrams, each to a new destination port (a new flow),
/// from `senders` pods in parallel; returns how long sending took.
fn burst(testbed: &Testbed, flows: usize, first_port: u16) -> Result<Duration, XtaskError> {
    let target = testbed.pods()[PODS - 1].ipv4;
    let senders = &testbed.pods()[..PODS - 1];
    let per_sender = flows.div_ceil(senders.len());
    let started = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = senders
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                scope.spawn(move || {
                    pod.netns.run_in(move || -> std::io::Result<()> {
                        let socket = UdpSocket::bind("0.0.0.0:0")?;
                        for n in 0..per_sender {
                            // Distinct (source, destination port) per flow.
                            let port = first_port
                                .wrapping_add(((i * per_sender + n) % 60_000) as u16)
                                .max(1);
                            socket.send_to(b"x", SocketAddr::new(target.into(), port))?;
                        }
                        Ok(())
                    })
                })
            })
            .collect();
        for handle in handles {
            let _ = handle.join();
        }
    });
    Ok(started.elapsed())
}

/// Waits until the judged count stops growing; returns it and when it
/// last grew.
fn settle(testbed: &Testbed, start: Instant) -> Result<(f64, Duration, String), XtaskError> {
    let mut last = -1.0;
    let mut last_change = start.elapsed();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let text = scrape(testbed)?;
        let now = judged(&text);
        if now > last {
            last = now;
            last_change = start.elapsed();
        } else if start.elapsed() - last_change > Duration::from_secs(3) {
            return Ok((now, last_change, text));
        }
    }
}

/// Runs the benchmark.
///
/// # Errors
/// Without root, or when the node or the agent cannot be set up.
pub fn bench(args: &[String]) -> Result<(), XtaskError> {
    let flows: usize = args
        .iter()
        .position(|a| a == "--flows")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    require_root(
        "bench",
        "it creates network namespaces and loads eBPF programs",
    )?;
    let netgov = build_netgov(true)?;
    let mut testbed = Testbed::new(&Testbed::unique_prefix("bagent"))?;
    for i in 0..PODS {
        testbed.add_pod(&format!("pod{i}"))?;
    }
    // The receiver drops UDP silently (no ICMP port-unreachable flows).
    let receiver = &testbed.pods()[PODS - 1];
    let rules = std::env::temp_dir().join(format!("{}.nft", receiver.netns.name()));
    std::fs::write(&rules, "table inet bench {\n chain input { type filter hook input priority 0; meta l4proto udp drop; }\n}\n")
        .map_err(|source| XtaskError::Io {
            what: "writing the receiver's firewall".into(),
            source,
        })?;
    receiver
        .netns
        .exec("nft", &["-f", rules.to_str().unwrap_or_default()])?;

    let mut cluster = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: bench}\n");
    for pod in testbed.pods() {
        cluster += &format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: bench, labels: {{app: {}}}}}\n\
             spec: {{nodeName: bench-node, containers: [{{name: c, image: i}}]}}\nstatus: {{podIP: {}}}\n",
            pod.name, pod.name, pod.ipv4
        );
    }
    cluster += "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: bench}\nspec: {podSelector: {}, ingress: [{ports: [{port: 53, protocol: UDP}]}]}\n";
    let cluster_state =
        std::env::temp_dir().join(format!("{}-cluster.yaml", receiver.netns.name()));
    std::fs::write(&cluster_state, cluster).map_err(|source| XtaskError::Io {
        what: "writing the cluster state".into(),
        source,
    })?;

    let mut agent = spawn(
        testbed
            .node()
            .command(netgov.to_str().unwrap_or("netgov"))
            .args(["agent", "--iface", "vethp*", "--node-name", "bench-node"])
            .arg("--cluster-state")
            .arg(&cluster_state)
            .args(["--metrics-addr", &format!("127.0.0.1:{AGENT_PORT}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while scrape(&testbed).is_err() {
        if Instant::now() > deadline {
            return Err(XtaskError::Output {
                tool: "netgov agent",
                detail: "not listening after 20 s".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));

    println!(
        "agent benchmark: {PODS} pods on one node, {flows} new UDP flows sent as fast as {} pods can",
        PODS - 1
    );
    let before = scrape(&testbed)?;
    let (cpu_before, _) = process_figures(&agent);
    let start = Instant::now();
    let sent_in = burst(&testbed, flows, 1)?;
    let (judged_now, judged_by, after) = settle(&testbed, start)?;
    let (cpu_after, rss) = process_figures(&agent);
    let judged_flows = judged_now - judged(&before);
    let lost_events = lost(&after) - lost(&before);
    println!(
        "  sent {flows} flows in {:.2} s ({:.0} flows/s offered)",
        sent_in.as_secs_f64(),
        flows as f64 / sent_in.as_secs_f64()
    );
    println!(
        "  judged {judged_flows:.0} flows in {:.2} s: {:.0} judged flows/s; events lost: {lost_events:.0}",
        judged_by.as_secs_f64(),
        judged_flows / judged_by.as_secs_f64()
    );
    println!(
        "  agent CPU {:.2} s for the burst; resident memory {rss:.1} MiB",
        cpu_after - cpu_before
    );

    // 10,000 flows kept active: a datagram on each every second.
    let steady_start = Instant::now();
    let (cpu_before, _) = process_figures(&agent);
    while steady_start.elapsed() < Duration::from_secs(5) {
        burst(&testbed, 10_000, 30_000)?;
        std::thread::sleep(Duration::from_millis(900));
    }
    let (cpu_after, rss) = process_figures(&agent);
    let text = scrape(&testbed)?;
    println!(
        "  with 10,000 active flows: agent CPU {:.1}% of a core, resident memory {rss:.1} MiB (flow table: {} flows)",
        100.0 * (cpu_after - cpu_before) / steady_start.elapsed().as_secs_f64(),
        sum(&text, "netgov_flow_table_entries", &[])
    );
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(agent.id() as libc::pid_t, libc::SIGTERM) };
    let _ = agent.wait();
    Ok(())
}
