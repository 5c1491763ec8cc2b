//! `cargo xtask demo`: a simulated node of an AI platform in network
//! namespaces, the seed scenario's NetworkPolicies as its cluster state,
//! `netgov agent` judging real traffic, and a summary a newcomer can read.
//!
//! Nothing enforces policy on this bare node — that is the point: denied
//! traffic that gets through shows up as an enforcement gap. One firewall
//! rule in the node stands in for an enforcing CNI on one port, so an
//! enforced violation shows up too.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use netgov_testbed::metrics_text::{self, Sample};
use netgov_testbed::{Pod, Testbed};

use crate::demo_names::{self, Resolver};
use crate::{XtaskError, build_netgov, require_root, spawn, workspace_root};

/// Pods of the demo, in creation order (their IPs, 10.244.0.11 up, match
/// the seed scenario's).
const PODS: &[&str] = &[
    "model-serving",
    "monitoring",
    "data-ingestion",
    "database",
    "unauthorised",
    "internet",
    "kube-dns",
    "mirror",
];
/// The database's address in the network restrict-egress allows.
const DATABASE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
/// A documentation-range "internet" address, existing only in the demo.
const INTERNET: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const AGENT_PORT: u16 = 9464;
/// The node the seed scenario places its pods on.
const NODE: &str = "node-1";

/// The demo's cluster state: the seed scenario, the node, the names
/// objects (kept after the demo for the governance cycle).
pub fn cluster_state_path() -> std::path::PathBuf {
    std::env::temp_dir().join("netgov-demo-cluster.yaml")
}

fn io_error(what: &str) -> impl FnOnce(std::io::Error) -> XtaskError + '_ {
    move |source| XtaskError::Io {
        what: what.to_owned(),
        source,
    }
}

/// Where the demo agent records its flows (`target/demo/flows.jsonl`).
pub fn flow_log_path() -> std::path::PathBuf {
    workspace_root().join("target/demo/flows.jsonl")
}

/// Runs the demo.
///
/// # Errors
/// Without root, or when the namespaces or the agent cannot be set up.
pub fn demo() -> Result<(), XtaskError> {
    require_root(
        "demo",
        "it creates network namespaces and loads eBPF programs",
    )?;
    let netgov = build_netgov(false)?;
    let node = DemoNode::start(&netgov, true)?;
    node.run_traffic(true)?;
    // Two drains and the answer window.
    std::thread::sleep(Duration::from_millis(2500));
    let metrics = node.http_get("/metrics")?;
    node.stop();
    summarise(&metrics);
    crate::demo_cycle::governance_cycle(&netgov, &flow_log_path(), &cluster_state_path())?;
    println!("\nThe namespaces are removed now.");
    Ok(())
}

/// The demo's simulated node with `netgov agent` running in it; the agent
/// is stopped and the namespaces removed on drop.
pub struct DemoNode {
    agent: Option<std::process::Child>,
    resolver: Option<Resolver>,
    testbed: Testbed,
}

