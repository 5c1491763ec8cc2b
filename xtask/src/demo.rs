//! `cargo xtask demo`: a simulated node of an AI platform in network
//! namespaces, real traffic between its "pods", and what `netgov capture`
//! saw of it.
//!
//! Today the demo shows the datapath: every flow on the node, with exact
//! counts and connection state. Policy verdicts, enforcement gaps and
//! unexpected egress join it with the agent.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use netgov_testbed::{Pod, Testbed};

use crate::{XtaskError, build_netgov, require_root, spawn};

/// Pods of the demo, in creation order.
const PODS: &[&str] = &[
    "model-serving",
    "monitoring",
    "data-ingestion",
    "database",
    "unauthorised",
];

/// Runs the demo.
///
/// # Errors
/// Without root, or when the namespaces or the capture cannot be set up.
pub fn demo() -> Result<(), XtaskError> {
    require_root(
        "demo",
        "it creates network namespaces and loads eBPF programs",
    )?;
    let netgov = build_netgov(false)?;
    let mut testbed = Testbed::new("ngdemo")?;
    for name in PODS {
        testbed.add_pod(name)?;
    }
    println!("\nA simulated node: one network namespace per pod, joined by a bridge.\n");
    for pod in testbed.pods() {
        println!(
            "  {:<15} {:<12} host interface {}",
            pod.name,
            pod.ipv4.to_string(),
            pod.host_interface
        );
    }

    let mut capture = spawn(
        testbed
            .node()
            .command(netgov.to_str().unwrap_or("netgov"))
            .args(["capture", "--iface", "vethp*", "--close-grace", "0.5"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )?;
    // Let the programs attach before the traffic starts.
    std::thread::sleep(Duration::from_secs(1));

    let pod = |name: &str| {
        testbed
            .pods()
            .iter()
            .find(|p| p.name == name)
            .expect("demo pod exists")
    };
    println!("\nTraffic:");
    println!("  monitoring     -> model-serving:8080  scrape (TCP, answered)");
    serve_and_call(
        pod("monitoring"),
        pod("model-serving"),
        8080,
        b"GET /metrics",
    )?;
    println!(
        "  unauthorised   -> model-serving:8080  inference call (TCP, answered: nothing enforces policy here)"
    );
    serve_and_call(
        pod("unauthorised"),
        pod("model-serving"),
        8080,
        b"POST /v1/infer",
    )?;
    println!("  data-ingestion -> database:5432       query (TCP, answered)");
    serve_and_call(pod("data-ingestion"), pod("database"), 5432, b"SELECT 1")?;
    println!("  data-ingestion -> database:6379       connection refused (TCP RST)");
    connect_refused(pod("data-ingestion"), pod("database").ipv4, 6379)?;
    println!("  monitoring     -> model-serving       ping (ICMP)");
    pod("monitoring").netns.exec(
        "ping",
        &[
            "-c",
            "2",
            "-i",
            "0.2",
            "-q",
            &pod("model-serving").ipv4.to_string(),
        ],
    )?;
    std::thread::sleep(Duration::from_millis(800));

    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(capture.id() as libc::pid_t, libc::SIGTERM) };
    let mut records = String::new();
    if let Some(mut stdout) = capture.stdout.take() {
        stdout
            .read_to_string(&mut records)
            .map_err(|source| XtaskError::Io {
                what: "reading the capture".into(),
                source,
            })?;
    }
    let _ = capture.wait();
    print_flows(&testbed, &records)?;
    println!("\nEvery row is one connection, counted in the kernel at the pods' interfaces and");
    println!("oriented client -> server. The namespaces are removed now.");
    Ok(())
}

/// Prints the captured flows with pod names instead of addresses, leaving
/// out the pods' own IPv6 multicast chatter (neighbour discovery, MLD).
fn print_flows(testbed: &Testbed, records: &str) -> Result<(), XtaskError> {
    let name_of = |ip: &str| {
        testbed
            .pods()
            .iter()
            .find(|p| p.ipv4.to_string() == ip || p.ipv6.to_string() == ip)
            .map_or_else(|| ip.to_owned(), |p| p.name.clone())
    };
    let interface_owner = |interface: &str| {
        testbed
            .pods()
            .iter()
            .find(|p| p.host_interface == interface)
            .map_or_else(|| interface.to_owned(), |p| p.name.clone())
    };
    println!("\nWhat netgov capture saw, one row per flow:\n");
    println!(
        "{:<7} {:<22} {:<22} {:<12} {:>8} {:>9} {:>8} {:>9}  SEEN AT (pod interfaces)",
        "PROTO", "CLIENT", "SERVER", "STATE", "PKTS->", "BYTES->", "<-PKTS", "<-BYTES"
    );
    let mut hidden = 0;
    for line in records.lines() {
        let flow: serde_json::Value =
            serde_json::from_str(line).map_err(|e| XtaskError::Output {
                tool: "netgov capture",
                detail: format!("{e}: {line}"),
            })?;
        let dst = flow["dst"].as_str().unwrap_or_default();
        if dst.starts_with("ff") {
            hidden += 1;
            continue;
        }
        let endpoint = |ip: &str, port: &serde_json::Value| format!("{}:{port}", name_of(ip));
        let number = |field: &str| flow[field].as_u64().unwrap_or_default();
        let seen_at: Vec<String> = flow["interfaces"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|i| i.as_str())
                    .map(interface_owner)
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "{:<7} {:<22} {:<22} {:<12} {:>8} {:>9} {:>8} {:>9}  {}",
            flow["protocol"].as_str().unwrap_or_default(),
            endpoint(flow["src"].as_str().unwrap_or_default(), &flow["src_port"]),
            endpoint(dst, &flow["dst_port"]),
            flow["state"].as_str().unwrap_or_default(),
            number("packets_out"),
            number("bytes_out"),
            number("packets_in"),
            number("bytes_in"),
            seen_at.join(", ")
        );
    }
    println!(
        "({hidden} flows of the pods' own IPv6 multicast chatter — neighbour discovery, MLD — not shown)"
    );
    Ok(())
}

fn serve_and_call(client: &Pod, server: &Pod, port: u16, request: &[u8]) -> Result<(), XtaskError> {
    let server_ip: IpAddr = server.ipv4.into();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            server.netns.run_in(|| -> std::io::Result<()> {
                let listener = TcpListener::bind(SocketAddr::new(server_ip, port))?;
                let _ = ready_tx.send(());
                let (mut stream, _) = listener.accept()?;
                let mut buffer = [0; 256];
                let n = stream.read(&mut buffer)?;
                stream.write_all(format!("200 OK ({n} bytes received)").as_bytes())?;
                Ok(())
            })
        });
        let _ = ready_rx.recv_timeout(Duration::from_secs(5));
        client
            .netns
            .run_in(|| -> std::io::Result<()> {
                let mut stream = TcpStream::connect(SocketAddr::new(server_ip, port))?;
                stream.write_all(request)?;
                stream.shutdown(std::net::Shutdown::Write)?;
                let mut response = Vec::new();
                stream.read_to_end(&mut response)?;
                Ok(())
            })?
            .map_err(|source| XtaskError::Io {
                what: format!("{} -> {}:{port}", client.name, server.name),
                source,
            })
    })
}

fn connect_refused(client: &Pod, server: Ipv4Addr, port: u16) -> Result<(), XtaskError> {
    client.netns.run_in(|| {
        let _ = TcpStream::connect_timeout(
            &SocketAddr::new(server.into(), port),
            Duration::from_secs(2),
        );
    })?;
    Ok(())
}
