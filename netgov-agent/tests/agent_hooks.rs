//! Evidence no hook can fool: CNIs that act at the hooks netgov shares.
//! - A legacy TC filter (clsact, cls_bpf) on the destination pod's
//!   host-side interface that drops denied traffic, in both attach modes:
//!   in TCX mode netgov's program runs before it and sees the packets go
//!   by, yet the flows must not read `gap`.
//! - A CNI delivering with `bpf_redirect_peer` (Cilium's BPF host
//!   routing), which skips the host-side egress hook: denied traffic that
//!   got through must read `gap`, answered (TCP) or one-way (UDP, seen by
//!   the socket hook).
//!
//! The CNI programs are the test bed's, from netgov's eBPF object.
//! Privileged: needs root. These tests fail (never skip) without it.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use aya::programs::tc::{self, NlOptions, TcAttachOptions};
use aya::programs::{SchedClassifier, TcAttachType};
use common::agent::{call, http_get, metric, start_agent_on, write_agent_files};
use common::testbed;
use netgov_testbed::{Pod, Testbed};

/// server-0 (default-deny ingress) and client-0, on node-1.
fn cluster_state(server: &Pod, client: &Pod) -> String {
    let pod = |name: &str, pod: &Pod| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: ml, labels: {{app: {name}}}}}\n\
             spec: {{nodeName: node-1, containers: [{{name: c, image: i}}]}}\nstatus: {{podIP: {}}}\n",
            pod.ipv4
        )
    };
    pod("server-0", server)
        + &pod("client-0", client)
        + "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
           metadata: {name: default-deny, namespace: ml}\n\
           spec: {podSelector: {matchLabels: {app: server-0}}, policyTypes: [Ingress]}\n"
}

