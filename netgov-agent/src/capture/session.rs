//! A running capture: the datapath, its maps and the flow table, read on
//! every drain tick and once more at exit by the one [`Capture::drain`].

use std::collections::BTreeMap;
use std::sync::Arc;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use netgov_common::{Counter, FlowKey, FlowStats};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::datapath::{Datapath, DatapathMaps, read_counter};
use super::flow_table::{FlowTable, TableLosses};
use super::interfaces::{self, InterfaceError, InterfaceFilter, LinkEvent};
use super::read::{drain, emit, read_events, read_payloads, take_kernel_entries};
use super::socket_hook::SocketDelivery;
use super::{
    AttachFailure, AttachOperation, CaptureError, CaptureHealth, CaptureOptions, CaptureSummary,
    DatapathInfo, FlowSink, KernelCounters, NO_SOCKET_EVIDENCE,
};
use crate::model::clock::MonotonicClock;

/// Whether a drain is one of many, or the last (every flow ends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DrainKind {
    /// A tick: ended flows are reported, live ones too, then health.
    Tick,
    /// Exit: the programs are detached; every flow still live ends.
    Last,
}

/// The datapath attached to pod interfaces, and what it has seen so far.
pub(crate) struct Capture {
    datapath: Datapath,
    flows: BpfHashMap<MapData, FlowKey, FlowStats>,
    events: AsyncFd<RingBuf<MapData>>,
    payloads: AsyncFd<RingBuf<MapData>>,
    counters: PerCpuArray<MapData, u64>,
    delivered: SocketDelivery,
    table: FlowTable,
    clock: MonotonicClock,
    filter: InterfaceFilter,
    /// Interface names by index (kept after an interface goes, so that its
    /// flows still name it).
    names: BTreeMap<u32, Arc<str>>,
    info: DatapathInfo,
    summary: CaptureSummary,
    attachments_restored: u64,
    /// The kernel counters as last read (a failed read keeps the previous
    /// value).
    kernel: KernelCounters,
    /// Counters whose last read failed (warned once, until a read works).
    unreadable: [bool; Counter::COUNT as usize],
    /// Drains whose flush failed on some CPU.
    flush_failures: u64,
    /// Packets held by offline CPUs' caches, as last read (a failed read
    /// keeps it, warned once).
    stranded_packets: u64,
    stranded_unreadable: bool,
}

