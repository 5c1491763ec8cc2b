//! `netgov agent --hubble-listen-address` on a simulated node, read by
//! Hubble's own clients: the `hubble` CLI (observe with filters, follow,
//! status, list nodes, the export file as input), grpcurl (reflection,
//! health, peer.Peer/Notify) and hubble-audit2policy (the export file).
//! An allowed, a denied-but-delivered and a denied-and-dropped connection
//! each appear with Hubble's verdict and the deciding NetworkPolicy.
//!
//! Privileged: needs root. These tests fail (never skip) without it.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::agent::{call, serve, start_agent_on, write_agent_files};
use common::hubble::{command_in, hubble, json_lines, json_values};
use common::{nft_load, testbed};
use netgov_testbed::Pod;
use serde_json::Value;

/// Where the agents of these tests serve Hubble, in their node namespace.
const HUBBLE: &str = "127.0.0.1:4244";

/// Namespace `ml` (label team=ml): `server` (a Deployment's pod) admits
/// `client-a` only; `client-b` is denied. Two nodes, each running a pod of
/// the `netgov` DaemonSet.
fn cluster_state(pods: &[Pod]) -> String {
    let pod = |name: &str, app: &str, pod: &Pod, extra: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: ml, labels: {{app: {app}{extra}}}{owner}}}\n\
             spec: {{nodeName: node-1, containers: [{{name: c, image: i}}]}}\nstatus: {{podIP: {ip}}}\n",
            ip = pod.ipv4,
            owner = if extra.is_empty() {
                String::new()
            } else {
                format!(
                    ", ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, name: {app}-5d8f7c, uid: u1, controller: true}}]"
                )
            },
        )
    };
    let agent = |node: &str, ip: &str| {
        format!(
            "---\napiVersion: v1\nkind: Node\nmetadata: {{name: {node}}}\nstatus: {{addresses: [{{type: InternalIP, address: {ip}}}]}}\n\
             ---\napiVersion: v1\nkind: Pod\nmetadata: {{name: netgov-{node}, namespace: netgov, \
             ownerReferences: [{{apiVersion: apps/v1, kind: DaemonSet, name: netgov, uid: u2, controller: true}}]}}\n\
             spec: {{nodeName: {node}, hostNetwork: true, containers: [{{name: agent, image: netgov}}]}}\nstatus: {{podIP: {ip}}}\n"
        )
    };
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: ml, labels: {team: ml}}\n".to_owned()
        + &pod(
            "server-0",
            "server",
            &pods[0],
            ", pod-template-hash: 5d8f7c",
        )
        + &pod("client-a-0", "client-a", &pods[1], "")
        + &pod("client-b-0", "client-b", &pods[2], "")
        + "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
           metadata: {name: server-admits-a, namespace: ml}\n\
           spec: {podSelector: {matchLabels: {app: server}}, ingress: [{from: [{podSelector: {matchLabels: {app: client-a}}}]}]}\n"
        + &agent("node-1", "10.250.0.1")
        + &agent("node-2", "10.250.0.2")
}

/// A table's printed text and its first row below the header, by column.
fn first_row(output: &std::process::Output) -> (String, Vec<String>) {
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let row = text
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    (text, row)
}