/// Loads a test-bed program with `globals` and attaches it as a legacy
/// filter (clsact, direct action) at `priority`.
fn legacy_filter(
    testbed: &Testbed,
    interface: &str,
    attach_type: TcAttachType,
    program: &str,
    globals: &[(&'static str, u32)],
) -> aya::Ebpf {
    testbed
        .node()
        .run_in(|| {
            let mut loader = aya::EbpfLoader::new();
            loader.map_max_entries("NETGOV_FLOWS", 1024);
            for (name, value) in globals {
                loader.override_global(name, value, true);
            }
            let mut ebpf = loader
                .load(netgov_agent::capture::datapath::ebpf_object())
                .expect("load the test bed's programs");
            let _ = tc::qdisc_add_clsact(interface);
            let classifier: &mut SchedClassifier = ebpf
                .program_mut(program)
                .expect("program")
                .try_into()
                .expect("classifier");
            classifier.load().expect("verifier");
            classifier
                .attach_with_options(
                    interface,
                    attach_type,
                    TcAttachOptions::Netlink(NlOptions {
                        priority: 100,
                        ..NlOptions::default()
                    }),
                )
                .expect("attach the filter");
            ebpf
        })
        .expect("node namespace")
}

/// A TCP listener and a UDP socket on `port` in `pod`.
fn listen(pod: &Pod, port: u16) -> (TcpListener, UdpSocket) {
    let ip = pod.ipv4;
    pod.netns
        .run_in(move || {
            (
                TcpListener::bind((ip, port)).expect("tcp"),
                UdpSocket::bind((ip, port)).expect("udp"),
            )
        })
        .expect("pod namespace")
}

fn send_datagrams(client: &Pod, server: IpAddr, port: u16) {
    client
        .netns
        .run_in(|| {
            let socket = UdpSocket::bind(("0.0.0.0", 0)).expect("bind");
            for _ in 0..3 {
                socket
                    .send_to(b"denied", SocketAddr::new(server, port))
                    .expect("send");
            }
        })
        .expect("client namespace");
}

/// Waits until `count` violations are counted; returns the metrics.
fn violations(testbed: &Testbed, count: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, text) = http_get(testbed.node(), "/metrics");
        if metric(&text, "netgov_policy_violations_total", &[]) >= Some(count)
            || Instant::now() > deadline
        {
            return text;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn setup(tag: &str, attach_mode: &str) -> (Testbed, common::agent::Agent) {
    let testbed = testbed(tag, 2);
    let (state, config) = write_agent_files(
        tag,
        &cluster_state(&testbed.pods()[0], &testbed.pods()[1]),
        "answerWindowSeconds: 1\n",
    );
    let agent = start_agent_on(
        &testbed,
        "node-1",
        &state,
        &config,
        &[
            "--attach-mode",
            attach_mode,
            "--drain-interval",
            "0.3",
            "--udp-idle-timeout",
            "3",
        ],
    );
    (testbed, agent)
}

/// A legacy filter on the server's host-side interface drops port 7001.
fn later_filter_drop(attach_mode: &str, udp_enforcement: &str) {
    let (testbed, _agent) = setup(&format!("hk{attach_mode}"), attach_mode);
    let (server, client) = (&testbed.pods()[0], &testbed.pods()[1]);
    let _filter = legacy_filter(
        &testbed,
        &server.host_interface,
        TcAttachType::Egress,
        "netgov_testbed_drop",
        &[("TESTBED_DROP_PORT", 7001)],
    );
    let (_tcp, udp) = listen(server, 7001);
    assert!(
        !call(client, server.ipv4.into(), 7001),
        "the filter drops the connection"
    );
    send_datagrams(client, server.ipv4.into(), 7001);
    udp.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    assert!(
        udp.recv(&mut [0; 16]).is_err(),
        "the filter drops the datagrams"
    );

    let text = violations(&testbed, 2.0);
    // What the datapath found is reported.
    let info = [("attach_mode", attach_mode), ("socket_hook", "true")];
    assert_eq!(
        metric(&text, "netgov_datapath_info", &info),
        Some(1.0),
        "{text}"
    );
    let (status, ready) = http_get(testbed.node(), "/readyz");
    assert_eq!(status, 200);
    assert!(
        ready.contains(&format!("{attach_mode} attachment, socket hook on /")),
        "{ready}"
    );
    let count = |protocol: &str, enforcement: &str| {
        metric(
            &text,
            "netgov_policy_violations_total",
            &[("protocol", protocol), ("enforcement", enforcement)],
        )
    };
    assert_eq!(count("TCP", "enforced"), Some(1.0), "{text}");
    assert_eq!(count("UDP", udp_enforcement), Some(1.0), "{text}");
    assert_eq!(
        metric(&text, "netgov_policy_violations_total", &[]),
        Some(2.0),
        "never a gap: {text}"
    );
}

#[test]
fn a_legacy_filter_drop_after_our_tcx_hook_is_not_a_gap() {
    // TCX runs before every legacy filter: our hook saw the datagrams go
    // by, the socket hook saw no socket receive them. A filter or nobody
    // listening: the datagrams alone cannot say which.
    later_filter_drop("tcx", "unknown");
}

#[test]
fn a_legacy_filter_drop_before_our_netlink_filter_is_enforced() {
    // Our to-pod filter has the last priority: a drop before it is never
    // seen at the interface.
    later_filter_drop("netlink", "enforced");
}

#[test]
fn delivery_by_redirect_to_the_peer_is_a_gap() {
    let (testbed, agent) = setup("hkpeer", "tcx");
    let (server, client) = (&testbed.pods()[0], &testbed.pods()[1]);
    let server_ifindex = testbed
        .node()
        .run_in(|| {
            let name = std::ffi::CString::new(server.host_interface.clone()).expect("name");
            // SAFETY: a valid C string.
            unsafe { libc::if_nametoindex(name.as_ptr()) }
        })
        .expect("node namespace");
    assert_ne!(server_ifindex, 0);
    let _redirect = legacy_filter(
        &testbed,
        &client.host_interface,
        TcAttachType::Ingress,
        "netgov_testbed_redirect_peer",
        &[
            (
                "TESTBED_REDIRECT_DST",
                u32::from_ne_bytes(server.ipv4.octets()),
            ),
            ("TESTBED_REDIRECT_IFINDEX", server_ifindex),
        ],
    );
    let (tcp, udp) = listen(server, 7003);
    let answer = std::thread::spawn(move || {
        let (mut stream, _) = tcp.accept().expect("accept");
        let _ = stream.read(&mut [0; 16]);
        let _ = stream.write_all(b"ok");
    });
    assert!(call(client, server.ipv4.into(), 7003));
    answer.join().expect("server");
    send_datagrams(client, server.ipv4.into(), 7003);
    udp.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let received = std::iter::from_fn(|| udp.recv(&mut [0; 16]).ok()).count();
    assert_eq!(received, 3, "the redirect delivers the datagrams");

    let text = violations(&testbed, 2.0);
    for protocol in ["TCP", "UDP"] {
        assert_eq!(
            metric(
                &text,
                "netgov_policy_violations_total",
                &[("protocol", protocol), ("enforcement", "gap")]
            ),
            Some(1.0),
            "{protocol}: {text}"
        );
    }
    assert_eq!(
        metric(&text, "netgov_policy_violations_total", &[]),
        Some(2.0),
        "{text}"
    );
    // The redirect really skipped the server's interface hook: nothing
    // was seen delivered there.
    let log = std::fs::read_to_string(&agent.flow_log).expect("flow log");
    let udp_entry: serde_json::Value = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
        .find(|e| e["protocol"] == "UDP")
        .expect("the UDP flow is logged");
    let delivered_at_interface = udp_entry["observations"]
        .as_array()
        .expect("observations")
        .iter()
        .any(|o| o["role"] == "responder" && o["packets_out"].as_u64() > Some(0));
    assert!(!delivered_at_interface, "{udp_entry:#}");
    assert_eq!(udp_entry["delivered_to_stack"], true, "{udp_entry:#}");
}
