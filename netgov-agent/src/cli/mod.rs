//! Command-line interface of the `netgov` binary.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::capture::datapath::AttachMode;
use crate::capture::flow_table::FlowTableConfig;
use crate::capture::socket_hook::CgroupRoot;
use crate::capture::{CaptureOptions, OutputFormat};
use crate::commands::check::{CheckFormat, CheckOptions, FailOn};

pub mod advise;
pub mod audit;
pub mod check;
mod recorded;
pub mod replay;
pub use recorded::{AdviseArgs, AdviseFormat, AuditArgs, ObserveArgs, RecordingArgs, ReplayArgs};

/// netgov: see whether real traffic matches your Kubernetes NetworkPolicies.
#[derive(Debug, Parser)]
#[command(name = "netgov", version, about)]
pub struct Cli {
    /// Log line format on standard error. The level is set with
    /// `RUST_LOG` or `NETGOV_LOG` (e.g. `info`, `netgov_agent=debug`;
    /// default `warn`).
    #[arg(long, global = true, value_enum, env = "NETGOV_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Parses a size: a number of bytes, or with a suffix `K`, `M`, `G`
/// (powers of 1000) or `Ki`, `Mi`, `Gi` (powers of 1024).
///
/// # Errors
/// A message naming what was expected.
pub fn parse_size(text: &str) -> Result<u64, InvalidSize> {
    let invalid = || InvalidSize(text.to_owned());
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let unit: u64 = match suffix {
        "" => 1,
        "K" | "k" => 1000,
        "M" => 1000 * 1000,
        "G" => 1000 * 1000 * 1000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(unit)
        .filter(|bytes| *bytes > 0)
        .ok_or_else(invalid)
}

/// A size flag that is not a positive size.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a positive size (bytes, or with K, M, G, Ki, Mi, Gi)")]
pub struct InvalidSize(String);

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Capture flows on pod interfaces and print one record per flow when it
    /// ends, expires, or at exit (needs root: loads eBPF programs).
    Capture(CaptureArgs),
    /// Would these flows be allowed? Judges flows against NetworkPolicies
    /// in manifest files, offline (exit 3 when a verdict `--fail-on` names
    /// is given, for CI).
    Check(CheckArgs),
    /// Judge every flow on this node live against the NetworkPolicies:
    /// metrics, flow log, `/flows` (needs root: loads eBPF programs).
    Agent(AgentArgs),
    /// Follow an agent's judged flows live, filtered by the agent (like
    /// `hubble observe`).
    Observe(ObserveArgs),
    /// What would recorded traffic (flow logs) meet under other policies?
    /// Reports flows that would be denied (would break) or allowed, by
    /// workload pair and port (exit 3 when a change `--fail-on` names is
    /// found, for CI).
    Replay(ReplayArgs),
    /// Which policy rules did recorded traffic use? Rules that admitted
    /// nothing, ipBlocks much broader than what used them, workloads no
    /// policy isolated (exit 3 when a finding `--fail-on` names is found).
    Audit(AuditArgs),
    /// Propose least-privilege NetworkPolicies from recorded traffic, each
    /// commented with its evidence and checked against the recording
    /// before it is printed.
    Advise(AdviseArgs),
    /// Print the version and the source revision it was built from.
    Version,
    /// Print a shell completion script (e.g. `netgov completion bash >
    /// /etc/bash_completion.d/netgov`).
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Arguments of `netgov agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Kubeconfig to read the cluster with (default: in-cluster, then
    /// $KUBECONFIG, then ~/.kube/config).
    #[arg(
        long,
        value_name = "PATH",
        env = "NETGOV_KUBECONFIG",
        conflicts_with = "cluster_state"
    )]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Read the cluster state from manifest files instead of the API
    /// (reloaded when they change). Repeatable.
    #[arg(
        long,
        value_name = "PATH",
        env = "NETGOV_CLUSTER_STATE",
        value_delimiter = ','
    )]
    pub cluster_state: Vec<std::path::PathBuf>,
    /// Staged policies (manifests: a file or directory, e.g. a mounted
    /// ConfigMap, reloaded when it changes): every flow is also judged
    /// against the policies in force plus these, and what would change is
    /// counted (`netgov_staged_changes_total`) and written with the flow
    /// (`staged_verdict`). Repeatable.
    #[arg(
        long,
        value_name = "PATH",
        env = "NETGOV_STAGED",
        value_delimiter = ','
    )]
    pub staged: Vec<std::path::PathBuf>,
    /// YAML configuration: cluster CIDRs, expected egress, limits.
    #[arg(long, value_name = "FILE", env = "NETGOV_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Interfaces, attachment and duration.
    #[command(flatten)]
    pub datapath: DatapathArgs,
    /// Timeouts and sizes of the flow table.
    #[command(flatten)]
    pub table: TableArgs,
    /// Address of /metrics, /healthz, /readyz and /flows.
    #[arg(
        long,
        value_name = "ADDR",
        env = "NETGOV_METRICS_ADDR",
        default_value = "0.0.0.0:9090"
    )]
    pub metrics_addr: std::net::SocketAddr,
    /// Flow log (JSON Lines): a file, appended to, or `-` for standard
    /// output (for a log shipper).
    #[arg(long, value_name = "PATH", env = "NETGOV_FLOW_LOG")]
    pub flow_log: Option<std::path::PathBuf>,
    /// Rotate the flow-log file to `<PATH>.1` when it would grow past this
    /// size (bytes, or with a suffix: 500K, 100Mi, 1G); default: never.
    #[arg(long, value_name = "SIZE", env = "NETGOV_FLOW_LOG_MAX_SIZE", value_parser = parse_size, requires = "flow_log")]
    pub flow_log_max_size: Option<u64>,
    /// Serve `/flows` (who talks to whom) to any client, not only to
    /// loopback ones (`kubectl port-forward` connects from loopback).
    #[arg(long, env = "NETGOV_FLOWS_FROM_ANYWHERE")]
    pub flows_from_anywhere: bool,
    /// This node's name, to know which pods are local.
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// The Hubble API server (Cilium's flag names).
    #[command(flatten)]
    pub hubble: HubbleArgs,
}

/// `netgov agent`'s Hubble API server, with Cilium's flag names.
#[derive(Debug, Args)]
#[command(next_help_heading = "Hubble API")]
pub struct HubbleArgs {
    /// Serve the Hubble API (observer.Observer, peer.Peer, gRPC health and
    /// reflection) on this address, e.g. `:4244`; off when not given.
    #[arg(long, value_name = "ADDR", env = "NETGOV_HUBBLE_LISTEN_ADDRESS", value_parser = parse_listen_address)]
    pub hubble_listen_address: Option<std::net::SocketAddr>,
    /// The server's certificate (PEM): serve TLS.
    #[arg(long, value_name = "FILE", env = "NETGOV_HUBBLE_TLS_CERT_FILE", requires_all = ["hubble_listen_address", "hubble_tls_key_file"])]
    pub hubble_tls_cert_file: Option<std::path::PathBuf>,
    /// The server's private key (PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "NETGOV_HUBBLE_TLS_KEY_FILE",
        requires = "hubble_tls_cert_file"
    )]
    pub hubble_tls_key_file: Option<std::path::PathBuf>,
    /// CAs of the clients to accept (PEM; comma-separated or repeated):
    /// mutual TLS, as Hubble Relay uses it.
    #[arg(
        long,
        value_name = "FILE",
        env = "NETGOV_HUBBLE_TLS_CLIENT_CA_FILES",
        value_delimiter = ',',
        requires = "hubble_tls_cert_file"
    )]
    pub hubble_tls_client_ca_files: Vec<std::path::PathBuf>,
    /// Hubble events kept for clients that ask for past flows.
    #[arg(long, value_name = "N", env = "NETGOV_HUBBLE_EVENT_BUFFER_CAPACITY", default_value_t = crate::hubble::ring::DEFAULT_CAPACITY)]
    pub hubble_event_buffer_capacity: usize,
    /// Write every Hubble event to this file, in Hubble's JSON export
    /// format (works without the server too).
    #[arg(long, value_name = "PATH", env = "NETGOV_HUBBLE_EXPORT_FILE_PATH")]
    pub hubble_export_file_path: Option<std::path::PathBuf>,
    /// Rotate the export file past this many MiB.
    #[arg(long, value_name = "MB", env = "NETGOV_HUBBLE_EXPORT_FILE_MAX_SIZE_MB", default_value_t = crate::hubble::export::DEFAULT_MAX_SIZE_MB, requires = "hubble_export_file_path")]
    pub hubble_export_file_max_size_mb: u64,
    /// This agent's own pod's namespace (the downward API's
    /// `metadata.namespace`): with `--pod-name`, the peer service announces
    /// every node running a pod of the same DaemonSet.
    #[arg(
        long,
        value_name = "NAMESPACE",
        env = "POD_NAMESPACE",
        requires = "pod_name"
    )]
    pub pod_namespace: Option<String>,
    /// This agent's own pod's name (the downward API's `metadata.name`).
    #[arg(
        long,
        value_name = "NAME",
        env = "POD_NAME",
        requires = "pod_namespace"
    )]
    pub pod_name: Option<String>,
    /// Rotated export files kept.
    #[arg(long, value_name = "N", env = "NETGOV_HUBBLE_EXPORT_FILE_MAX_BACKUPS", default_value_t = crate::hubble::export::DEFAULT_MAX_BACKUPS, requires = "hubble_export_file_path")]
    pub hubble_export_file_max_backups: usize,
}

/// A listen address that is neither `:PORT` nor `ADDRESS:PORT`.
#[derive(Debug, thiserror::Error)]
#[error("expected `:PORT` or `ADDRESS:PORT` (IPv6 in brackets)")]
pub struct ListenAddressError(#[source] std::net::AddrParseError);

/// `:4244` (every address of both families, as Cilium writes it; IPv4's
/// alone on a node without IPv6) or `ADDRESS:PORT`.
fn parse_listen_address(text: &str) -> Result<std::net::SocketAddr, ListenAddressError> {
    let full = if text.starts_with(':') {
        format!("[::]{text}")
    } else {
        text.to_owned()
    };
    full.parse().map_err(ListenAddressError)
}

impl HubbleArgs {
    /// The Hubble options, when the server or the export is asked for.
    ///
    /// # Errors
    /// [`AgentArgsError::HubbleCapacity`] for a capacity out of range.
    pub fn options(&self) -> Result<Option<crate::hubble::HubbleOptions>, AgentArgsError> {
        use crate::hubble::ring::MAX_CAPACITY;
        if self.hubble_listen_address.is_none() && self.hubble_export_file_path.is_none() {
            return Ok(None);
        }
        let capacity = self.hubble_event_buffer_capacity;
        if !(1..=MAX_CAPACITY).contains(&capacity) {
            return Err(AgentArgsError::HubbleCapacity(capacity));
        }
        Ok(Some(crate::hubble::HubbleOptions {
            listen: self.hubble_listen_address,
            tls: match (&self.hubble_tls_cert_file, &self.hubble_tls_key_file) {
                (Some(cert), Some(key)) => Some(crate::hubble::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_cas: self.hubble_tls_client_ca_files.clone(),
                }),
                _ => None,
            },
            capacity,
            export: self.hubble_export_file_path.as_ref().map(|path| {
                crate::hubble::export::ExportOptions {
                    path: path.clone(),
                    max_size_bytes: self
                        .hubble_export_file_max_size_mb
                        .saturating_mul(1_000_000),
                    max_backups: self.hubble_export_file_max_backups,
                }
            }),
            pod: self
                .pod_namespace
                .clone()
                .zip(self.pod_name.clone())
                .map(|(namespace, name)| crate::hubble::peer::PodRef {
                    namespace: namespace.into(),
                    name: name.into(),
                }),
        }))
    }
}

/// A bad `netgov agent` setting.
#[derive(Debug, thiserror::Error)]
pub enum AgentArgsError {
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// `--hubble-event-buffer-capacity` out of range.
    #[error("--hubble-event-buffer-capacity {0}: expected 1 to {max} events", max = crate::hubble::ring::MAX_CAPACITY)]
    HubbleCapacity(usize),
}

impl AgentArgs {
    /// Validated agent options.
    ///
    /// # Errors
    /// [`AgentArgsError`] naming the flag or the configuration field.
    pub fn options(&self) -> Result<crate::agent::run::AgentOptions, AgentArgsError> {
        use crate::agent::run::{AgentOptions, ClusterSource};
        use crate::flowlog::FlowLogTarget;
        let config = match &self.config {
            Some(path) => crate::config::AgentConfig::load(path)?,
            None => crate::config::AgentConfig::default(),
        };
        let mut capture = CaptureOptions {
            interface_globs: self.datapath.iface.clone(),
            duration: self.datapath.duration,
            attach_mode: self.datapath.attach_mode,
            cgroup_root: self.datapath.cgroup_root.clone(),
            ..CaptureOptions::default()
        };
        self.table.apply(&mut capture);
        Ok(AgentOptions {
            capture,
            cluster: if self.cluster_state.is_empty() {
                ClusterSource::Kubernetes(self.kubeconfig.clone())
            } else {
                ClusterSource::Files(self.cluster_state.clone())
            },
            config,
            metrics_addr: self.metrics_addr,
            flow_log: self.flow_log.as_ref().map(|path| {
                if path.as_os_str() == "-" {
                    FlowLogTarget::Stdout
                } else {
                    FlowLogTarget::File {
                        path: path.clone(),
                        max_bytes: self.flow_log_max_size,
                    }
                }
            }),
            flows_from_anywhere: self.flows_from_anywhere,
            node: crate::judge::NodeContext {
                node_name: self.node_name.clone(),
            },
            staged: self.staged.clone(),
            hubble: self.hubble.options()?,
        })
    }
}

/// Arguments of `netgov check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// YAML or JSON files, or directories of them, with Namespaces, Pods,
    /// NetworkPolicies, Services, EndpointSlices, Nodes and
    /// ClusterNetworkPolicies (repeatable).
    #[arg(
        short = 'f',
        long = "filename",
        visible_alias = "manifests",
        value_name = "PATH",
        num_args = 1..,
        required_unless_present_any = ["cluster", "kubeconfig"],
        conflicts_with_all = ["cluster", "kubeconfig"]
    )]
    pub manifests: Vec<std::path::PathBuf>,
    /// Judge against the live cluster's state instead of manifests (the
    /// client is configured like kubectl: in-cluster, `$KUBECONFIG`,
    /// `~/.kube/config`).
    #[arg(long)]
    pub cluster: bool,
    /// Judge against the live cluster this kubeconfig names.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// JSON Lines of flows (`{"src":..,"dst":..,"protocol":..,"dst_port":..}`),
    /// or `-` for standard input.
    #[arg(long, value_name = "FILE")]
    pub flows: Option<std::path::PathBuf>,
    /// A flow as `SRC -> DST:PORT/PROTO` (SRC and DST: IP or namespace/pod;
    /// `SRC -> DST/ICMP` for ICMP). Repeatable.
    #[arg(long = "flow", value_name = "FLOW")]
    pub flow: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", visible_alias = "format", value_enum, default_value_t = CheckFormat::Json)]
    pub format: CheckFormat,
    /// Exit with status 3 when a flow gets one of these verdicts
    /// (comma-separated), after printing every result: for CI.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "VERDICT")]
    pub fail_on: Vec<FailOn>,
}

