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
pub mod socket_hook;
mod sys;
mod tc_owner;
pub mod test_run;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use netgov_common::Counter;
use serde::Serialize;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use crate::model::clock::MonotonicClock;
use datapath::{AttachMode, Datapath, DatapathError, DatapathMaps, read_counter};
use flow_table::{FlowTable, FlowTableConfig, NatLookup, NoNat, TableLosses};
use interfaces::{InterfaceError, InterfaceFilter, LinkEvent};
pub use payload::Payload;
use read::{drain, emit, read_events, read_payloads, take_kernel_entries};
use record::FlowRecord;
use socket_hook::{CgroupRoot, SocketDelivery};

/// What is lost without the socket hook.
const NO_SOCKET_EVIDENCE: &str = "no socket-delivery evidence: denied one-way UDP to a local pod reads gap once it reaches the pod's interface, even if a later filter drops it (see README, Compatibility)";

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
    /// Kernel counters by name (see `netgov_common::Counter`).
    pub kernel: BTreeMap<&'static str, u64>,
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

    /// Live flows that changed since the previous drain. Must not block:
    /// the capture loop also reads the ring buffer.
    fn live(&mut self, _records: Vec<FlowRecord>) {}

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
    /// Kernel counters by name.
    pub kernel: BTreeMap<&'static str, u64>,
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

/// Attaches to pod interfaces and hands `sink` a record for every flow when
/// it ends, expires, or at exit (and, as they change, live flows); returns
/// the run's summary.
///
/// # Errors
/// [`CaptureError`] when the datapath cannot be loaded, interface discovery
/// fails, or output cannot be written. Attach failures on single interfaces
/// are logged and counted, not fatal.
pub async fn run(
    options: CaptureOptions,
    sink: &mut impl FlowSink,
    ready: impl FnOnce(&DatapathInfo),
) -> Result<CaptureSummary, CaptureError> {
    let filter = InterfaceFilter::new(&options.interface_globs)?;
    let mut datapath = Datapath::load(options.attach_mode, options.flow_map_entries)?;
    let DatapathMaps {
        flows,
        events,
        payloads,
        counters,
        delivered,
    } = datapath.take_maps()?;
    let socket_hook = match options.cgroup_root.locate() {
        Ok(Some(root)) => match datapath.attach_socket_hook(&root) {
            Ok(()) => Some(root),
            Err(error) => {
                tracing::warn!(error = %crate::error_chain(&error), "{NO_SOCKET_EVIDENCE}");
                None
            }
        },
        Ok(None) => None,
        Err(error) => {
            tracing::warn!(error = %crate::error_chain(&error), "{NO_SOCKET_EVIDENCE}");
            None
        }
    };
    let info = DatapathInfo {
        kernel: aya::util::KernelVersion::current()
            .map_or_else(|_| "unknown".into(), |v| v.to_string()),
        attach_mode: datapath.mode(),
        socket_hook,
    };
    let delivered = SocketDelivery::new(delivered, info.socket_hook.is_some());
    // SAFETY: the ring buffer owns its map fd, which stays open and
    // unchanged for as long as the AsyncFd owns the ring buffer.
    let mut events =
        unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) }
            .map_err(|e| CaptureError::Io(e.into()))?;
    // SAFETY: as for `events`.
    let mut payloads =
        unsafe { AsyncFd::register_with_interest(payloads, tokio::io::Interest::READABLE) }
            .map_err(|e| CaptureError::Io(e.into()))?;
    let clock = MonotonicClock::new();
    let mut table = FlowTable::with_nat(options.table, sink.nat());
    let mut summary = CaptureSummary::default();
    let mut names: BTreeMap<u32, Arc<str>> = BTreeMap::new();

    let (link_tx, mut link_rx) = mpsc::channel(1024);
    let mut watcher = tokio::spawn(interfaces::watch_links(link_tx));
    let mut sigint = signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut sigterm = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut drain_tick = tokio::time::interval(options.drain_interval);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = options.duration.map(|d| tokio::time::Instant::now() + d);
    let sleep_until_deadline = async {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep_until_deadline);

    let mut ready = Some(ready);
    let mut attachments_restored = 0u64;

    let result = loop {
        tokio::select! {
            biased;
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            _ = &mut sleep_until_deadline => break Ok(()),
            joined = &mut watcher => {
                break match joined {
                    Ok(Err(error)) => Err(CaptureError::Interfaces(error)),
                    _ => Err(CaptureError::Interfaces(InterfaceError::NotificationsEnded)),
                };
            }
            guard = events.readable_mut() => {
                let mut guard = match guard {
                    Ok(guard) => guard,
                    Err(error) => break Err(CaptureError::Io(error)),
                };
                read_events(guard.get_inner_mut(), &mut table);
                guard.clear_ready();
            }
            guard = payloads.readable_mut() => {
                let mut guard = match guard {
                    Ok(guard) => guard,
                    Err(error) => break Err(CaptureError::Io(error)),
                };
                read_payloads(guard.get_inner_mut(), sink, &mut table, &clock);
                guard.clear_ready();
            }
            Some(event) = link_rx.recv() => {
                if event == LinkEvent::DumpComplete
                    && let Some(ready) = ready.take()
                {
                    ready(&info);
                }
                on_link_event(event, &filter, &mut datapath, &mut names, &mut summary);
            }
            _ = drain_tick.tick() => {
                // Payloads first: an answer submitted after the last
                // readiness poll still names the flows this drain reports.
                read_payloads(payloads.get_mut(), sink, &mut table, &clock);
                // A flow whose packets a CPU still holds would look idle:
                // nothing is read, and nothing ends, without a flush.
                let mut ended = if flush_cache(&datapath) {
                    drain(&flows, &mut table, &names, &clock)
                } else {
                    Vec::new()
                };
                take_kernel_entries(&flows, &mut ended, &names, &clock);
                if !ended.is_empty() {
                    // A cache slot of a flow just deleted stops counting
                    // now, not at the next drain: the flow's next packet
                    // makes a new entry instead of being counted lost.
                    flush_cache(&datapath);
                }
                delivered.annotate(ended.iter_mut().map(|flow| &mut flow.record));
                if let Err(error) = emit(sink, ended, &mut summary) {
                    break Err(error);
                }
                let mut live = table.live_records(&|i: u32| names.get(&i).cloned(), &clock);
                delivered.annotate(live.iter_mut());
                sink.live(live);
                let verified = datapath.verify();
                for interface in &verified.restored {
                    tracing::warn!(interface, "our programs were removed from the interface; attached again");
                }
                for (interface, error) in &verified.missing {
                    tracing::warn!(interface, error = %crate::error_chain(error), "our programs were removed from the interface and cannot be attached again");
                }
                attachments_restored += verified.restored.len() as u64;
                let mut kernel = BTreeMap::new();
                for counter in Counter::ALL {
                    if let Ok(value) = read_counter(&counters, counter) {
                        kernel.insert(counter.name(), value);
                    }
                }
                sink.health(&CaptureHealth {
                    attached_interfaces: datapath.attached().count(),
                    attachments_restored,
                    attachments_missing: verified.missing.len(),
                    flow_table_entries: table.len(),
                    table_losses: table.losses(),
                    kernel,
                });
            }
        }
    };
    watcher.abort();

    // Whatever stopped the loop: detach, so that nothing is counted after
    // the last read; read what is still queued; end every flow.
    for error in datapath.detach_all() {
        summary.attach_failures.push(AttachFailure {
            operation: AttachOperation::Detach,
            error: error.into(),
        });
    }
    read_payloads(payloads.get_mut(), sink, &mut table, &clock);
    read_events(events.get_mut(), &mut table);
    flush_cache(&datapath);
    let mut ended = drain(&flows, &mut table, &names, &clock);
    take_kernel_entries(&flows, &mut ended, &names, &clock);
    ended.extend(table.finish_all(&|i: u32| names.get(&i).cloned(), &clock));
    delivered.annotate(ended.iter_mut().map(|flow| &mut flow.record));
    let emitted = emit(sink, ended, &mut summary);
    let result = result.and(emitted);

    let TableLosses {
        kernel_evictions,
        malformed_events,
    } = table.losses();
    summary.kernel_evictions = kernel_evictions;
    summary.malformed_events = malformed_events;
    for counter in Counter::ALL {
        summary
            .kernel
            .insert(counter.name(), read_counter(&counters, counter)?);
    }
    result.map(|()| summary)
}

