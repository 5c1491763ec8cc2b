//! Series bookkeeping: which label sets name each workload (so a deleted
//! workload's series can be removed), the workload cardinality cap and the
//! per-pair port cap.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::labels::{EgressFlowLabels, EgressLabels, FlowLabels, StagedLabels, ViolationLabels};
use super::{MAX_PORTS_PER_PAIR, OVERFLOW};
use crate::model::WORLD;

/// A `(namespace, workload)` label pair.
pub(super) type WorkloadKey = (String, String);

/// Which label sets exist for each workload, so its series can be removed.
#[derive(Debug, Default)]
pub(super) struct SeriesIndex {
    pub flows: BTreeMap<WorkloadKey, BTreeSet<FlowLabels>>,
    pub violations: BTreeMap<WorkloadKey, BTreeSet<ViolationLabels>>,
    pub egress: BTreeMap<WorkloadKey, BTreeSet<EgressLabels>>,
    pub egress_flows: BTreeMap<WorkloadKey, BTreeSet<EgressFlowLabels>>,
    pub staged: BTreeMap<WorkloadKey, BTreeSet<StagedLabels>>,
    /// Workloads holding a place under the cap (with series or not: the
    /// series of one may have gone with another workload's).
    pub(super) workloads: HashSet<WorkloadKey>,
    /// `dst_port` values of violations per (source, destination) workload.
    violation_ports: HashMap<[String; 4], HashSet<String>>,
    /// Destination names in egress series, per source workload.
    destination_names: HashMap<WorkloadKey, HashSet<String>>,
}

impl SeriesIndex {
    /// Whether `workload` may be a label value: it is known or the cap has
    /// room (then it becomes known). `world` (outside) never counts.
    fn within_cap(&mut self, max_workloads: usize, namespace: &str, workload: &str) -> bool {
        if workload == WORLD && namespace.is_empty() {
            return true;
        }
        let key = (namespace.to_owned(), workload.to_owned());
        if self.workloads.contains(&key) {
            return true;
        }
        if self.workloads.len() >= max_workloads {
            return false;
        }
        self.workloads.insert(key);
        true
    }

    /// Replaces each workload of `labels` past the cap by `_overflow`.
    pub fn cap_workloads<L: WorkloadSeries>(&mut self, max_workloads: usize, labels: &mut L) {
        labels.each_workload_mut(&mut |namespace, workload| {
            if !self.within_cap(max_workloads, namespace, workload) {
                *workload = OVERFLOW.to_owned();
            }
        });
    }

    /// Replaces a new series' port by `_overflow` when its workload pair
    /// already has [`MAX_PORTS_PER_PAIR`] ports.
    pub fn cap_port(&mut self, labels: &mut ViolationLabels) {
        let pair = [
            labels.src_namespace.clone(),
            labels.src_workload.clone(),
            labels.dst_namespace.clone(),
            labels.dst_workload.clone(),
        ];
        let ports = self.violation_ports.entry(pair).or_default();
        if !ports.contains(&labels.dst_port) {
            if ports.len() < MAX_PORTS_PER_PAIR {
                ports.insert(labels.dst_port.clone());
            } else {
                labels.dst_port = OVERFLOW.to_owned();
            }
        }
    }

    /// Whether `name` may be a destination label of the source workload
    /// `key`: it is one already, or fewer than `max` are (then it becomes
    /// one).
    pub fn admit_destination_name(&mut self, key: &WorkloadKey, name: &str, max: usize) -> bool {
        let names = self.destination_names.entry(key.clone()).or_default();
        if names.contains(name) {
            return true;
        }
        if names.len() >= max {
            return false;
        }
        names.insert(name.to_owned());
        true
    }

    /// Forgets the workload: its place under the cap, its pairs' ports and
    /// its destination names. Returns nothing; its series are taken from
    /// the maps by the caller.
    pub fn forget(&mut self, key: &WorkloadKey) {
        self.workloads.remove(key);
        self.destination_names.remove(key);
        self.violation_ports.retain(
            |[src_namespace, src_workload, dst_namespace, dst_workload], _| {
                (src_namespace, src_workload) != (&key.0, &key.1)
                    && (dst_namespace, dst_workload) != (&key.0, &key.1)
            },
        );
    }
}

/// Label sets that name workloads (whose series go when they go).
pub(super) trait WorkloadSeries: Clone + Ord + std::hash::Hash + EncodeLabelSet {
    /// Calls `f` with each `(namespace, workload)` the labels name.
    fn each_workload_mut(&mut self, f: &mut dyn FnMut(&str, &mut String));
    /// The same, read-only.
    fn each_workload(&self, f: &mut dyn FnMut(&str, &str));
}

/// Implements [`WorkloadSeries`] over `(namespace, workload)` field pairs.
macro_rules! workload_series {
    ($labels:ty: $(($namespace:ident, $workload:ident)),+) => {
        impl WorkloadSeries for $labels {
            fn each_workload_mut(&mut self, f: &mut dyn FnMut(&str, &mut String)) {
                $(f(&self.$namespace, &mut self.$workload);)+
            }
            fn each_workload(&self, f: &mut dyn FnMut(&str, &str)) {
                $(f(&self.$namespace, &self.$workload);)+
            }
        }
    };
}

workload_series!(FlowLabels: (src_namespace, src_workload), (dst_namespace, dst_workload));
workload_series!(ViolationLabels: (src_namespace, src_workload), (dst_namespace, dst_workload));
workload_series!(EgressLabels: (src_namespace, src_workload));
workload_series!(EgressFlowLabels: (src_namespace, src_workload));
workload_series!(StagedLabels: (src_namespace, src_workload), (dst_namespace, dst_workload));

/// Increments the series `labels`. A new series is first indexed under
/// each workload it names, so that forgetting any of them removes it; a
/// known one (the common case: once per flow) costs only the increment.
pub(super) fn count_series<L: WorkloadSeries>(
    family: &Family<L, Counter>,
    series: &mut BTreeMap<WorkloadKey, BTreeSet<L>>,
    labels: L,
) {
    if let Some(counter) = family.get(&labels) {
        counter.inc();
        return;
    }
    labels.each_workload(&mut |namespace, workload| {
        series
            .entry((namespace.to_owned(), workload.to_owned()))
            .or_default()
            .insert(labels.clone());
    });
    family.get_or_create(&labels).inc();
}

/// Removes the series naming `key` from `family`, and from the index: under
/// `key`, and under every other workload they name — else the sets of a
/// workload that stays (a server) would keep the label sets of every
/// client that left, for good.
pub(super) fn forget_series<L: WorkloadSeries>(
    index: &mut BTreeMap<WorkloadKey, BTreeSet<L>>,
    family: &Family<L, Counter>,
    key: &WorkloadKey,
) {
    for labels in index.remove(key).unwrap_or_default() {
        family.remove(&labels);
        labels.each_workload(&mut |namespace, workload| {
            let other = (namespace.to_owned(), workload.to_owned());
            if let Some(set) = index.get_mut(&other) {
                set.remove(&labels);
                if set.is_empty() {
                    index.remove(&other);
                }
            }
        });
    }
}
