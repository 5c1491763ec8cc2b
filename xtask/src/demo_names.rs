//! The demo's names: a cluster DNS server (dnsmasq, as `kube-dns` in
//! `kube-system`) that the pods resolve through with their own stub
//! resolver (glibc's `getaddrinfo`), named hosts outside the cluster, and
//! a TLS call straight to an address — so the egress netgov reports
//! carries names learned from DNS answers and ClientHellos.

use std::process::{Child, Stdio};

use netgov_testbed::{Netns, Pod};

use crate::{XtaskError, spawn};

/// Where the demo's resolver listens (its pod's address).
pub const RESOLVER: &str = "10.244.0.17";
/// The model mirror's address outside the cluster.
pub const MIRROR: &str = "198.51.100.7";

/// The resolver pod and the policy letting data ingestion (the one pod
/// whose egress is restricted) use it, added to the cluster state: egress
/// to DNS is allowed, as every real cluster that restricts egress must.
pub const CLUSTER_OBJECTS: &str = "---
apiVersion: v1
kind: Namespace
metadata: {name: kube-system}
---
apiVersion: v1
kind: Pod
metadata: {name: kube-dns-0, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec: {nodeName: node-1, containers: [{name: dnsmasq, image: dnsmasq}]}
status: {podIP: 10.244.0.17}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-dns, namespace: ai-platform}
spec:
  podSelector: {matchLabels: {app: data-ingestion}}
  policyTypes: [Egress]
  egress:
    - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}}]
      ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]
";

/// The agent's configuration: model serving may use the mirror, by name.
pub const EXPECTED_EGRESS: &str = "expectedEgress:
  - namespace: ai-platform
    workload: model-serving-0
    domains: [\"*.mirror.example\"]
";

/// Connects to a name (resolved with `getaddrinfo`, as applications do)
/// or an address, then sends a request and reads the answer, or — given a
/// server name — starts a TLS handshake. Prints what happened.
const CLIENT: &str = r#"
import socket, ssl, sys
host, port = sys.argv[1], int(sys.argv[2])
address = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)[0][4]
s = socket.create_connection(address, timeout=3)
if len(sys.argv) > 3:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        context.wrap_socket(s, server_hostname=sys.argv[3])
        print(f"{address[0]}: TLS established")
    except (OSError, ssl.SSLError):
        print(f"{address[0]}: ClientHello sent, no TLS server there")
else:
    s.sendall(b"hello")
    s.shutdown(socket.SHUT_WR)
    print(f"{address[0]}: " + ("answered" if s.recv(64) else "no answer"))
"#;

/// The cluster's DNS server, running; stopped (and the pods' resolver
/// configuration removed) on drop.
pub struct Resolver {
    dnsmasq: Child,
    resolv_confs: Vec<std::path::PathBuf>,
}

impl Resolver {
    /// Starts dnsmasq in `pod` with the demo's names, and points every pod
    /// in `clients` at it (`/etc/netns/<pod>/resolv.conf`, which
    /// `ip netns exec` mounts over `/etc/resolv.conf`).
    ///
    /// # Errors
    /// When dnsmasq cannot start or a file cannot be written.
    pub fn start(pod: &Pod, clients: &[&Pod], internet: &str) -> Result<Self, XtaskError> {
        let records = [
            format!("--host-record=upload.example,{internet}"),
            format!("--host-record=edge.mirror-cdn.example,{MIRROR}"),
            "--cname=models.mirror.example,edge.mirror-cdn.example".into(),
        ];
        let dnsmasq = spawn(
            netgov_testbed::dns::dnsmasq(&pod.netns, RESOLVER, &records)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        let mut resolver = Self {
            dnsmasq,
            resolv_confs: Vec::new(),
        };
        for client in clients {
            let dir = std::path::Path::new("/etc/netns").join(client.netns.name());
            let io = |source| XtaskError::Io {
                what: format!("writing {}/resolv.conf", dir.display()),
                source,
            };
            std::fs::create_dir_all(&dir).map_err(io)?;
            let path = dir.join("resolv.conf");
            std::fs::write(&path, format!("nameserver {RESOLVER}\noptions timeout:1\n"))
                .map_err(io)?;
            resolver.resolv_confs.push(path);
        }
        wait_until_answering(&clients[0].netns)?;
        Ok(resolver)
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        let _ = self.dnsmasq.kill();
        let _ = self.dnsmasq.wait();
        for path in &self.resolv_confs {
            let _ = std::fs::remove_file(path);
            if let Some(dir) = path.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

fn wait_until_answering(netns: &Netns) -> Result<(), XtaskError> {
    for _ in 0..50 {
        let ready = netns
            .command("python3")
            .args([
                "-c",
                "import socket; socket.getaddrinfo('upload.example', 443)",
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Err(XtaskError::Output {
        tool: "dnsmasq",
        detail: format!("the demo's resolver at {RESOLVER} never answered"),
    })
}

/// Runs the client in `pod` against `host` (a name or an address) and
/// returns what it printed.
///
/// # Errors
/// When the client cannot run or fails.
pub fn call(
    pod: &Pod,
    host: &str,
    port: u16,
    server_name: Option<&str>,
) -> Result<String, XtaskError> {
    let mut command = pod.netns.command("python3");
    command
        .args(["-c", CLIENT, host, &port.to_string()])
        .args(server_name);
    let output = command.output().map_err(|source| XtaskError::Io {
        what: format!("running the demo client in {}", pod.name),
        source,
    })?;
    if !output.status.success() {
        return Err(XtaskError::Output {
            tool: "demo client",
            detail: format!(
                "{} -> {host}:{port}: {}",
                pod.name,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