/// A Hubble flow as one line: `src -> dst:port VERDICT [reason]
/// DIRECTION allowed:[..] denied:[..]`.
fn line(response: &Value) -> String {
    let flow = &response["flow"];
    let end = |e: &Value| {
        format!(
            "{}/{}",
            e["namespace"].as_str().unwrap_or(""),
            e["pod_name"].as_str().unwrap_or("")
        )
    };
    let policies = |key: &str| {
        flow[key].as_array().map_or("-".to_owned(), |list| {
            list.iter()
                .map(|p| {
                    format!(
                        "{}:{}/{}",
                        p["kind"].as_str().unwrap_or(""),
                        p["namespace"].as_str().unwrap_or(""),
                        p["name"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join(",")
        })
    };
    let reason = flow["drop_reason_desc"]
        .as_str()
        .map_or(String::new(), |r| format!(" {r}"));
    format!(
        "{} -> {}:{} {}{reason} {} allowed:{} denied:{}",
        end(&flow["source"]),
        end(&flow["destination"]),
        flow["l4"]["TCP"]["destination_port"],
        flow["verdict"].as_str().unwrap_or("VERDICT_UNKNOWN"),
        flow["traffic_direction"]
            .as_str()
            .unwrap_or("TRAFFIC_DIRECTION_UNKNOWN"),
        policies("ingress_allowed_by"),
        policies("ingress_denied_by"),
    )
}

fn lines(responses: &[Value]) -> Vec<String> {
    responses.iter().map(line).collect()
}

/// `hubble observe --last 1000 -o jsonpb ARGS`, its responses.
fn observe(testbed: &netgov_testbed::Testbed, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["observe", "--last", "1000", "-o", "jsonpb"];
    all.extend_from_slice(args);
    let output = hubble(testbed.node(), HUBBLE, &all);
    assert!(
        output.status.success(),
        "hubble {all:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    json_lines(&output)
}

const A_ALLOWED: &str = "ml/client-a-0 -> ml/server-0:8080 FORWARDED INGRESS allowed:NetworkPolicy:ml/server-admits-a denied:-";
const B_AUDIT: &str = "ml/client-b-0 -> ml/server-0:8080 AUDIT INGRESS allowed:- denied:NetworkPolicy:ml/server-admits-a";
const B_UNKNOWN: &str = "ml/client-b-0 -> ml/server-0:9090 VERDICT_UNKNOWN INGRESS allowed:- denied:NetworkPolicy:ml/server-admits-a";
const B_DROPPED: &str = "ml/client-b-0 -> ml/server-0:9090 DROPPED POLICY_DENIED INGRESS allowed:- denied:NetworkPolicy:ml/server-admits-a";
const A_ALLOWED_8081: &str = "ml/client-a-0 -> ml/server-0:8081 FORWARDED INGRESS allowed:NetworkPolicy:ml/server-admits-a denied:-";

#[test]
fn hubble_clients_show_netgov_verdicts() {
    let testbed = testbed("hubble", 3);
    let pods = testbed.pods();
    let (server, client_a, client_b) = (&pods[0], &pods[1], &pods[2]);
    let (state, config) =
        write_agent_files("hubble", &cluster_state(pods), "answerWindowSeconds: 1\n");
    let export = state.with_file_name("hubble-export.json");
    let _ = std::fs::remove_file(&export);
    // A firewall in the node stands in for an enforcing CNI on port 9090.
    nft_load(
        testbed.node(),
        &format!(
            "table bridge ngtest {{\n chain forward {{ type filter hook forward priority 0; ip daddr {} tcp dport 9090 drop; }}\n}}",
            server.ipv4
        ),
    );
    let mut agent = start_agent_on(
        &testbed,
        "node-1",
        &state,
        &config,
        &[
            "--drain-interval",
            "0.3",
            "--hubble-listen-address",
            HUBBLE,
            "--hubble-export-file-path",
            export.to_str().expect("UTF-8"),
            "--pod-namespace",
            "netgov",
            "--pod-name",
            "netgov-node-1",
        ],
    );

    // A follower of client-a's flows, started before any traffic.
    let mut follower = command_in(testbed.node(), "hubble")
        .args([
            "observe",
            "--server",
            HUBBLE,
            "--follow",
            "-o",
            "jsonpb",
            "--from-pod",
            "ml/client-a",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hubble observe --follow");
    let (tx, followed) = mpsc::channel();
    let stdout = follower.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(Duration::from_secs(1));

    let answered = serve(server, 8080, 2);
    assert!(call(client_a, server.ipv4.into(), 8080), "allowed");
    assert!(
        call(client_b, server.ipv4.into(), 8080),
        "denied, but nothing enforces it"
    );
    answered.join().expect("server");
    assert!(
        !call(client_b, server.ipv4.into(), 9090),
        "the firewall drops it"
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    let all = loop {
        let all = observe(&testbed, &[]);
        if all.len() >= 4 || Instant::now() > deadline {
            break all;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let seen = lines(&all);
    assert_eq!(
        seen.iter().cloned().collect::<BTreeSet<_>>(),
        [A_ALLOWED, B_AUDIT, B_UNKNOWN, B_DROPPED]
            .map(str::to_owned)
            .into(),
        "{seen:#?}"
    );
    assert_eq!(
        seen.len(),
        4,
        "one event per judgement and change: {seen:#?}"
    );
    let position = |wanted: &str| seen.iter().position(|l| l == wanted).expect("seen");
    assert!(position(B_UNKNOWN) < position(B_DROPPED), "{seen:#?}");

    // The allowed flow, whole where it is netgov's to say.
    let allowed = &all[position(A_ALLOWED)];
    let flow = &allowed["flow"];
    assert_eq!(allowed["node_name"], "node-1");
    assert_eq!(flow["node_name"], "node-1");
    assert_eq!(flow["Type"], "L3_L4");
    assert_eq!(flow["event_type"]["type"], 5);
    assert_eq!(flow["is_reply"], false);
    assert_eq!(flow["IP"]["source"], client_a.ipv4.to_string());
    assert_eq!(flow["IP"]["destination"], server.ipv4.to_string());
    assert_eq!(flow["IP"]["ipVersion"], "IPv4");
    assert_eq!(flow["l4"]["TCP"]["flags"]["SYN"], true);
    assert_eq!(
        flow["destination"]["labels"],
        serde_json::json!([
            "k8s:app=server",
            "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=ml",
            "k8s:io.cilium.k8s.namespace.labels.team=ml",
            "k8s:io.kubernetes.pod.namespace=ml",
            "k8s:pod-template-hash=5d8f7c",
        ])
    );
    assert_eq!(
        flow["destination"]["workloads"],
        serde_json::json!([{"name": "server", "kind": "Deployment"}])
    );
    assert_eq!(
        flow["source"]["workloads"],
        serde_json::json!([{"name": "client-a-0", "kind": "Pod"}])
    );
    assert_eq!(flow["emitter"]["name"], "netgov");
    let uuids: BTreeSet<&str> = all
        .iter()
        .map(|r| r["flow"]["uuid"].as_str().expect("uuid"))
        .collect();
    assert_eq!(uuids.len(), 4, "a uuid per event");

    // Filters, as a Hubble user types them.
    assert_eq!(
        lines(&observe(
            &testbed,
            &["--from-pod", "ml/client-b", "--verdict", "AUDIT"]
        )),
        [B_AUDIT]
    );
    assert_eq!(
        lines(&observe(&testbed, &["--to-port", "9090"])),
        [B_UNKNOWN, B_DROPPED]
    );
    assert_eq!(
        lines(&observe(&testbed, &["--verdict", "DROPPED"])),
        [B_DROPPED]
    );
    assert_eq!(
        lines(&observe(&testbed, &["--from-label", "app=client-a"])),
        [A_ALLOWED]
    );
    assert_eq!(
        lines(&observe(
            &testbed,
            &["--to-workload", "server", "--from-pod", "ml/client-a"]
        )),
        [A_ALLOWED]
    );
    assert_eq!(observe(&testbed, &["--type", "policy-verdict"]).len(), 4);
    assert_eq!(observe(&testbed, &["--type", "trace"]).len(), 0);
    assert_eq!(
        observe(&testbed, &["--from-pod", "client-a"]).len(),
        0,
        "no slash: namespace default"
    );
    let uuid = all[0]["flow"]["uuid"].as_str().expect("uuid");
    assert_eq!(
        lines(&observe(&testbed, &["--uuid", uuid])),
        [line(&all[0])]
    );
    // The compact view a user reads first: Hubble's policy-verdict line.
    let compact = hubble(
        testbed.node(),
        HUBBLE,
        &["observe", "--last", "1000", "--verdict", "AUDIT"],
    );
    let compact = String::from_utf8_lossy(&compact.stdout).into_owned();
    assert_eq!(compact.lines().count(), 1, "{compact}");
    for part in [
        "ml/client-b-0:",
        "-> ml/server-0:8080 (ID:",
        "policy-verdict:none INGRESS AUDITED (netgov: deny but delivered (gap); egress: ",
    ] {
        assert!(compact.contains(part), "{part} in {compact}");
    }
    let refused = hubble(testbed.node(), HUBBLE, &["observe", "--http-status", "200"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("InvalidArgument")
            && String::from_utf8_lossy(&refused.stderr)
                .contains("filter field http_status_code is not supported by netgov"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // The follower saw client-a's flow, and a new one as it is judged.
    let next = serve(server, 8081, 1);
    assert!(call(client_a, server.ipv4.into(), 8081));
    next.join().expect("server");
    let mut followed_lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while followed_lines.len() < 2 && Instant::now() < deadline {
        if let Ok(text) = followed.recv_timeout(Duration::from_millis(200)) {
            followed_lines.push(line(&serde_json::from_str(&text).expect("JSON")));
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    while let Ok(text) = followed.try_recv() {
        followed_lines.push(line(&serde_json::from_str(&text).expect("JSON")));
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert_eq!(followed_lines, [A_ALLOWED, A_ALLOWED_8081]);

    // Status and nodes, as `hubble` prints them.
    let status = hubble(testbed.node(), HUBBLE, &["status"]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.contains(&format!("Healthcheck (via {HUBBLE}): Ok")),
        "{status}"
    );
    assert!(
        status.contains("Current/Max Flows: 5/4,095 (0.12%)"),
        "{status}"
    );
    assert!(status.contains("Connected Nodes: 1/1"), "{status}");
    let nodes = hubble(testbed.node(), HUBBLE, &["list", "nodes"]);
    let (nodes, row) = first_row(&nodes);
    let row: Vec<&str> = row.iter().map(String::as_str).collect();
    assert_eq!(
        (row.first().copied(), row.get(1).copied()),
        (Some("node-1"), Some("Connected")),
        "{nodes}"
    );

    // grpcurl: reflection, health, and the peers Relay would dial.
    let grpcurl = |args: &[&str]| {
        command_in(testbed.node(), "grpcurl")
            .args(args)
            .output()
            .expect("run grpcurl")
    };
    let services = grpcurl(&["-plaintext", HUBBLE, "list"]);
    let services = String::from_utf8_lossy(&services.stdout).into_owned();
    for service in ["observer.Observer", "peer.Peer", "grpc.health.v1.Health"] {
        assert!(
            services.lines().any(|l| l == service),
            "{service} in {services}"
        );
    }
    let health = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"service":"hubble.server.Observer"}"#,
        HUBBLE,
        "grpc.health.v1.Health/Check",
    ]);
    assert_eq!(
        json_values(&health),
        [serde_json::json!({"status": "SERVING"})]
    );
    // Notify streams until the client leaves: it is cut after 3 s.
    let peers = grpcurl(&["-plaintext", "-max-time", "3", HUBBLE, "peer.Peer/Notify"]);
    assert_eq!(
        json_values(&peers),
        [
            serde_json::json!({"name": "node-1", "address": "10.250.0.1:4244", "type": "PEER_ADDED"}),
            serde_json::json!({"name": "node-2", "address": "10.250.0.2:4244", "type": "PEER_ADDED"}),
        ]
    );

    // The export file: every event, read back by Hubble's own tools.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&export).map_or(0, |t| t.lines().count()) < 5
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let export_path = export.to_str().expect("UTF-8");
    let from_file = command_in(testbed.node(), "hubble")
        .args(["observe", "--input-file", export_path, "-o", "jsonpb"])
        .output()
        .expect("hubble observe --input-file");
    let mut exported = lines(&json_lines(&from_file));
    exported.sort();
    let mut expected =
        [A_ALLOWED, A_ALLOWED_8081, B_AUDIT, B_UNKNOWN, B_DROPPED].map(str::to_owned);
    expected.sort();
    assert_eq!(exported, expected);
    let audited = command_in(testbed.node(), "hubble")
        .args([
            "observe",
            "--input-file",
            export_path,
            "-o",
            "jsonpb",
            "--verdict",
            "AUDIT",
        ])
        .output()
        .expect("hubble observe --input-file --verdict AUDIT");
    assert_eq!(lines(&json_lines(&audited)), [B_AUDIT]);
    // hubble-audit2policy turns the one AUDIT flow into the policies
    // that would admit it (`--no-enrich`: it reads no cluster).
    let policy = command_in(testbed.node(), "hubble-audit2policy")
        .args([
            "--dry-run",
            "--no-enrich",
            "--verdict",
            "AUDIT",
            export_path,
        ])
        .output()
        .expect("hubble-audit2policy");
    assert_eq!(
        String::from_utf8_lossy(&policy.stdout),
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: allow-client-b\n  namespace: ml\n\
         spec:\n  endpointSelector:\n    matchLabels:\n      app: client-b\n  egress:\n  - toPorts:\n    - ports:\n\
         \x20     - port: '8080'\n        protocol: TCP\n    toEndpoints:\n    - matchLabels:\n        app: server\n\
         ---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: allow-server\n  namespace: ml\n\
         spec:\n  endpointSelector:\n    matchLabels:\n      app: server\n  ingress:\n  - toPorts:\n    - ports:\n\
         \x20     - port: '8080'\n        protocol: TCP\n    fromEndpoints:\n    - matchLabels:\n        app: client-b\n",
        "{}",
        String::from_utf8_lossy(&policy.stderr)
    );
    assert!(
        String::from_utf8_lossy(&policy.stderr)
            .contains("Processed 5 flows - 1 matched - 2 policies generated"),
        "{}",
        String::from_utf8_lossy(&policy.stderr)
    );

    // The agent stops at SIGTERM although a follower and Relay's Notify
    // hold streams open: they are ended, not waited for. Each client has
    // printed a first line, so its stream is open.
    let first_line = |child: &mut std::process::Child| {
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the client's stream is open");
    };
    let mut follower = command_in(testbed.node(), "hubble")
        .args(["observe", "--server", HUBBLE, "--follow", "--last", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hubble observe --follow");
    first_line(&mut follower);
    let mut notify = command_in(testbed.node(), "grpcurl")
        .args(["-plaintext", HUBBLE, "peer.Peer/Notify"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn grpcurl");
    first_line(&mut notify);
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(agent.child.id() as i32, libc::SIGTERM) },
        0
    );
    let exited = |child: &mut std::process::Child| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break Some(status);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let status = exited(&mut agent.child).expect("the agent exits with streams open");
    assert!(status.success(), "{status}");
    // Ended, not aborted when the agent's limit for open connections ran
    // out (it says so when it does).
    let mut said = Vec::new();
    while let Ok(line) = agent.stderr.recv_timeout(Duration::from_secs(5)) {
        said.push(line);
    }
    assert!(
        !said.iter().any(|line| line.contains("still open at exit")),
        "{said:#?}"
    );
    for client in [&mut follower, &mut notify] {
        let ended = exited(client);
        let _ = client.kill();
        assert!(ended.is_some(), "a client's stream ends with the agent");
    }
}

/// A CA and what it signs, made with openssl in `dir`: `<tag>-ca.crt`,
/// the server's `<tag>-server.{crt,key}` (for `server_name`) and a
/// client's `<tag>-client.{crt,key}`.
fn issue(dir: &std::path::Path, tag: &str, server_name: &str) {
    let openssl = |args: &[&str]| {
        let output = std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl (installed by `cargo xtask setup`)");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let ca = format!("{tag}-ca");
    openssl(
        &[
            &["req", "-x509"][..],
            &key,
            &[
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={ca}"),
            ],
        ]
        .concat(),
    );
    for (end, extensions) in [
        (
            "server",
            format!("subjectAltName=DNS:{server_name}\nextendedKeyUsage=serverAuth\n"),
        ),
        (
            "client",
            "subjectAltName=DNS:relay.hubble-relay.cilium.io\nextendedKeyUsage=clientAuth\n"
                .to_owned(),
        ),
    ] {
        let name = format!("{tag}-{end}");
        std::fs::write(dir.join(format!("{name}.ext")), extensions).expect("write extensions");
        openssl(
            &[
                &["req"][..],
                &key,
                &[
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    &format!("/CN={name}"),
                ],
            ]
            .concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.crt"),
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
}

/// Puts `from` in place of `to` at once, as the kubelet swaps a renewed
/// Secret's files.
fn replace(dir: &std::path::Path, from: &str, to: &str) {
    let staged = dir.join(format!("{to}.new"));
    std::fs::copy(dir.join(from), &staged).expect("copy");
    std::fs::rename(&staged, dir.join(to)).expect("rename");
}

#[test]
fn hubble_over_mutual_tls_follows_renewed_certificates() {
    let testbed = testbed("hubble-tls", 1);
    let (state, config) = write_agent_files(
        "hubble-tls",
        &cluster_state_one_node(),
        "answerWindowSeconds: 1\n",
    );
    let dir = state.parent().expect("dir").to_path_buf();
    let server_name = netgov_agent::hubble::peer::tls_server_name("node-1");
    assert_eq!(server_name, "node-1.default.hubble-grpc.cilium.io");
    for tag in ["first", "renewed"] {
        issue(&dir, tag, &server_name);
    }
    for (from, to) in [
        ("first-server.crt", "tls.crt"),
        ("first-server.key", "tls.key"),
        ("first-ca.crt", "ca.crt"),
    ] {
        replace(&dir, from, to);
    }
    let path = |name: &str| dir.join(name).to_str().expect("UTF-8").to_owned();
    let _agent = start_agent_on(
        &testbed,
        "node-1",
        &state,
        &config,
        &[
            "--hubble-listen-address",
            HUBBLE,
            "--hubble-tls-cert-file",
            &path("tls.crt"),
            "--hubble-tls-key-file",
            &path("tls.key"),
            "--hubble-tls-client-ca-files",
            &path("ca.crt"),
        ],
    );
    // `hubble status` as Relay's certificate holder would ask: trusting
    // `ca`, presenting `client` (none: `None`).
    let status = |ca: &str, client: Option<&str>| {
        let mut args = vec![
            "status".to_owned(),
            "--tls".into(),
            "--tls-ca-cert-files".into(),
            path(&format!("{ca}-ca.crt")),
            "--tls-server-name".into(),
            server_name.clone(),
        ];
        if let Some(client) = client {
            args.extend([
                "--tls-client-cert-file".into(),
                path(&format!("{client}-client.crt")),
                "--tls-client-key-file".into(),
                path(&format!("{client}-client.key")),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = hubble(testbed.node(), HUBBLE, &args);
        output.status.success()
            && String::from_utf8_lossy(&output.stdout)
                .contains("Healthcheck (via 127.0.0.1:4244): Ok")
    };
    assert!(
        status("first", Some("first")),
        "mutual TLS with the first certificates"
    );
    assert!(
        !status("first", None),
        "a client without a certificate is refused"
    );
    assert!(!status("renewed", Some("renewed")), "not yet renewed");
    let nodes = hubble(
        testbed.node(),
        HUBBLE,
        &[
            "list",
            "nodes",
            "-o",
            "wide",
            "--tls",
            "--tls-ca-cert-files",
            &path("first-ca.crt"),
            "--tls-server-name",
            &server_name,
            "--tls-client-cert-file",
            &path("first-client.crt"),
            "--tls-client-key-file",
            &path("first-client.key"),
        ],
    );
    let (nodes, row) = first_row(&nodes);
    let row: Vec<&str> = row.iter().map(String::as_str).collect();
    assert_eq!(row.last().copied(), Some("Enabled"), "{nodes}");

    // The Secret is renewed (a new CA too): the next connection uses it.
    for (from, to) in [
        ("renewed-server.crt", "tls.crt"),
        ("renewed-server.key", "tls.key"),
        ("renewed-ca.crt", "ca.crt"),
    ] {
        replace(&dir, from, to);
    }
    assert!(
        status("renewed", Some("renewed")),
        "the renewed certificates are in force"
    );
    assert!(
        !status("first", Some("first")),
        "the first CA is trusted no more"
    );
    // A renewal caught half-written keeps the certificates in force.
    std::fs::write(
        dir.join("tls.key"),
        "-----BEGIN PRIVATE KEY-----\ntruncated",
    )
    .expect("write");
    assert!(
        status("renewed", Some("renewed")),
        "a key that does not load changes nothing"
    );
}

/// A cluster of one node and nothing on it.
fn cluster_state_one_node() -> String {
    "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nstatus: {addresses: [{type: InternalIP, address: 10.250.0.1}]}\n".to_owned()
}
