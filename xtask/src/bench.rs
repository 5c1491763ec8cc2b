//! Benchmarks: figures, not pass/fail tests.
//!
//! - `cargo xtask bench datapath`: iperf3 TCP throughput between two
//!   namespace pods, alternating runs without and with `netgov capture`
//!   attached; prints the median throughput ratio and the capture's CPU
//!   seconds per GB.
//! - `cargo xtask bench policy`: the policy engine on a generated cluster of
//!   10,000 pods, 200 namespaces, 2,000 policies and 200
//!   ClusterNetworkPolicies (compile time,
//!   verdicts/s), then `netgov check` end to end on a million JSON flows.
//! - `cargo xtask bench cluster`: initial sync of 10,000 pods, 500
//!   namespaces, 2,000 policies and 3,000 services from the fake API server
//!   (time to ready, memory per 10k pods, requests, IP resolutions/s), and
//!   of 50,000 pods listed unpaginated (peak resident memory).
//! - `cargo xtask bench soak [--minutes N]`: a live agent under pod churn
//!   with IP reuse, policy and label changes and steady new flows, through
//!   the fake API server; resident memory and the rest per minute.

use std::process::{Child, Stdio};
use std::time::Duration;

use netgov_testbed::{Pod, Testbed};
use serde_json::Value;

use std::process::Command;

use crate::{XtaskError, build_netgov, cargo, require_root, run, spawn};

struct Options {
    runs: usize,
    seconds: u32,
}

fn parse(args: &[String]) -> Result<Options, XtaskError> {
    let mut options = Options {
        runs: 5,
        seconds: 5,
    };
    let mut args = args.iter();
    match args.next().map(String::as_str) {
        Some("datapath") => {}
        other => return Err(XtaskError::Usage(format!("unknown benchmark {other:?}"))),
    }
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|v| *v > 0);
        match (flag.as_str(), value) {
            ("--runs", Some(v)) => options.runs = v as usize,
            ("--seconds", Some(v)) => options.seconds = v,
            _ => return Err(XtaskError::Usage(format!("bad flag {flag} or its value"))),
        }
    }
    Ok(options)
}

/// Runs a benchmark.
///
/// # Errors
/// Without root, or when a tool fails.
pub fn bench(args: &[String]) -> Result<(), XtaskError> {
    match args.first().map(String::as_str) {
        Some("datapath") => datapath(&parse(args)?),
        Some("policy") => policy(),
        Some("agent") => crate::bench_agent::bench(args),
        Some("cluster") => run(&mut example("cluster_bench")),
        Some("soak") => soak(args),
        other => Err(XtaskError::Usage(format!("unknown benchmark {other:?}"))),
    }
}

/// Runs the soak example against a release `netgov`.
fn soak(args: &[String]) -> Result<(), XtaskError> {
    require_root(
        "bench soak",
        "it creates network namespaces and loads eBPF programs",
    )?;
    let minutes = args
        .iter()
        .position(|a| a == "--minutes")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "30".into());
    let netgov = build_netgov(true)?;
    run(example("soak_bench").arg(&netgov).arg(minutes))
}

/// `cargo run` of one of netgov-agent's benchmark examples, released;
/// arguments added go to the example.
fn example(name: &str) -> Command {
    let mut command = cargo();
    command.args([
        "run",
        "--release",
        "--quiet",
        "--package",
        "netgov-agent",
        "--example",
        name,
        "--",
    ]);
    command
}

