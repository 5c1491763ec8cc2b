use netgov_testbed::metrics_text::sample;

use super::*;
use crate::engine::tiers::Tier;
use crate::model::Name;
use crate::model::WORLD;

fn id(namespace: &str, workload: &str) -> Identity {
    Identity {
        namespace: Name::from(namespace),
        pod: None,
        workload: Name::from(workload),
    }
}

fn world() -> Identity {
    Identity::world()
}

fn tcp_flow(metrics: &Metrics, src: &Identity, dst: &Identity, verdict: Decision) {
    metrics.count_flow(src, dst, Protocol::Tcp, verdict);
}

/// The exposition with the samples of each family sorted (families keep
/// their registration order; samples within one come from a hash map).
fn normalized(text: &str) -> String {
    let mut out = Vec::new();
    let mut samples: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            samples.sort_unstable();
            out.append(&mut samples);
            out.push(line);
        } else {
            samples.push(line);
        }
    }
    samples.sort_unstable();
    out.append(&mut samples);
    out.join("\n") + "\n"
}

/// Every family populated once: the whole exposition is the contract
/// (names, help, types, label names and their values' spellings).
#[test]
fn the_exposition_is_pinned() {
    let metrics = Metrics::new(100);
    let (monitoring, serving, notebook) = (
        id("ai", "monitoring"),
        id("ai", "model-serving"),
        id("ai", "notebook"),
    );
    tcp_flow(&metrics, &monitoring, &serving, Decision::Allow);
    tcp_flow(&metrics, &monitoring, &serving, Decision::Allow);
    metrics.count_flow(&notebook, &world(), Protocol::Icmp, Decision::NotApplicable);
    metrics.count_violation(
        (&notebook, &serving),
        (Protocol::Tcp, 8080),
        (DeniedBy::Ingress, Tier::NetworkPolicy),
        Enforcement::Gap,
    );
    metrics.count_violation(
        (&notebook, &serving),
        (Protocol::Icmp, 2048),
        (DeniedBy::Both, Tier::Admin),
        Enforcement::Enforced,
    );
    metrics.count_egress(
        &notebook,
        ("203.0.113.10".parse().expect("ip"), None),
        (true, true, true),
    );
    metrics.count_egress(
        &notebook,
        ("203.0.113.99".parse().expect("ip"), None),
        (true, true, true),
    );
    metrics.set_unprotected_pods(&[(("dev".to_owned(), Direction::Egress), 3)].into());
    metrics.count_lost(LossStage::KernelRingbuf, 4);
    metrics.count_lost(LossStage::Evaluate, 1);
    metrics.record_capture(3, 10, 2);
    metrics.count_datapath(netgov_common::Counter::Packets, 120);
    metrics.count_datapath(netgov_common::Counter::DeliveryMapUpdateFailures, 1);
    metrics.count_lost(LossStage::KernelDeliveryEvidence, 1);
    metrics.record_flow_cache(1, 7);
    metrics.record_resource(
        ResourceKind::Pod,
        true,
        1,
        Some(std::time::Duration::from_secs(7)),
    );
    metrics.record_resource(ResourceKind::NetworkPolicy, false, 0, None);
    metrics.set_policy_compile_errors(1);
    metrics.count_flow_log_error();
    metrics.count_hubble_export_error();
    metrics.count_hubble_client_lost(5);
    metrics.count_hubble_rejected(crate::hubble::Rejection::Handshake);
    metrics.count_not_judged(crate::judge::NotJudged::IcmpError);
    metrics.set_ready(true);
    metrics.set_governed_namespaces(["ai"]);
    insta::assert_snapshot!(normalized(&metrics.encode()));
}

#[test]
fn cardinality_is_capped_and_world_is_free() {
    let metrics = Metrics::new(2);
    for workload in ["one", "two", "three"] {
        tcp_flow(&metrics, &id("a", workload), &world(), Decision::Allow);
    }
    tcp_flow(&metrics, &id("a", "four"), &id("a", "one"), Decision::Deny);
    let text = metrics.encode();
    let flows = |src: &str, dst: (&str, &str)| {
        sample(
            &text,
            "netgov_flows_total",
            &[
                ("src_namespace", "a"),
                ("src_workload", src),
                ("dst_namespace", dst.0),
                ("dst_workload", dst.1),
            ],
        )
    };
    assert_eq!(flows("one", ("", WORLD)), Some(1.0));
    assert_eq!(flows("two", ("", WORLD)), Some(1.0));
    assert_eq!(flows("three", ("", WORLD)), None);
    assert_eq!(flows(OVERFLOW, ("", WORLD)), Some(1.0));
    assert_eq!(flows(OVERFLOW, ("a", "one")), Some(1.0));
}

