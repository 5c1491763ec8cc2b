//! The agent's HTTP listener against a hostile pod: with host networking
//! every pod on the node reaches it. A flood of half-sent requests must
//! neither exhaust the agent's descriptors nor stop `/healthz`, burn CPU,
//! or hold connections forever.
//!
//! Privileged: needs root. These tests fail (never skip) without it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::agent::{
    AGENT_PORT, cpu_seconds, http_get, limit_descriptors, metric, start_agent_listening, try_get,
    write_agent_files,
};
use common::testbed;

#[test]
fn a_flood_of_half_sent_requests_does_not_take_the_agent_down() {
    let testbed = testbed("aghttp", 1);
    let (state, config) = write_agent_files(
        "aghttp",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: ml}\n",
        "answerWindowSeconds: 1\n",
    );
    let agent = start_agent_listening(&testbed, &state, &config, "0.0.0.0");
    let pid = agent.child.id();
    // Few descriptors to spare: without limits, 300 held connections
    // would exhaust them.
    limit_descriptors(pid, 100);

    // 300 connections from one pod, each sending half a request.
    let attacker = &testbed.pods()[0];
    let node = testbed.gateway_v4();
    let started = Instant::now();
    let flood: Vec<TcpStream> = attacker
        .netns
        .run_in(move || {
            (0..300)
                .map(|_| {
                    let mut stream = TcpStream::connect((node, AGENT_PORT)).expect("connect");
                    let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\n");
                    stream
                })
                .collect()
        })
        .expect("pod namespace");
    let before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(2));

    // The node's own clients (kubelet, a port-forward) are still served.
    let (status, body) = http_get(testbed.node(), "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let used = cpu_seconds(pid) - before;
    assert!(used < 1.0, "{used} CPU seconds in 2 s under the flood");
    let (_, text) = http_get(testbed.node(), "/metrics");
    assert_eq!(
        metric(&text, "netgov_http_connections_rejected_total", &[]),
        Some(268.0),
        "32 connections per address are served, the rest closed at once: {text}"
    );

    // Every half-sent request is closed by the server: at once past the
    // limit, after the 5 s header timeout otherwise.
    for mut stream in flood {
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let mut buffer = [0; 512];
        let closed = match stream.read(&mut buffer) {
            // A 408 may precede the close.
            Ok(n) if n > 0 => stream.read(&mut buffer).map(|n| n == 0).unwrap_or(true),
            Ok(_) => true,
            Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
        };
        assert!(closed, "a half-sent request was held open");
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "closed within the header timeout"
    );
    assert_eq!(try_get(testbed.node(), "/healthz").map(|r| r.0), Some(200));
}
