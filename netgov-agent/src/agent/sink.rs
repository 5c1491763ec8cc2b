//! The capture's sink in the agent: hands flows to the judge without
//! waiting (an ended flow that finds the channel full is counted as lost
//! at stage `evaluate`; live flows are sent only as many as it has room
//! for, and the rest wait for the next drain), passes on which live flows
//! the judge asks for again, and turns the capture's health into metrics.

use netgov_common::Counter;
use std::sync::Arc;

use std::net::IpAddr;

use tokio::sync::mpsc;

use super::nat::ServiceNat;
use super::shared::Shared;
use crate::capture::flow_table::NatLookup;
use crate::capture::record::FlowRecord;
use crate::capture::{CaptureError, CaptureHealth, FlowSink, Payload};
use crate::engine::{ClusterState, Resolved};
use crate::export::metrics::LossStage;
use crate::model::FlowId;
use crate::names::{AddressBook, Client, NameError, NameSource};

/// Feeds the judge.
pub struct AgentSink {
    tx: mpsc::Sender<FlowRecord>,
    shared: Arc<Shared>,
    previous: CaptureHealth,
}

impl AgentSink {
    /// A sink sending to `tx`.
    pub fn new(tx: mpsc::Sender<FlowRecord>, shared: Arc<Shared>) -> Self {
        Self {
            tx,
            shared,
            previous: CaptureHealth::default(),
        }
    }

    fn send(&self, record: FlowRecord) {
        if self.tx.try_send(record).is_err() {
            self.shared.metrics.count_lost(LossStage::Evaluate, 1);
        }
    }
}

/// The loss a kernel counter counts, if it counts one. Decided for every
/// counter: a new one does not compile until it is.
fn loss_stage(counter: Counter) -> Option<LossStage> {
    match counter {
        Counter::RingbufDrops => Some(LossStage::KernelRingbuf),
        Counter::FlowMapUpdateFailures => Some(LossStage::KernelFlowMap),
        Counter::CachedPacketsLost => Some(LossStage::KernelFlowCache),
        Counter::FragmentsUnmatched => Some(LossStage::KernelFragments),
        Counter::ParseErrors => Some(LossStage::KernelParse),
        Counter::PayloadRingbufDrops => Some(LossStage::KernelPayloads),
        Counter::DeliveryMapUpdateFailures => Some(LossStage::KernelDeliveryEvidence),
        // The fragments of a packet whose memo could not be written arrive
        // unmatched, and are counted there: counting the failure too would
        // count them twice.
        Counter::FragmentMapUpdateFailures => None,
        // Not losses: what the programs saw, and frames that are no flow.
        // Packets of other IP protocols are not aggregated into flows; the
        // datapath counter says how many there were.
        Counter::Packets
        | Counter::NonIpPackets
        | Counter::OtherProtocolPackets
        | Counter::FragmentsMatched => None,
        // Counted as a name error (`netgov_name_errors_total`).
        Counter::DnsUnsolicited => None,
    }
}

/// The cluster state as of a payload.
struct StateAt<'a> {
    state: &'a ClusterState,
    at: i128,
}

impl AddressBook for StateAt<'_> {
    fn client(&self, ip: IpAddr) -> Client {
        Client::of(self.state.resolve_at(ip, self.at, self.at), ip)
    }

    fn outside(&self, ip: IpAddr) -> bool {
        matches!(
            self.state.resolve_at(ip, self.at, self.at),
            Resolved::External
        )
    }
}

impl FlowSink for AgentSink {
    fn ended(&mut self, records: Vec<FlowRecord>) -> Result<(), CaptureError> {
        records.into_iter().for_each(|r| self.send(r));
        Ok(())
    }

    fn live(&mut self, records: Vec<FlowRecord>) {
        records.into_iter().for_each(|r| self.send(r));
    }

    fn report_again(&mut self) -> Vec<FlowId> {
        self.shared.asked_again.take()
    }

    /// The channel's free places, less a quarter of it kept for the flows
    /// that end by the next drain (a full channel loses those): the judge
    /// only takes records out, and this sink is the one sender, so that
    /// many live records are sent without loss.
    fn room(&self) -> usize {
        self.tx
            .capacity()
            .saturating_sub(self.tx.max_capacity() / 4)
    }

    fn health(&mut self, health: &CaptureHealth) {
        let metrics = &self.shared.metrics;
        let delta = |now: u64, before: u64| now.saturating_sub(before);
        metrics.record_capture(
            health.attached_interfaces,
            health.flow_table_entries,
            delta(
                health.table_losses.kernel_evictions,
                self.previous.table_losses.kernel_evictions,
            ),
        );
        metrics.record_attachments(
            delta(
                health.attachments_restored,
                self.previous.attachments_restored,
            ),
            health.attachments_missing,
        );
        self.shared
            .set_attachments_missing(health.attachments_missing);
        let increase = |counter| {
            delta(
                health.kernel.get(counter),
                self.previous.kernel.get(counter),
            )
        };
        for counter in Counter::ALL {
            let grown = increase(counter);
            metrics.count_datapath(counter, grown);
            if let Some(stage) = loss_stage(counter) {
                metrics.count_lost(stage, grown);
            }
        }
        metrics.record_flow_cache(
            delta(health.flush_failures, self.previous.flush_failures),
            health.stranded_packets,
        );
        let unsolicited = increase(Counter::DnsUnsolicited);
        if unsolicited > 0 {
            metrics.count_name_errors(NameSource::Dns, NameError::Unsolicited, unsolicited);
        }
        let (entries, evicted) = self.shared.names.size();
        metrics.record_name_cache(entries, evicted);
        self.previous = health.clone();
    }

    fn payload(&mut self, payload: &Payload<'_>) {
        let state = self.shared.state();
        let book = StateAt {
            state: &state,
            at: payload.seen,
        };
        for outcome in self.shared.names.learn(payload, &book) {
            self.shared.metrics.count_learned(outcome);
        }
    }

    fn nat(&mut self) -> Box<dyn NatLookup> {
        Box::new(ServiceNat::open(Arc::clone(&self.shared)))
    }
}
