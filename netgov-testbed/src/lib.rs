//! A simulated Kubernetes node built from network namespaces: one "node"
//! namespace holding a bridge and the host side of every pod's veth pair,
//! and one namespace per "pod". Used by netgov's privileged tests, the demo
//! and the benchmarks.
//!
//! Everything is torn down on drop (RAII): deleting a namespace deletes the
//! interfaces inside it, and deleting the node namespace deletes every
//! host-side veth, whose peers go with them. Traffic stays inside these
//! namespaces: addresses come from `10.244.0.0/24` and `fd00:244::/64`,
//! which exist only on the testbed's bridge.
#![deny(missing_docs)]

pub mod metrics_text;

use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Errors building or using a testbed.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// A command could not be started (is iproute2 installed?).
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why it did not start.
        #[source]
        source: std::io::Error,
    },
    /// A command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on standard error.
        stderr: String,
    },
    /// Entering a namespace failed.
    #[error("cannot enter network namespace `{name}`: {source}")]
    Enter {
        /// Namespace name.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The testbed has no room for another pod.
    #[error("a testbed holds at most 250 pods")]
    Full,
}

/// Runs a command, failing with its standard error when it fails.
///
/// # Errors
/// [`TestbedError::Spawn`] or [`TestbedError::Failed`].
pub fn run(program: &str, args: &[&str]) -> Result<Output, TestbedError> {
    let command = format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| TestbedError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(TestbedError::Failed {
            command,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output)
}

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `name` (replacing a leftover of a crashed run) with loopback
    /// up.
    ///
    /// # Errors
    /// When `ip netns add` fails (not root?).
    pub fn create(name: &str) -> Result<Self, TestbedError> {
        let _ = run("ip", &["netns", "del", name]);
        run("ip", &["netns", "add", name])?;
        let netns = Self {
            name: name.to_owned(),
        };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> args...`.
    ///
    /// # Errors
    /// When the command fails.
    pub fn ip(&self, args: &[&str]) -> Result<Output, TestbedError> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs a program inside the namespace (`ip netns exec`).
    ///
    /// # Errors
    /// When the command fails.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output, TestbedError> {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// A `Command` that runs `program` inside the namespace, to spawn.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Sets a sysctl inside the namespace.
    ///
    /// # Errors
    /// When the command fails.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), TestbedError> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")])
            .map(drop)
    }

    /// Runs `f` on a thread that has entered this namespace, so sockets it
    /// opens live there. The calling thread is unaffected.
    ///
    /// # Errors
    /// [`TestbedError::Enter`] when the namespace cannot be entered.
    ///
    /// # Panics
    /// Propagates a panic of `f`.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, TestbedError> {
        let path = format!("/run/netns/{}", self.name);
        let enter_error = |source| TestbedError::Enter {
            name: self.name.clone(),
            source,
        };
        let file = File::open(&path).map_err(enter_error)?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: setns on this thread only, with a valid fd.
                    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(enter_error(std::io::Error::last_os_error()));
                    }
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Netns {
    /// Like [`Netns::run_in`], on a thread of its own that outlives this
    /// call (a server, say); join it to get the result.
    ///
    /// # Errors
    /// [`TestbedError::Enter`] when the namespace cannot be opened.
    pub fn spawn_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<T>, TestbedError> {
        let path = format!("/run/netns/{}", self.name);
        let name = self.name.clone();
        let file = File::open(&path).map_err(|source| TestbedError::Enter {
            name: name.clone(),
            source,
        })?;
        Ok(std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with a valid fd.
            let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } == 0;
            assert!(
                entered,
                "cannot enter network namespace {name}: {}",
                std::io::Error::last_os_error()
            );
            f()
        }))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// A simulated pod: a namespace with `eth0` attached to the node's bridge.
#[derive(Debug)]
pub struct Pod {
    /// Pod name (for people).
    pub name: String,
    /// The pod's namespace.
    pub netns: Netns,
    /// IPv4 address of `eth0`.
    pub ipv4: Ipv4Addr,
    /// IPv6 address of `eth0`.
    pub ipv6: Ipv6Addr,
    /// Name of the host-side interface in the node namespace.
    pub host_interface: String,
}

/// The node namespace with its bridge, and the pods attached to it.
#[derive(Debug)]
pub struct Testbed {
    prefix: String,
    pods: Vec<Pod>,
    // Dropped last: the node namespace holds the bridge and the host-side
    // interfaces.
    node: Netns,
}

/// Addresses of the node's bridge (the pods' gateway).
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// IPv6 address of the node's bridge.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 0, 0, 0, 0, 0, 1);

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

impl Testbed {
    /// A unique namespace prefix for this process: `tag` plus pid and a
    /// counter, so parallel tests never share namespaces.
    pub fn unique_prefix(tag: &str) -> String {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        format!("ng{tag}{}-{id}", std::process::id())
    }

    /// Creates the node namespace `<prefix>-node` with bridge `br0`
    /// (10.244.0.1/24, fd00:244::1/64) and IP forwarding on.
    ///
    /// # Errors
    /// When a namespace or interface cannot be created (needs root).
    pub fn new(prefix: &str) -> Result<Self, TestbedError> {
        let node = Netns::create(&format!("{prefix}-node"))?;
        node.ip(&["link", "add", "br0", "type", "bridge"])?;
        node.ip(&["addr", "add", &format!("{GATEWAY_V4}/24"), "dev", "br0"])?;
        node.ip(&[
            "addr",
            "add",
            &format!("{GATEWAY_V6}/64"),
            "dev",
            "br0",
            "nodad",
        ])?;
        node.ip(&["link", "set", "br0", "up"])?;
        node.sysctl("net.ipv4.ip_forward", "1")?;
        Ok(Self {
            prefix: prefix.to_owned(),
            pods: Vec::new(),
            node,
        })
    }

    /// The node namespace (run `netgov` here).
    pub fn node(&self) -> &Netns {
        &self.node
    }

    /// The pods, in creation order.
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// Adds a pod: namespace `<prefix>-<n>`, veth `vethp<n>` (node side,
    /// on the bridge) ↔ `eth0` (pod side) with 10.244.0.<n+10>/24 and
    /// fd00:244::<n+10>/64, default routes via the bridge.
    ///
    /// # Errors
    /// When an interface cannot be created, or the testbed is full.
    pub fn add_pod(&mut self, name: &str) -> Result<&Pod, TestbedError> {
        let index = self.pods.len() as u16 + 1;
        if index > 240 {
            return Err(TestbedError::Full);
        }
        let host = index + 10;
        let netns = Netns::create(&format!("{}-{index}", self.prefix))?;
        let host_interface = format!("vethp{index}");
        self.node.ip(&[
            "link",
            "add",
            &host_interface,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            netns.name(),
        ])?;
        self.node
            .ip(&["link", "set", &host_interface, "master", "br0", "up"])?;
        let ipv4 = Ipv4Addr::new(10, 244, 0, host as u8);
        let ipv6 = Ipv6Addr::new(0xfd00, 0x244, 0, 0, 0, 0, 0, host);
        netns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        netns.ip(&["addr", "add", &format!("{ipv4}/24"), "dev", "eth0"])?;
        netns.ip(&["addr", "add", &format!("{ipv6}/64"), "dev", "eth0", "nodad"])?;
        netns.ip(&["link", "set", "eth0", "up"])?;
        netns.ip(&["route", "add", "default", "via", &GATEWAY_V4.to_string()])?;
        netns.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &GATEWAY_V6.to_string(),
        ])?;
        self.pods.push(Pod {
            name: name.to_owned(),
            netns,
            ipv4,
            ipv6,
            host_interface,
        });
        Ok(self.pods.last().expect("just pushed"))
    }
}
