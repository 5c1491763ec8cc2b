//! Flow capture: the eBPF datapath on pod interfaces, interface discovery,
//! and the user-space flow table that turns kernel counters into flow
//! records.

pub mod conntrack;
pub mod datapath;
pub mod flow_table;
pub mod interfaces;
pub mod payload;
mod read;
pub mod record;
mod session;
pub mod socket_hook;
mod sys;
mod tc_owner;
pub mod test_run;

use std::io::Write;
use std::time::Duration;

use netgov_common::Counter;
use serde::Serialize;

use datapath::{AttachMode, DatapathError};
use flow_table::{FlowTableConfig, NatLookup, NoNat, TableLosses};
use interfaces::InterfaceError;
pub use payload::Payload;
use record::FlowRecord;

use crate::model::FlowId;
pub use session::run;
use socket_hook::CgroupRoot;

/// What is lost without the socket hook.
pub(crate) const NO_SOCKET_EVIDENCE: &str = "no socket-delivery evidence: denied one-way UDP to a local pod reads gap once it reaches the pod's interface, even if a later filter drops it (see docs/compatibility.md)";

/// How records are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Aligned columns for people.
    Table,
}

/// Settings of a capture run.
#[derive(Clone, Debug)]
pub struct CaptureOptions {
    /// Interface name globs; empty means the defaults.
    pub interface_globs: Vec<String>,
    /// Stop after this long; `None` runs until SIGINT/SIGTERM.
    pub duration: Option<Duration>,
    /// Output format.
    pub format: OutputFormat,
    /// TCX or netlink attachment.
    pub attach_mode: AttachMode,
    /// How often the kernel map is read.
    pub drain_interval: Duration,
    /// Flow expiry rules.
    pub table: FlowTableConfig,
    /// Entries of the kernel flow map.
    pub flow_map_entries: u32,
    /// Where the socket-delivery hook attaches.
    pub cgroup_root: CgroupRoot,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        Self {
            interface_globs: Vec::new(),
            duration: None,
            format: OutputFormat::Json,
            attach_mode: AttachMode::Auto,
            drain_interval: Duration::from_secs(1),
            table: FlowTableConfig::default(),
            flow_map_entries: netgov_common::FLOWS_MAX_ENTRIES,
            cgroup_root: CgroupRoot::Auto,
        }
    }
}

/// What the datapath runs with, found at start: for `/readyz`, the
/// `netgov_datapath_info` metric and the capture's ready line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatapathInfo {
    /// The running kernel's version.
    pub kernel: String,
    /// How programs are attached.
    pub attach_mode: AttachMode,
    /// The cgroup the socket hook is attached to, if it is.
    pub socket_hook: Option<std::path::PathBuf>,
}

impl std::fmt::Display for DatapathInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Linux {}, {} attachment, ",
            self.kernel,
            self.attach_mode.name()
        )?;
        match &self.socket_hook {
            Some(cgroup) => write!(f, "socket hook on {}", cgroup.display()),
            None => f.write_str("no socket hook"),
        }
    }
}

/// Errors that stop a capture.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Loading or reading the datapath failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// Interface discovery failed.
    #[error(transparent)]
    Interfaces(#[from] InterfaceError),
    /// Writing records failed (e.g. a closed pipe).
    #[error("cannot write flow records: {0}")]
    Output(#[source] std::io::Error),
    /// Reading the ring buffer or installing signal handlers failed.
    #[error("capture I/O: {0}")]
    Io(#[source] std::io::Error),
}

/// What a capture saw and lost, printed at exit.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CaptureSummary {
    /// Flow records emitted.
    pub flows: u64,
    /// Interfaces attached during the run, by name.
    pub interfaces: Vec<String>,
    /// Kernel counters (see `netgov_common::Counter`).
    pub kernel: KernelCounters,
    /// Kernel flow entries evicted before being read (LRU pressure).
    pub kernel_evictions: u64,
    /// Undecodable ring-buffer records.
    pub malformed_events: u64,
    /// Interfaces whose attachment (or detachment) failed, with why.
    pub attach_failures: Vec<AttachFailure>,
}

/// A failed attachment or detachment, kept for the summary.
#[derive(Clone, Debug, Serialize)]
pub struct AttachFailure {
    /// What failed.
    pub operation: AttachOperation,
    /// Why, naming the interface.
    #[serde(serialize_with = "as_text")]
    pub error: std::sync::Arc<DatapathError>,
}

/// What an [`AttachFailure`] was doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachOperation {
    /// Attaching programs to a new interface.
    Attach,
    /// Detaching at exit.
    Detach,
}