impl CheckArgs {
    /// The check options.
    pub fn options(&self) -> CheckOptions {
        CheckOptions {
            manifests: self.manifests.clone(),
            flows_file: self.flows.clone(),
            flows: self.flow.clone(),
            format: self.format,
        }
    }
}

/// Datapath arguments shared by `netgov capture` and `netgov agent`.
#[derive(Debug, Args)]
pub struct DatapathArgs {
    /// Interface name glob to attach to (repeatable). Default: veth*,
    /// cali*, lxc*, gke*, eni*, azv*.
    #[arg(
        long = "iface",
        value_name = "GLOB",
        env = "NETGOV_IFACE",
        value_delimiter = ','
    )]
    pub iface: Vec<String>,
    /// How programs are attached.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto, env = "NETGOV_ATTACH_MODE")]
    pub attach_mode: AttachMode,
    /// Stop after this long (default: until SIGINT/SIGTERM).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// The cgroup v2 root the socket-delivery hook attaches to, so that
    /// datagrams a pod's socket received count as delivered whatever
    /// filters ran on the way: `auto` (/sys/fs/cgroup, or the hybrid
    /// layout's /sys/fs/cgroup/unified), a directory (in a container: the
    /// host's cgroup2 mount, mounted in), or `none`.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "auto",
        env = "NETGOV_CGROUP_ROOT"
    )]
    pub cgroup_root: CgroupRoot,
}

