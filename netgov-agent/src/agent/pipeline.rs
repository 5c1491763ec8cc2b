//! The judge stage: each record the capture reports is judged once
//! (`judge::judge` resolves each end once), stepped through the ledger
//! (`crate::ledger`: what was counted for the flow, and what is new), and
//! what the step emits is counted, logged and published.
//!
//! Live flows are judged again, even when no packet moved: whenever the
//! cluster state (policies, labels, identities) or the staged copy
//! changes, and when something a flow waits for is due — the answer window
//! of a denied flow whose enforcement is unknown, the name window of TCP
//! egress without a destination name ([`NAME_WAIT`]). The stage holds no
//! record of a live flow, only what was counted for it: it asks the
//! capture to report those flows again
//! ([`AskedAgain`](super::shared::AskedAgain)), and judges the
//! records the capture's next drain sends, paced by the channel's room.

use hashbrown::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::departed::DepartedSeries;
use super::shared::Shared;
use super::staged::Staged;
use crate::capture::record::{EndReason, FlowRecord};
use crate::churn_map::{ChurnMap, Keyed};
use crate::config::AgentConfig;
use crate::engine::Decision;
use crate::engine::Resolved;
use crate::export::metrics::StagedChange;
use crate::flowlog::{FlowEntry, FlowLog};
use crate::hubble::convert::{EventContext, to_flow};
use crate::hubble::export::ExportFile;
use crate::judge::context::end_context;
use crate::judge::{Judgement, NodeContext, judge};
use crate::ledger::{Counted, Entry, Moment, Next, Seen, Windows, step};
use crate::model::FlowId;
use crate::model::clock::unix_now_nanos;
use crate::names::{Client, DestinationName};

/// How long the series of a workload gone from the cluster are kept at
/// most: longer than its flows can still be reported and judged after it
/// went (the capture's idle timeout, 60 s, plus the answer window), and
/// than a scrape interval, so the last counts are scraped.
const SERIES_GRACE: Duration = Duration::from_secs(300);
/// How long a new TCP flow to outside the cluster without a destination
/// name waits for its ClientHello's server name before its egress is
/// counted by address: the flow is first reported at the drain after its
/// handshake (one drain interval), and the ClientHello follows the
/// handshake at once.
const NAME_WAIT: Duration = Duration::from_secs(2);
/// A workload `namespace/name` as a 64-bit key. Two workloads that share
/// one would keep a gone one's series while the other is in the cluster;
/// among 100,000 workloads, that is a chance of about 3 in 10^10.
fn workload_key(namespace: &str, name: &str) -> u64 {
    std::hash::BuildHasher::hash_one(
        &std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default(),
        (namespace, name),
    )
}

/// How often departed workloads' series are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// A live flow: what the ledger holds for it.
struct Live {
    id: FlowId,
    held: Held,
}

/// What the ledger holds for a live flow.
enum Held {
    /// Not policy traffic, counted as such.
    NotJudged,
    /// Judged.
    Judged(Judged),
}

/// A judged live flow.
struct Judged {
    counted: Counted,
    /// Its first packet (Unix ns; 64 bits last until 2262 and keep the
    /// entry 16 bytes smaller): what its waits run from.
    first_seen: i64,
    /// Something it waits for is due, and the capture was asked to report
    /// it again (asked once, until it is judged again).
    asked: bool,
}

impl Keyed for Live {
    type Key = FlowId;
    fn key(&self) -> &FlowId {
        &self.id
    }
}

impl Live {
    fn entry(&self) -> Entry<'_> {
        match &self.held {
            Held::NotJudged => Entry::NotJudged,
            Held::Judged(judged) => Entry::Judged(&judged.counted),
        }
    }

    fn judged(&self) -> Option<&Judged> {
        match &self.held {
            Held::Judged(judged) => Some(judged),
            Held::NotJudged => None,
        }
    }
}