fn as_text<S: serde::Serializer>(
    error: &std::sync::Arc<DatapathError>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(error)
}

/// Where a capture delivers flows.
pub trait FlowSink {
    /// Flows that ended (each exactly once).
    ///
    /// # Errors
    /// A failure that must stop the capture (e.g. a closed output).
    fn ended(&mut self, records: Vec<FlowRecord>) -> Result<(), CaptureError>;

    /// Live flows that changed since the previous drain, or that were
    /// asked for again ([`FlowSink::report_again`]): at most
    /// [`FlowSink::room`] of them. Must not block: the capture loop also
    /// reads the ring buffer.
    fn live(&mut self, _records: Vec<FlowRecord>) {}

    /// Live flows to report again at this drain though nothing changed in
    /// them, by their [`FlowRecord::flow_id`]: the agent's judge holds no
    /// record of a live flow, and asks for one when the cluster changed or
    /// something the flow waits for is due. Ids of flows that ended are
    /// ignored. By default none.
    fn report_again(&mut self) -> Vec<FlowId> {
        Vec::new()
    }

    /// How many live records the sink takes now without losing one: the
    /// rest wait for the next drain (a full report again is paced, never
    /// lost). By default unbounded.
    fn room(&self) -> usize {
        usize::MAX
    }

    /// A DNS answer delivered into a pod or a ClientHello a pod sent, as
    /// soon as it is read (before the drain that reports the flows it
    /// names). Must not block; by default ignored.
    fn payload(&mut self, _payload: &Payload<'_>) {}

    /// After each drain: the capture's own figures.
    fn health(&mut self, _health: &CaptureHealth) {}

    /// Where connections to translated addresses (Services) went, asked
    /// once at start; by default nothing is translated.
    fn nat(&mut self) -> Box<dyn NatLookup> {
        Box::new(NoNat)
    }
}

/// The capture's figures after a drain.
#[derive(Clone, Debug, Default)]
pub struct CaptureHealth {
    /// Interfaces with programs attached.
    pub attached_interfaces: usize,
    /// Attachments found gone and restored, since start.
    pub attachments_restored: u64,
    /// Interfaces whose programs are gone and could not be attached again.
    pub attachments_missing: usize,
    /// Live flows in the table.
    pub flow_table_entries: usize,
    /// Losses the table noticed.
    pub table_losses: TableLosses,
    /// Kernel counters.
    pub kernel: KernelCounters,
    /// Drains whose flush of the flow caches failed on some CPU, since
    /// start.
    pub flush_failures: u64,
    /// Packets the flow caches of offline CPUs hold (see
    /// `Datapath::stranded_packets`).
    pub stranded_packets: u64,
}

/// The kernel's counters, one per [`Counter`], summed over CPUs.
/// Serialised as a map from each counter's name to its value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters([u64; Counter::COUNT as usize]);

impl KernelCounters {
    /// The value of `counter`.
    pub fn get(&self, counter: Counter) -> u64 {
        self.0[counter as usize]
    }

    /// Sets the value of `counter`.
    pub fn set(&mut self, counter: Counter, value: u64) {
        self.0[counter as usize] = value;
    }
}

impl Serialize for KernelCounters {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(Counter::ALL.iter().map(|c| (c.name(), self.get(*c))))
    }
}

/// Prints ended flows as JSON lines or table rows (`netgov capture`).
pub struct RecordWriter<W: Write> {
    out: W,
    format: OutputFormat,
}

impl<W: Write> RecordWriter<W> {
    /// A writer; the table format starts with its header.
    ///
    /// # Errors
    /// When the header cannot be written.
    pub fn new(mut out: W, format: OutputFormat) -> Result<Self, CaptureError> {
        if format == OutputFormat::Table {
            writeln!(out, "{}", FlowRecord::table_header()).map_err(CaptureError::Output)?;
        }
        Ok(Self { out, format })
    }
}

impl<W: Write> FlowSink for RecordWriter<W> {
    fn ended(&mut self, records: Vec<FlowRecord>) -> Result<(), CaptureError> {
        for record in &records {
            let line = match self.format {
                OutputFormat::Json => record.to_json_line(),
                OutputFormat::Table => record.to_table_row(),
            };
            writeln!(self.out, "{line}").map_err(CaptureError::Output)?;
        }
        self.out.flush().map_err(CaptureError::Output)
    }
}