impl DemoNode {
    /// Builds the node, its pods and firewall, writes the cluster state and
    /// configuration, and starts the agent (ready when this returns).
    /// `narrate` prints what is built.
    ///
    /// # Errors
    /// When the namespaces or the agent cannot be set up.
    pub fn start(netgov: &std::path::Path, narrate: bool) -> Result<Self, XtaskError> {
        let mut testbed = Testbed::new("ngdemo")?;
        for name in PODS {
            testbed.add_pod(name)?;
        }
        let mut node = Self {
            agent: None,
            resolver: None,
            testbed,
        };
        // The database, the internet host and the mirror get addresses
        // outside the pod network; the node routes to them.
        let mirror = demo_names::MIRROR.parse::<Ipv4Addr>().unwrap_or(INTERNET);
        for (name, address) in [
            ("database", DATABASE),
            ("internet", INTERNET),
            ("mirror", mirror),
        ] {
            let host = node.pod(name);
            host.netns
                .ip(&["addr", "add", &format!("{address}/32"), "dev", "eth0"])?;
            node.node().ip(&[
                "route",
                "add",
                &format!("{address}/32"),
                "via",
                &host.ipv4.to_string(),
            ])?;
        }
        // The node routes between the pod network and those addresses over
        // the same bridge; it must not answer with ICMP redirects.
        for interface in ["all", "default", "br0"] {
            node.node()
                .sysctl(&format!("net.ipv4.conf.{interface}.send_redirects"), "0")?;
        }
        // A firewall rule in the node stands in for an enforcing CNI on one
        // port: it drops model-serving's port 9090 before delivery.
        let rules = "table bridge demo {\n chain forward { type filter hook forward priority 0; ip daddr 10.244.0.11 tcp dport 9090 drop; }\n}\n";
        let rules_file = std::env::temp_dir().join("netgov-demo.nft");
        std::fs::write(&rules_file, rules).map_err(io_error("writing the demo firewall"))?;
        node.node()
            .exec("nft", &["-f", rules_file.to_str().unwrap_or_default()])?;

        // The seed scenario (its pods run on this node), plus the node itself.
        let seed_path = workspace_root().join("examples/seed-scenario/cluster.yaml");
        let seed =
            std::fs::read_to_string(&seed_path).map_err(io_error("reading the seed scenario"))?;
        let cluster_state = cluster_state_path();
        // The node itself, so its own traffic is not mistaken for the world.
        let node_object = format!(
            "---\napiVersion: v1\nkind: Node\nmetadata: {{name: {NODE}}}\n\
             status: {{addresses: [{{type: InternalIP, address: {}}}]}}\n",
            netgov_testbed::GATEWAY_V4
        );
        std::fs::write(
            &cluster_state,
            seed + &node_object + demo_names::CLUSTER_OBJECTS,
        )
        .map_err(io_error("writing the demo cluster state"))?;
        let config = std::env::temp_dir().join("netgov-demo-agent.yaml");
        std::fs::write(
            &config,
            format!(
                "clusterCIDRs: [10.244.0.0/16]\nanswerWindowSeconds: 1\n{}",
                demo_names::EXPECTED_EGRESS
            ),
        )
        .map_err(io_error("writing the demo configuration"))?;
        let clients = [
            node.pod("model-serving"),
            node.pod("data-ingestion"),
            node.pod("unauthorised"),
        ];
        let resolver = Resolver::start(node.pod("kube-dns"), &clients, &INTERNET.to_string())?;
        node.resolver = Some(resolver);

        if narrate {
            node.describe();
        }
        // A fresh recording each run (the agent appends).
        let flow_log = flow_log_path();
        let _ = std::fs::remove_file(&flow_log);
        if let Some(dir) = flow_log.parent() {
            std::fs::create_dir_all(dir).map_err(io_error("creating target/demo"))?;
        }
        node.agent = Some(spawn(
            node.node()
                .command(netgov.to_str().unwrap_or("netgov"))
                .args(["agent", "--iface", "vethp*", "--node-name", NODE])
                .arg("--cluster-state")
                .arg(&cluster_state)
                .arg("--config")
                .arg(&config)
                .args(["--metrics-addr", &format!("127.0.0.1:{AGENT_PORT}")])
                .arg("--flow-log")
                .arg(&flow_log)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?);
        node.wait_ready()?;
        Ok(node)
    }

    fn describe(&self) {
        println!(
            "\nA simulated node ({NODE}): one network namespace per pod, joined by a bridge.\n"
        );
        for pod in self.testbed.pods() {
            let extra = match pod.name.as_str() {
                "database" => format!(" and {DATABASE}"),
                "internet" => format!(" and {INTERNET} (outside the cluster: upload.example)"),
                "kube-dns" => " (dnsmasq: the pods' resolver)".to_owned(),
                "mirror" => format!(
                    " and {} (outside the cluster: models.mirror.example, a CNAME)",
                    demo_names::MIRROR
                ),
                _ => String::new(),
            };
            println!("  {:<15} {}{extra}", pod.name, pod.ipv4);
        }
        println!("\nPolicies (examples/seed-scenario/cluster.yaml), namespace ai-platform:");
        println!("  default-deny       every pod isolated for ingress");
        println!("  allow-monitoring   role=monitoring -> app=model-serving on TCP 8080");
        println!("  restrict-egress    app=data-ingestion may only reach 10.0.0.0/16 on TCP 5432");
        println!("  allow-dns          every pod may reach kube-system on port 53");
        println!("Expected egress (agent configuration): model-serving-0 to *.mirror.example");
    }

    /// The node's network namespace (the agent's metrics listen on
    /// 127.0.0.1:9464 there).
    pub fn node(&self) -> &netgov_testbed::Netns {
        self.testbed.node()
    }

    fn pod(&self, name: &str) -> &Pod {
        self.testbed
            .pods()
            .iter()
            .find(|p| p.name == name)
            .expect("demo pod")
    }

    /// Generates the demo's traffic: allowed, denied but delivered (gaps),
    /// denied and dropped (enforced), unexpected egress. `narrate` prints
    /// each flow and its outcome.
    ///
    /// # Errors
    /// When a namespace cannot be entered.
    pub fn run_traffic(&self, narrate: bool) -> Result<(), XtaskError> {
        let model_serving = IpAddr::from(self.pod("model-serving").ipv4);
        let flows: [(&str, &str, IpAddr, u16, &str); 4] = [
            (
                "monitoring",
                "model-serving",
                model_serving,
                8080,
                "scrape: allowed",
            ),
            (
                "unauthorised",
                "model-serving",
                model_serving,
                8080,
                "inference call: denied, but nothing stops it",
            ),
            (
                "unauthorised",
                "model-serving",
                model_serving,
                9090,
                "admin port: denied, and the firewall drops it",
            ),
            (
                "data-ingestion",
                "database",
                DATABASE.into(),
                5432,
                "query: allowed by restrict-egress",
            ),
        ];
        if narrate {
            println!("\nTraffic:");
        }
        for (client, server, address, port, what) in flows {
            let answered = serve_and_call(self.pod(client), self.pod(server), address, port)?;
            let outcome = if answered { "answered" } else { "no answer" };
            if narrate {
                println!("  {client:<15} -> {server}:{port:<5} {what} ({outcome})");
            }
        }
        // Named destinations: resolved through kube-dns, or named by the
        // ClientHello of a call straight to an address.
        let named: [(&str, &str, &str, Option<&str>, &str); 3] = [
            (
                "data-ingestion",
                "internet",
                "upload.example",
                None,
                "upload: denied by restrict-egress, but nothing stops it",
            ),
            (
                "model-serving",
                "mirror",
                "models.mirror.example",
                None,
                "model download: expected by name (*.mirror.example)",
            ),
            (
                "unauthorised",
                "internet",
                "203.0.113.10",
                Some("api.model-hub.example"),
                "HTTPS straight to an address: nobody declared it",
            ),
        ];
        for (client, server, host, server_name, what) in named {
            let listener = serve_once(self.pod(server), 443)?;
            let said = demo_names::call(self.pod(client), host, 443, server_name)?;
            let _ = listener.join();
            if narrate {
                println!("  {client:<15} -> {host}:443 {what} ({said})");
            }
        }
        Ok(())
    }

    /// Stops the agent (SIGTERM) and removes the namespaces.
    pub fn stop(self) {}

    fn wait_ready(&self) -> Result<(), XtaskError> {
        for _ in 0..100 {
            if self
                .http_get("/readyz")
                .is_ok_and(|body| body.starts_with("ready"))
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(XtaskError::Output {
            tool: "netgov agent",
            detail: "not ready after 10 s".into(),
        })
    }

    /// GETs `path` from the agent.
    ///
    /// # Errors
    /// When the agent does not answer.
    pub fn http_get(&self, path: &str) -> Result<String, XtaskError> {
        http_get(self.node(), AGENT_PORT, path)
    }
}

impl Drop for DemoNode {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(agent.id() as libc::pid_t, libc::SIGTERM) };
            let _ = agent.wait();
        }
    }
}