/// The judge stage.
pub struct Pipeline {
    shared: Arc<Shared>,
    config: AgentConfig,
    node: NodeContext,
    flow_log: Option<FlowLog>,
    /// Every live flow, judged or not.
    live: ChurnMap<Live>,
    /// Cluster generation when live flows were last asked for again.
    generation: u64,
    /// Workloads with pods (and Services) at the last look, to drop the
    /// series of those that are gone: by [`workload_key`], as a large
    /// cluster has tens of thousands.
    workloads: HashSet<u64>,
    /// Workloads gone from the cluster that still name series.
    departed: DepartedSeries,
    /// When departed series were last swept.
    last_sweep: Instant,
    /// Staged policies, when `--staged` is given.
    staged: Option<Staged>,
    /// How long after its answer window a flow of unknown enforcement is
    /// judged again: one drain interval, so an answer that arrived in
    /// time has been reported.
    report_delay: Duration,
    /// Flow-log writes failing (logged once per run of failures; every
    /// failed record is counted).
    log_failing: FailureRun,
    /// The Hubble export file, when asked for (written here, as the flow
    /// log is: see `hubble::export`).
    hubble_export: Option<ExportFile>,
    /// Hubble export writes failing (logged as the flow log's).
    export_failing: FailureRun,
}

impl Pipeline {
    /// A judge stage with nothing tracked.
    pub fn new(
        shared: Arc<Shared>,
        config: AgentConfig,
        node: NodeContext,
        flow_log: Option<FlowLog>,
        report_delay: Duration,
        staged: Option<Staged>,
    ) -> Self {
        Self {
            staged,
            report_delay,
            shared,
            config,
            node,
            flow_log,
            live: ChurnMap::new(),
            generation: 0,
            workloads: HashSet::new(),
            departed: DepartedSeries::new(SERIES_GRACE),
            last_sweep: Instant::now(),
            log_failing: FailureRun::default(),
            hubble_export: None,
            export_failing: FailureRun::default(),
        }
    }

    /// The same, writing every Hubble event to `file` too.
    #[must_use]
    pub fn with_hubble_export(mut self, file: ExportFile) -> Self {
        self.hubble_export = Some(file);
        self
    }

    /// Judges every record from `rx` until the capture closes it; every
    /// second, asks for the live flows again if the cluster changed, and
    /// for those whose wait is over.
    pub async fn run(mut self, mut rx: mpsc::Receiver<FlowRecord>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                record = rx.recv() => match record {
                    Some(record) => {
                        self.process(record);
                        if rx.is_empty() {
                            self.flush_hubble_export();
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    // The staged copy first: when it changed, every live
                    // flow is asked for again too.
                    if let Some(staged) = &mut self.staged
                        && staged.refresh(&self.shared.state())
                    {
                        self.generation = u64::MAX;
                    }
                    self.on_cluster_change();
                    self.judge_due();
                    self.sweep_departed();
                    self.flush_hubble_export();
                }
            }
        }
        self.flush_hubble_export();
    }

    /// When policies, labels or identities changed: asks for every judged
    /// live flow again, and drops the metric series of workloads that are
    /// gone.
    fn on_cluster_change(&mut self) {
        let workloads: HashSet<u64> = {
            let state = self.shared.state();
            if state.generation() == self.generation {
                return;
            }
            self.generation = state.generation();
            state
                .workloads()
                .map(|(namespace, name)| workload_key(namespace, name))
                .collect()
        };
        let judged = self
            .live
            .iter()
            .filter(|live| live.judged().is_some())
            .map(|live| live.id)
            .collect();
        self.shared.asked_again.all(judged);
        if !self.workloads.is_empty() {
            for (namespace, workload) in self.shared.metrics.workloads_in_metrics() {
                let key = workload_key(&namespace, &workload);
                if self.workloads.contains(&key) && !workloads.contains(&key) {
                    self.shared.metrics.forget_workload(&namespace, &workload);
                }
            }
        }
        self.workloads = workloads;
    }

    /// Removes the series of workloads gone for [`SERIES_GRACE`] (see
    /// [`DepartedSeries`]).
    fn sweep_departed(&mut self) {
        if self.last_sweep.elapsed() < SWEEP_INTERVAL || self.workloads.is_empty() {
            return;
        }
        self.last_sweep = Instant::now();
        let metrics = &self.shared.metrics;
        let swept = self.departed.sweep(
            metrics.workloads_in_metrics(),
            |(namespace, workload)| self.workloads.contains(&workload_key(namespace, workload)),
            self.last_sweep,
        );
        for (namespace, workload) in swept {
            metrics.forget_workload(&namespace, &workload);
        }
    }

