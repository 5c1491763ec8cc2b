//! `cargo xtask bench datapath`: what observing every packet costs the
//! traffic, side by side with peers in one run.
//!
//! Each run measures iperf3 TCP throughput between two namespace pods bare,
//! then with each observer attached to both pods' host-side interfaces —
//! `netgov capture`, and as peers the libpcap flow exporters softflowd and
//! pmacctd (Debian packages) — each ratio against that run's bare figure.
//! The observers' order rotates from run to run, so none always follows
//! the bare run. Veth throughput is noisy (±10–15 % run to run): the
//! figures are medians, and the per-packet cost from the kernel's BPF
//! statistics (`bench_cost.rs`) is the stable figure.

use std::process::{Child, Stdio};
use std::time::Duration;

use netgov_testbed::{Pod, Testbed};
use serde_json::Value;

use crate::{XtaskError, build_netgov, require_root, spawn};

/// What observes the pods' traffic during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Observer {
    Netgov,
    Softflowd,
    Pmacctd,
}

impl Observer {
    const ALL: [Observer; 3] = [Observer::Netgov, Observer::Softflowd, Observer::Pmacctd];

    fn name(self) -> &'static str {
        match self {
            Observer::Netgov => "netgov",
            Observer::Softflowd => "softflowd",
            Observer::Pmacctd => "pmacctd",
        }
    }

    /// Starts the observer on the pods' host-side interfaces (one process
    /// per interface for the peers: each listens on one) and gives it time
    /// to attach.
    fn start(
        self,
        testbed: &Testbed,
        netgov: &std::path::Path,
        run_dir: &std::path::Path,
    ) -> Result<Running, XtaskError> {
        let node = testbed.node();
        let mut children = Vec::new();
        match self {
            Observer::Netgov => children.push(spawn(
                node.command(netgov.to_str().unwrap_or("netgov"))
                    .args(["capture", "--iface", "vethp*"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )?),
            Observer::Softflowd | Observer::Pmacctd => {
                for (i, pod) in testbed.pods().iter().enumerate() {
                    let file = |what: &str| {
                        run_dir
                            .join(format!("{}-{i}.{what}", self.name()))
                            .display()
                            .to_string()
                    };
                    let mut command = match self {
                        // NetFlow v9 to a loopback port of the node's
                        // namespace (nothing listens: the export is sent
                        // and dropped, as a collector would take it).
                        Observer::Softflowd => {
                            let mut c = node.command("softflowd");
                            c.args(["-d", "-i", &pod.host_interface, "-v", "9"])
                                .args(["-n", "127.0.0.1:2055", "-p", &file("pid")])
                                .args(["-c", &file("ctl")]);
                            c
                        }
                        // Flows aggregated in memory and printed every
                        // minute, as its quick start does.
                        _ => {
                            let mut c = node.command("pmacctd");
                            c.args(["-i", &pod.host_interface, "-P", "print", "-r", "60"])
                                .args(["-c", "src_host,dst_host,src_port,dst_port,proto"])
                                .args(["-F", &file("pid")]);
                            c
                        }
                    };
                    children.push(spawn(command.stdout(Stdio::null()).stderr(Stdio::null()))?);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(700));
        let mut running = Running(children, self);
        running.check_alive()?;
        Ok(running)
    }
}

/// Observer processes, stopped with SIGTERM on drop.
struct Running(Vec<Child>, Observer);

impl Running {
    /// Fails when a process of the observer has exited: the run's figure
    /// would be a bare one.
    fn check_alive(&mut self) -> Result<(), XtaskError> {
        for child in &mut self.0 {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(XtaskError::Output {
                    tool: self.1.name(),
                    detail: format!("exited during the run with {status}"),
                });
            }
        }
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

/// Runs the benchmark.
///
/// # Errors
/// Without root, or when a tool fails.
pub fn datapath(runs: usize, seconds: u32) -> Result<(), XtaskError> {
    require_root(
        "bench",
        "it creates network namespaces and loads eBPF programs",
    )?;
    let netgov = build_netgov(true)?;
    let mut testbed = Testbed::new(&Testbed::unique_prefix("bench"))?;
    testbed.add_pod("client")?;
    testbed.add_pod("server")?;
    let (client, server) = (&testbed.pods()[0], &testbed.pods()[1]);
    let run_dir = std::env::temp_dir().join(format!("netgov-bench-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir).map_err(|source| XtaskError::Io {
        what: format!("creating {}", run_dir.display()),
        source,
    })?;

    println!(
        "datapath benchmark: iperf3 TCP {seconds} s, {runs} runs; each run bare, then with each observer on both pods' interfaces (order rotating)"
    );
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); Observer::ALL.len()];
    // Machine CPU seconds per GB, observed minus the same run's bare.
    let mut extra_cpu: Vec<Vec<f64>> = vec![Vec::new(); Observer::ALL.len()];
    for run in 0..runs {
        let bare = iperf(client, server, seconds)?;
        let mut line = format!("  run {}: bare {:>6.2} Gbit/s", run + 1, bare.gbits());
        for turn in 0..Observer::ALL.len() {
            let index = (run + turn) % Observer::ALL.len();
            let observer = Observer::ALL[index];
            let mut running = observer.start(&testbed, &netgov, &run_dir)?;
            let observed = iperf(client, server, seconds)?;
            running.check_alive()?;
            drop(running);
            extra_cpu[index].push(observed.cpu_per_gb() - bare.cpu_per_gb());
            let ratio = observed.bits_per_second / bare.bits_per_second;
            ratios[index].push(ratio);
            line += &format!(
                "   {} {:>6.2} ({ratio:.3})",
                observer.name(),
                observed.gbits()
            );
        }
        println!("{line}");
    }
    let medians: Vec<f64> = ratios.iter_mut().map(|r| median(r)).collect();
    // Machine-wide, because netgov's per-packet work runs in the kernel
    // (softirq and the sender's context), charged to no process of its
    // own, where the peers parse in their processes.
    println!(
        "median throughput ratio (observed / bare, same run), and the machine's extra CPU per GB moved:"
    );
    for (index, observer) in Observer::ALL.iter().enumerate() {
        println!(
            "  {:<10} {:.3}   {:+.3} CPU s per GB",
            observer.name(),
            medians[index],
            median(&mut extra_cpu[index])
        );
    }
    let best_peer = medians[1..].iter().copied().fold(f64::MIN, f64::max);
    println!(
        "  netgov {} the best peer ({:+.3}); target >= 0.98",
        if medians[0] >= best_peer {
            "at or above"
        } else {
            "below"
        },
        medians[0] - best_peer
    );
    // The per-packet cost, with netgov attached for every workload.
    let running = Observer::Netgov.start(&testbed, &netgov, &run_dir)?;
    let cost = crate::bench_cost::per_packet(client, server, seconds);
    drop(running);
    let _ = std::fs::remove_dir_all(&run_dir);
    cost
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

struct IperfResult {
    bits_per_second: f64,
    bytes: f64,
    /// Busy CPU seconds of the whole machine during the run.
    machine_cpu: f64,
}

impl IperfResult {
    fn gbits(&self) -> f64 {
        self.bits_per_second / 1e9
    }

    fn cpu_per_gb(&self) -> f64 {
        self.machine_cpu / (self.bytes / 1e9)
    }
}

/// Busy CPU seconds of the whole machine since boot (`/proc/stat`: user,
/// nice, system, irq, softirq and steal time of all CPUs).
fn machine_busy_seconds() -> Result<f64, XtaskError> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(|source| XtaskError::Io {
        what: "reading /proc/stat".into(),
        source,
    })?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let busy: f64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(busy / hz)
}

fn iperf(client: &Pod, server: &Pod, seconds: u32) -> Result<IperfResult, XtaskError> {
    let address = server.ipv4.to_string();
    let mut server_process = spawn(
        server
            .netns
            .command("iperf3")
            .args(["-s", "-1", "-B", &address])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let busy_before = machine_busy_seconds()?;
    let output = client.netns.exec(
        "iperf3",
        &["-c", &address, "-t", &seconds.to_string(), "-J"],
    );
    let machine_cpu = machine_busy_seconds()? - busy_before;
    let _ = server_process.kill();
    let _ = server_process.wait();
    let json: Value = serde_json::from_slice(&output?.stdout).map_err(|e| XtaskError::Output {
        tool: "iperf3",
        detail: e.to_string(),
    })?;
    let received = &json["end"]["sum_received"];
    match (
        received["bits_per_second"].as_f64(),
        received["bytes"].as_f64(),
    ) {
        (Some(bits_per_second), Some(bytes)) => Ok(IperfResult {
            bits_per_second,
            bytes,
            machine_cpu,
        }),
        _ => Err(XtaskError::Output {
            tool: "iperf3",
            detail: format!("no end.sum_received in {json}"),
        }),
    }
}
