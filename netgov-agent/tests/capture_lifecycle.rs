//! Attachment lifecycle of `netgov capture`: programs are on every pod
//! interface while it runs, including interfaces created after it started,
//! and nothing of netgov is left on any interface after it exits — by
//! `--duration`, SIGINT, SIGTERM, or even SIGKILL (TCX links die with the
//! process) — in both TCX and netlink (clsact) attachment modes.
//!
//! Privileged: needs root. These tests fail (never skip) without it.

mod common;

use std::time::Duration;

use aya::programs::{SchedClassifier, TcAttachType};
use common::{Capture, testbed};
use netgov_testbed::{Netns, Testbed};

/// Names of the TCX programs on `interface` in `netns`, both directions.
fn tcx_programs(netns: &Netns, interface: &str) -> Vec<String> {
    let interface = interface.to_owned();
    netns
        .run_in(move || {
            let mut names = Vec::new();
            for attach_type in [TcAttachType::Ingress, TcAttachType::Egress] {
                let (_, programs) =
                    SchedClassifier::query_tcx(&interface, attach_type).expect("query tcx");
                names.extend(
                    programs
                        .iter()
                        .map(|p| p.name_as_str().unwrap_or("<unnamed>").to_owned()),
                );
            }
            names
        })
        .expect("enter node namespace")
}

/// `tc filter show` output for both directions of `interface`.
fn tc_filters(netns: &Netns, interface: &str) -> String {
    ["ingress", "egress"]
        .iter()
        .map(|direction| {
            let output = netns
                .exec("tc", &["filter", "show", "dev", interface, direction])
                .expect("tc filter show");
            String::from_utf8_lossy(&output.stdout).into_owned()
        })
        .collect()
}

fn assert_attached_tcx(testbed: &Testbed) {
    for pod in testbed.pods() {
        let mut programs = tcx_programs(testbed.node(), &pod.host_interface);
        programs.sort();
        assert_eq!(
            programs,
            ["netgov_from_pod", "netgov_to_pod"],
            "on {}",
            pod.host_interface
        );
    }
}

fn assert_nothing_attached(testbed: &Testbed) {
    for pod in testbed.pods() {
        let programs = tcx_programs(testbed.node(), &pod.host_interface);
        assert!(
            programs.is_empty(),
            "left on {}: {programs:?}",
            pod.host_interface
        );
        let filters = tc_filters(testbed.node(), &pod.host_interface);
        assert!(
            !filters.contains("netgov"),
            "filters left on {}: {filters}",
            pod.host_interface
        );
    }
}

#[test]
fn sigterm_detaches_everything_tcx() {
    let testbed = testbed("term", 2);
    let capture = Capture::start(&testbed, &["--attach-mode", "tcx"]);
    assert_attached_tcx(&testbed);
    let output = capture.stop_with(libc::SIGTERM);
    assert!(
        output.summary["attach_failures"]
            .as_array()
            .expect("list")
            .is_empty()
    );
    assert_nothing_attached(&testbed);
}

#[test]
fn sigint_detaches_everything_netlink() {
    let testbed = testbed("int", 2);
    let capture = Capture::start(&testbed, &["--attach-mode", "netlink"]);
    for pod in testbed.pods() {
        let filters = tc_filters(testbed.node(), &pod.host_interface);
        assert!(filters.contains("netgov_from_pod"), "{filters}");
        assert!(filters.contains("netgov_to_pod"), "{filters}");
        assert!(tcx_programs(testbed.node(), &pod.host_interface).is_empty());
    }
    // Traffic is captured in this mode too.
    let pods = testbed.pods();
    pods[0]
        .netns
        .exec("ping", &["-c", "2", "-i", "0.2", &pods[1].ipv4.to_string()])
        .expect("ping");
    std::thread::sleep(Duration::from_millis(300));
    let output = capture.stop_with(libc::SIGINT);
    let echo = output.flows(&pods[0].ipv4.to_string(), &pods[1].ipv4.to_string(), "ICMP");
    assert_eq!(echo.len(), 1, "{:#?}", output.records);
    assert_eq!(echo[0]["packets_out"], 2);
    assert_eq!(echo[0]["packets_in"], 2);
    assert_nothing_attached(&testbed);
}

#[test]
fn duration_ends_the_capture_and_detaches() {
    let testbed = testbed("dur", 1);
    let capture = Capture::start(&testbed, &["--duration", "1"]);
    assert_attached_tcx(&testbed);
    let output = capture.wait();
    assert_eq!(output.summary["interfaces"], serde_json::json!(["vethp1"]));
    assert_nothing_attached(&testbed);
}

#[test]
fn sigkill_leaves_no_tcx_link_behind() {
    let testbed = testbed("kill", 1);
    let mut capture = Capture::start(&testbed, &["--attach-mode", "tcx"]);
    assert_attached_tcx(&testbed);
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(capture.pid() as libc::pid_t, libc::SIGKILL) };
    // The kernel releases the links when the process's descriptors close.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !tcx_programs(testbed.node(), &testbed.pods()[0].host_interface).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "TCX links outlived the process"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = &mut capture;
    assert_nothing_attached(&testbed);
}

