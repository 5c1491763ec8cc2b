//! Per-packet cost of netgov's eBPF programs, from the kernel's own BPF
//! statistics (`kernel.bpf_stats_enabled=1`, then `run_time_ns /
//! run_cnt` per program from `bpftool -j prog show`): stable where
//! throughput between namespaces is noisy. Part of `cargo xtask bench
//! datapath`.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use netgov_testbed::Pod;
use serde_json::Value;

use crate::XtaskError;

/// `(runs, nanoseconds)` per netgov program, as the kernel counts them.
type Counts = BTreeMap<String, (u64, u64)>;

fn counts() -> Result<Counts, XtaskError> {
    let output = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .map_err(|source| XtaskError::Io {
            what: "bpftool prog show".into(),
            source,
        })?;
    let programs: Vec<Value> =
        serde_json::from_slice(&output.stdout).map_err(|e| XtaskError::Output {
            tool: "bpftool",
            detail: e.to_string(),
        })?;
    let mut counts = Counts::new();
    for program in programs {
        let name = program["name"].as_str().unwrap_or_default();
        if !name.starts_with("netgov_") {
            continue;
        }
        let entry = counts.entry(name.to_owned()).or_default();
        entry.0 += program["run_cnt"].as_u64().unwrap_or(0);
        entry.1 += program["run_time_ns"].as_u64().unwrap_or(0);
    }
    Ok(counts)
}

/// Keeps `kernel.bpf_stats_enabled` on while alive, then puts it back.
struct StatsEnabled(String);

impl StatsEnabled {
    fn new() -> Result<Self, XtaskError> {
        let path = "/proc/sys/kernel/bpf_stats_enabled";
        let previous = std::fs::read_to_string(path).unwrap_or_else(|_| "0".into());
        std::fs::write(path, "1").map_err(|source| XtaskError::Io {
            what: format!("enabling {path}"),
            source,
        })?;
        Ok(Self(previous.trim().to_owned()))
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.0);
    }
}

/// Runs each workload through the capture already attached to the pods'
/// interfaces and prints ns per run of every netgov program: TCP bulk,
/// 64-byte UDP (iperf3), and many flows — 64-byte datagrams round-robin
/// over [`MIX_FLOWS`] destination ports, so every packet looks up a
/// different flow in a large map (the server drops them: no ICMP) — then
/// pooled: every run of the three workloads, one after another.
///
/// # Errors
/// When bpftool, nft or iperf3 cannot be run.
pub fn per_packet(client: &Pod, server: &Pod, seconds: u32) -> Result<(), XtaskError> {
    let _stats = StatsEnabled::new()?;
    server
        .netns
        .exec("nft", &["add", "table", "inet", "netgov_bench"])?;
    server.netns.exec(
        "nft",
        &[
            "add chain inet netgov_bench input { type filter hook input priority 0 ; } ;",
            &format!(
                "add rule inet netgov_bench input udp dport {MIX_FIRST_PORT}-{} drop",
                MIX_FIRST_PORT + MIX_FLOWS - 1
            ),
        ],
    )?;
    let workloads: [(&str, Workload); 3] = [
        ("TCP bulk", Workload::Iperf(&[])),
        (
            "UDP 64-byte",
            Workload::Iperf(&["-u", "-b", "0", "-l", "64"]),
        ),
        ("UDP 10k flows", Workload::ManyFlows),
    ];
    println!("per-packet cost (kernel BPF statistics, ns per program run):");
    let mut all = Counts::new();
    for (name, workload) in workloads {
        let before = counts()?;
        match workload {
            Workload::Iperf(extra) => iperf(client, server, seconds, extra)?,
            Workload::ManyFlows => many_flows(client, server, seconds)?,
        }
        let after = counts()?;
        let mut spent = Counts::new();
        for (program, (runs, ns)) in &after {
            let (runs_before, ns_before) = before.get(program).copied().unwrap_or_default();
            let run = (
                runs.saturating_sub(runs_before),
                ns.saturating_sub(ns_before),
            );
            spent.insert(program.clone(), run);
            let total = all.entry(program.clone()).or_default();
            *total = (total.0 + run.0, total.1 + run.1);
        }
        println!("{}", cost_line(name, &spent));
    }
    println!("{}", cost_line("pooled (all three)", &all));
    Ok(())
}

/// Traffic for one measurement.
enum Workload {
    /// iperf3 with these extra arguments.
    Iperf(&'static [&'static str]),
    /// [`many_flows`].
    ManyFlows,
}

/// Destination ports of the many-flows workload: one flow each.
const MIX_FLOWS: u16 = 10_000;
const MIX_FIRST_PORT: u16 = 10_000;

/// 64-byte datagrams from the client, round-robin over [`MIX_FLOWS`]
/// ports of the server, for `seconds`.
fn many_flows(client: &Pod, server: &Pod, seconds: u32) -> Result<(), XtaskError> {
    let target = std::net::SocketAddr::from((server.ipv4, 0));
    let sent = client.netns.run_in(move || -> std::io::Result<u64> {
        let socket = std::net::UdpSocket::bind(("0.0.0.0", 0))?;
        let started = std::time::Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < Duration::from_secs(u64::from(seconds)) {
            for port in MIX_FIRST_PORT..MIX_FIRST_PORT + MIX_FLOWS {
                let mut to = target;
                to.set_port(port);
                socket.send_to(&[0u8; 64], to)?;
                sent += 1;
            }
        }
        Ok(sent)
    })?;
    let sent = sent.map_err(|source| XtaskError::Io {
        what: "sending the many-flows datagrams".into(),
        source,
    })?;
    println!(
        "  ({sent} datagrams over {MIX_FLOWS} flows: {:.0}/s)",
        sent as f64 / f64::from(seconds)
    );
    Ok(())
}

/// `name  program ns (runs)...` for the programs that ran.
fn cost_line(name: &str, spent: &Counts) -> String {
    let mut line = format!("  {name:<16}");
    for (program, (runs, ns)) in spent {
        if *runs > 0 {
            let per_run = *ns as f64 / *runs as f64;
            line += &format!("  {program} {per_run:.0} ns ({runs} runs)");
        }
    }
    line
}

fn iperf(client: &Pod, server: &Pod, seconds: u32, extra: &[&str]) -> Result<(), XtaskError> {
    let address = server.ipv4.to_string();
    let mut server_process = server
        .netns
        .command("iperf3")
        .args(["-s", "-1", "-B", &address])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| XtaskError::Io {
            what: "iperf3 -s".into(),
            source,
        })?;
    std::thread::sleep(Duration::from_millis(300));
    let mut args = vec!["-c", &address, "-t"];
    let seconds = seconds.to_string();
    args.push(&seconds);
    args.extend_from_slice(extra);
    let result = client.netns.exec("iperf3", &args);
    let _ = server_process.kill();
    let _ = server_process.wait();
    result.map(drop).map_err(|e| XtaskError::Output {
        tool: "iperf3",
        detail: e.to_string(),
    })
}
