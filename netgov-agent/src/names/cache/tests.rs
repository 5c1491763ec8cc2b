use super::*;

/// The pod written `namespace/name`.
fn pod_ref(id: &str) -> PodRef {
    let (namespace, name) = id.split_once('/').expect("namespace/name");
    PodRef {
        namespace: namespace.into(),
        name: name.into(),
    }
}

const SECOND: i128 = 1_000_000_000;

fn host(text: &str) -> Hostname {
    Hostname::parse(text).expect("hostname")
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("socket address")
}

fn limits(max_entries: usize) -> NameLimits {
    NameLimits {
        min_ttl: Duration::from_secs(5),
        max_ttl: Duration::from_secs(60),
        max_entries,
        max_per_pod: max_entries,
    }
}

fn dns(name: &str) -> DestinationName {
    DestinationName {
        name: host(name),
        learned: NameSource::Dns,
    }
}

#[test]
fn a_name_is_the_resolving_pods_only() {
    let cache = NameCache::new(limits(100));
    let pod = Client::Pod(pod_ref("ai/ingest-0"));
    let upload: IpAddr = "203.0.113.20".parse().expect("ip");
    cache.resolved(
        pod.clone(),
        upload,
        host("upload.example"),
        Duration::from_secs(30),
        0,
    );
    assert_eq!(
        cache.names(
            std::slice::from_ref(&pod),
            (addr("10.244.0.5:40000"), addr("203.0.113.20:443")),
            SECOND
        ),
        vec![dns("upload.example")]
    );
    // Another pod connecting to the same address learned nothing; the
    // pod's other address (IPv6) shares its names.
    let other = Client::Pod(pod_ref("ai/notebook-0"));
    let server = addr("203.0.113.20:443");
    assert_eq!(
        cache.names(
            std::slice::from_ref(&other),
            (addr("10.244.0.6:40000"), server),
            SECOND
        ),
        vec![]
    );
    assert_eq!(
        cache.names(
            std::slice::from_ref(&pod),
            (addr("[fd00::5]:40000"), server),
            SECOND
        ),
        vec![dns("upload.example")]
    );
}

#[test]
fn ttls_are_clamped_and_names_expire() {
    let cache = NameCache::new(limits(100));
    let pod = Client::Pod(pod_ref("ai/ingest-0"));
    let rows = [("short.example", 1, 5), ("long.example", 86_400, 60)];
    for (i, (name, ttl, _)) in rows.iter().enumerate() {
        let address = IpAddr::from([192, 0, 2, i as u8]);
        cache.resolved(
            pod.clone(),
            address,
            host(name),
            Duration::from_secs(*ttl),
            0,
        );
    }
    for (i, (name, _, kept)) in rows.iter().enumerate() {
        let server = SocketAddr::new(IpAddr::from([192, 0, 2, i as u8]), 443);
        let client = addr("10.244.0.5:1");
        assert_eq!(
            cache.names(std::slice::from_ref(&pod), (client, server), kept * SECOND),
            vec![dns(name)]
        );
        assert_eq!(
            cache.names(
                std::slice::from_ref(&pod),
                (client, server),
                kept * SECOND + 1
            ),
            vec![]
        );
    }
}

#[test]
fn relearning_extends_and_a_connection_has_its_server_name() {
    let cache = NameCache::new(limits(100));
    let pod = Client::Pod(pod_ref("ai/ingest-0"));
    let server = addr("203.0.113.20:443");
    cache.resolved(
        pod.clone(),
        server.ip(),
        host("upload.example"),
        Duration::from_secs(5),
        0,
    );
    cache.resolved(
        pod.clone(),
        server.ip(),
        host("upload.example"),
        Duration::from_secs(5),
        4 * SECOND,
    );
    let client = addr("10.244.0.5:40000");
    cache.server_name(client, server, host("cdn.example"), 8 * SECOND);
    assert_eq!(
        cache.names(std::slice::from_ref(&pod), (client, server), 8 * SECOND),
        vec![
            dns("upload.example"),
            DestinationName {
                name: host("cdn.example"),
                learned: NameSource::Sni
            }
        ]
    );
    // A later connection on the same addresses and ports does not inherit
    // it.
    assert_eq!(
        cache.names(std::slice::from_ref(&pod), (client, server), 9 * SECOND),
        vec![dns("upload.example")]
    );
    // The server name is that connection's, not another's of the pod.
    assert_eq!(
        cache.names(
            std::slice::from_ref(&pod),
            (addr("10.244.0.5:40001"), server),
            8 * SECOND
        ),
        vec![dns("upload.example")]
    );
    assert_eq!(cache.size(), (2, 0));
}

