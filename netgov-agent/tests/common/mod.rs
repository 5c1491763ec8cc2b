//! Shared helpers of the privileged namespace tests: a running
//! `netgov capture` inside a testbed's node namespace.
#![allow(dead_code)] // each test binary uses its own subset

pub mod agent;
pub mod hubble;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use netgov_testbed::Testbed;

use serde_json::Value;

/// A `netgov capture` process in the node namespace; killed on drop if the
/// test did not stop it.
pub struct Capture {
    child: Option<Child>,
    stderr_lines: mpsc::Receiver<String>,
}

/// What a stopped capture printed.
#[derive(Debug)]
pub struct CaptureOutput {
    pub records: Vec<Value>,
    pub summary: Value,
    pub stderr: Vec<String>,
}

impl Capture {
    /// Starts a capture on the testbed's pod interfaces and waits until its
    /// programs are attached.
    pub fn start(testbed: &Testbed, extra_args: &[&str]) -> Self {
        let mut command = testbed.node().command(env!("CARGO_BIN_EXE_netgov"));
        command
            .args(["capture", "--iface", "vethp*", "--drain-interval", "0.2"])
            .args(extra_args)
            .env("NETGOV_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn netgov capture");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut capture = Self {
            child: Some(child),
            stderr_lines: rx,
        };
        capture.wait_for_stderr("ready", Duration::from_secs(20));
        capture
    }

    /// Waits for a standard-error line containing `needle`.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!("capture never printed `{needle}`; stderr so far: {seen:#?}"),
            }
        }
    }

    /// The process id (of `netgov` itself: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` and collects the output.
    pub fn stop_with(mut self, signal: libc::c_int) -> CaptureOutput {
        let mut child = self.child.take().expect("running");
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        Self::collect(&mut child, &self.stderr_lines)
    }

    /// SIGTERM, then collect.
    pub fn stop(self) -> CaptureOutput {
        self.stop_with(libc::SIGTERM)
    }

    /// Waits for a capture started with `--duration` to end by itself.
    pub fn wait(mut self) -> CaptureOutput {
        let mut child = self.child.take().expect("running");
        Self::collect(&mut child, &self.stderr_lines)
    }

    fn collect(child: &mut Child, stderr: &mpsc::Receiver<String>) -> CaptureOutput {
        let mut stdout = String::new();
        child
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut stdout)
            .expect("read stdout");
        let status = child.wait().expect("wait");
        let stderr: Vec<String> = stderr.iter().collect();
        assert!(
            status.success(),
            "capture failed: {status}; stderr: {stderr:#?}"
        );
        let records = stdout
            .lines()
            .map(|line| serde_json::from_str(line).expect("capture prints JSON lines"))
            .collect();
        let summary = stderr
            .iter()
            .find_map(|line| line.split_once("netgov capture: summary ").map(|(_, j)| j))
            .map(|json| serde_json::from_str(json).expect("summary JSON"))
            .unwrap_or_else(|| panic!("no summary in stderr: {stderr:#?}"));
        CaptureOutput {
            records,
            summary,
            stderr,
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl CaptureOutput {
    /// The records of flows between `src` and `dst` (as printed, i.e.
    /// oriented) with this protocol.
    pub fn flows(&self, src: &str, dst: &str, protocol: &str) -> Vec<&Value> {
        self.records
            .iter()
            .filter(|r| r["src"] == src && r["dst"] == dst && r["protocol"] == protocol)
            .collect()
    }

    /// The single flow matching, failing with everything captured otherwise.
    pub fn flow(&self, src: &str, dst: &str, protocol: &str, dst_port: u16) -> &Value {
        let found: Vec<&Value> = self
            .flows(src, dst, protocol)
            .into_iter()
            .filter(|r| r["dst_port"] == dst_port)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one {protocol} flow {src} -> {dst}:{dst_port}, records: {:#?}",
            self.records
        );
        found[0]
    }

    /// A kernel counter from the summary.
    pub fn kernel_counter(&self, name: &str) -> u64 {
        self.summary["kernel"][name].as_u64().expect("counter")
    }
}

/// Reads an nftables named counter `(packets, bytes)` in a namespace.
pub fn nft_counter(netns: &netgov_testbed::Netns, table: &str, name: &str) -> (u64, u64) {
    let output = netns
        .exec("nft", &["-j", "list", "counter", "inet", table, name])
        .expect("nft list counter");
    let json: Value = serde_json::from_slice(&output.stdout).expect("nft JSON");
    let counter = json["nftables"]
        .as_array()
        .and_then(|items| items.iter().find_map(|i| i.get("counter")))
        .unwrap_or_else(|| panic!("no counter in {json}"));
    (
        counter["packets"].as_u64().expect("packets"),
        counter["bytes"].as_u64().expect("bytes"),
    )
}

/// Loads an nftables ruleset into a namespace.
pub fn nft_load(netns: &netgov_testbed::Netns, ruleset: &str) {
    let path = std::env::temp_dir().join(format!("{}-{}.nft", netns.name(), std::process::id()));
    std::fs::write(&path, ruleset).expect("write ruleset");
    netns
        .exec("nft", &["-f", path.to_str().expect("utf-8 path")])
        .expect("nft -f");
    let _ = std::fs::remove_file(path);
}

/// A testbed with `pods` pods, named uniquely for this test.
pub fn testbed(tag: &str, pods: usize) -> Testbed {
    let mut testbed = Testbed::new(&Testbed::unique_prefix(tag))
        .expect("building namespaces needs root (these tests must not be skipped)");
    for i in 0..pods {
        testbed.add_pod(&format!("pod{i}")).expect("add pod");
    }
    testbed
}

/// Asserts a record's `(packets, bytes)` in both directions.
#[track_caller]
pub fn assert_counts(flow: &Value, out: (u64, u64), back: (u64, u64)) {
    let get = |field: &str| {
        flow[field]
            .as_u64()
            .unwrap_or_else(|| panic!("no {field} in {flow}"))
    };
    assert_eq!(
        (get("packets_out"), get("bytes_out")),
        out,
        "initiator -> responder of {flow:#}"
    );
    assert_eq!(
        (get("packets_in"), get("bytes_in")),
        back,
        "responder -> initiator of {flow:#}"
    );
}
