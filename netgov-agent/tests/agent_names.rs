//! Destination names on a simulated node: pods resolve through a real DNS
//! server (dnsmasq) in a namespace of its own, over UDP and TCP (A, AAAA,
//! a CNAME chain, NXDOMAIN, a short TTL), a bad resolver sends truncated
//! and malformed answers, an outside host sends an answer nobody asked
//! for, and pods open TLS connections (Python's `ssl`, so real
//! ClientHellos) — then `/metrics` and the flow log say who talked to
//! which name, learned how.
//!
//! Privileged: needs root. These tests fail (never skip) without it.

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::agent::{http_get, metric, start_agent};
use common::testbed;
use netgov_testbed::Pod;
use serde_json::Value;

/// Resolves a name the way a stub resolver does, with a query of its own
/// (so that every answer is known), then prints `rcode answers`.
const RESOLVE: &str = r#"
import random, socket, struct, sys
server, name, qtype, proto = sys.argv[1:5]
query = struct.pack(">HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0)
query += b"".join(bytes([len(l)]) + l.encode() for l in name.split("."))
query += b"\0" + struct.pack(">HH", {"A": 1, "AAAA": 28}[qtype], 1)
if proto == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(query, (server, 53))
    data = s.recv(4096)
else:
    s = socket.create_connection((server, 53), timeout=3)
    s.sendall(struct.pack(">H", len(query)) + query)
    length = struct.unpack(">H", s.recv(2))[0]
    data = b""
    while len(data) < length:
        data += s.recv(length - len(data))
    s.close()
print(data[3] & 15, struct.unpack(">H", data[6:8])[0])
"#;

/// Connects to `address port`, and either sends a few bytes or, given a
/// server name, starts a TLS handshake with it (the server hangs up).
const CONNECT: &str = r#"
import socket, ssl, sys
address, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((address, port), timeout=3)
if len(sys.argv) > 3:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        context.wrap_socket(s, server_hostname=sys.argv[3])
    except (OSError, ssl.SSLError):
        pass
else:
    s.sendall(b"upload")
    s.recv(16)
s.close()
"#;

/// Sends a ClientHello of about 1.9 KB — as large as one with post-quantum
/// key shares, so more than a segment — naming `argv[3]`, to
/// `argv[1]:argv[2]`.
const BIG_HELLO: &str = r#"
import os, socket, struct, sys
def vector(width, body):
    return len(body).to_bytes(width, "big") + body
name = sys.argv[3].encode()
server_name = struct.pack(">HH", 0, len(name) + 5) + vector(2, b"\x00" + vector(2, name))
padding = struct.pack(">H", 21) + vector(2, bytes(1700))
hello = b"\x03\x03" + os.urandom(32) + vector(1, os.urandom(32)) + vector(2, b"\x13\x01")
hello += vector(1, b"\x00") + vector(2, server_name + padding)
handshake = b"\x01" + len(hello).to_bytes(3, "big") + hello
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
s.sendall(b"\x16\x03\x01" + vector(2, handshake))
s.recv(16)
s.close()
"#;

/// Answers every query with bytes no resolver should send: an answer cut
/// short (`cut.*`), a question of an unknown class (`junk.*`), a question
/// whose name has a space (anything else).
const BAD_RESOLVER: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
while True:
    query, peer = s.recvfrom(512)
    head = query[:2] + b"\x81\x80\x00\x01"
    if b"\x03cut" in query:
        answer = head + b"\x00\x01\x00\x00\x00\x00" + b"\x03cut\x07example\x00\x00\x01\x00\x01"
        answer += b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x0a\xf4"
    elif b"\x04junk" in query:
        answer = head + b"\x00\x00\x00\x00\x00\x00" + b"\x04junk\x07example\x00\x00\x01\x99\x99"
    else:
        answer = head + b"\x00\x00\x00\x00\x00\x00" + b"\x04ju k\x07example\x00\x00\x01\x00\x01"
    s.sendto(answer, peer)
"#;

/// Sends, unasked, an answer naming 10.244.0.18 `planted.example` from
/// port 53 of the given address to a pod's port 5353.
const PLANT: &str = r#"
import socket, struct, sys
answer = struct.pack(">HHHHHH", 7, 0x8180, 1, 1, 0, 0)
answer += b"\x07planted\x07example\x00\x00\x01\x00\x01"
answer += b"\xc0\x0c\x00\x01\x00\x01" + struct.pack(">IH", 60, 4) + bytes([10, 244, 0, 18])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
s.sendto(answer, (sys.argv[2], 5353))
"#;

/// A process in a pod, killed on drop.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python(pod: &Pod, script: &str, args: &[&str]) -> String {
    let output = pod
        .netns
        .command("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "python3 {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Waits until `address:53` answers over UDP.
fn wait_for_resolver(client: &Pod, address: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = client
            .netns
            .command("python3")
            .arg("-c")
            .arg(RESOLVE)
            .args([address, "ready.example", "A", "udp"])
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "resolver {address} never answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Accepts connections on port 443 of every address of `pod`, reads what
/// comes and hangs up.
fn serve_forever(pod: &Pod) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let _detached = pod
        .netns
        .spawn_in(move || {
            let listener = std::net::TcpListener::bind("[::]:443").expect("bind");
            ready_tx.send(()).expect("ready");
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buffer = [0; 4096];
                let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                let _ = stream.read(&mut buffer);
                let _ = std::io::Write::write_all(&mut stream, b"ok");
            }
        })
        .expect("server namespace");
    ready_rx.recv().expect("server ready");
}

#[test]
fn egress_is_named_by_dns_answers_and_server_names() {
    // Pods: the seed scenario's .11–.15, then outside the cluster state:
    // the resolver .16, the upload host .17, the mirror .18, a bad
    // resolver .19.
    let testbed = testbed("names", 9);
    let pods = testbed.pods();
    let (ingestion, unauthorised) = (&pods[2], &pods[4]);
    let (resolver, upload, mirror, bad) = (&pods[5], &pods[6], &pods[7], &pods[8]);
    assert_eq!(ingestion.ipv4.to_string(), "10.244.0.13");
    assert_eq!(resolver.ipv4.to_string(), "10.244.0.16");

    let local_ttl = 1;
    let records = [
        format!("--local-ttl={local_ttl}"),
        "--host-record=upload.example,10.244.0.17".into(),
        format!("--host-record=v6.example,{}", upload.ipv6),
        "--host-record=tcp.example,10.244.0.17".into(),
        "--host-record=edge.cdn.example,10.244.0.18".into(),
        "--cname=models.mirror.example,edge.cdn.example".into(),
    ];
    let _dnsmasq = Background(
        netgov_testbed::dns::dnsmasq(&resolver.netns, "10.244.0.16", &records)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (cargo xtask setup installs it)"),
    );
    let _bad_resolver = Background(
        bad.netns
            .command("python3")
            .args(["-c", BAD_RESOLVER, "10.244.0.19"])
            .spawn()
            .expect("bad resolver"),
    );
    wait_for_resolver(ingestion, "10.244.0.16");
    wait_for_resolver(ingestion, "10.244.0.19");
    serve_forever(upload);
    serve_forever(mirror);

    let dir = std::env::temp_dir().join(format!("netgov-names-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cluster_state = dir.join("cluster.yaml");
    let seed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/seed-scenario/cluster.yaml"
    ))
    .expect("seed");
    // Data ingestion is dual-stack: its names are the pod's, whichever
    // family it asked or connects over.
    let dual_stack = seed.replace(
        "  podIP: 10.244.0.13\n",
        &format!(
            "  podIP: 10.244.0.13\n  podIPs: [{{ip: 10.244.0.13}}, {{ip: \"{}\"}}]\n",
            ingestion.ipv6
        ),
    );
    assert!(
        dual_stack != seed,
        "the seed scenario's data-ingestion pod moved"
    );
    std::fs::write(&cluster_state, dual_stack).expect("cluster state");
    let config = dir.join("agent.yaml");
    // The resolvers are expected egress (port 53), the mirror by name; a
    // name is kept 3 s at least.
    std::fs::write(
        &config,
        "expectedEgress:\n  - {namespace: ai-platform, cidrs: [10.244.0.16/32, 10.244.0.19/32], ports: [\"53\"]}\n  - {namespace: ai-platform, workload: data-ingestion-0, domains: [\"*.mirror.example\"]}\nnames: {minTtlSeconds: 3}\n",
    )
    .expect("config");
    let agent = start_agent(&testbed, &cluster_state, &config);

    let resolve = |pod: &Pod, server: &str, name: &str, qtype: &str, proto: &str| {
        python(pod, RESOLVE, &[server, name, qtype, proto])
    };
    let connect = |pod: &Pod, address: &str, sni: Option<&str>| {
        let mut args = vec![address, "443"];
        args.extend(sni);
        python(pod, CONNECT, &args);
    };
    let v6 = upload.ipv6.to_string();
    // An answer nobody asked for names nothing: the datapath only reads
    // answers on flows the pod sent on.
    python(upload, PLANT, &["10.244.0.17", "10.244.0.13"]);
    // First, a direct-to-IP TLS call: named by its ClientHello; and one to
    // the mirror before resolving it: a server name alone does not make
    // egress expected (the client writes it).
    connect(
        upload_client(pods),
        "10.244.0.17",
        Some("api.model-hub.example"),
    );
    connect(ingestion, "10.244.0.18", Some("eu.mirror.example"));
    // A over UDP, then upload to it: named, unexpected.
    assert_eq!(
        resolve(ingestion, "10.244.0.16", "upload.example", "A", "udp"),
        "0 1"
    );
    connect(ingestion, "10.244.0.17", None);
    // A CNAME chain to the mirror: expected by domain.
    assert_eq!(
        resolve(
            ingestion,
            "10.244.0.16",
            "models.mirror.example",
            "A",
            "udp"
        ),
        "0 2"
    );
    connect(ingestion, "10.244.0.18", None);
    // AAAA, connected over IPv6.
    assert_eq!(
        resolve(ingestion, "10.244.0.16", "v6.example", "AAAA", "udp"),
        "0 1"
    );
    connect(ingestion, &v6, None);
    // Over TCP; the same upload host, another name for it.
    assert_eq!(
        resolve(unauthorised, "10.244.0.16", "tcp.example", "A", "tcp"),
        "0 1"
    );
    connect(unauthorised, "10.244.0.17", None);
    // NXDOMAIN names nothing.
    assert_eq!(
        resolve(ingestion, "10.244.0.16", "gone.example", "A", "udp"),
        "3 0"
    );
    // Bad answers: counted, never trusted (cut.example would name .17).
    for name in ["cut.example", "junk.example", "space.example"] {
        resolve(ingestion, "10.244.0.19", name, "A", "udp");
    }
    // A ClientHello larger than a segment is named too.
    python(
        unauthorised,
        BIG_HELLO,
        &["10.244.0.18", "443", "big.model-hub.example"],
    );
    // After the TTL floor, a new connection to the upload host has no name
    // (and another pod's, which never resolved it, never had one).
    std::thread::sleep(Duration::from_secs(4));
    connect(ingestion, "10.244.0.17", None);
    connect(unauthorised, "10.244.0.18", None);

    let egress = |workload: &str, destination: &str, expected: &str| {
        (
            workload.to_owned(),
            destination.to_owned(),
            expected.to_owned(),
        )
    };
    let wanted = [
        (egress("data-ingestion-0", "upload.example", "false"), 1.0),
        (
            egress("data-ingestion-0", "models.mirror.example", "true"),
            1.0,
        ),
        (egress("data-ingestion-0", "v6.example", "false"), 1.0),
        (egress("unauthorised-0", "tcp.example", "false"), 1.0),
        (
            egress("monitoring-0", "api.model-hub.example", "false"),
            1.0,
        ),
        (
            egress("data-ingestion-0", "eu.mirror.example", "false"),
            1.0,
        ),
        (
            egress("unauthorised-0", "big.model-hub.example", "false"),
            1.0,
        ),
        (egress("data-ingestion-0", "10.244.0.0/24", "false"), 1.0),
        (egress("unauthorised-0", "10.244.0.0/24", "false"), 1.0),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let (_, text) = http_get(testbed.node(), "/metrics");
        let done = wanted.iter().all(|((workload, destination, expected), _)| {
            egress_count(&text, workload, destination, expected).is_some()
        });
        if done || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    for ((workload, destination, expected), count) in &wanted {
        assert_eq!(
            egress_count(&text, workload, destination, expected),
            Some(*count),
            "{workload} → {destination} (expected={expected})\n{text}"
        );
        let unexpected = metric(
            &text,
            "netgov_unexpected_egress_total",
            &[("src_workload", workload), ("destination", destination)],
        );
        let want = (expected == "false").then_some(*count);
        assert_eq!(unexpected, want, "{workload} → {destination}\n{text}");
    }
    // Every egress series is one of the above, or a workload's to the
    // resolvers (port 53, expected by address).
    let series = netgov_testbed::metrics_text::samples(&text)
        .into_iter()
        .filter(|s| s.name == "netgov_egress_flows_total")
        .count();
    assert_eq!(series, wanted.len() + 2, "{text}");
    let dns = |outcome: &str| metric(&text, "netgov_dns_answers_total", &[("outcome", outcome)]);
    // Readiness probes (ready.example: NXDOMAIN from dnsmasq, bad names
    // from the bad resolver) come before the agent started.
    assert_eq!(dns("addresses"), Some(4.0), "{text}");
    assert_eq!(dns("nxdomain"), Some(1.0), "{text}");
    let errors = |source: &str, kind: &str| {
        metric(
            &text,
            "netgov_name_errors_total",
            &[("source", source), ("kind", kind)],
        )
    };
    assert_eq!(errors("dns", "truncated"), Some(1.0), "{text}");
    assert_eq!(errors("dns", "malformed"), Some(1.0), "{text}");
    assert_eq!(errors("dns", "bad_name"), Some(1.0), "{text}");
    assert_eq!(errors("dns", "unsolicited"), Some(1.0), "{text}");
    let learned = |source: &str| metric(&text, "netgov_names_learned_total", &[("source", source)]);
    assert_eq!(learned("dns"), Some(4.0), "{text}");
    assert_eq!(learned("sni"), Some(3.0), "{text}");

    // The flow log carries the names and how each was learned.
    let log = std::fs::read_to_string(&agent.flow_log).expect("flow log");
    // Each flow's names, as logged (a flow is logged more than once).
    let names_of = |src: &str, dst: &str| -> BTreeSet<String> {
        log.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|entry| entry["src"] == src && entry["dst"] == dst && entry["dst_port"] == 443)
            .map(|entry| entry["dst_names"].to_string())
            .collect()
    };
    let json = |value: Value| value.to_string();
    assert_eq!(
        names_of("10.244.0.13", "10.244.0.18"),
        BTreeSet::from([
            json(serde_json::json!([{"name": "eu.mirror.example", "learned": "sni"}])),
            json(serde_json::json!([
                {"name": "models.mirror.example", "learned": "dns"},
                {"name": "edge.cdn.example", "learned": "dns"},
            ])),
        ]),
        "{log}"
    );
    assert_eq!(
        names_of("10.244.0.12", "10.244.0.17"),
        BTreeSet::from([json(serde_json::json!([
            {"name": "api.model-hub.example", "learned": "sni"}
        ]))]),
        "{log}"
    );
    assert_eq!(
        names_of(&ingestion.ipv6.to_string(), &v6),
        BTreeSet::from([json(
            serde_json::json!([{"name": "v6.example", "learned": "dns"}])
        )]),
        "{log}"
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(dir);
}

/// The pod that makes the direct-to-IP TLS call: monitoring, which
/// resolved nothing.
fn upload_client(pods: &[Pod]) -> &Pod {
    &pods[1]
}

/// `netgov_egress_flows_total` of one series.
fn egress_count(text: &str, workload: &str, destination: &str, expected: &str) -> Option<f64> {
    metric(
        text,
        "netgov_egress_flows_total",
        &[
            ("src_namespace", "ai-platform"),
            ("src_workload", workload),
            ("destination", destination),
            ("expected", expected),
        ],
    )
}
