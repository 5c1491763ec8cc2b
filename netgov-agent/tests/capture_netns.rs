//! `netgov capture` on a simulated node: pods in network namespaces send
//! real traffic, and every captured flow is checked exactly — tuple, packets,
//! bytes, state — against the traffic's known sizes or nftables counters in
//! the pod, an independent observer.
//!
//! Privileged: needs root. These tests fail (never skip) without it.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::time::Duration;

use common::{Capture, assert_counts, nft_counter, nft_load, testbed};
use netgov_testbed::Pod;
use serde_json::Value;

/// Lets the last packets of an exchange cross the veths before stopping.
fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

fn u(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

/// Client in `client` pod, server in `server` pod: request/response with
/// known sizes over TCP, then an orderly close. Returns the client's port.
fn tcp_exchange(client: &Pod, server: &Pod, server_ip: IpAddr, port: u16, sizes: &[usize]) -> u16 {
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            server
                .netns
                .run_in(|| {
                    let listener =
                        TcpListener::bind(SocketAddr::new(server_ip, port)).expect("bind");
                    ready_tx.send(()).expect("signal");
                    let (mut stream, _) = listener.accept().expect("accept");
                    stream.set_nodelay(true).expect("nodelay");
                    for &size in sizes {
                        let mut request = vec![0; size];
                        stream.read_exact(&mut request).expect("request");
                        stream.write_all(&vec![7; size / 2]).expect("response");
                    }
                    let mut rest = Vec::new();
                    stream.read_to_end(&mut rest).expect("eof");
                })
                .expect("server namespace");
        });
        ready_rx.recv().expect("server ready");
        client
            .netns
            .run_in(|| {
                let mut stream =
                    TcpStream::connect(SocketAddr::new(server_ip, port)).expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                for &size in sizes {
                    stream.write_all(&vec![1; size]).expect("request");
                    let mut response = vec![0; size / 2];
                    stream.read_exact(&mut response).expect("response");
                }
                let port = stream.local_addr().expect("local addr").port();
                stream
                    .shutdown(std::net::Shutdown::Write)
                    .expect("shutdown");
                let mut rest = Vec::new();
                stream.read_to_end(&mut rest).expect("eof");
                port
            })
            .expect("client namespace")
    })
}