#[test]
fn the_bound_evicts_the_soonest_to_expire_and_counts_them() {
    let cache = NameCache::new(limits(3));
    let pod = Client::Pod(pod_ref("ai/ingest-0"));
    for (i, ttl) in [50u64, 10, 40, 30].into_iter().enumerate() {
        let address = IpAddr::from([192, 0, 2, i as u8]);
        let name = host(&format!("n{i}.example"));
        cache.resolved(pod.clone(), address, name, Duration::from_secs(ttl), 0);
    }
    assert_eq!(cache.size(), (3, 1));
    let client = addr("10.244.0.5:1");
    let named = |i: u8| {
        !cache
            .names(
                std::slice::from_ref(&pod),
                (client, SocketAddr::from(([192, 0, 2, i], 443))),
                0,
            )
            .is_empty()
    };
    assert_eq!(
        [named(0), named(1), named(2), named(3)],
        [true, false, true, true]
    );
}

#[test]
fn expired_names_leave_after_a_grace() {
    let cache = NameCache::new(limits(100));
    let pod = Client::Pod(pod_ref("ai/ingest-0"));
    cache.resolved(
        pod.clone(),
        "192.0.2.1".parse().expect("ip"),
        host("a.example"),
        Duration::ZERO,
        0,
    );
    // Still there just after expiry (a flow that started in time is named).
    cache.resolved(
        pod.clone(),
        "192.0.2.2".parse().expect("ip"),
        host("b.example"),
        Duration::ZERO,
        10 * SECOND,
    );
    assert_eq!(cache.size(), (2, 0));
    cache.resolved(
        pod.clone(),
        "192.0.2.3".parse().expect("ip"),
        host("c.example"),
        Duration::ZERO,
        100 * SECOND,
    );
    assert_eq!(cache.size(), (1, 0));
}

#[test]
fn an_answer_after_the_flow_started_does_not_name_it() {
    let cache = NameCache::new(limits(100));
    let pod = Client::Pod(pod_ref("ai/ingest-0"));
    let flow = (addr("10.244.0.5:40000"), addr("198.51.100.7:443"));
    cache.resolved(
        pod.clone(),
        flow.1.ip(),
        host("models.mirror.example"),
        Duration::from_secs(30),
        5 * SECOND,
    );
    assert_eq!(
        cache.names(std::slice::from_ref(&pod), flow, 4 * SECOND),
        vec![]
    );
    assert_eq!(
        cache.names(std::slice::from_ref(&pod), flow, 5 * SECOND),
        vec![dns("models.mirror.example")]
    );
    // A server name is the connection's, whenever it came.
    cache.server_name(flow.0, flow.1, host("eu.mirror.example"), 9 * SECOND);
    assert_eq!(
        cache.names(std::slice::from_ref(&pod), flow, 4 * SECOND),
        vec![DestinationName {
            name: host("eu.mirror.example"),
            learned: NameSource::Sni
        }]
    );
}

#[test]
fn a_pod_over_its_quota_loses_its_own_names_only() {
    let cache = NameCache::new(NameLimits {
        max_per_pod: 2,
        ..limits(100)
    });
    let (busy, quiet) = (
        Client::Pod(pod_ref("kube-system/coredns-0")),
        Client::Pod(pod_ref("ai/ingest-0")),
    );
    let address = |i: u8| IpAddr::from([192, 0, 2, i]);
    cache.resolved(
        quiet.clone(),
        address(9),
        host("quiet.example"),
        Duration::from_secs(5),
        0,
    );
    for (i, ttl) in [40u64, 10, 50].into_iter().enumerate() {
        let name = host(&format!("n{i}.example"));
        cache.resolved(
            busy.clone(),
            address(i as u8),
            name,
            Duration::from_secs(ttl),
            0,
        );
    }
    assert_eq!(cache.size(), (3, 1));
    let named = |pod: &Client, i: u8| {
        let flow = (addr("10.244.0.5:1"), SocketAddr::new(address(i), 443));
        !cache.names(std::slice::from_ref(pod), flow, 0).is_empty()
    };
    // The busy pod's soonest to expire went; the quiet pod's stayed,
    // though it expires sooner still.
    assert_eq!(
        [
            named(&busy, 0),
            named(&busy, 1),
            named(&busy, 2),
            named(&quiet, 9)
        ],
        [true, false, true, true]
    );
}

