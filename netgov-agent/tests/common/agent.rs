//! A running `netgov agent` in a testbed's node namespace, and its HTTP
//! endpoints.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netgov_testbed::{Netns, Testbed};

/// Where the agents of the tests listen, inside their node namespace.
pub const AGENT_PORT: u16 = 9464;

/// A `netgov agent` process, killed on drop.
pub struct Agent {
    pub child: Child,
    pub flow_log: std::path::PathBuf,
    /// What it printed on standard error after it was ready.
    pub stderr: mpsc::Receiver<String>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `netgov agent` in the node namespace on the pod interfaces,
/// with a flow log, and waits until it is ready.
pub fn start_agent(
    testbed: &Testbed,
    cluster_state: &std::path::Path,
    config: &std::path::Path,
) -> Agent {
    start_agent_listening(testbed, cluster_state, config, "127.0.0.1")
}

/// [`start_agent`], with the HTTP endpoints on `address`, port
/// [`AGENT_PORT`].
pub fn start_agent_listening(
    testbed: &Testbed,
    cluster_state: &std::path::Path,
    config: &std::path::Path,
    address: &str,
) -> Agent {
    let flow_log = std::env::temp_dir().join(format!("{}-flows.jsonl", testbed.node().name()));
    // The agent appends: a flow log left by an earlier run would mix in.
    let _ = std::fs::remove_file(&flow_log);
    start_agent_with(testbed, cluster_state, config, address, flow_log)
}

/// [`start_agent_listening`] with the flow log at `flow_log`.
pub fn start_agent_with(
    testbed: &Testbed,
    cluster_state: &std::path::Path,
    config: &std::path::Path,
    address: &str,
    flow_log: std::path::PathBuf,
) -> Agent {
    spawn_agent(
        testbed,
        "node-1",
        (cluster_state, config),
        address,
        flow_log,
        &[],
    )
}

/// An agent on `testbed` as node `node_name`, with its flow log beside
/// `config` and `extra_args` (flags), listening on loopback.
pub fn start_agent_on(
    testbed: &Testbed,
    node_name: &str,
    cluster_state: &std::path::Path,
    config: &std::path::Path,
    extra_args: &[&str],
) -> Agent {
    let flow_log = config.with_file_name(format!("{node_name}-flows.jsonl"));
    let _ = std::fs::remove_file(&flow_log);
    spawn_agent(
        testbed,
        node_name,
        (cluster_state, config),
        "127.0.0.1",
        flow_log,
        extra_args,
    )
}

fn spawn_agent(
    testbed: &Testbed,
    node_name: &str,
    (cluster_state, config): (&std::path::Path, &std::path::Path),
    address: &str,
    flow_log: std::path::PathBuf,
    extra_args: &[&str],
) -> Agent {
    let mut child = testbed
        .node()
        .command(env!("CARGO_BIN_EXE_netgov"))
        .args(["agent", "--iface", "vethp*", "--node-name", node_name])
        .args(extra_args)
        .arg("--cluster-state")
        .arg(cluster_state)
        .arg("--config")
        .arg(config)
        .arg("--flow-log")
        .arg(&flow_log)
        .args(["--metrics-addr", &format!("{address}:{AGENT_PORT}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn netgov agent");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the agent never became ready");
        if line.contains("netgov agent: ready") {
            break;
        }
    }
    Agent {
        child,
        flow_log,
        stderr: rx,
    }
}

/// `GET path` on the agent, `None` while it does not listen yet.
pub fn try_get(node: &Netns, path: &str) -> Option<(u16, String)> {
    let path = path.to_owned();
    node.run_in(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", AGENT_PORT)).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        Some((
            status,
            response
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default(),
        ))
    })
    .expect("node namespace")
}

/// `GET path` on the agent, from inside the node namespace.
pub fn http_get(node: &Netns, path: &str) -> (u16, String) {
    try_get(node, path).expect("the agent answers HTTP")
}

/// The sum of the samples of `name` whose labels include `labels`.
#[allow(unused_imports)] // not every test binary reads metrics
pub use netgov_testbed::metrics_text::sample as metric;

/// A server in `pod` that answers `count` connections on `port` with
/// `ok`; returns once it listens.
pub fn serve(pod: &netgov_testbed::Pod, port: u16, count: usize) -> std::thread::JoinHandle<()> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let ip: std::net::IpAddr = pod.ipv4.into();
    let handle = pod
        .netns
        .spawn_in(move || {
            let listener =
                std::net::TcpListener::bind(std::net::SocketAddr::new(ip, port)).expect("bind");
            ready_tx.send(()).expect("ready");
            for _ in 0..count {
                let (mut stream, _) = listener.accept().expect("accept");
                let mut buffer = [0; 64];
                let _ = stream.read(&mut buffer);
                let _ = stream.write_all(b"ok");
            }
        })
        .expect("server namespace");
    ready_rx.recv().expect("server ready");
    handle
}

/// A TCP request from `client` to `server:port` (1.5 s to connect);
/// whether it connected.
pub fn call(client: &netgov_testbed::Pod, server: std::net::IpAddr, port: u16) -> bool {
    client
        .netns
        .run_in(|| {
            let address = std::net::SocketAddr::new(server, port);
            match TcpStream::connect_timeout(&address, Duration::from_millis(1500)) {
                Ok(mut stream) => {
                    let _ = stream.write_all(b"hello");
                    let mut buffer = Vec::new();
                    let _ = stream.read_to_end(&mut buffer);
                    true
                }
                Err(_) => false,
            }
        })
        .expect("client namespace")
}

/// A fresh directory for `tag` holding `cluster_state` and the agent
/// configuration `config`: `(cluster-state file, configuration file)`.
pub fn write_agent_files(
    tag: &str,
    cluster_state: &str,
    config: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("netgov-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (state_path, config_path) = (dir.join("cluster.yaml"), dir.join("agent.yaml"));
    std::fs::write(&state_path, cluster_state).expect("write the cluster state");
    std::fs::write(&config_path, config).expect("write the configuration");
    (state_path, config_path)
}

/// CPU seconds (user + system) the process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which may hold spaces) start at 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// Lowers the descriptor limit of process `pid` to what it has open plus
/// `spare`; returns the limit.
pub fn limit_descriptors(pid: u32, spare: usize) -> usize {
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .count();
    let limit = open + spare;
    let status = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .expect("prlimit");
    assert!(status.success());
    limit
}
