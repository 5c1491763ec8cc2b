//! Benchmarks: figures, not pass/fail tests.
//!
//! - `cargo xtask bench datapath`: throughput and per-packet cost of
//!   observing pod traffic, netgov beside softflowd and pmacctd
//!   (`bench_datapath.rs`).
//! - `cargo xtask bench policy`: the policy engine on a generated cluster of
//!   10,000 pods, 200 namespaces, 2,000 policies and 200
//!   ClusterNetworkPolicies (compile time,
//!   verdicts/s), then `netgov check` end to end on 300,000 JSON flows, 60 %
//!   of them denied.
//! - `cargo xtask bench cluster [--pods N [--churn-minutes M] [--agent-only]]`: initial sync of 10,000 pods,
//!   500 namespaces, 2,000 policies and 3,000 services from the fake API
//!   server (time to ready, memory per 10k pods, requests, objects and
//!   bytes received, IP resolutions/s), and of 50,000 pods listed
//!   unpaginated (peak resident memory). With `--pods N`, N pods in a
//!   cluster shaped as at Kubernetes' limits, then a minute of 100 pod
//!   changes a second (CPU, bytes received), the same unpaginated, and the
//!   release `netgov agent` binary against that shape (time to ready,
//!   resident memory); `--agent-only`, the binary alone.
//! - `cargo xtask bench soak [--minutes N]`: a live agent under pod churn
//!   with IP reuse, policy and label changes and steady new flows, through
//!   the fake API server; resident memory and the rest per minute.

use std::process::{Command, Stdio};

use crate::{XtaskError, build_netgov, cargo, require_root, run};

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
        Some("datapath") => {
            let options = parse(args)?;
            crate::bench_datapath::datapath(options.runs, options.seconds)
        }
        Some("policy") => policy(),
        Some("agent") => crate::bench_agent::bench(args),
        Some("cluster") => cluster(args),
        Some("soak") => soak(args),
        other => Err(XtaskError::Usage(format!("unknown benchmark {other:?}"))),
    }
}

/// Runs the cluster example; with `--pods`, also against a release
/// `netgov agent` (as root: it loads its programs).
fn cluster(args: &[String]) -> Result<(), XtaskError> {
    let mut command = example("cluster_bench");
    command.args(&args[1..]);
    if args.iter().any(|a| a == "--pods") {
        require_root(
            "bench cluster --pods",
            "it runs the agent, which loads eBPF programs",
        )?;
        command.arg("--agent").arg(build_netgov(true)?);
    }
    run(&mut command)
}

/// Runs the soak example against a release `netgov`.
fn soak(args: &[String]) -> Result<(), XtaskError> {
    require_root(
        "bench soak",
        "it creates network namespaces and loads eBPF programs",
    )?;
    let minutes: u32 = flag_value(args, "--minutes").unwrap_or(30);
    let netgov = build_netgov(true)?;
    run(example("soak_bench").arg(&netgov).arg(minutes.to_string()))
}

/// The value after `flag` in `args`, when there is one that parses.
pub fn flag_value<T: std::str::FromStr>(args: &[String], flag: &str) -> Option<T> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
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
    // The fastest of five runs: wall-clock time on this machine varies by
    // a third from run to run, with other work on the host.
    let time_check = |flows: &std::path::Path| -> Result<f64, XtaskError> {
        let mut fastest = f64::MAX;
        for _ in 0..5 {
            let started = std::time::Instant::now();
            run(Command::new(&netgov)
                .args(["check", "--manifests"])
                .arg(dir.join("cluster.json"))
                .arg("--flows")
                .arg(flows)
                .stdout(Stdio::null()))?;
            fastest = fastest.min(started.elapsed().as_secs_f64());
        }
        Ok(fastest)
    };
    let startup = time_check(&one_flow)?;
    let total = time_check(&flows)?;
    println!(
        "netgov check end to end: {count} JSON flows in {total:.2} s (fastest of 5), of which {startup:.2} s loading the manifests: {:.0} flows/s loading included, {:.0} flows/s judging and writing (one process, one core)",
        count as f64 / total,
        count as f64 / (total - startup)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