/// GETs `path` from `127.0.0.1:port` inside `netns`; returns the body.
///
/// # Errors
/// When nothing answers.
pub fn http_get(
    netns: &netgov_testbed::Netns,
    port: u16,
    path: &str,
) -> Result<String, XtaskError> {
    Ok(netns.http_get(port, path)?)
}

/// A one-request server on `port` of every address of `server`, ready
/// when this returns.
fn serve_once(
    server: &Pod,
    port: u16,
) -> Result<std::thread::JoinHandle<std::io::Result<()>>, XtaskError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let listener = server.netns.spawn_in(move || -> std::io::Result<()> {
        let listener = TcpListener::bind(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port))?;
        listener.set_nonblocking(false)?;
        let _ = ready_tx.send(());
        let (mut stream, _) = listener.accept()?;
        let mut buffer = [0; 2048];
        let n = stream.read(&mut buffer)?;
        stream.write_all(format!("200 OK ({n} bytes received)").as_bytes())
    })?;
    let _ = ready_rx.recv_timeout(Duration::from_secs(5));
    Ok(listener)
}

/// Runs a one-request server in `server` and calls it from `client`;
/// returns whether an answer came back.
fn serve_and_call(
    client: &Pod,
    server: &Pod,
    address: IpAddr,
    port: u16,
) -> Result<bool, XtaskError> {
    let listener = serve_once(server, port)?;
    let answered = client.netns.run_in(move || {
        let Ok(mut stream) = TcpStream::connect_timeout(
            &SocketAddr::new(address, port),
            Duration::from_millis(1500),
        ) else {
            return false;
        };
        let _ = stream.write_all(b"hello");
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut response = Vec::new();
        stream.read_to_end(&mut response).is_ok() && !response.is_empty()
    })?;
    if !answered {
        // Release the server still waiting for a connection.
        let _ = server
            .netns
            .run_in(move || TcpStream::connect((IpAddr::from([127, 0, 0, 1]), port)));
    }
    let _ = listener.join();
    Ok(answered)
}

