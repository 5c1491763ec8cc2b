//! The agent's Prometheus metrics: one [`Metrics`] owning a `netgov_`
//! prefixed registry with typed label sets.
//!
//! The names and labels of the judgement metrics are fixed — alerts and
//! dashboards depend on them:
//!
//! - `netgov_flows_total{src_namespace,src_workload,dst_namespace,dst_workload,protocol,verdict}`
//! - `netgov_policy_violations_total{src_namespace,src_workload,dst_namespace,dst_workload,protocol,dst_port,denied_by,enforcement}`
//! - `netgov_unexpected_egress_total{src_namespace,src_workload,destination}`
//! - `netgov_unprotected_pods{namespace,direction}`
//!
//! Counters count flows (connections), not packets. Destinations outside
//! the cluster appear as `dst_namespace=""`, `dst_workload="world"`.
//! Cardinality is bounded: labels carry workloads, not pods; outside
//! destinations are aggregated (IPv4 /24, IPv6 /64); and at most
//! `max_workloads` distinct `(namespace, workload)` values are used, the
//! rest reported as workload `_overflow`. The series of a deleted workload
//! are removed with [`Metrics::forget_workload`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The workload label of destinations outside the cluster.
pub const WORLD: &str = "world";
/// The workload label used past the cardinality cap, and the `dst_port`
/// label past [`MAX_PORTS_PER_PAIR`].
pub const OVERFLOW: &str = "_overflow";
/// Distinct `dst_port` values of `netgov_policy_violations_total` per
/// workload pair; further ports are counted as `dst_port="_overflow"`, so
/// that a port scan makes a bounded number of series.
pub const MAX_PORTS_PER_PAIR: usize = 32;

/// Labels of `netgov_flows_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct FlowLabels {
    /// Source namespace (`""` outside the cluster).
    pub src_namespace: String,
    /// Source workload (`world` outside the cluster).
    pub src_workload: String,
    /// Destination namespace.
    pub dst_namespace: String,
    /// Destination workload.
    pub dst_workload: String,
    /// `TCP`, `UDP`, `SCTP`, `ICMP`, `ICMPv6`.
    pub protocol: String,
    /// `allow`, `deny`, `not-applicable`.
    pub verdict: String,
}

/// Labels of `netgov_policy_violations_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ViolationLabels {
    /// Source namespace.
    pub src_namespace: String,
    /// Source workload.
    pub src_workload: String,
    /// Destination namespace.
    pub dst_namespace: String,
    /// Destination workload.
    pub dst_workload: String,
    /// Protocol.
    pub protocol: String,
    /// Destination port (`""` for ICMP).
    pub dst_port: String,
    /// `egress`, `ingress` or `both`.
    pub denied_by: String,
    /// `gap`, `enforced` or `unknown`.
    pub enforcement: String,
}

/// Labels of `netgov_unexpected_egress_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct EgressLabels {
    /// Source namespace.
    pub src_namespace: String,
    /// Source workload.
    pub src_workload: String,
    /// The destination, aggregated (see [`aggregate_destination`]).
    pub destination: String,
}

/// Labels of `netgov_unprotected_pods`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct PostureLabels {
    /// Namespace.
    pub namespace: String,
    /// `ingress` or `egress`.
    pub direction: String,
}

/// Labels of the per-stage loss counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// Pipeline stage: `kernel_ringbuf`, `kernel_flow_map`, `capture`,
    /// `enrich`, `evaluate`, `export`.
    pub stage: String,
}

/// Labels of `netgov_namespace_governed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    /// Namespace.
    pub namespace: String,
}

/// Labels of the cluster-state health metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    /// `Pod`, `Namespace`, `NetworkPolicy`, `Service`, `EndpointSlice`,
    /// `Node`.
    pub resource: String,
}

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

/// Which label sets exist for each workload, so its series can be removed.
#[derive(Debug, Default)]
struct SeriesIndex {
    flows: BTreeMap<(String, String), BTreeSet<FlowLabels>>,
    violations: BTreeMap<(String, String), BTreeSet<ViolationLabels>>,
    egress: BTreeMap<(String, String), BTreeSet<EgressLabels>>,
    workloads: HashSet<(String, String)>,
    /// `dst_port` values of violations per (source, destination) workload.
    violation_ports: HashMap<[String; 4], HashSet<String>>,
}