/// Runs the engine benchmark example, then times `netgov check` on the
/// cluster and flows it wrote.
fn policy() -> Result<(), XtaskError> {
    let netgov = build_netgov(true)?;
    let dir = std::env::temp_dir().join(format!("netgov-bench-policy-{}", std::process::id()));
    run(example("policy_bench").arg(&dir))?;
    let flows = dir.join("flows.jsonl");
    let one_flow = dir.join("one-flow.jsonl");
    let all = std::fs::read_to_string(&flows).map_err(|source| XtaskError::Io {
        what: format!("reading {}", flows.display()),
        source,
    })?;
    let count = all.lines().count();
    std::fs::write(&one_flow, all.lines().next().unwrap_or_default()).map_err(|source| {
        XtaskError::Io {
            what: format!("writing {}", one_flow.display()),
            source,
        }
    })?;
    let time_check = |flows: &std::path::Path| -> Result<f64, XtaskError> {
        let started = std::time::Instant::now();
        run(Command::new(&netgov)
            .args(["check", "--manifests"])
            .arg(dir.join("cluster.json"))
            .arg("--flows")
            .arg(flows)
            .stdout(Stdio::null()))?;
        Ok(started.elapsed().as_secs_f64())
    };
    let startup = time_check(&one_flow)?;
    let total = time_check(&flows)?;
    println!(
        "netgov check end to end: {count} JSON flows in {total:.2} s, of which {startup:.2} s loading the manifests: {:.0} flows/s (one process, one core)",
        count as f64 / (total - startup)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn datapath(options: &Options) -> Result<(), XtaskError> {
    require_root(
        "bench",
        "it creates network namespaces and loads eBPF programs",
    )?;
    let netgov = build_netgov(true)?;
    let mut testbed = Testbed::new(&Testbed::unique_prefix("bench"))?;
    testbed.add_pod("client")?;
    testbed.add_pod("server")?;
    let (client, server) = (&testbed.pods()[0], &testbed.pods()[1]);

    println!(
        "datapath benchmark: iperf3 TCP {} s x {} runs each, alternating without / with capture",
        options.seconds, options.runs
    );
    let mut ratios = Vec::new();
    let mut cpu_seconds = 0.0;
    let mut captured_bytes = 0.0;
    for run in 1..=options.runs {
        let baseline = iperf(client, server, options.seconds)?;
        let mut capture = start_capture(&testbed, &netgov)?;
        let with_capture = iperf(client, server, options.seconds);
        let cpu = cpu_time(&capture);
        stop(&mut capture);
        let with_capture = with_capture?;
        cpu_seconds += cpu?;
        captured_bytes += with_capture.bytes;
        let ratio = with_capture.bits_per_second / baseline.bits_per_second;
        println!(
            "  run {run}: without {:>7.2} Gbit/s   with {:>7.2} Gbit/s   ratio {ratio:.3}",
            baseline.bits_per_second / 1e9,
            with_capture.bits_per_second / 1e9
        );
        ratios.push(ratio);
    }
    // The per-packet cost, with one capture attached for every workload.
    let mut capture = start_capture(&testbed, &netgov)?;
    let cost = crate::bench_cost::per_packet(client, server, options.seconds);
    stop(&mut capture);
    cost?;
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    println!("median throughput ratio (with / without capture): {median:.3}  (target >= 0.97)");
    println!(
        "capture process CPU: {:.4} s per GB transferred ({cpu_seconds:.2} s for {:.2} GB)",
        cpu_seconds / (captured_bytes / 1e9),
        captured_bytes / 1e9
    );
    Ok(())
}

/// `netgov capture` on the testbed's pod interfaces, given time to attach.
fn start_capture(testbed: &Testbed, netgov: &std::path::Path) -> Result<Child, XtaskError> {
    let capture = spawn(
        testbed
            .node()
            .command(netgov.to_str().unwrap_or("netgov"))
            .args(["capture", "--iface", "vethp*"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    std::thread::sleep(Duration::from_millis(700));
    Ok(capture)
}

struct IperfResult {
    bits_per_second: f64,
    bytes: f64,
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
    let output = client.netns.exec(
        "iperf3",
        &["-c", &address, "-t", &seconds.to_string(), "-J"],
    );
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
        }),
        _ => Err(XtaskError::Output {
            tool: "iperf3",
            detail: format!("no end.sum_received in {json}"),
        }),
    }
}

/// User + system CPU seconds of a running process.
fn cpu_time(child: &Child) -> Result<f64, XtaskError> {
    let path = format!("/proc/{}/stat", child.id());
    let stat = std::fs::read_to_string(&path).map_err(|source| XtaskError::Io {
        what: format!("reading {path}"),
        source,
    })?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(utime), Some(stime)) => {
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
            Ok((utime + stime) / hz)
        }
        _ => Err(XtaskError::Output {
            tool: "/proc/<pid>/stat",
            detail: stat,
        }),
    }
}

fn stop(child: &mut Child) {
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
}