/// Counts what the server pod receives from and sends to the client on
/// `port`, through nftables in the server's namespace.
fn count_tcp_in_server(server: &Pod, family: &str, client_ip: IpAddr, port: u16) {
    let ip = if family == "ip" { "ip" } else { "ip6" };
    nft_load(
        &server.netns,
        &format!(
            "table inet ngtest {{
               counter to_server {{}}
               counter from_server {{}}
               chain input {{ type filter hook input priority 0; {ip} saddr {client_ip} tcp dport {port} counter name \"to_server\"; }}
               chain output {{ type filter hook output priority 0; {ip} daddr {client_ip} tcp sport {port} counter name \"from_server\"; }}
             }}"
        ),
    );
}

fn assert_tcp_flow_matches_nftables(family: &str) {
    let testbed = testbed("tcp", 2);
    let (client, server) = (&testbed.pods()[0], &testbed.pods()[1]);
    let (client_ip, server_ip): (IpAddr, IpAddr) = if family == "ip" {
        (client.ipv4.into(), server.ipv4.into())
    } else {
        (client.ipv6.into(), server.ipv6.into())
    };
    count_tcp_in_server(server, family, client_ip, 8080);
    let capture = Capture::start(&testbed, &[]);
    let sizes = [100, 1000, 300];
    let client_port = tcp_exchange(client, server, server_ip, 8080, &sizes);
    settle();
    let output = capture.stop();

    let flow = output.flow(&client_ip.to_string(), &server_ip.to_string(), "TCP", 8080);
    let (packets_to_server, bytes_to_server) = nft_counter(&server.netns, "ngtest", "to_server");
    let (packets_from_server, bytes_from_server) =
        nft_counter(&server.netns, "ngtest", "from_server");
    assert_eq!(u(&flow["src_port"]), u64::from(client_port));
    assert_eq!(u(&flow["packets_out"]), packets_to_server, "{flow:#}");
    assert_eq!(u(&flow["bytes_out"]), bytes_to_server, "{flow:#}");
    assert_eq!(u(&flow["packets_in"]), packets_from_server, "{flow:#}");
    assert_eq!(u(&flow["bytes_in"]), bytes_from_server, "{flow:#}");
    // The payload is in there, with at least 20 + 20 header bytes a packet.
    let header = if family == "ip" { 40 } else { 60 };
    let payload_out: u64 = sizes.iter().map(|&s| s as u64).sum();
    assert!(u(&flow["bytes_out"]) >= payload_out + header * u(&flow["packets_out"]));
    assert_eq!(flow["state"], "closed");
    assert_eq!(flow["tcp_flags_out"], "SYN|ACK|PSH|FIN");
    assert_eq!(flow["tcp_flags_in"], "SYN|ACK|PSH|FIN");
    assert_eq!(flow["protocol"], "TCP");

    // Seen leaving the client's interface and entering the server's, with
    // the same counts at both points.
    let observations = flow["observations"].as_array().expect("observations");
    assert_eq!(observations.len(), 2, "{flow:#}");
    assert_eq!(observations[0]["interface"], client.host_interface);
    assert_eq!(observations[0]["role"], "initiator");
    assert_eq!(observations[1]["interface"], server.host_interface);
    assert_eq!(observations[1]["role"], "responder");
    for observation in observations {
        for field in ["packets_out", "bytes_out", "packets_in", "bytes_in"] {
            assert_eq!(observation[field], flow[field], "{field} at {observation}");
        }
    }
    assert_eq!(
        flow["interfaces"],
        serde_json::json!([client.host_interface, server.host_interface])
    );
    assert_eq!(output.kernel_counter("parse_errors"), 0);
    assert_eq!(output.kernel_counter("ringbuf_drops"), 0);
    assert_eq!(output.summary["kernel_evictions"], 0);
}

#[test]
fn tcp_exchange_ipv4_is_counted_exactly() {
    assert_tcp_flow_matches_nftables("ip");
}

#[test]
fn tcp_exchange_ipv6_is_counted_exactly() {
    assert_tcp_flow_matches_nftables("ip6");
}

/// Sends `count` datagrams of `size` bytes; the server answers each with
/// `reply_size` bytes unless that is 0.
fn udp_exchange(
    client: &Pod,
    server: &Pod,
    server_ip: IpAddr,
    count: usize,
    size: usize,
    reply_size: usize,
) -> u16 {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            server
                .netns
                .run_in(move || {
                    let socket = UdpSocket::bind(SocketAddr::new(server_ip, 5353)).expect("bind");
                    socket
                        .set_read_timeout(Some(Duration::from_millis(100)))
                        .expect("timeout");
                    ready_tx.send(()).expect("signal");
                    let mut buffer = [0; 2048];
                    let mut received = 0;
                    while received < count && done_rx.try_recv().is_err() {
                        if let Ok((_, peer)) = socket.recv_from(&mut buffer) {
                            received += 1;
                            if reply_size > 0 {
                                socket.send_to(&vec![9; reply_size], peer).expect("reply");
                            }
                        }
                    }
                })
                .expect("server namespace");
        });
        ready_rx.recv().expect("server ready");
        let port = client
            .netns
            .run_in(|| {
                let unspecified: IpAddr = if server_ip.is_ipv4() {
                    "0.0.0.0".parse().expect("ip")
                } else {
                    "::".parse().expect("ip")
                };
                let socket = UdpSocket::bind(SocketAddr::new(unspecified, 0)).expect("bind");
                socket
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .expect("timeout");
                for _ in 0..count {
                    socket
                        .send_to(&vec![3; size], SocketAddr::new(server_ip, 5353))
                        .expect("send");
                    if reply_size > 0 {
                        let mut buffer = [0; 2048];
                        socket.recv_from(&mut buffer).expect("reply");
                    } else {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                socket.local_addr().expect("local").port()
            })
            .expect("client namespace");
        // Let the server see the last datagram before telling it to stop.
        std::thread::sleep(Duration::from_millis(100));
        let _ = done_tx.send(());
        port
    })
}

#[test]
fn udp_with_and_without_reply() {
    let testbed = testbed("udp", 3);
    let pods = testbed.pods();
    let capture = Capture::start(&testbed, &[]);
    let replied_port = udp_exchange(&pods[0], &pods[1], pods[1].ipv4.into(), 3, 100, 50);
    let silent_port = udp_exchange(&pods[0], &pods[2], pods[2].ipv4.into(), 2, 200, 0);
    let v6_port = udp_exchange(&pods[1], &pods[2], pods[2].ipv6.into(), 4, 64, 32);
    settle();
    let output = capture.stop();

    let replied = output.flow(
        &pods[0].ipv4.to_string(),
        &pods[1].ipv4.to_string(),
        "UDP",
        5353,
    );
    assert_eq!(u(&replied["src_port"]), u64::from(replied_port));
    assert_counts(replied, (3, 3 * (20 + 8 + 100)), (3, 3 * (20 + 8 + 50)));
    assert_eq!(replied["state"], "replied");

    let silent = output.flow(
        &pods[0].ipv4.to_string(),
        &pods[2].ipv4.to_string(),
        "UDP",
        5353,
    );
    assert_eq!(u(&silent["src_port"]), u64::from(silent_port));
    assert_counts(silent, (2, 2 * (20 + 8 + 200)), (0, 0));
    assert_eq!(silent["state"], "attempted");
    // Delivered into the server's interface although nobody answered.
    let delivered = &silent["observations"][1];
    assert_eq!(delivered["interface"], pods[2].host_interface);
    assert_eq!(u(&delivered["packets_out"]), 2);

    let v6 = output.flow(
        &pods[1].ipv6.to_string(),
        &pods[2].ipv6.to_string(),
        "UDP",
        5353,
    );
    assert_eq!(u(&v6["src_port"]), u64::from(v6_port));
    assert_counts(v6, (4, 4 * (40 + 8 + 64)), (4, 4 * (40 + 8 + 32)));
    assert_eq!(v6["state"], "replied");
}