impl Capture {
    /// Loads the datapath and takes its maps; attaches the socket hook
    /// where cgroup v2 is. Interfaces are attached as discovery finds them
    /// ([`Capture::on_link_event`]).
    ///
    /// # Errors
    /// [`CaptureError`] when the datapath cannot be loaded or its maps read.
    pub(crate) fn start(
        options: &CaptureOptions,
        sink: &mut impl FlowSink,
    ) -> Result<Self, CaptureError> {
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
        let events =
            unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) }
                .map_err(|e| CaptureError::Io(e.into()))?;
        // SAFETY: as for `events`.
        let payloads =
            unsafe { AsyncFd::register_with_interest(payloads, tokio::io::Interest::READABLE) }
                .map_err(|e| CaptureError::Io(e.into()))?;
        Ok(Self {
            datapath,
            flows,
            events,
            payloads,
            counters,
            delivered,
            table: FlowTable::with_nat(options.table, sink.nat()),
            clock: MonotonicClock::new(),
            filter,
            names: BTreeMap::new(),
            info,
            summary: CaptureSummary::default(),
            attachments_restored: 0,
            kernel: KernelCounters::default(),
            unreadable: [false; Counter::COUNT as usize],
            flush_failures: 0,
            stranded_packets: 0,
            stranded_unreadable: false,
        })
    }

    /// What was loaded and how.
    pub(crate) fn info(&self) -> &DatapathInfo {
        &self.info
    }

    /// Reads the flow map and reports to `sink`: flows that ended (each
    /// exactly once, their kernel entries deleted with their final counts),
    /// then, on a tick, the live flows that changed or that the sink asked
    /// for again (as many as it has room for), and the capture's health; at
    /// the last drain every flow still live ends.
    ///
    /// # Errors
    /// The sink's error for ended flows (a closed output).
    fn drain(&mut self, sink: &mut impl FlowSink, kind: DrainKind) -> Result<(), CaptureError> {
        // Payloads first: an answer submitted after the last readiness poll
        // still names the flows this drain reports.
        read_payloads(self.payloads.get_mut(), sink, &mut self.table, &self.clock);
        if kind == DrainKind::Last {
            read_events(self.events.get_mut(), &mut self.table);
        }
        // A flow whose packets a CPU still holds would look idle: nothing
        // is read, and nothing ends, without a flush.
        // At exit the map is read whatever the flush says: it is the last
        // chance.
        let flushed = flush_cache(&self.datapath);
        if !flushed {
            self.flush_failures += 1;
        }
        let mut ended = if flushed || kind == DrainKind::Last {
            drain(&self.flows, &mut self.table, &self.names, &self.clock)
        } else {
            Vec::new()
        };
        take_kernel_entries(&self.flows, &mut ended, &self.names, &self.clock);
        let names = &self.names;
        let name = |i: u32| names.get(&i).cloned();
        match kind {
            DrainKind::Tick if !ended.is_empty() => {
                // A cache slot of a flow just deleted stops counting now,
                // not at the next drain: the flow's next packet makes a
                // new entry instead of being counted lost.
                flush_cache(&self.datapath);
            }
            DrainKind::Tick => {}
            DrainKind::Last => ended.extend(self.table.finish_all(&name, &self.clock)),
        }
        self.delivered
            .annotate(ended.iter_mut().map(|flow| &mut flow.record));
        emit(sink, ended, &mut self.summary)?;
        if kind == DrainKind::Last {
            self.read_kernel_counters();
            return Ok(());
        }
        for id in sink.report_again() {
            self.table.report_again(&id);
        }
        let mut live = self.table.live_records(&name, &self.clock, sink.room());
        self.delivered.annotate(live.iter_mut());
        sink.live(live);
        let verified = self.datapath.verify();
        for interface in &verified.restored {
            tracing::warn!(
                interface,
                "our programs were removed from the interface; attached again"
            );
        }
        for (interface, error) in &verified.missing {
            tracing::warn!(interface, error = %crate::error_chain(error), "our programs were removed from the interface and cannot be attached again");
        }
        self.attachments_restored += verified.restored.len() as u64;
        self.read_kernel_counters();
        self.read_stranded();
        sink.health(&CaptureHealth {
            attached_interfaces: self.datapath.attached().count(),
            attachments_restored: self.attachments_restored,
            attachments_missing: verified.missing.len(),
            flow_table_entries: self.table.len(),
            table_losses: self.table.losses(),
            kernel: self.kernel,
            flush_failures: self.flush_failures,
            stranded_packets: self.stranded_packets,
        });
        Ok(())
    }

    fn read_stranded(&mut self) {
        match self.datapath.stranded_packets() {
            Ok(stranded) => {
                if std::mem::take(&mut self.stranded_unreadable) {
                    tracing::info!("offline CPUs' flow caches read again");
                }
                if stranded > 0 && self.stranded_packets == 0 {
                    tracing::warn!(
                        stranded,
                        "packets held in the flow caches of offline CPUs: they reach their flows when the CPUs are back"
                    );
                }
                self.stranded_packets = stranded;
            }
            Err(error) if !self.stranded_unreadable => {
                self.stranded_unreadable = true;
                tracing::warn!(error = %crate::error_chain(&error), "cannot read the flow caches of offline CPUs");
            }
            Err(_) => {}
        }
    }

    fn read_kernel_counters(&mut self) {
        for counter in Counter::ALL {
            let unreadable = &mut self.unreadable[counter as usize];
            match read_counter(&self.counters, counter) {
                Ok(value) => {
                    if std::mem::take(unreadable) {
                        tracing::info!(counter = counter.name(), "a kernel counter reads again");
                    }
                    self.kernel.set(counter, value);
                }
                Err(error) if !*unreadable => {
                    *unreadable = true;
                    tracing::warn!(counter = counter.name(), %error, "cannot read a kernel counter; its last value stands until it reads again");
                }
                Err(_) => {}
            }
        }
    }

    /// Attaches to an interface that appeared (and matches the filter);
    /// notes one that went.
    fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Present { index, name } => {
                if !self.filter.matches(&name) {
                    // A renamed link that no longer matches is left alone:
                    // its flows keep being counted until it disappears.
                    return;
                }
                let newly = !self.datapath.is_attached(index);
                match self.datapath.attach(index, &name) {
                    Ok(()) => {
                        if newly {
                            tracing::info!(interface = %name, index, "attached");
                            self.summary.interfaces.push(name.clone());
                        }
                        self.names.insert(index, name.into());
                    }
                    Err(error) => {
                        tracing::warn!(%error, "attach failed");
                        self.summary.attach_failures.push(AttachFailure {
                            operation: AttachOperation::Attach,
                            error: error.into(),
                        });
                    }
                }
            }
            LinkEvent::Removed { index } => {
                if self.datapath.is_attached(index) {
                    if let Err(error) = self.datapath.detach(index) {
                        tracing::warn!(%error, "detach failed");
                    }
                    tracing::info!(index, "interface removed");
                }
                // The name stays known so that flows seen there still name
                // it.
            }
            LinkEvent::DumpComplete => {}
        }
    }

    /// Detaches, so that nothing is counted after the last read; reads
    /// what is still queued; ends every flow; returns the summary.
    ///
    /// # Errors
    /// The sink's error for the last flows.
    fn finish(mut self, sink: &mut impl FlowSink) -> Result<CaptureSummary, CaptureError> {
        for error in self.datapath.detach_all() {
            self.summary.attach_failures.push(AttachFailure {
                operation: AttachOperation::Detach,
                error: error.into(),
            });
        }
        let result = self.drain(sink, DrainKind::Last);
        let TableLosses {
            kernel_evictions,
            malformed_events,
        } = self.table.losses();
        self.summary.kernel_evictions = kernel_evictions;
        self.summary.malformed_events = malformed_events;
        self.summary.kernel = self.kernel;
        result.map(|()| self.summary)
    }
}