    /// Asks again for the live flows something was waiting for, to judge
    /// them even if no packet moved since:
    /// - denied flows whose enforcement was unknown and whose answer window
    ///   (and one drain interval) has passed: retransmitted attempts make
    ///   no new report, and such a flow may not end for a long while, yet
    ///   its enforcement is known now (`enforced`);
    /// - egress that waited [`NAME_WAIT`] for a name in vain.
    fn judge_due(&mut self) {
        let now = unix_now_nanos();
        let windows = self.windows();
        let mut due = Vec::new();
        for live in self.live.iter_mut() {
            if let Held::Judged(judged) = &mut live.held
                && !judged.asked
                && judged
                    .counted
                    .due(age_at(now, i128::from(judged.first_seen)), windows)
            {
                judged.asked = true;
                due.push(live.id);
            }
        }
        if !due.is_empty() {
            self.shared.asked_again.these(due);
        }
    }

    /// How long flows wait for an answer and for a name.
    fn windows(&self) -> Windows {
        Windows {
            answer: self.config.answer_window + self.report_delay,
            name: NAME_WAIT,
        }
    }

    fn process(&mut self, record: FlowRecord) {
        let id = record.flow_id();
        let at = Moment {
            ended: record.end_reason != EndReason::Active,
            age: age_at(unix_now_nanos(), record.first_seen),
        };
        let names = |source: Resolved<'_>| self.destination_names(&record, &id, source);
        let judged = judge(
            &record,
            &self.shared.state(),
            &self.config,
            &self.node,
            at.age,
            &names,
        );
        let entry = self.live.get(&id).map(Live::entry);
        let mut judgement = match judged {
            Ok(judgement) => judgement,
            Err(reason) => {
                let (next, emit) = step(entry, Seen::NotJudged(reason), at, self.windows());
                if let Some(reason) = emit.not_judged {
                    self.shared.metrics.count_not_judged(reason);
                }
                self.hold(id, next, record.first_seen);
                return;
            }
        };
        let staged = self.judge_staged(&record, &mut judgement);
        let seen = Seen::Judged {
            judgement: &judgement,
            protocol: record.protocol,
            staged,
        };
        let (next, emit) = step(entry, seen, at, self.windows());
        self.count(&record, &judgement, &emit);
        if emit.log {
            self.record_contexts(&record, &mut judgement);
            self.log(&record, &judgement);
        }
        if emit.publish {
            self.publish_hubble(&record, &judgement);
        }
        self.hold(id, next, record.first_seen);
        if emit.log {
            self.shared.recent.push(record, judgement);
        }
    }

    /// Holds what the ledger says to hold next for flow `id`, which began
    /// at `first_seen` (Unix ns), or forgets it.
    fn hold(&mut self, id: FlowId, next: Next, first_seen: i128) {
        let held = match next {
            Next::Forget => {
                self.live.remove(&id);
                return;
            }
            Next::NotJudged => Held::NotJudged,
            Next::Judged(counted) => Held::Judged(Judged {
                counted,
                first_seen: i64::try_from(first_seen).unwrap_or(i64::MAX),
                asked: false,
            }),
        };
        self.live.insert(Live { id, held });
    }