/// The agent's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    flows: Family<FlowLabels, Counter>,
    violations: Family<ViolationLabels, Counter>,
    unexpected_egress: Family<EgressLabels, Counter>,
    unprotected_pods: Family<PostureLabels, Gauge>,
    /// Events lost, by pipeline stage.
    pub events_lost: Family<StageLabels, Counter>,
    /// Live entries of the user-space flow table.
    pub flow_table_entries: Gauge,
    /// Kernel flow entries evicted before they were read.
    pub flow_table_evictions: Counter,
    /// Interfaces with programs attached.
    pub attached_interfaces: Gauge,
    /// 1 once a resource's first list is applied.
    pub cluster_synced: Family<ResourceLabels, Gauge>,
    /// Seconds since a resource's last event.
    pub cluster_age_seconds: Family<ResourceLabels, Gauge>,
    /// Watch errors or failed reloads, by resource (see
    /// [`Metrics::set_cluster_errors`]).
    cluster_errors: Family<ResourceLabels, Counter>,
    /// Policies that failed to compile (not applied).
    pub policy_compile_errors: Gauge,
    /// 1 while `/readyz` answers ready.
    pub ready: Gauge,
    governed_namespaces: Family<NamespaceLabels, Gauge>,
    max_workloads: usize,
    index: Mutex<SeriesIndex>,
}

