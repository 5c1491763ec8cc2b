//! The agent's Prometheus metrics: one [`Metrics`] owning a `netgov_`
//! prefixed registry with typed label sets.
//!
//! The names and labels of the judgement metrics are fixed — alerts and
//! dashboards depend on them:
//!
//! - `netgov_flows_total{src_namespace,src_workload,dst_namespace,dst_workload,protocol,verdict}`
//! - `netgov_policy_violations_total{src_namespace,src_workload,dst_namespace,dst_workload,protocol,dst_port,denied_by,enforcement,tier}`
//! - `netgov_unexpected_egress_total{src_namespace,src_workload,destination}`
//!   (and `netgov_egress_flows_total`, see [`egress`](self::egress))
//! - `netgov_unprotected_pods{namespace,direction}`
//!
//! Counters count flows (connections), not packets. Destinations outside
//! the cluster appear as `dst_namespace=""`, `dst_workload="world"`.
//! Cardinality is bounded: labels carry workloads, not pods; outside
//! destinations are named (at most `max_names` names per workload) or
//! aggregated (IPv4 /24, IPv6 /64); and at most
//! `max_workloads` distinct `(namespace, workload)` values are used, the
//! rest reported as workload `_overflow`. The series of a deleted workload
//! are removed with [`Metrics::forget_workload`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

mod egress;
mod labels;
mod series;
mod staged;

use labels::{
    BuildLabels, DatapathCounter, DatapathCounterLabels, DatapathLabels, EgressLabels, FlowLabels,
    NamespaceLabels, NotJudgedLabels, PostureLabels, RejectionLabels, ResourceLabels, StageLabels,
    StagedLabels, ViolationLabels,
};
pub use labels::{LossStage, StagedChange};
use series::{SeriesIndex, count_series, forget_series};

use crate::engine::Decision;
use crate::engine::ResourceKind;
use crate::engine::tiers::Tier;
use crate::judge::{DeniedBy, Enforcement, NotJudged};
use crate::model::{Direction, Identity, Protocol};

/// The workload label used past the cardinality cap, and the `dst_port`
/// label past [`MAX_PORTS_PER_PAIR`].
pub const OVERFLOW: &str = "_overflow";
/// Distinct `dst_port` values of `netgov_policy_violations_total` per
/// workload pair; further ports are counted as `dst_port="_overflow"`, so
/// that a port scan makes a bounded number of series.
pub const MAX_PORTS_PER_PAIR: usize = 32;

/// Aggregates a destination outside the cluster for labels: IPv4 to its
/// /24, IPv6 to its /64.
pub fn aggregate_destination(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let network = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{network}/64")
        }
    }
}

/// The `dst_port` label: the port, `""` for protocols without ports.
fn port_label(protocol: Protocol, port: u16) -> String {
    if protocol.has_ports() {
        port.to_string()
    } else {
        String::new()
    }
}

/// A new metric, registered as `netgov_<name>`.
fn register<M: Metric + Clone + Default>(registry: &mut Registry, name: &str, help: &str) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

/// The agent's metrics. Every recording is a method: callers pass typed
/// values and never build a label set.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    flows: Family<FlowLabels, Counter>,
    violations: Family<ViolationLabels, Counter>,
    unexpected_egress: Family<EgressLabels, Counter>,
    staged_changes: Family<StagedLabels, Counter>,
    unprotected_pods: Family<PostureLabels, Gauge>,
    events_lost: Family<StageLabels, Counter>,
    flow_table_entries: Gauge,
    datapath_counters: Family<DatapathCounterLabels, Counter>,
    flow_cache_flush_failures: Counter,
    flow_cache_stranded: Gauge,
    flow_table_evictions: Counter,
    attached_interfaces: Gauge,
    cluster_synced: Family<ResourceLabels, Gauge>,
    cluster_age_seconds: Family<ResourceLabels, Gauge>,
    cluster_errors: Family<ResourceLabels, Counter>,
    policy_compile_errors: Gauge,
    flow_log_errors: Counter,
    hubble_export_errors: Counter,
    hubble_client_lost: Counter,
    hubble_rejected: Family<RejectionLabels, Counter>,
    http_rejected: Counter,
    attachments_restored: Counter,
    attachments_missing: Gauge,
    conntrack_errors: Counter,
    not_judged: Family<NotJudgedLabels, Counter>,
    ready: Gauge,
    heap_in_use: Gauge,
    datapath_info: Family<DatapathLabels, Gauge>,
    build_info: Family<BuildLabels, Gauge>,
    governed_namespaces: Family<NamespaceLabels, Gauge>,
    names: egress::NameMetrics,
    max_workloads: usize,
    /// Distinct destination names per source workload in egress labels.
    max_names: usize,
    index: Mutex<SeriesIndex>,
}

