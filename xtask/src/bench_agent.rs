//! `cargo xtask bench agent`: `netgov agent` on a simulated node of 20
//! pods. A fixed number of new flows (UDP datagrams to distinct ports:
//! each is a flow) is sent at a steady rate, stepping the rate up on a
//! fresh agent each time until a step is not judged completely with zero
//! loss; the figure is the highest rate judged completely. The number of
//! flows per step (100,000 by default) stays within the kernel flow map:
//! a same-node flow takes two of its 262,144 entries (one per interface),
//! and more live flows than that are evictions, whatever the rate. Then, on a fresh
//! agent, 10,000 flows are kept active and the agent's CPU and resident
//! memory are measured; last, resident memory per live flow: a fresh
//! agent idle against the same holding 60,000 live flows
//! (`--live-flows N`; `--baseline-flows N`: against the same agent
//! holding N live flows instead of idle), each after the agent returned its
//! free heap (`--memory-only`: this figure alone).
//! `--names` runs it all with destination names on (see `bench_names`),
//! after measuring how many DNS answers the agent parses per core.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use netgov_testbed::Testbed;
use netgov_testbed::metrics_text::sum_samples as sum;

use crate::bench::flag_value;
use crate::{XtaskError, bench_names, build_netgov, require_root, spawn};

const PODS: usize = 20;
const AGENT_PORT: u16 = 9464;

fn scrape(testbed: &Testbed) -> Result<String, XtaskError> {
    Ok(testbed.node().http_get(AGENT_PORT, "/metrics")?)
}

fn judged(text: &str) -> f64 {
    sum(text, "netgov_flows_total", &[("protocol", "UDP")])
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
    let rss_kib = netgov_testbed::process::status(child.id(), "VmRSS") as f64;
    (cpu, rss_kib / 1024.0)
}