impl Metrics {
    /// A registry with every metric, capped at `max_workloads` distinct
    /// `(namespace, workload)` label values.
    pub fn new(max_workloads: usize) -> Self {
        let mut registry = Registry::with_prefix("netgov");
        let metrics = Self {
            registry: Registry::default(),
            flows: Family::default(),
            violations: Family::default(),
            unexpected_egress: Family::default(),
            unprotected_pods: Family::default(),
            events_lost: Family::default(),
            flow_table_entries: Gauge::default(),
            flow_table_evictions: Counter::default(),
            attached_interfaces: Gauge::default(),
            cluster_synced: Family::default(),
            cluster_age_seconds: Family::default(),
            cluster_errors: Family::default(),
            policy_compile_errors: Gauge::default(),
            ready: Gauge::default(),
            governed_namespaces: Family::default(),
            max_workloads,
            index: Mutex::default(),
        };
        registry.register(
            "flows",
            "Observed flows (connections) by workload pair and verdict",
            metrics.flows.clone(),
        );
        registry.register(
            "policy_violations",
            "Observed flows the policies deny, by which side denies and whether the network enforced it",
            metrics.violations.clone(),
        );
        registry.register(
            "unexpected_egress",
            "Flows from pods to destinations outside the cluster that nothing declares",
            metrics.unexpected_egress.clone(),
        );
        registry.register(
            "unprotected_pods",
            "Pods no policy isolates, by namespace and direction",
            metrics.unprotected_pods.clone(),
        );
        registry.register(
            "events_lost",
            "Events lost, by pipeline stage",
            metrics.events_lost.clone(),
        );
        registry.register(
            "flow_table_entries",
            "Live flows in the flow table",
            metrics.flow_table_entries.clone(),
        );
        registry.register(
            "flow_table_evictions",
            "Kernel flow entries evicted before they were read",
            metrics.flow_table_evictions.clone(),
        );
        registry.register(
            "attached_interfaces",
            "Interfaces with netgov programs attached",
            metrics.attached_interfaces.clone(),
        );
        registry.register(
            "cluster_synced",
            "1 once the resource's first list is applied",
            metrics.cluster_synced.clone(),
        );
        registry.register(
            "cluster_state_age_seconds",
            "Seconds since the resource's last event",
            metrics.cluster_age_seconds.clone(),
        );
        registry.register(
            "cluster_errors",
            "Watch errors or failed reloads, by resource",
            metrics.cluster_errors.clone(),
        );
        registry.register(
            "policy_compile_errors",
            "NetworkPolicies that failed to compile and are not applied",
            metrics.policy_compile_errors.clone(),
        );
        registry.register(
            "ready",
            "Whether the agent is ready (programs attached, cluster state synced): 1 or 0",
            metrics.ready.clone(),
        );
        registry.register(
            "namespace_governed",
            "Namespaces labelled netgov.io/governed=true, opted in to posture alerts (always 1)",
            metrics.governed_namespaces.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Whether `workload` may be a label value: it is known or the cap has
    /// room (then it becomes known). `world` (outside) never counts.
    fn within_cap(&self, index: &mut SeriesIndex, namespace: &str, workload: &str) -> bool {
        if workload == WORLD && namespace.is_empty() {
            return true;
        }
        let key = (namespace.to_owned(), workload.to_owned());
        if index.workloads.contains(&key) {
            return true;
        }
        if index.workloads.len() >= self.max_workloads {
            return false;
        }
        index.workloads.insert(key);
        true
    }

    /// Replaces each workload of `labels` past the cap by `_overflow`.
    fn cap_workloads<L: WorkloadSeries>(&self, index: &mut SeriesIndex, labels: &mut L) {
        labels.each_workload_mut(&mut |namespace, workload| {
            if !self.within_cap(index, namespace, workload) {
                *workload = OVERFLOW.to_owned();
            }
        });
    }

    /// Counts a judged flow.
    pub fn count_flow(&self, mut labels: FlowLabels) {
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        self.cap_workloads(&mut index, &mut labels);
        count_series(&self.flows, &mut index.flows, labels);
    }

    /// Counts a policy violation.
    pub fn count_violation(&self, mut labels: ViolationLabels) {
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        self.cap_workloads(&mut index, &mut labels);
        if let Some(counter) = self.violations.get(&labels) {
            counter.inc();
            return;
        }
        // A new series: its port takes one of the pair's places, if any is
        // left.
        let pair = [
            labels.src_namespace.clone(),
            labels.src_workload.clone(),
            labels.dst_namespace.clone(),
            labels.dst_workload.clone(),
        ];
        let ports = index.violation_ports.entry(pair).or_default();
        if !ports.contains(&labels.dst_port) {
            if ports.len() < MAX_PORTS_PER_PAIR {
                ports.insert(labels.dst_port.clone());
            } else {
                labels.dst_port = OVERFLOW.to_owned();
            }
        }
        count_series(&self.violations, &mut index.violations, labels);
    }

    /// Counts an unexpected egress flow to `destination` (outside the
    /// cluster; aggregated here).
    pub fn count_unexpected_egress(
        &self,
        src_namespace: &str,
        src_workload: &str,
        destination: IpAddr,
    ) {
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        let mut labels = EgressLabels {
            src_namespace: src_namespace.to_owned(),
            src_workload: src_workload.to_owned(),
            destination: aggregate_destination(destination),
        };
        self.cap_workloads(&mut index, &mut labels);
        count_series(&self.unexpected_egress, &mut index.egress, labels);
    }

    /// Sets the unprotected-pod gauges from `(namespace, direction) → count`;
    /// namespaces absent from `counts` are removed.
    pub fn set_unprotected_pods(&self, counts: &BTreeMap<(String, String), i64>) {
        self.unprotected_pods.clear();
        for ((namespace, direction), count) in counts {
            let labels = PostureLabels {
                namespace: namespace.clone(),
                direction: direction.clone(),
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

    /// Raises `netgov_cluster_errors_total{resource}` to `total`, the
    /// source's running count (a counter, so `increase()` works on it).
    pub fn set_cluster_errors(&self, resource: &str, total: u64) {
        let labels = ResourceLabels {
            resource: resource.to_owned(),
        };
        let counter = self.cluster_errors.get_or_create(&labels);
        let seen = counter.get();
        if total > seen {
            counter.inc_by(total - seen);
        }
    }

    /// Removes every series naming the workload (deleted workloads must not
    /// linger on dashboards), and frees its place under the cap.
    pub fn forget_workload(&self, namespace: &str, workload: &str) {
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        let key = (namespace.to_owned(), workload.to_owned());
        for labels in index.flows.remove(&key).unwrap_or_default() {
            self.flows.remove(&labels);
        }
        for labels in index.violations.remove(&key).unwrap_or_default() {
            self.violations.remove(&labels);
        }
        for labels in index.egress.remove(&key).unwrap_or_default() {
            self.unexpected_egress.remove(&labels);
        }
        index.workloads.remove(&key);
        index.violation_ports.retain(
            |[src_namespace, src_workload, dst_namespace, dst_workload], _| {
                (src_namespace, src_workload) != (&key.0, &key.1)
                    && (dst_namespace, dst_workload) != (&key.0, &key.1)
            },
        );
    }
}

/// Label sets that name workloads (whose series go when they go).
trait WorkloadSeries: Clone + Ord + std::hash::Hash + EncodeLabelSet {
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

/// Increments the series `labels`. A new series is first indexed under
/// each workload it names, so that forgetting any of them removes it; a
/// known one (the common case: once per flow) costs only the increment.
fn count_series<L: WorkloadSeries>(
    family: &Family<L, Counter>,
    series: &mut BTreeMap<(String, String), BTreeSet<L>>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(src: (&str, &str), dst: (&str, &str), verdict: &str) -> FlowLabels {
        FlowLabels {
            src_namespace: src.0.into(),
            src_workload: src.1.into(),
            dst_namespace: dst.0.into(),
            dst_workload: dst.1.into(),
            protocol: "TCP".into(),
            verdict: verdict.into(),
        }
    }

    /// The value of the sample line that starts with `prefix`.
    fn sample(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|line| line.starts_with(prefix))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn fixed_names_labels_and_counts() {
        let metrics = Metrics::new(100);
        metrics.count_flow(flow(("ai", "monitoring"), ("ai", "model-serving"), "allow"));
        metrics.count_flow(flow(("ai", "monitoring"), ("ai", "model-serving"), "allow"));
        metrics.count_violation(ViolationLabels {
            src_namespace: "ai".into(),
            src_workload: "notebook".into(),
            dst_namespace: "ai".into(),
            dst_workload: "model-serving".into(),
            protocol: "TCP".into(),
            dst_port: "8080".into(),
            denied_by: "ingress".into(),
            enforcement: "gap".into(),
        });
        metrics.count_unexpected_egress("ai", "notebook", "203.0.113.10".parse().expect("ip"));
        metrics.count_unexpected_egress("ai", "notebook", "203.0.113.99".parse().expect("ip"));
        metrics.set_unprotected_pods(&[(("dev".to_owned(), "egress".to_owned()), 3)].into());
        metrics
            .events_lost
            .get_or_create(&StageLabels {
                stage: "kernel_ringbuf".into(),
            })
            .inc_by(4);
        metrics
            .cluster_synced
            .get_or_create(&ResourceLabels {
                resource: "Pod".into(),
            })
            .set(1);
        let text = metrics.encode();
        assert_eq!(
            sample(&text, r#"netgov_events_lost_total{stage="kernel_ringbuf"}"#),
            Some(4.0)
        );
        assert_eq!(
            sample(&text, r#"netgov_cluster_synced{resource="Pod"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"netgov_flows_total{src_namespace="ai",src_workload="monitoring",dst_namespace="ai",dst_workload="model-serving",protocol="TCP",verdict="allow"}"#
            ),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"netgov_policy_violations_total{src_namespace="ai",src_workload="notebook",dst_namespace="ai",dst_workload="model-serving",protocol="TCP",dst_port="8080",denied_by="ingress",enforcement="gap"}"#
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"netgov_unexpected_egress_total{src_namespace="ai",src_workload="notebook",destination="203.0.113.0/24"}"#
            ),
            Some(2.0),
            "outside destinations are aggregated: {text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"netgov_unprotected_pods{namespace="dev",direction="egress"}"#
            ),
            Some(3.0)
        );
        for name in [
            "netgov_events_lost",
            "netgov_flow_table_entries",
            "netgov_attached_interfaces",
            "netgov_cluster_synced",
            "netgov_policy_compile_errors",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name}")),
                "{name} missing: {text}"
            );
        }
    }

    #[test]
    fn cardinality_is_capped_and_world_is_free() {
        let metrics = Metrics::new(2);
        metrics.count_flow(flow(("a", "one"), ("", WORLD), "allow"));
        metrics.count_flow(flow(("a", "two"), ("", WORLD), "allow"));
        metrics.count_flow(flow(("a", "three"), ("", WORLD), "allow"));
        metrics.count_flow(flow(("a", "four"), ("a", "one"), "deny"));
        let text = metrics.encode();
        assert!(text.contains(r#"src_workload="one""#));
        assert!(text.contains(r#"src_workload="two""#));
        assert!(!text.contains(r#"src_workload="three""#), "{text}");
        assert_eq!(
            sample(
                &text,
                r#"netgov_flows_total{src_namespace="a",src_workload="_overflow",dst_namespace="",dst_workload="world""#
            ),
            Some(1.0),
            "{text}"
        );
        assert!(
            text.contains(r#"src_workload="_overflow",dst_namespace="a",dst_workload="one""#),
            "{text}"
        );
    }

    #[test]
    fn deleted_workloads_lose_their_series() {
        let metrics = Metrics::new(10);
        metrics.count_flow(flow(("a", "gone"), ("a", "stays"), "allow"));
        metrics.count_flow(flow(("a", "stays"), ("", WORLD), "allow"));
        metrics.count_unexpected_egress("a", "gone", "198.51.100.7".parse().expect("ip"));
        metrics.forget_workload("a", "gone");
        let text = metrics.encode();
        assert!(!text.contains(r#""gone""#), "{text}");
        assert!(
            text.contains(r#"src_workload="stays",dst_namespace="",dst_workload="world""#),
            "{text}"
        );
    }

    #[test]
    fn ipv6_destinations_aggregate_to_a_64() {
        assert_eq!(
            aggregate_destination("2001:db8:1:2:3:4:5:6".parse().expect("ip")),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn cluster_errors_count_up_and_governed_namespaces_follow_the_state() {
        let metrics = Metrics::new(10);
        metrics.set_cluster_errors("Pod", 2);
        metrics.set_cluster_errors("Pod", 2);
        metrics.set_cluster_errors("Pod", 5);
        metrics.set_governed_namespaces(["ai-platform", "data"]);
        metrics.set_governed_namespaces(["ai-platform"]);
        let text = metrics.encode();
        assert_eq!(
            sample(&text, r#"netgov_cluster_errors_total{resource="Pod"}"#),
            Some(5.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"netgov_namespace_governed{namespace="ai-platform"}"#
            ),
            Some(1.0)
        );
        assert!(!text.contains(r#"namespace="data""#), "{text}");
    }

    #[test]
    fn violation_ports_are_capped_per_workload_pair() {
        let metrics = Metrics::new(10);
        let violation = |src: &str, port: u16| ViolationLabels {
            src_namespace: "a".into(),
            src_workload: src.into(),
            dst_namespace: "a".into(),
            dst_workload: "db".into(),
            protocol: "TCP".into(),
            dst_port: port.to_string(),
            denied_by: "ingress".into(),
            enforcement: "enforced".into(),
        };
        for port in 1..=(MAX_PORTS_PER_PAIR as u16 + 10) {
            metrics.count_violation(violation("scanner", port));
        }
        // A known port stays itself; another pair has its own budget.
        metrics.count_violation(violation("scanner", 1));
        metrics.count_violation(violation("client", 5432));
        let text = metrics.encode();
        let series = |src: &str| {
            text.lines()
                .filter(|l| l.contains(&format!(r#"src_workload="{src}""#)))
                .count()
        };
        assert_eq!(series("scanner"), MAX_PORTS_PER_PAIR + 1, "{text}");
        assert!(
            text.contains(r#"src_workload="scanner",dst_namespace="a",dst_workload="db",protocol="TCP",dst_port="_overflow""#),
            "{text}"
        );
        let sample = |needle: &str| {
            text.lines()
                .find(|l| l.contains(needle))
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_owned)
        };
        assert_eq!(sample(r#"dst_port="_overflow""#).as_deref(), Some("10"));
        assert_eq!(sample(r#"src_workload="scanner",dst_namespace="a",dst_workload="db",protocol="TCP",dst_port="1","#).as_deref(), Some("2"));
        assert_eq!(series("client"), 1);
        metrics.forget_workload("a", "scanner");
        metrics.count_violation(violation("scanner", 9999));
        assert!(metrics.encode().contains(r#"dst_port="9999""#));
    }
}
