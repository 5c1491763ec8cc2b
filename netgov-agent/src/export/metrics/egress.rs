//! Egress to outside the cluster, by destination name when one is known,
//! and how names are learned.
//!
//! - `netgov_egress_flows_total{src_namespace,src_workload,destination,expected}`
//! - `netgov_unexpected_egress_total{src_namespace,src_workload,destination}`
//! - `netgov_dns_answers_total{outcome}`, `netgov_names_learned_total{source}`,
//!   `netgov_name_errors_total{source,kind}`, `netgov_name_cache_entries`,
//!   `netgov_name_cache_evictions_total`
//!
//! `destination` is the name (see `names::preferred`) while the source
//! workload has fewer than its cap of distinct names, else — and when no
//! name is known — the address block (IPv4 /24, IPv6 /64).

use std::net::IpAddr;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::labels::{
    DnsAnswerLabels, EgressFlowLabels, EgressLabels, NameErrorLabels, NameSourceLabels,
};
use super::series::count_series;
use super::{Metrics, aggregate_destination, register};
use crate::model::Identity;
use crate::names::{Hostname, LearnOutcome, NameError, NameSource};

/// The name metrics' families.
#[derive(Debug)]
pub(super) struct NameMetrics {
    egress_flows: Family<EgressFlowLabels, Counter>,
    dns_answers: Family<DnsAnswerLabels, Counter>,
    learned: Family<NameSourceLabels, Counter>,
    errors: Family<NameErrorLabels, Counter>,
    cache_entries: Gauge,
    cache_evictions: Counter,
}

impl NameMetrics {
    /// The families, registered.
    pub(super) fn registered(registry: &mut Registry) -> Self {
        Self {
            egress_flows: register(
                registry,
                "egress_flows",
                "Flows from pods to outside the cluster, by destination (its name when known) and whether a policy or the configuration declares them",
            ),
            dns_answers: register(
                registry,
                "dns_answers",
                "DNS answers delivered into pods and read, by outcome",
            ),
            learned: register(
                registry,
                "names_learned",
                "Destination names learned for addresses outside the cluster: per address a DNS answer named, per ClientHello",
            ),
            errors: register(
                registry,
                "name_errors",
                "DNS answers and ClientHellos that named nothing, by source and why",
            ),
            cache_entries: register(
                registry,
                "name_cache_entries",
                "Names held: a pod's name for an address, or a connection's server name",
            ),
            cache_evictions: register(
                registry,
                "name_cache_evictions",
                "Names dropped before they expired to make room: the cache's bound (names.maxEntries), a pod's quota (names.maxPerPod), 16 names per address",
            ),
        }
    }

    pub(super) fn forget(
        &self,
        index: &mut super::series::SeriesIndex,
        key: &super::series::WorkloadKey,
    ) {
        super::series::forget_series(&mut index.egress_flows, &self.egress_flows, key);
    }
}

impl Metrics {
    /// Counts a flow from `src` (a pod) to outside the cluster: with
    /// `flow`, in `netgov_egress_flows_total` as `expected` or not; with
    /// `count_unexpected`, in `netgov_unexpected_egress_total`. `name` is
    /// the destination's, if known.
    pub fn count_egress(
        &self,
        src: &Identity,
        (address, name): (IpAddr, Option<&Hostname>),
        (flow, unexpected, count_unexpected): (bool, bool, bool),
    ) {
        let mut egress = EgressLabels {
            src_namespace: src.namespace.to_string(),
            src_workload: src.workload.to_string(),
            destination: String::new(),
        };
        let mut index = self.index();
        index.cap_workloads(self.max_workloads, &mut egress);
        let key = (egress.src_namespace.clone(), egress.src_workload.clone());
        egress.destination = match name {
            Some(name) if index.admit_destination_name(&key, name.as_str(), self.max_names) => {
                name.to_string()
            }
            _ => aggregate_destination(address),
        };
        if flow {
            let labels = EgressFlowLabels {
                src_namespace: egress.src_namespace.clone(),
                src_workload: egress.src_workload.clone(),
                destination: egress.destination.clone(),
                expected: (!unexpected).to_string(),
            };
            count_series(&self.names.egress_flows, &mut index.egress_flows, labels);
        }
        if count_unexpected {
            count_series(&self.unexpected_egress, &mut index.egress, egress);
        }
    }

    /// Counts what a DNS answer or ClientHello gave.
    pub fn count_learned(&self, outcome: LearnOutcome) {
        let names = &self.names;
        match outcome {
            LearnOutcome::Dns(outcome, addresses) => {
                names
                    .dns_answers
                    .get_or_create(&DnsAnswerLabels { outcome })
                    .inc();
                if addresses > 0 {
                    let source = NameSource::Dns;
                    names
                        .learned
                        .get_or_create(&NameSourceLabels { source })
                        .inc_by(addresses as u64);
                }
            }
            LearnOutcome::ServerName(false) => {}
            LearnOutcome::ServerName(true) => {
                let source = NameSource::Sni;
                names
                    .learned
                    .get_or_create(&NameSourceLabels { source })
                    .inc();
            }
            LearnOutcome::Error(source, kind) => {
                names
                    .errors
                    .get_or_create(&NameErrorLabels { source, kind })
                    .inc();
            }
        }
    }

    /// Counts `count` payloads of `source` that named nothing for `kind`.
    pub fn count_name_errors(&self, source: NameSource, kind: NameError, count: u64) {
        self.names
            .errors
            .get_or_create(&NameErrorLabels { source, kind })
            .inc_by(count);
    }

    /// The name cache's size, and its evictions since start.
    pub fn record_name_cache(&self, entries: usize, evicted_total: u64) {
        self.names.cache_entries.set(entries as i64);
        let seen = self.names.cache_evictions.get();
        if evicted_total > seen {
            self.names.cache_evictions.inc_by(evicted_total - seen);
        }
    }
}