#[test]
fn an_address_keeps_its_latest_names_latest_first() {
    let cache = NameCache::new(limits(1_000));
    let pod = Client::Pod(pod_ref("ai/ingest-0"));
    let cdn: IpAddr = "198.51.100.7".parse().expect("ip");
    for i in 0..20 {
        let name = host(&format!("site{i}.example"));
        cache.resolved(pod.clone(), cdn, name, Duration::from_secs(60), i * SECOND);
    }
    let flow = (addr("10.244.0.5:1"), SocketAddr::new(cdn, 443));
    let names = cache.names(std::slice::from_ref(&pod), flow, 30 * SECOND);
    let expected: Vec<DestinationName> = (4..20)
        .rev()
        .map(|i| dns(&format!("site{i}.example")))
        .collect();
    assert_eq!(names, expected);
    // Answered before the pod was known: filed under its address, found
    // through either key.
    let by_address = Client::Address("10.244.0.5".parse().expect("ip"));
    let early: IpAddr = "203.0.113.20".parse().expect("ip");
    cache.resolved(
        by_address.clone(),
        early,
        host("early.example"),
        Duration::from_secs(60),
        0,
    );
    let flow = (addr("10.244.0.5:1"), SocketAddr::new(early, 443));
    assert_eq!(
        cache.names(&[pod, by_address], flow, SECOND),
        vec![dns("early.example")]
    );
}

#[test]
fn a_name_learned_again_after_it_expired_counts_from_then() {
    let cache = NameCache::new(limits(100));
    let pod = Client::Pod(pod_ref("ai/ingest-0"));
    let server = addr("203.0.113.20:443");
    let flow = (addr("10.244.0.5:1"), server);
    cache.resolved(
        pod.clone(),
        server.ip(),
        host("a.example"),
        Duration::from_secs(5),
        0,
    );
    cache.resolved(
        pod.clone(),
        server.ip(),
        host("a.example"),
        Duration::from_secs(5),
        20 * SECOND,
    );
    let pods = std::slice::from_ref(&pod);
    // A flow in the gap (after expiry, before the new answer): no name.
    assert_eq!(cache.names(pods, flow, 10 * SECOND), vec![]);
    assert_eq!(cache.names(pods, flow, 21 * SECOND), vec![dns("a.example")]);
    // A flow from before the first expiry, judged only now, keeps it: the
    // expired entry stays beside the new one for a while.
    assert_eq!(cache.names(pods, flow, 4 * SECOND), vec![dns("a.example")]);
    assert_eq!(cache.size(), (2, 0));
}

#[test]
fn a_name_answered_again_is_kept_and_shown_first() {
    let cache = NameCache::new(NameLimits {
        max_per_pod: 16,
        ..limits(1_000)
    });
    let pod = Client::Pod(pod_ref("ai/ingest-0"));
    let cdn: IpAddr = "198.51.100.7".parse().expect("ip");
    let learn = |name: &str, at: i128| {
        cache.resolved(
            pod.clone(),
            cdn,
            host(name),
            Duration::from_secs(60),
            at * SECOND,
        );
    };
    for i in 0..16 {
        learn(&format!("site{i}.example"), i);
    }
    learn("site0.example", 16);
    learn("site16.example", 17);
    // The 17th name pushed out the one answered longest ago (site1), not
    // the refreshed one, and once: the pod's quota holds as well.
    assert_eq!(cache.size(), (16, 1));
    let flow = (addr("10.244.0.5:1"), SocketAddr::new(cdn, 443));
    let names = cache.names(std::slice::from_ref(&pod), flow, 20 * SECOND);
    assert_eq!(
        names[..3],
        [
            dns("site16.example"),
            dns("site0.example"),
            dns("site15.example")
        ]
    );
    assert!(!names.contains(&dns("site1.example")));
}