#[test]
fn deleted_workloads_lose_their_series() {
    let metrics = Metrics::new(10);
    tcp_flow(
        &metrics,
        &id("a", "gone"),
        &id("a", "stays"),
        Decision::Allow,
    );
    tcp_flow(&metrics, &id("a", "stays"), &world(), Decision::Allow);
    metrics.count_egress(
        &id("a", "gone"),
        ("198.51.100.7".parse().expect("ip"), None),
        (true, true, true),
    );
    metrics.forget_workload("a", "gone");
    let text = metrics.encode();
    assert!(!text.contains(r#""gone""#), "{text}");
    assert_eq!(
        sample(
            &text,
            "netgov_flows_total",
            &[("src_workload", "stays"), ("dst_workload", WORLD)]
        ),
        Some(1.0)
    );
    // The workload that stays keeps no trace of the one that left: the
    // index holds only the one series left, under each workload it names.
    let index = metrics.index();
    let stays = ("a".to_owned(), "stays".to_owned());
    assert_eq!(index.flows.get(&stays).map(|s| s.len()), Some(1));
    assert_eq!(index.flows.values().map(|s| s.len()).sum::<usize>(), 2);
    assert!(index.egress.is_empty());
}

#[test]
fn ipv6_destinations_aggregate_to_a_64() {
    assert_eq!(
        aggregate_destination("2001:db8:1:2:3:4:5:6".parse().expect("ip")),
        "2001:db8:1:2::/64"
    );
}

#[test]
fn cluster_errors_count_up_and_governed_namespaces_follow_the_state() {
    let metrics = Metrics::new(10);
    for errors in [2, 2, 5] {
        metrics.record_resource(ResourceKind::Pod, true, errors, None);
    }
    metrics.set_governed_namespaces(["ai-platform", "data"]);
    metrics.set_governed_namespaces(["ai-platform"]);
    let text = metrics.encode();
    assert_eq!(
        sample(&text, "netgov_cluster_errors_total", &[("resource", "Pod")]),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &text,
            "netgov_namespace_governed",
            &[("namespace", "ai-platform")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "netgov_namespace_governed", &[("namespace", "data")]),
        None
    );
}

#[test]
fn violation_ports_are_capped_per_workload_pair() {
    let metrics = Metrics::new(10);
    let db = id("a", "db");
    let violation = |src: &str, port: u16| {
        metrics.count_violation(
            (&id("a", src), &db),
            (Protocol::Tcp, port),
            (DeniedBy::Ingress, Tier::NetworkPolicy),
            Enforcement::Enforced,
        );
    };
    for port in 1..=(MAX_PORTS_PER_PAIR as u16 + 10) {
        violation("scanner", port);
    }
    // A known port stays itself; another pair has its own budget.
    violation("scanner", 1);
    violation("client", 5432);
    let text = metrics.encode();
    let series = |src: &str| {
        netgov_testbed::metrics_text::samples(&text)
            .iter()
            .filter(|s| s.labels.get("src_workload").map(String::as_str) == Some(src))
            .count()
    };
    let scanner = |port: &str| {
        sample(
            &text,
            "netgov_policy_violations_total",
            &[("src_workload", "scanner"), ("dst_port", port)],
        )
    };
    assert_eq!(series("scanner"), MAX_PORTS_PER_PAIR + 1, "{text}");
    assert_eq!(scanner(OVERFLOW), Some(10.0));
    assert_eq!(scanner("1"), Some(2.0));
    assert_eq!(series("client"), 1);
    metrics.forget_workload("a", "scanner");
    violation("scanner", 9999);
    assert_eq!(
        sample(
            &metrics.encode(),
            "netgov_policy_violations_total",
            &[("src_workload", "scanner"), ("dst_port", "9999")]
        ),
        Some(1.0)
    );
}

#[test]
fn build_and_datapath_info_name_what_runs() {
    let metrics = Metrics::new(10);
    metrics.set_build_info("1.2.3", "0123456789ab");
    let text = metrics.encode();
    assert_eq!(
        sample(
            &text,
            "netgov_build_info",
            &[("version", "1.2.3"), ("revision", "0123456789ab")]
        ),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn egress_is_named_up_to_the_cap_then_by_block() {
    use crate::names::Hostname;
    let metrics = Metrics::with_caps(10, 2);
    let ingest = id("ai", "ingest");
    let host = |text: &str| Hostname::parse(text).expect("hostname");
    let ip = |text: &str| text.parse::<IpAddr>().expect("ip");
    let upload = host("upload.example");
    metrics.count_egress(
        &ingest,
        (ip("203.0.113.20"), Some(&upload)),
        (true, true, true),
    );
    metrics.count_egress(
        &ingest,
        (ip("203.0.113.21"), Some(&upload)),
        (true, true, true),
    );
    let mirror = host("models.mirror.example");
    metrics.count_egress(
        &ingest,
        (ip("198.51.100.7"), Some(&mirror)),
        (true, false, false),
    );
    // A third name is past the cap: its address block stands for it.
    let third = host("third.example");
    metrics.count_egress(&ingest, (ip("192.0.2.9"), Some(&third)), (true, true, true));
    metrics.count_egress(&ingest, (ip("192.0.2.10"), None), (true, true, true));
    let text = metrics.encode();
    let ends = [("src_namespace", "ai"), ("src_workload", "ingest")];
    let egress = |destination: &str, expected: &str| {
        let labels = [
            ends[0],
            ends[1],
            ("destination", destination),
            ("expected", expected),
        ];
        sample(&text, "netgov_egress_flows_total", &labels)
    };
    let unexpected = |destination: &str| {
        let labels = [ends[0], ends[1], ("destination", destination)];
        sample(&text, "netgov_unexpected_egress_total", &labels)
    };
    assert_eq!(
        [
            egress("upload.example", "false"),
            egress("models.mirror.example", "true"),
            egress("192.0.2.0/24", "false"),
            egress("third.example", "false"),
        ],
        [Some(2.0), Some(1.0), Some(2.0), None]
    );
    assert_eq!(
        [
            unexpected("upload.example"),
            unexpected("models.mirror.example"),
            unexpected("192.0.2.0/24"),
        ],
        [Some(2.0), None, Some(2.0)]
    );
    // A deleted workload takes its series and its names with it.
    metrics.forget_workload("ai", "ingest");
    assert!(!metrics.encode().contains("ingest"));
    metrics.count_egress(&ingest, (ip("192.0.2.9"), Some(&third)), (true, true, true));
    let labels = [ends[0], ends[1], ("destination", "third.example")];
    assert_eq!(
        sample(&metrics.encode(), "netgov_unexpected_egress_total", &labels),
        Some(1.0)
    );
}