/// Sends `flows` datagrams, each to a new destination port (a new flow),
/// from the sender pods in parallel, at `rate` flows per second in all (as
/// fast as possible when `None`); returns how long sending took.
fn send_flows(
    testbed: &Testbed,
    flows: usize,
    first_port: u16,
    rate: Option<f64>,
) -> Result<Duration, XtaskError> {
    let target = testbed.pods()[PODS - 1].ipv4;
    let senders = &testbed.pods()[..PODS - 1];
    // Resolve every sender's neighbour entry for the target first: while
    // it is unresolved, the sender's kernel queues a few datagrams and
    // drops the rest before they leave the pod, unseen by anyone.
    for pod in senders {
        pod.netns
            .exec("ping", &["-c", "1", "-W", "1", &target.to_string()])?;
    }
    let per_sender = flows.div_ceil(senders.len());
    let per_sender_rate = rate.map(|r| r / senders.len() as f64);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = senders
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                scope.spawn(move || {
                    pod.netns.run_in(move || -> std::io::Result<()> {
                        // A fixed source port per sender, so that sending
                        // to the same ports again keeps the same flows.
                        let socket = UdpSocket::bind(("0.0.0.0", 20_000 + i as u16))?;
                        let begin = Instant::now();
                        for n in 0..per_sender {
                            // Distinct (source, destination port) per flow.
                            let port = first_port
                                .wrapping_add(((i * per_sender + n) % 60_000) as u16)
                                .max(1);
                            socket.send_to(b"x", SocketAddr::new(target.into(), port))?;
                            // Paced in steps of 64 datagrams.
                            if let Some(rate) = per_sender_rate
                                && n % 64 == 63
                            {
                                let due = Duration::from_secs_f64((n + 1) as f64 / rate);
                                if let Some(wait) = due.checked_sub(begin.elapsed()) {
                                    std::thread::sleep(wait);
                                }
                            }
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

/// Offered rates of new flows per second, stepped up while each step is
/// judged completely with zero loss.
const RATES: [u32; 8] = [
    10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 80_000, 100_000,
];
/// New flows sent per step.
const STEP_FLOWS: usize = 100_000;
/// Live flows for the memory figure: as many as the soak holds.
const LIVE_FLOWS: usize = 60_000;
/// DNS answers for the parsing figure (`--names`): more than the name
/// cache holds, so it evicts too.
const ANSWERS: usize = 200_000;

/// Runs the benchmark.
///
/// # Errors
/// Without root, or when the node or the agent cannot be set up.
pub fn bench(args: &[String]) -> Result<(), XtaskError> {
    let step_flows = flag_value(args, "--flows").unwrap_or(STEP_FLOWS);
    let live_flows = flag_value(args, "--live-flows").unwrap_or(LIVE_FLOWS);
    let baseline_flows = flag_value(args, "--baseline-flows").unwrap_or(0);
    let names = args.iter().any(|a| a == "--names");
    let hubble = args.iter().any(|a| a == "--hubble");
    let answers = flag_value(args, "--answers").unwrap_or(ANSWERS);
    let memory_only = args.iter().any(|a| a == "--memory-only");
    require_root(
        "bench",
        "it creates network namespaces and loads eBPF programs",
    )?;
    let netgov = build_netgov(true)?;
    let mut testbed = Testbed::new(&Testbed::unique_prefix("bagent"))?;
    for i in 0..PODS {
        testbed.add_pod(&format!("pod{i}"))?;
    }
    let cluster_state = prepare(&testbed, names)?;
    // With --hubble: every judged flow also becomes a Hubble event, kept in
    // the ring, served, and written to the export file (Cilium's rotation:
    // 10 MiB, 5 backups).
    let export = cluster_state.with_file_name("hubble-export.json");
    let hubble_args: Vec<String> = if hubble {
        vec![
            "--hubble-listen-address".into(),
            "127.0.0.1:4244".into(),
            "--hubble-export-file-path".into(),
            export.to_string_lossy().into_owned(),
        ]
    } else {
        Vec::new()
    };
    let start_agent = || -> Result<Agent, XtaskError> {
        let child = spawn(
            testbed
                .node()
                .command(netgov.to_str().unwrap_or("netgov"))
                .args(["agent", "--iface", "vethp*", "--node-name", "bench-node"])
                .arg("--cluster-state")
                .arg(&cluster_state)
                .args(["--metrics-addr", &format!("127.0.0.1:{AGENT_PORT}")])
                .args(&hubble_args)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        let agent = Agent(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        // Ready: programs attached and the cluster state loaded.
        while !scrape(&testbed).is_ok_and(|t| t.lines().any(|l| l == "netgov_ready 1")) {
            if Instant::now() > deadline {
                return Err(XtaskError::Output {
                    tool: "netgov agent",
                    detail: "not ready after 20 s".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if names {
            bench_names::name_the_receiver(&testbed, &|| scrape(&testbed))?;
        }
        Ok(agent)
    };

    println!(
        "agent benchmark: {PODS} pods on one node; {step_flows} new UDP flows per step from {} pods at a steady rate, a fresh agent per step{}",
        PODS - 1,
        if names {
            " — names on: the receiver is outside the cluster, and every sender resolved it"
        } else {
            ""
        }
    );
    if hubble {
        println!(
            "  Hubble on: each flow judged is also a Hubble event in the ring (4,095), served on 127.0.0.1:4244 and written to {}",
            export.display()
        );
    }
    if memory_only {
        return memory_per_flow(&testbed, &start_agent, live_flows, baseline_flows);
    }
    if names {
        let agent = start_agent()?;
        bench_names::answers_per_core(&testbed, answers, &|| scrape(&testbed), &|| {
            process_figures(&agent.0).0
        })?;
    }
    let mut best = None;
    for rate in RATES {
        let agent = start_agent()?;
        // Whole datagrams per sender.
        let flows = step_flows.div_ceil(PODS - 1) * (PODS - 1);
        let (cpu_before, _) = process_figures(&agent.0);
        let start = Instant::now();
        let sent_in = send_flows(&testbed, flows, 1, Some(f64::from(rate)))?;
        let (judged_flows, judged_by, after) = settle(&testbed, start)?;
        let (cpu_after, rss) = process_figures(&agent.0);
        let lost_events = lost(&after);
        let offered = flows as f64 / sent_in.as_secs_f64();
        let named = bench_names::named_flows(&after);
        let complete =
            lost_events == 0.0 && judged_flows >= flows as f64 && (!names || named >= flows as f64);
        let by_stage: Vec<String> = after
            .lines()
            .filter(|l| l.starts_with("netgov_events_lost_total{") && !l.ends_with(" 0"))
            .map(|l| l.trim_start_matches("netgov_events_lost_total").to_owned())
            .collect();
        println!(
            "  {rate:>7}/s asked, {offered:>7.0}/s offered: {judged_flows:.0} of {flows} judged in {:.2} s, events lost {lost_events:.0}; agent CPU {:.2} s, RSS {rss:.1} MiB{}",
            judged_by.as_secs_f64(),
            cpu_after - cpu_before,
            if complete {
                ""
            } else {
                "  <- not all judged with zero loss"
            }
        );
        if !by_stage.is_empty() {
            println!("      lost by stage: {}", by_stage.join(", "));
        }
        if names {
            println!(
                "      named {}: {named:.0} flows",
                bench_names::RECEIVER_NAME
            );
        }
        drop(agent);
        if !complete {
            break;
        }
        best = Some(offered);
    }
    match best {
        Some(rate) => {
            println!("  judged with zero loss: {rate:.0} new flows/s ({step_flows} flows)")
        }
        None => println!("  judged with zero loss: below {} new flows/s", RATES[0]),
    }

    // 10,000 flows kept active on a fresh agent: a datagram on each every
    // second; CPU and memory measured once the table holds them.
    let agent = start_agent()?;
    let mut figures = None;
    let steady_start = Instant::now();
    while steady_start.elapsed() < Duration::from_secs(10) {
        let round = Instant::now();
        send_flows(&testbed, 10_000, 30_000, None)?;
        if figures.is_none() && steady_start.elapsed() > Duration::from_secs(3) {
            figures = Some((Instant::now(), process_figures(&agent.0).0));
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(round.elapsed()));
    }
    let (measured_from, cpu_before) = figures.unwrap_or((steady_start, 0.0));
    let (cpu_after, rss) = process_figures(&agent.0);
    let text = scrape(&testbed)?;
    println!(
        "  with 10,000 active flows: agent CPU {:.1}% of a core, resident memory {rss:.1} MiB (flow table: {} flows)",
        100.0 * (cpu_after - cpu_before) / measured_from.elapsed().as_secs_f64(),
        sum(&text, "netgov_flow_table_entries", &[])
    );
    drop(agent);
    memory_per_flow(&testbed, &start_agent, live_flows, baseline_flows)
}

/// Resident memory per live flow: a fresh agent's resident memory once it
/// trimmed its heap (it does every minute) holding `baseline_flows` live
/// flows (none: idle), against the same once `live_flows` flows are
/// judged and kept alive (a datagram on each every 20 s, well inside the
/// idle timeout) for another trim; per flow it holds more.
fn memory_per_flow(
    testbed: &Testbed,
    start_agent: &dyn Fn() -> Result<Agent, XtaskError>,
    live_flows: usize,
    baseline_flows: usize,
) -> Result<(), XtaskError> {
    let agent = start_agent()?;
    let whole = |flows: usize| flows.div_ceil(PODS - 1) * (PODS - 1);
    let baseline = (baseline_flows > 0).then(|| whole(baseline_flows));
    let base = match baseline {
        Some(flows) => hold(testbed, &agent, flows, None)?.2,
        None => {
            std::thread::sleep(TRIM_INTERVAL - SAMPLED);
            Resident::sample(&agent, SAMPLED)
        }
    };
    let base_text = scrape(testbed)?;
    let (judged_flows, settled, live) = hold(testbed, &agent, whole(live_flows), baseline)?;
    let text = scrape(testbed)?;
    let held = |text: &str| sum(text, "netgov_flow_table_entries", &[]);
    let heap = |text: &str| sum(text, "netgov_heap_in_use_bytes", &[]);
    let more = (held(&text) - held(&base_text)).max(1.0);
    println!(
        "  memory per live flow: {:.0} B resident held (the lowest of each minute's last {} samples), {:.0} B at their median, {:.0} B at their highest; {:.0} B heap per flow held beyond {:.0}: flow table {:.0}, then {:.0} ({judged_flows:.0} judged); resident {:.1} MiB ({:.1} MiB heap), {settled:.1} MiB as judged, {:.1}–{:.1} MiB a minute later, median {:.1} ({:.1} MiB heap); events lost {:.0}",
        (live.lowest - base.lowest) * MIB / more,
        live.samples,
        (live.median - base.median) * MIB / more,
        (live.highest - base.highest) * MIB / more,
        (heap(&text) - heap(&base_text)) / more,
        held(&base_text),
        held(&base_text),
        held(&text),
        base.median,
        heap(&base_text) / MIB,
        live.lowest,
        live.highest,
        live.median,
        heap(&text) / MIB,
        lost(&text)
    );
    Ok(())
}

/// Sends `flows` new flows and keeps them alive, with the `held` flows
/// sent before, until the agent's next heap trim has passed; returns how
/// many were judged, the agent's resident MiB once they were, and its
/// resident memory over the hold's last [`SAMPLED`].
fn hold(
    testbed: &Testbed,
    agent: &Agent,
    flows: usize,
    held: Option<usize>,
) -> Result<(f64, f64, Resident), XtaskError> {
    let sent = Instant::now();
    let mut last_send = sent;
    send_flows(testbed, flows, 1, Some(50_000.0))?;
    let (judged, _, _) = settle(testbed, sent)?;
    let (_, settled) = process_figures(&agent.0);
    let mut samples = Vec::new();
    while sent.elapsed() < TRIM_INTERVAL + Duration::from_secs(5) {
        if last_send.elapsed() > Duration::from_secs(20) {
            last_send = Instant::now();
            send_flows(testbed, flows, 1, Some(50_000.0))?;
            if let Some(held) = held {
                send_flows(testbed, held, 1, Some(50_000.0))?;
            }
        }
        std::thread::sleep(Duration::from_secs(1));
        if sent.elapsed() + SAMPLED > TRIM_INTERVAL + Duration::from_secs(5) {
            samples.push(process_figures(&agent.0).1);
        }
    }
    Ok((judged, settled, Resident::of(samples)))
}

/// How long resident memory is sampled, once a second, at the end of a
/// hold. One sample may catch the agent in the middle of a burst that
/// scales with the flows (a re-report of every live flow passing through
/// the judge's channel as records): what the agent holds per flow is from
/// the lowest samples, and the median and highest are printed beside it.
const SAMPLED: Duration = Duration::from_secs(20);

/// Resident memory sampled once a second.
struct Resident {
    /// Its lowest, MiB.
    lowest: f64,
    /// Its median, MiB.
    median: f64,
    /// Its highest, MiB.
    highest: f64,
    samples: usize,
}

impl Resident {
    fn sample(agent: &Agent, over: Duration) -> Self {
        let started = Instant::now();
        let mut samples = Vec::new();
        while started.elapsed() < over {
            samples.push(process_figures(&agent.0).1);
            std::thread::sleep(Duration::from_secs(1));
        }
        Self::of(samples)
    }

    fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        Self {
            lowest: samples.first().copied().unwrap_or(0.0),
            median: samples.get(samples.len() / 2).copied().unwrap_or(0.0),
            highest: samples.last().copied().unwrap_or(0.0),
            samples: samples.len(),
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// How long each hold lasts: several of the agent's heap trims (every
/// 10 s, `agent/memory.rs`), and a minute of live flows kept alive.
const TRIM_INTERVAL: Duration = Duration::from_secs(62);

/// `netgov agent`, stopped with SIGTERM on drop.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// The receiver's firewall and the cluster state; returns the state's path.
/// With `names`, the senders drop UDP too (the DNS answers they are sent),
/// and the receiver is not in the cluster state: outside the cluster.
fn prepare(testbed: &Testbed, names: bool) -> Result<std::path::PathBuf, XtaskError> {
    // The receiver drops UDP silently (no ICMP port-unreachable flows).
    let receiver = &testbed.pods()[PODS - 1];
    let rules = std::env::temp_dir().join(format!("{}.nft", receiver.netns.name()));
    std::fs::write(&rules, "table inet bench {\n chain input { type filter hook input priority 0; meta l4proto udp drop; }\n}\n")
        .map_err(|source| XtaskError::Io {
            what: "writing the receiver's firewall".into(),
            source,
        })?;
    let droppers = if names {
        testbed.pods()
    } else {
        std::slice::from_ref(receiver)
    };
    for pod in droppers {
        pod.netns
            .exec("nft", &["-f", rules.to_str().unwrap_or_default()])?;
    }

    let mut cluster = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: bench}\n");
    let in_cluster = if names {
        &testbed.pods()[..PODS - 1]
    } else {
        testbed.pods()
    };
    for pod in in_cluster {
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
    Ok(cluster_state)
}