/// Arguments of `netgov capture`.
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Interfaces, attachment and duration.
    #[command(flatten)]
    pub datapath: DatapathArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
    pub format: OutputFormat,
    /// Timeouts and sizes of the flow table.
    #[command(flatten)]
    pub table: TableArgs,
}

/// When flows end, how often the kernel map is read, how many flows it
/// holds (shared by `capture` and `agent`).
#[derive(Debug, Args)]
pub struct TableArgs {
    /// A TCP or SCTP flow with no packet for this long ends.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "60s",
        env = "NETGOV_IDLE_TIMEOUT",
        value_parser = parse_duration
    )]
    pub idle_timeout: Duration,
    /// A UDP flow with no packet for this long ends.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "60s",
        env = "NETGOV_UDP_IDLE_TIMEOUT",
        value_parser = parse_duration
    )]
    pub udp_idle_timeout: Duration,
    /// An ICMP or ICMPv6 flow with no packet for this long ends.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "60s",
        env = "NETGOV_ICMP_IDLE_TIMEOUT",
        value_parser = parse_duration
    )]
    pub icmp_idle_timeout: Duration,
    /// A closed TCP flow ends after this long quiet.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "2s",
        env = "NETGOV_CLOSE_GRACE",
        value_parser = parse_duration
    )]
    pub close_grace: Duration,
    /// How often the kernel flow map is read.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "1s",
        env = "NETGOV_DRAIN_INTERVAL",
        value_parser = parse_duration
    )]
    pub drain_interval: Duration,
    /// Entries of the kernel flow map (one per flow and interface; a
    /// same-node flow takes two). Past it the oldest are evicted and
    /// counted as lost.
    #[arg(
        long,
        value_name = "N",
        default_value_t = netgov_common::FLOWS_MAX_ENTRIES,
        env = "NETGOV_FLOW_MAP_ENTRIES",
        value_parser = clap::value_parser!(u32).range(1024..)
    )]
    pub flow_map_entries: u32,
}