impl Metrics {
    /// A registry with every metric, capped at `max_workloads` distinct
    /// `(namespace, workload)` label values, and 100 destination names per
    /// workload.
    pub fn new(max_workloads: usize) -> Self {
        Self::with_caps(max_workloads, 100)
    }

    /// [`Metrics::new`] with `max_names` destination names per workload.
    pub fn with_caps(max_workloads: usize, max_names: usize) -> Self {
        let mut registry = Registry::with_prefix("netgov");
        // Registered in the order the exposition lists them.
        Self {
            flows: register(
                &mut registry,
                "flows",
                "Observed flows (connections) by workload pair and verdict",
            ),
            violations: register(
                &mut registry,
                "policy_violations",
                "Observed flows the policies deny, by which side denies and whether the network enforced it",
            ),
            unexpected_egress: register(
                &mut registry,
                "unexpected_egress",
                "Flows from pods to destinations outside the cluster that nothing declares",
            ),
            staged_changes: register(
                &mut registry,
                "staged_changes",
                "Flows whose verdict the staged policies (--staged) would change, by workload pair, port and change",
            ),
            unprotected_pods: register(
                &mut registry,
                "unprotected_pods",
                "Pods no policy isolates, by namespace and direction",
            ),
            events_lost: register(
                &mut registry,
                "events_lost",
                "Events lost, by pipeline stage",
            ),
            flow_table_entries: register(
                &mut registry,
                "flow_table_entries",
                "Live flows in the flow table",
            ),
            flow_table_evictions: register(
                &mut registry,
                "flow_table_evictions",
                "Kernel flow entries evicted before they were read",
            ),
            datapath_counters: register(
                &mut registry,
                "datapath_counter",
                "The datapath's own counters, by name, as the kernel counts them (the losses among them are also in netgov_events_lost_total)",
            ),
            flow_cache_flush_failures: register(
                &mut registry,
                "flow_cache_flush_failures",
                "Drains whose flush of the per-CPU flow caches failed on a CPU: its counts stay cached for the next flush (the log names the CPU)",
            ),
            flow_cache_stranded: register(
                &mut registry,
                "flow_cache_stranded_packets",
                "Packets held in the flow caches of CPUs that are offline: they reach their flows when the CPU is back, or are counted lost (stage kernel_flow_cache) if the flows ended first",
            ),
            attached_interfaces: register(
                &mut registry,
                "attached_interfaces",
                "Interfaces with netgov programs attached",
            ),
            cluster_synced: register(
                &mut registry,
                "cluster_synced",
                "1 once the resource's first list is applied",
            ),
            cluster_age_seconds: register(
                &mut registry,
                "cluster_state_age_seconds",
                "Seconds since the resource's last event",
            ),
            cluster_errors: register(
                &mut registry,
                "cluster_errors",
                "Watch errors or failed reloads, by resource",
            ),
            policy_compile_errors: register(
                &mut registry,
                "policy_compile_errors",
                "NetworkPolicies that failed to compile and are not applied",
            ),
            flow_log_errors: register(
                &mut registry,
                "flow_log_errors",
                "Flow-log records that could not be written (the first of each run of failures is logged)",
            ),
            hubble_export_errors: register(
                &mut registry,
                "hubble_export_errors",
                "Hubble export writes that failed, each losing the lines waiting for it (the first of each run of failures is logged)",
            ),
            hubble_client_lost: register(
                &mut registry,
                "hubble_client_events_lost",
                "Hubble events overwritten in the ring before a following client read them (each client is told, with a LostEvent)",
            ),
            hubble_rejected: register(
                &mut registry,
                "hubble_rejected",
                "Hubble clients refused, by reason",
            ),
            http_rejected: register(
                &mut registry,
                "http_connections_rejected",
                "HTTP connections closed at once because the listener was full or their peer had too many open",
            ),
            attachments_restored: register(
                &mut registry,
                "attachments_restored",
                "Interfaces whose netgov programs were found removed (by another tool) and attached again",
            ),
            attachments_missing: register(
                &mut registry,
                "attachments_missing",
                "Interfaces whose netgov programs were removed and could not be attached again (not ready while above 0)",
            ),
            conntrack_errors: register(
                &mut registry,
                "conntrack_errors",
                "Connection-tracking lookups that failed (those Service flows are judged against the Service's backends)",
            ),
            not_judged: register(
                &mut registry,
                "flows_not_judged",
                "Flows that are not policy traffic (ICMP errors, neighbour discovery, link-local and multicast), by reason",
            ),
            ready: register(
                &mut registry,
                "ready",
                "Whether the agent is ready (programs attached, cluster state synced): 1 or 0",
            ),
            heap_in_use: register(
                &mut registry,
                "heap_in_use_bytes",
                "Heap the agent's allocations hold (glibc's count, taken every minute after free pages are returned): resident memory above it is the allocator's",
            ),
            build_info: register(
                &mut registry,
                "build_info",
                "The agent's version and source revision (always 1)",
            ),
            datapath_info: register(
                &mut registry,
                "datapath_info",
                "What the datapath runs with, found at start (always 1): kernel, attach mode, whether the socket-delivery hook is attached",
            ),
            governed_namespaces: register(
                &mut registry,
                "namespace_governed",
                "Namespaces labelled netgov.io/governed=true, opted in to posture alerts (always 1)",
            ),
            names: egress::NameMetrics::registered(&mut registry),
            max_workloads,
            max_names,
            index: Mutex::default(),
            registry,
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    fn index(&self) -> std::sync::MutexGuard<'_, SeriesIndex> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a judged flow.
    pub fn count_flow(
        &self,
        src: &Identity,
        dst: &Identity,
        protocol: Protocol,
        verdict: Decision,
    ) {
        let mut labels = FlowLabels {
            src_namespace: src.namespace.to_string(),
            src_workload: src.workload.to_string(),
            dst_namespace: dst.namespace.to_string(),
            dst_workload: dst.workload.to_string(),
            protocol,
            verdict,
        };
        let mut index = self.index();
        index.cap_workloads(self.max_workloads, &mut labels);
        count_series(&self.flows, &mut index.flows, labels);
    }

    /// Counts a policy violation. `dst_port` is ignored for protocols
    /// without ports (the label is then `""`).
    pub fn count_violation(
        &self,
        (src, dst): (&Identity, &Identity),
        (protocol, dst_port): (Protocol, u16),
        (denied_by, tier): (DeniedBy, Tier),
        enforcement: Enforcement,
    ) {
        let mut labels = ViolationLabels {
            src_namespace: src.namespace.to_string(),
            src_workload: src.workload.to_string(),
            dst_namespace: dst.namespace.to_string(),
            dst_workload: dst.workload.to_string(),
            protocol,
            dst_port: port_label(protocol, dst_port),
            denied_by,
            enforcement,
            tier,
        };
        let mut index = self.index();
        index.cap_workloads(self.max_workloads, &mut labels);
        if let Some(counter) = self.violations.get(&labels) {
            counter.inc();
            return;
        }
        // A new series: its port takes one of the pair's places, if any is
        // left.
        index.cap_port(&mut labels);
        count_series(&self.violations, &mut index.violations, labels);
    }

    /// Counts `count` events lost at `stage`.
    pub fn count_lost(&self, stage: LossStage, count: u64) {
        self.events_lost
            .get_or_create(&StageLabels { stage })
            .inc_by(count);
    }

    /// Counts what a datapath counter grew by.
    pub fn count_datapath(&self, counter: netgov_common::Counter, increase: u64) {
        self.datapath_counters
            .get_or_create(&DatapathCounterLabels {
                counter: DatapathCounter(counter),
            })
            .inc_by(increase);
    }

    /// The flow caches' state: flushes failed since the last call, and
    /// packets held on offline CPUs now.
    pub fn record_flow_cache(&self, flush_failures: u64, stranded_packets: u64) {
        self.flow_cache_flush_failures.inc_by(flush_failures);
        self.flow_cache_stranded
            .set(i64::try_from(stranded_packets).unwrap_or(i64::MAX));
    }

    /// Counts a flow that ended without being judged, and why.
    pub fn count_not_judged(&self, reason: NotJudged) {
        self.not_judged
            .get_or_create(&NotJudgedLabels { reason })
            .inc();
    }

    /// Counts a connection-tracking lookup that failed.
    pub fn count_conntrack_error(&self) {
        self.conntrack_errors.inc();
    }

    /// Counts attachments restored since the last call, and sets how many
    /// interfaces miss their programs now.
    pub fn record_attachments(&self, restored: u64, missing: usize) {
        self.attachments_restored.inc_by(restored);
        self.attachments_missing.set(missing as i64);
    }

    /// Counts an HTTP connection closed at once: the listener was full, or
    /// its peer had too many open.
    pub fn count_http_rejected(&self) {
        self.http_rejected.inc();
    }

    /// Counts a flow-log record that could not be written.
    pub fn count_flow_log_error(&self) {
        self.flow_log_errors.inc();
    }

    /// Counts a Hubble export line that could not be written.
    pub fn count_hubble_export_error(&self) {
        self.hubble_export_errors.inc();
    }

    /// Counts Hubble events a following client missed.
    pub fn count_hubble_client_lost(&self, events: u64) {
        self.hubble_client_lost.inc_by(events);
    }

    /// Counts a Hubble client refused.
    pub fn count_hubble_rejected(&self, reason: crate::hubble::Rejection) {
        self.hubble_rejected
            .get_or_create(&RejectionLabels { reason })
            .inc();
    }

    /// The capture's state: interfaces attached, live flows in the flow
    /// table, and kernel entries evicted since the last call.
    pub fn record_capture(
        &self,
        attached_interfaces: usize,
        flow_table_entries: usize,
        evicted: u64,
    ) {
        self.attached_interfaces.set(attached_interfaces as i64);
        self.flow_table_entries.set(flow_table_entries as i64);
        self.flow_table_evictions.inc_by(evicted);
    }

    /// Sets the unprotected-pod gauges from `(namespace, direction) → count`;
    /// namespaces absent from `counts` are removed.
    pub fn set_unprotected_pods(&self, counts: &BTreeMap<(String, Direction), i64>) {
        self.unprotected_pods.clear();
        for ((namespace, direction), count) in counts {
            let labels = PostureLabels {
                namespace: namespace.clone(),
                direction: *direction,
            };
            self.unprotected_pods.get_or_create(&labels).set(*count);
        }
    }

    /// Sets `netgov_namespace_governed` to 1 for exactly `namespaces`.
    pub fn set_governed_namespaces<'a>(&self, namespaces: impl IntoIterator<Item = &'a str>) {
        self.governed_namespaces.clear();
        for namespace in namespaces {
            let labels = NamespaceLabels {
                namespace: namespace.to_owned(),
            };
            self.governed_namespaces.get_or_create(&labels).set(1);
        }
    }

    /// Sets the number of policies that failed to compile.
    pub fn set_policy_compile_errors(&self, count: usize) {
        self.policy_compile_errors.set(count as i64);
    }

    /// Sets `netgov_build_info` (once, at start).
    pub fn set_build_info(&self, version: &str, revision: &str) {
        self.build_info
            .get_or_create(&BuildLabels {
                version: version.to_owned(),
                revision: revision.to_owned(),
            })
            .set(1);
    }

    /// Sets `netgov_datapath_info` (once, at start).
    pub fn set_datapath_info(&self, info: &crate::capture::DatapathInfo) {
        self.datapath_info
            .get_or_create(&DatapathLabels {
                kernel: info.kernel.clone(),
                attach_mode: info.attach_mode.name().to_owned(),
                socket_hook: info.socket_hook.is_some().to_string(),
            })
            .set(1);
    }

    /// Sets `netgov_ready`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Records the heap the agent's allocations hold.
    pub fn set_heap_in_use(&self, bytes: u64) {
        self.heap_in_use
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// A resource's health: synced or not, its error count so far (raised
    /// to it: a counter, so `increase()` works on it), and the time since
    /// its last event when there was one.
    pub fn record_resource(
        &self,
        resource: ResourceKind,
        synced: bool,
        errors: u64,
        since_last_event: Option<std::time::Duration>,
    ) {
        let labels = ResourceLabels { resource };
        self.cluster_synced
            .get_or_create(&labels)
            .set(i64::from(synced));
        let counter = self.cluster_errors.get_or_create(&labels);
        let seen = counter.get();
        if errors > seen {
            counter.inc_by(errors - seen);
        }
        if let Some(age) = since_last_event {
            self.cluster_age_seconds
                .get_or_create(&labels)
                .set(age.as_secs() as i64);
        }
    }

    /// The workloads in namespaces (not `world`, nodes or the host) that
    /// name at least one series or hold a place under the workload cap:
    /// those [`Metrics::forget_workload`] has something of to forget.
    pub fn workloads_in_metrics(&self) -> std::collections::BTreeSet<(String, String)> {
        let index = self.index();
        index
            .flows
            .keys()
            .chain(index.violations.keys())
            .chain(index.egress.keys())
            .chain(index.egress_flows.keys())
            .chain(index.staged.keys())
            .chain(&index.workloads)
            .filter(|(namespace, _)| !namespace.is_empty())
            .cloned()
            .collect()
    }

    /// Removes every series naming the workload (deleted workloads must not
    /// linger on dashboards), and frees its place under the cap.
    pub fn forget_workload(&self, namespace: &str, workload: &str) {
        let mut index = self.index();
        let key = (namespace.to_owned(), workload.to_owned());
        forget_series(&mut index.flows, &self.flows, &key);
        forget_series(&mut index.violations, &self.violations, &key);
        forget_series(&mut index.egress, &self.unexpected_egress, &key);
        self.names.forget(&mut index, &key);
        forget_series(&mut index.staged, &self.staged_changes, &key);
        index.forget(&key);
    }
}

#[cfg(test)]
mod tests;
