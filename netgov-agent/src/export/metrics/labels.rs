//! The label sets of the agent's metrics. Every value with a fixed set of
//! spellings is a typed enum ([`Protocol`], [`Decision`], [`DeniedBy`],
//! [`Enforcement`], [`Direction`], [`LossStage`], [`ResourceKind`]) that
//! encodes itself; only names (namespaces, workloads) and ports are text.

use prometheus_client::encoding::EncodeLabelSet;

use crate::engine::Decision;
use crate::engine::ResourceKind;
use crate::engine::tiers::Tier;
use crate::judge::{DeniedBy, Enforcement, NotJudged};
use crate::model::{Direction, Protocol, string_enum};

string_enum! {
    /// Where in the pipeline events were lost.
    pub enum LossStage {
        /// The kernel's ring buffer was full.
        KernelRingbuf => "kernel_ringbuf",
        /// The kernel flow map was full.
        KernelFlowMap => "kernel_flow_map",
        /// Packets the per-CPU flow cache counted for a flow whose entry
        /// was gone (evicted, or just ended) when they were flushed.
        KernelFlowCache => "kernel_flow_cache",
        /// The kernel's payload ring was full: DNS answers or ClientHellos
        /// whose names were not learned.
        KernelPayloads => "kernel_payloads",
        /// A fragment whose first fragment was not seen.
        KernelFragments => "kernel_fragments",
        /// A packet the kernel program could not parse.
        KernelParse => "kernel_parse",
        /// The socket-delivery map was full: evidence that a socket took a
        /// UDP flow's datagrams is lost (its enforcement may read
        /// `unknown` where it was a gap).
        KernelDeliveryEvidence => "kernel_delivery_evidence",
        /// The capture → judge channel was full.
        Evaluate => "evaluate",
    }
}

/// Labels of `netgov_flows_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub(super) struct FlowLabels {
    pub src_namespace: String,
    pub src_workload: String,
    pub dst_namespace: String,
    pub dst_workload: String,
    pub protocol: Protocol,
    pub verdict: Decision,
}

/// Labels of `netgov_policy_violations_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub(super) struct ViolationLabels {
    pub src_namespace: String,
    pub src_workload: String,
    pub dst_namespace: String,
    pub dst_workload: String,
    pub protocol: Protocol,
    /// The port, `""` for protocols without ports, or `_overflow`.
    pub dst_port: String,
    pub denied_by: DeniedBy,
    pub enforcement: Enforcement,
    /// The tier of the denying rule (`admin`, `networkpolicy`, `baseline`).
    pub tier: Tier,
}

string_enum! {
    /// How a staged policy set would change a flow's verdict.
    pub enum StagedChange {
        /// Allowed (or not governed) now, denied with the staged policies.
        WouldDeny => "would_deny",
        /// Denied now, allowed with the staged policies.
        WouldAllow => "would_allow",
    }
}

/// Labels of `netgov_staged_changes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub(super) struct StagedLabels {
    pub src_namespace: String,
    pub src_workload: String,
    pub dst_namespace: String,
    pub dst_workload: String,
    pub protocol: Protocol,
    /// The port, `""` for protocols without ports.
    pub dst_port: String,
    pub change: StagedChange,
}

/// Labels of `netgov_unexpected_egress_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub(super) struct EgressLabels {
    pub src_namespace: String,
    pub src_workload: String,
    /// The destination, aggregated (see [`super::aggregate_destination`]).
    pub destination: String,
}

/// Labels of `netgov_egress_flows_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub(super) struct EgressFlowLabels {
    pub src_namespace: String,
    pub src_workload: String,
    /// The destination's name, else its address block.
    pub destination: String,
    /// `true` when a policy or the configuration declares it.
    pub expected: String,
}

/// Labels of `netgov_dns_answers_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DnsAnswerLabels {
    pub outcome: crate::names::DnsOutcome,
}

/// Labels of `netgov_name_errors_total` and `netgov_names_learned_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct NameErrorLabels {
    pub source: crate::names::NameSource,
    pub kind: crate::names::NameError,
}

/// Labels of `netgov_names_learned_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct NameSourceLabels {
    pub source: crate::names::NameSource,
}

/// Labels of `netgov_unprotected_pods`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PostureLabels {
    pub namespace: String,
    pub direction: Direction,
}

/// Labels of `netgov_events_lost_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StageLabels {
    pub stage: LossStage,
}

/// Labels of `netgov_datapath_counter_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DatapathCounterLabels {
    pub counter: DatapathCounter,
}

/// A kernel counter as a label value: its name.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(super) struct DatapathCounter(pub netgov_common::Counter);

impl prometheus_client::encoding::EncodeLabelValue for DatapathCounter {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.0.name())
    }
}

/// Labels of `netgov_hubble_rejected_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub(super) struct RejectionLabels {
    pub reason: crate::hubble::Rejection,
}

/// Labels of `netgov_namespace_governed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct NamespaceLabels {
    pub namespace: String,
}

/// Labels of the cluster-state health metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ResourceLabels {
    pub resource: ResourceKind,
}

/// Labels of `netgov_flows_not_judged_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct NotJudgedLabels {
    pub reason: NotJudged,
}

/// Labels of `netgov_datapath_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DatapathLabels {
    pub kernel: String,
    pub attach_mode: String,
    /// `true` when the socket-delivery hook is attached.
    pub socket_hook: String,
}

/// Labels of `netgov_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct BuildLabels {
    pub version: String,
    pub revision: String,
}