impl TableArgs {
    /// Sets these arguments on `options`.
    fn apply(&self, options: &mut CaptureOptions) {
        options.drain_interval = self.drain_interval;
        options.flow_map_entries = self.flow_map_entries;
        options.table = FlowTableConfig {
            idle_timeout: self.idle_timeout,
            udp_idle_timeout: self.udp_idle_timeout,
            icmp_idle_timeout: self.icmp_idle_timeout,
            close_grace: self.close_grace,
        };
    }
}

/// A duration flag's value that is not a positive duration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a positive duration (e.g. 30s, 5m, 1h30m, 500ms, or plain seconds: 1.5)")]
pub struct InvalidDuration(String);

/// Parses a duration the way Kubernetes tools write them (`30s`, `5m`,
/// `1h30m`, `500ms`), or plain seconds (`60`, `0.3`) as the flags took
/// before. Zero is refused: every duration here is a timeout or a period.
///
/// # Errors
/// [`InvalidDuration`] quoting the text.
pub fn parse_duration(text: &str) -> Result<Duration, InvalidDuration> {
    let invalid = || InvalidDuration(text.to_owned());
    let duration = match text.trim().parse::<f64>() {
        Ok(seconds) => Duration::try_from_secs_f64(seconds).map_err(|_| invalid())?,
        Err(_) => humantime::parse_duration(text.trim()).map_err(|_| invalid())?,
    };
    if duration.is_zero() {
        return Err(invalid());
    }
    Ok(duration)
}

