//! A simulated Kubernetes node built from network namespaces: one "node"
//! namespace holding a bridge and the host side of every pod's veth pair,
//! and one namespace per "pod". Used by netgov's privileged tests, the demo
//! and the benchmarks.
//!
//! Several nodes can be joined by an [`Underlay`] (a veth pair between
//! their node namespaces, with routes to each other's pod ranges), and a
//! node is either bridged (a Linux bridge, flannel/kindnet style) or
//! routed (no bridge: /32 host routes and proxy ARP, Calico style).
//!
//! Everything is torn down on drop (RAII): deleting a namespace deletes the
//! interfaces inside it, and deleting the node namespace deletes every
//! host-side veth, whose peers go with them. Traffic stays inside these
//! namespaces: node `n`'s pods get addresses from `10.244.n.0/24` and
//! `fd00:244:n::/64`, the underlay `192.168.250.0/30` and `fd00:250::/64`,
//! which exist only inside the testbed.
#![deny(missing_docs)]

pub mod dns;
pub mod metrics_text;
mod node;
pub mod process;
mod underlay;

pub use node::{GATEWAY_V4, GATEWAY_V6, NodeStyle, Pod, Testbed};
pub use underlay::Underlay;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};

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
    /// A request to a server in a namespace failed.
    #[error("GET {path} from 127.0.0.1:{port} in `{name}`: {source}")]
    Http {
        /// The namespace.
        name: String,
        /// The port.
        port: u16,
        /// The path.
        path: String,
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

    /// GETs `path` from `127.0.0.1:port` inside the namespace (HTTP/1.0);
    /// returns the body.
    ///
    /// # Errors
    /// When the namespace cannot be entered or nothing answers.
    pub fn http_get(&self, port: u16, path: &str) -> Result<String, TestbedError> {
        let request = path.to_owned();
        self.run_in(move || -> std::io::Result<String> {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
            write!(stream, "GET {request} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response
                .split_once("\r\n\r\n")
                .map(|(_, body)| body.to_owned())
                .unwrap_or_default())
        })?
        .map_err(|source| TestbedError::Http {
            name: self.name.clone(),
            port,
            path: path.to_owned(),
            source,
        })
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