fn summarise(metrics: &str) {
    // Flows NetworkPolicy does not govern (the pods' own IPv6 neighbour
    // discovery, the node) are left out of the summary.
    let shown = |line: &str| !line.ends_with(" 0") && !line.contains("verdict=\"not-applicable\"");
    let lines = |name: &str| -> Vec<&str> {
        metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && shown(l))
            .collect()
    };
    let samples = |name: &str| -> Vec<Sample> {
        metrics_text::samples(metrics)
            .into_iter()
            .filter(|s| s.name == name && s.value != 0.0)
            .filter(|s| s.labels.get("verdict").map(String::as_str) != Some("not-applicable"))
            .collect()
    };
    let label = |sample: &Sample, name: &str| sample.labels.get(name).cloned().unwrap_or_default();
    let who = |sample: &Sample, side: &str| {
        let namespace = label(sample, &format!("{side}_namespace"));
        let workload = label(sample, &format!("{side}_workload"));
        if namespace.is_empty() {
            format!("{workload} (outside the cluster)")
        } else {
            format!("{namespace}/{workload}")
        }
    };
    println!("\nWhat netgov found:\n");
    println!("Policy violations (flows the policies deny), and whether the network enforced them:");
    for sample in samples("netgov_policy_violations_total") {
        let meaning = match label(&sample, "enforcement").as_str() {
            "gap" => "GAP: it got through — nothing enforces this policy",
            "enforced" => "enforced: only the attempts were seen",
            _ => "unknown: not enough seen yet",
        };
        println!(
            "  {} -> {} port {}, denied by {}: {meaning}",
            who(&sample, "src"),
            who(&sample, "dst"),
            label(&sample, "dst_port"),
            label(&sample, "denied_by"),
        );
    }
    println!(
        "\nUnexpected egress (to outside the cluster, declared by no policy or configuration):"
    );
    for sample in samples("netgov_unexpected_egress_total") {
        println!(
            "  {}/{} -> {}",
            label(&sample, "src_namespace"),
            label(&sample, "src_workload"),
            label(&sample, "destination")
        );
    }
    println!(
        "\nEgress by destination (named from the pods' DNS answers and TLS ClientHellos, else by address block):"
    );
    for sample in samples("netgov_egress_flows_total") {
        let expected = if label(&sample, "expected") == "true" {
            "expected"
        } else {
            "UNEXPECTED"
        };
        println!(
            "  {}/{} -> {}: {} flow(s), {expected}",
            label(&sample, "src_namespace"),
            label(&sample, "src_workload"),
            label(&sample, "destination"),
            sample.value
        );
    }
    println!("\nUnprotected pods (no policy isolates them):");
    for sample in samples("netgov_unprotected_pods") {
        println!(
            "  namespace {}: {} pod(s) open for {}",
            label(&sample, "namespace"),
            sample.value,
            label(&sample, "direction")
        );
    }
    println!("\nThe matching lines of /metrics:\n");
    for name in [
        "netgov_flows_total",
        "netgov_policy_violations_total",
        "netgov_unexpected_egress_total",
        "netgov_egress_flows_total",
        "netgov_unprotected_pods",
    ] {
        for line in lines(name) {
            println!("  {line}");
        }
    }
}
