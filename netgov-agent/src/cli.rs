//! Command-line interface of the `netgov` binary.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::capture::datapath::AttachMode;
use crate::capture::flow_table::FlowTableConfig;
use crate::capture::{CaptureOptions, OutputFormat};
use crate::policy::check::{CheckFormat, CheckOptions};

/// netgov: see whether real traffic matches your Kubernetes NetworkPolicies.
#[derive(Debug, Parser)]
#[command(name = "netgov", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Capture flows on pod interfaces and print one record per flow when it
    /// ends, expires, or at exit (needs root: loads eBPF programs).
    Capture(CaptureArgs),
    /// Would these flows be allowed? Judges flows against NetworkPolicies
    /// in manifest files, offline (exit 0 whatever the verdicts).
    Check(CheckArgs),
}

/// Arguments of `netgov check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// YAML or JSON files, or directories of them, with Namespaces, Pods,
    /// NetworkPolicies, Services, EndpointSlices and Nodes (repeatable).
    #[arg(long, value_name = "PATH", required = true, num_args = 1..)]
    pub manifests: Vec<std::path::PathBuf>,
    /// JSON Lines of flows (`{"src":..,"dst":..,"protocol":..,"dst_port":..}`),
    /// or `-` for standard input.
    #[arg(long, value_name = "FILE")]
    pub flows: Option<std::path::PathBuf>,
    /// A flow as `SRC -> DST:PORT/PROTO` (SRC and DST: IP or namespace/pod;
    /// `SRC -> DST/ICMP` for ICMP). Repeatable.
    #[arg(long = "flow", value_name = "FLOW")]
    pub flow: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = CheckFormat::Json)]
    pub format: CheckFormat,
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

/// Arguments of `netgov capture`.
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Interface name glob to attach to (repeatable). Default: veth*,
    /// cali*, lxc*, gke*, eni*, azv*.
    #[arg(
        long = "iface",
        value_name = "GLOB",
        env = "NETGOV_IFACE",
        value_delimiter = ','
    )]
    pub iface: Vec<String>,
    /// Stop after this many seconds (default: until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
    pub format: OutputFormat,
    /// How programs are attached.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto, env = "NETGOV_ATTACH_MODE")]
    pub attach_mode: AttachMode,
    /// A flow with no packet for this many seconds ends.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub idle_timeout: f64,
    /// A closed TCP flow ends after this many quiet seconds.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub close_grace: f64,
    /// How often the kernel flow map is read, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub drain_interval: f64,
}

/// A bad command-line value.
#[derive(Debug, thiserror::Error)]
#[error("--{flag}: {value} is not a positive number of seconds")]
pub struct InvalidSeconds {
    /// The flag.
    pub flag: &'static str,
    /// The value given.
    pub value: f64,
}

fn seconds(flag: &'static str, value: f64) -> Result<Duration, InvalidSeconds> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or(InvalidSeconds { flag, value })
}

impl CaptureArgs {
    /// Validated capture options.
    ///
    /// # Errors
    /// [`InvalidSeconds`] naming the flag with a zero, negative or
    /// non-finite duration.
    pub fn options(&self) -> Result<CaptureOptions, InvalidSeconds> {
        Ok(CaptureOptions {
            interface_globs: self.iface.clone(),
            duration: self.duration.map(|d| seconds("duration", d)).transpose()?,
            format: self.format,
            attach_mode: self.attach_mode,
            drain_interval: seconds("drain-interval", self.drain_interval)?,
            table: FlowTableConfig {
                idle_timeout: seconds("idle-timeout", self.idle_timeout)?,
                close_grace: seconds("close-grace", self.close_grace)?,
            },
        })
    }
}