/// Attaches to pod interfaces and hands `sink` a record for every flow when
/// it ends, expires, or at exit (and, as they change, live flows); returns
/// the run's summary. Runs until SIGINT, SIGTERM or `options.duration`.
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
    let mut capture = Capture::start(&options, sink)?;
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
    let result = loop {
        let step = tokio::select! {
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
            // The rings are read as they fill, between drains: events so
            // that a flow's start is not lost to a full ring, payloads so
            // that names are learned before the drain reports their flows.
            guard = capture.events.readable_mut() => guard.map(|mut guard| {
                read_events(guard.get_inner_mut(), &mut capture.table);
                guard.clear_ready();
            }).map_err(CaptureError::Io),
            guard = capture.payloads.readable_mut() => guard.map(|mut guard| {
                read_payloads(guard.get_inner_mut(), sink, &mut capture.table, &capture.clock);
                guard.clear_ready();
            }).map_err(CaptureError::Io),
            Some(event) = link_rx.recv() => {
                if event == LinkEvent::DumpComplete
                    && let Some(ready) = ready.take()
                {
                    ready(capture.info());
                }
                capture.on_link_event(event);
                Ok(())
            }
            _ = drain_tick.tick() => capture.drain(sink, DrainKind::Tick),
        };
        if let Err(error) = step {
            break Err(error);
        }
    };
    watcher.abort();
    // Whatever stopped the loop, the last drain runs.
    let summary = capture.finish(sink);
    result.and(summary)
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