#[test]
fn interface_created_after_start_is_attached() {
    let mut testbed = testbed("late", 1);
    let mut capture = Capture::start(&testbed, &[]);
    let late = testbed.add_pod("late").expect("add pod");
    let (late_ip, late_interface) = (late.ipv4, late.host_interface.clone());
    capture.wait_for_stderr(
        &format!("interface={late_interface}"),
        Duration::from_secs(10),
    );
    assert_attached_tcx(&testbed);
    let pods = testbed.pods();
    pods[1]
        .netns
        .exec("ping", &["-c", "2", "-i", "0.2", &pods[0].ipv4.to_string()])
        .expect("ping");
    std::thread::sleep(Duration::from_millis(300));
    let output = capture.stop();
    let echo = output.flows(&late_ip.to_string(), &pods[0].ipv4.to_string(), "ICMP");
    assert_eq!(echo.len(), 1, "{:#?}", output.records);
    assert_eq!(echo[0]["observations"][0]["interface"], late_interface);
    assert_eq!(echo[0]["observations"][0]["role"], "initiator");
    assert_eq!(echo[0]["packets_in"], 2);
    assert_nothing_attached(&testbed);
}

#[test]
fn netlink_filters_left_by_a_killed_capture_are_removed_at_the_next_start() {
    let testbed = testbed("stale", 1);
    let interface = &testbed.pods()[0].host_interface;
    let mut killed = Capture::start(&testbed, &["--attach-mode", "netlink"]);
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(killed.pid() as libc::pid_t, libc::SIGKILL) };
    let _ = &mut killed;
    drop(killed);
    // Filters survive their process in netlink mode.
    assert!(tc_filters(testbed.node(), interface).contains("netgov_from_pod"));
    let capture = Capture::start(&testbed, &["--attach-mode", "netlink"]);
    let filters = tc_filters(testbed.node(), interface);
    assert_eq!(
        filters.matches("name netgov_from_pod").count(),
        1,
        "{filters}"
    );
    assert_eq!(
        filters.matches("name netgov_to_pod").count(),
        1,
        "{filters}"
    );
    capture.stop();
    assert_nothing_attached(&testbed);
}

/// `max_entries` of every BPF map of `pid` with 44-byte keys and 72-byte
/// values (the flow map's `FlowKey` and `FlowStats`), from its file
/// descriptors' fdinfo.
fn flow_map_sizes(pid: u32) -> Vec<u32> {
    let mut sizes = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("fdinfo") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).unwrap_or_default();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        if field("key_size:").as_deref() == Some("44")
            && field("value_size:").as_deref() == Some("72")
            && let Some(max) = field("max_entries:").and_then(|v| v.parse().ok())
        {
            sizes.push(max);
        }
    }
    sizes
}

#[test]
fn the_flow_map_size_is_configurable() {
    let testbed = testbed("mapsize", 1);
    let capture = Capture::start(&testbed, &["--flow-map-entries", "4096"]);
    assert_eq!(flow_map_sizes(capture.pid()), [4096]);
    capture.stop_with(libc::SIGTERM);
    let capture = Capture::start(&testbed, &[]);
    assert_eq!(
        flow_map_sizes(capture.pid()),
        [netgov_common::FLOWS_MAX_ENTRIES]
    );
    capture.stop_with(libc::SIGTERM);
}

/// A datagram from the first pod to the second.
fn send_datagram(testbed: &Testbed, port: u16) {
    let server = testbed.pods()[1].ipv4;
    testbed.pods()[0]
        .netns
        .run_in(move || {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
            socket.send_to(b"seen?", (server, port)).expect("send");
        })
        .expect("pod namespace");
}

fn second_capture_leaves_the_first_alone(mode: &str) {
    let testbed = testbed(&format!("two{mode}"), 2);
    let interface = testbed.pods()[0].host_interface.clone();
    let first = Capture::start(&testbed, &["--attach-mode", mode]);
    let second = Capture::start(&testbed, &["--attach-mode", mode]);
    second.stop();
    if mode == "netlink" {
        let filters = tc_filters(testbed.node(), &interface);
        assert_eq!(
            (
                filters.matches("name netgov_from_pod").count(),
                filters.matches("name netgov_to_pod").count()
            ),
            (1, 1),
            "the first capture's filters outlive the second: {filters}"
        );
    }
    send_datagram(&testbed, 4242);
    std::thread::sleep(Duration::from_millis(500));
    let output = first.stop();
    let (client, server) = (testbed.pods()[0].ipv4, testbed.pods()[1].ipv4);
    let flow = output.flow(&client.to_string(), &server.to_string(), "UDP", 4242);
    assert_eq!(flow["packets_out"], 1, "{flow}");
    assert_nothing_attached(&testbed);
}

#[test]
fn a_second_capture_never_blinds_the_first_netlink() {
    second_capture_leaves_the_first_alone("netlink");
}

#[test]
fn a_second_capture_never_blinds_the_first_tcx() {
    second_capture_leaves_the_first_alone("tcx");
}

#[test]
fn filters_removed_by_another_tool_are_restored_at_the_next_drain() {
    let testbed = testbed("restore", 2);
    let interface = testbed.pods()[0].host_interface.clone();
    let mut capture = Capture::start(&testbed, &["--attach-mode", "netlink"]);
    testbed
        .node()
        .exec("tc", &["filter", "del", "dev", &interface, "ingress"])
        .expect("tc filter del");
    assert!(!tc_filters(testbed.node(), &interface).contains("netgov_from_pod"));
    capture.wait_for_stderr("attached again", Duration::from_secs(5));
    assert!(tc_filters(testbed.node(), &interface).contains("netgov_from_pod"));
    send_datagram(&testbed, 4343);
    std::thread::sleep(Duration::from_millis(500));
    let output = capture.stop();
    let (client, server) = (testbed.pods()[0].ipv4, testbed.pods()[1].ipv4);
    output.flow(&client.to_string(), &server.to_string(), "UDP", 4343);
    assert_nothing_attached(&testbed);
}