/// Flushes the per-CPU flow caches into the flow map before it is read;
/// `false` when a CPU could not be flushed (it keeps its counts for the
/// next flush, and the log says so).
fn flush_cache(datapath: &Datapath) -> bool {
    match datapath.flush_cache() {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(error = %crate::error_chain(&error), "flow counts cached on a CPU are not read until a flush succeeds");
            false
        }
    }
}

fn signal(
    kind: tokio::signal::unix::SignalKind,
) -> Result<tokio::signal::unix::Signal, CaptureError> {
    tokio::signal::unix::signal(kind).map_err(CaptureError::Io)
}

fn on_link_event(
    event: LinkEvent,
    filter: &InterfaceFilter,
    datapath: &mut Datapath,
    names: &mut BTreeMap<u32, Arc<str>>,
    summary: &mut CaptureSummary,
) {
    match event {
        LinkEvent::Present { index, name } => {
            if !filter.matches(&name) {
                // A renamed link that no longer matches is left alone: its
                // flows keep being counted until it disappears.
                return;
            }
            let newly = !datapath.is_attached(index);
            match datapath.attach(index, &name) {
                Ok(()) => {
                    if newly {
                        tracing::info!(interface = %name, index, "attached");
                        summary.interfaces.push(name.clone());
                    }
                    names.insert(index, name.into());
                }
                Err(error) => {
                    tracing::warn!(%error, "attach failed");
                    summary.attach_failures.push(AttachFailure {
                        operation: AttachOperation::Attach,
                        error: error.into(),
                    });
                }
            }
        }
        LinkEvent::Removed { index } => {
            if datapath.is_attached(index) {
                if let Err(error) = datapath.detach(index) {
                    tracing::warn!(%error, "detach failed");
                }
                tracing::info!(index, "interface removed");
            }
            // The name stays known so that flows seen there still name it.
        }
        LinkEvent::DumpComplete => {}
    }
}