#[test]
fn icmp_echo_ipv4_and_ipv6() {
    let testbed = testbed("icmp", 2);
    let pods = testbed.pods();
    let capture = Capture::start(&testbed, &[]);
    for target in [pods[1].ipv4.to_string(), pods[1].ipv6.to_string()] {
        pods[0]
            .netns
            .exec(
                "ping",
                &["-c", "3", "-i", "0.2", "-s", "56", "-W", "2", &target],
            )
            .expect("ping");
    }
    settle();
    let output = capture.stop();

    for (src, dst, protocol, ip_header, icmp_type) in [
        (
            pods[0].ipv4.to_string(),
            pods[1].ipv4.to_string(),
            "ICMP",
            20,
            "ICMP",
        ),
        (
            pods[0].ipv6.to_string(),
            pods[1].ipv6.to_string(),
            "ICMPv6",
            40,
            "ICMPv6",
        ),
    ] {
        let flows = output.flows(&src, &dst, protocol);
        let echo: Vec<_> = flows.iter().filter(|f| f["dst_port"] == 0).collect();
        assert_eq!(echo.len(), 1, "{icmp_type} echo flows: {flows:#?}");
        let echo = echo[0];
        let size = ip_header + 8 + 56;
        assert_counts(echo, (3, 3 * size), (3, 3 * size));
        assert_eq!(echo["state"], "replied");
        assert_ne!(
            u(&echo["src_port"]),
            0,
            "the echo identifier is the source port"
        );
    }
}

/// Connects from `client`, expecting failure; returns how it failed.
fn failed_connect(
    client: &Pod,
    server: IpAddr,
    port: u16,
    timeout: Duration,
) -> std::io::ErrorKind {
    client
        .netns
        .run_in(|| {
            TcpStream::connect_timeout(&SocketAddr::new(server, port), timeout)
                .expect_err("the connection must fail")
                .kind()
        })
        .expect("client namespace")
}

#[test]
fn refused_tcp_connection() {
    let testbed = testbed("rst", 2);
    let pods = testbed.pods();
    let capture = Capture::start(&testbed, &[]);
    let server_ip = pods[1].ipv4;
    let error = failed_connect(&pods[0], server_ip.into(), 9, Duration::from_secs(2));
    assert_eq!(error, std::io::ErrorKind::ConnectionRefused);
    settle();
    let output = capture.stop();
    let flow = output.flow(&pods[0].ipv4.to_string(), &server_ip.to_string(), "TCP", 9);
    assert_eq!(flow["state"], "refused");
    assert_eq!((u(&flow["packets_out"]), u(&flow["packets_in"])), (1, 1));
    assert_eq!(flow["tcp_flags_out"], "SYN");
    assert_eq!(flow["tcp_flags_in"], "ACK|RST");
    // A bare RST+ACK: 20 bytes of IP, 20 of TCP.
    assert_eq!(u(&flow["bytes_in"]), 40);
}

#[test]
fn syn_dropped_in_the_server_namespace_is_attempted() {
    let testbed = testbed("drop", 2);
    let pods = testbed.pods();
    let client_ip = pods[0].ipv4;
    nft_load(
        &pods[1].netns,
        &format!(
            "table inet ngtest {{
               counter dropped {{}}
               chain input {{ type filter hook input priority 0; ip saddr {client_ip} tcp dport 9090 counter name \"dropped\" drop; }}
             }}"
        ),
    );
    let capture = Capture::start(&testbed, &[]);
    let server_ip = pods[1].ipv4;
    // The SYN and its first retransmission (after 1 s) are dropped.
    let error = failed_connect(
        &pods[0],
        server_ip.into(),
        9090,
        Duration::from_millis(1500),
    );
    assert_eq!(error, std::io::ErrorKind::TimedOut);
    settle();
    let output = capture.stop();
    let (dropped_packets, dropped_bytes) = nft_counter(&pods[1].netns, "ngtest", "dropped");
    assert!(dropped_packets >= 2, "SYN and a retransmission expected");
    let flow = output.flow(&client_ip.to_string(), &server_ip.to_string(), "TCP", 9090);
    assert_eq!(flow["state"], "attempted");
    assert_eq!(u(&flow["packets_out"]), dropped_packets);
    assert_eq!(u(&flow["bytes_out"]), dropped_bytes);
    assert_eq!((u(&flow["packets_in"]), u(&flow["bytes_in"])), (0, 0));
    assert_eq!(flow["tcp_flags_out"], "SYN");
    // The SYNs reached the server's interface: the drop happened inside.
    let server_side = &flow["observations"][1];
    assert_eq!(server_side["interface"], pods[1].host_interface);
    assert_eq!(server_side["role"], "responder");
    assert_eq!(u(&server_side["packets_out"]), dropped_packets);
}