impl CaptureArgs {
    /// The capture options.
    pub fn options(&self) -> CaptureOptions {
        let mut options = CaptureOptions {
            interface_globs: self.datapath.iface.clone(),
            duration: self.datapath.duration,
            format: self.format,
            attach_mode: self.datapath.attach_mode,
            cgroup_root: self.datapath.cgroup_root.clone(),
            ..CaptureOptions::default()
        };
        self.table.apply(&mut options);
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubernetes_and_like_plain_seconds() {
        let rows = [
            ("30s", Ok(Duration::from_secs(30))),
            ("5m", Ok(Duration::from_secs(300))),
            ("1h30m", Ok(Duration::from_secs(5400))),
            ("500ms", Ok(Duration::from_millis(500))),
            ("60", Ok(Duration::from_secs(60))),
            ("0.3", Ok(Duration::from_millis(300))),
            ("0", Err(InvalidDuration("0".into()))),
            ("0s", Err(InvalidDuration("0s".into()))),
            ("-1", Err(InvalidDuration("-1".into()))),
            ("soon", Err(InvalidDuration("soon".into()))),
        ];
        for (text, expected) in rows {
            assert_eq!(parse_duration(text), expected, "{text}");
        }
        let cli = Cli::try_parse_from([
            "netgov",
            "capture",
            "--idle-timeout",
            "2m",
            "--drain-interval",
            "0.3",
        ])
        .expect("parses");
        let Command::Capture(args) = cli.command else {
            panic!("capture");
        };
        let options = args.options();
        assert_eq!(
            (
                options.table.idle_timeout,
                options.drain_interval,
                options.table.close_grace
            ),
            (
                Duration::from_secs(120),
                Duration::from_millis(300),
                Duration::from_secs(2)
            )
        );
        let error = Cli::try_parse_from(["netgov", "capture", "--close-grace", "0s"])
            .expect_err("zero")
            .to_string();
        assert!(error.contains("`0s` is not a positive duration"), "{error}");
    }
}
