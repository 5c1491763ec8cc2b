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
/// interfaces and prints ns per run of every netgov program.
///
/// # Errors
/// When bpftool or iperf3 cannot be run.
pub fn per_packet(client: &Pod, server: &Pod, seconds: u32) -> Result<(), XtaskError> {
    let _stats = StatsEnabled::new()?;
    let workloads: [(&str, &[&str]); 2] = [
        ("TCP bulk", &[]),
        ("UDP 64-byte", &["-u", "-b", "0", "-l", "64"]),
    ];
    println!("per-packet cost (kernel BPF statistics, ns per program run):");
    for (name, extra) in workloads {
        let before = counts()?;
        iperf(client, server, seconds, extra)?;
        let after = counts()?;
        let mut line = format!("  {name:<12}");
        for (program, (runs, ns)) in &after {
            let (runs_before, ns_before) = before.get(program).copied().unwrap_or_default();
            let runs = runs.saturating_sub(runs_before);
            if runs > 0 {
                let per_run = ns.saturating_sub(ns_before) as f64 / runs as f64;
                line += &format!("  {program} {per_run:.0} ns ({runs} runs)");
            }
        }
        println!("{line}");
    }
    Ok(())
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