    /// The names of a flow's destination outside the cluster: what it had,
    /// and what its `source` (as the judge resolved it) learned since, as
    /// of the flow's first packet.
    fn destination_names(
        &self,
        record: &FlowRecord,
        id: &FlowId,
        source: Resolved<'_>,
    ) -> Vec<DestinationName> {
        let mut names = self
            .live
            .get(id)
            .and_then(Live::judged)
            .map(|t| t.counted.names.clone())
            .unwrap_or_default();
        // An answer read before the cluster state knew the pod is filed
        // under its address.
        let pod = Client::of(source, record.src);
        let address = Client::Address(record.src);
        let pods = [pod, address];
        let keys = if pods[0] == pods[1] {
            &pods[..1]
        } else {
            &pods[..]
        };
        let client = std::net::SocketAddr::new(record.src, record.src_port);
        let server = std::net::SocketAddr::new(record.dst, record.dst_port);
        for name in self
            .shared
            .names
            .names(keys, (client, server), record.first_seen)
        {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// The staged verdict of a judged flow (into the judgement), and how it
    /// differs from the verdict in force; `None` when there is none now
    /// (no staged policies, or their copy is behind the cluster).
    fn judge_staged(
        &self,
        record: &FlowRecord,
        judgement: &mut Judgement,
    ) -> Option<Option<StagedChange>> {
        let staged = self.staged.as_ref()?;
        let generation = self.shared.state().generation();
        let verdict = staged.verdict(
            &crate::judge::query_of(record),
            (record.first_seen, record.last_seen),
            generation,
        )?;
        judgement.staged_verdict = Some(verdict);
        Some(match (judgement.verdict.verdict, verdict) {
            (Decision::Deny, Decision::Deny) => None,
            (_, Decision::Deny) => Some(StagedChange::WouldDeny),
            (Decision::Deny, _) => Some(StagedChange::WouldAllow),
            _ => None,
        })
    }

    /// Adds what a later replay needs to a judgement that is written down:
    /// the pod ends as policies saw them.
    fn record_contexts(&self, record: &FlowRecord, judgement: &mut Judgement) {
        let state = self.shared.state();
        let seen = (record.first_seen, record.last_seen);
        let judged_dst = judgement
            .verdict
            .backends
            .first()
            .map_or(record.dst, |backend| backend.ip);
        judgement.src_context = end_context(&state, record.src, seen);
        judgement.dst_context = end_context(&state, judged_dst, seen);
    }

    /// A Hubble event for a flow first judged, or whose verdict or
    /// enforcement changed (when the Hubble server or export is on).
    fn publish_hubble(&mut self, record: &FlowRecord, judgement: &Judgement) {
        let Some(sink) = &self.shared.hubble else {
            return;
        };
        let context = EventContext {
            node_name: &sink.node,
            judged_at: unix_now_nanos(),
        };
        let flow = to_flow(record, judgement, &self.shared.state(), context);
        let written = self
            .hubble_export
            .as_mut()
            .map(|export| export.write(&flow, &sink.node));
        if let Some(ring) = &sink.ring {
            ring.push(flow);
        }
        if let Some(Err(error)) = written {
            self.export_failed(error);
        }
    }

    /// Writes the Hubble export lines waiting in memory; a flush that
    /// succeeds ends a run of failures (a write that succeeds may only have
    /// been buffered).
    fn flush_hubble_export(&mut self) {
        let Some(export) = &mut self.hubble_export else {
            return;
        };
        match export.flush() {
            Ok(()) => {
                if self.export_failing.recovered() {
                    tracing::info!("Hubble export: writing again");
                }
            }
            Err(error) => self.export_failed(error),
        }
    }

    /// Counts a failed Hubble export write or flush, logging the first of a
    /// run.
    fn export_failed(&mut self, error: std::io::Error) {
        self.shared.metrics.count_hubble_export_error();
        if self.export_failing.failed() {
            tracing::warn!(%error, "Hubble export: lines not written (counted in netgov_hubble_export_errors_total)");
        }
    }

    fn log(&mut self, record: &FlowRecord, judgement: &Judgement) {
        let Some(log) = self.flow_log.as_mut() else {
            return;
        };
        match log.write(&FlowEntry::new(record, judgement)) {
            Ok(()) => {
                if self.log_failing.recovered() {
                    tracing::info!("flow log: writing again");
                }
            }
            Err(error) => {
                self.shared.metrics.count_flow_log_error();
                if self.log_failing.failed() {
                    tracing::warn!(%error, "flow log: records not written (counted in netgov_flow_log_errors_total)");
                }
            }
        }
    }
}

/// Whether a sink's writes are failing: every failure is counted by its
/// caller, but only the first of a run, and the recovery, are logged.
#[derive(Debug, Default)]
struct FailureRun {
    failing: bool,
}

impl FailureRun {
    /// A write failed; whether it starts a run (log it).
    fn failed(&mut self) -> bool {
        !std::mem::replace(&mut self.failing, true)
    }

    /// A write succeeded; whether it ends a run (log it).
    fn recovered(&mut self) -> bool {
        std::mem::take(&mut self.failing)
    }
}

mod count;

#[cfg(test)]
mod tests;

/// How long ago a flow that began at `first_seen` began, as of `now` (both
/// Unix nanoseconds).
fn age_at(now: i128, first_seen: i128) -> Duration {
    Duration::from_nanos((now - first_seen).max(0) as u64)
}
