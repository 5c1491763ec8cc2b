//! Who owned an address when. Pod IPs are reused within seconds under
//! churn: a flow must keep the pod its ends were when the traffic
//! happened, also when it is judged later (at its end, when a policy
//! changes) and its IP has a new owner — or none, between a delete and
//! the next pod's add.
//!
//! A pod that stops owning an IP (deleted, finished, its IP dropped or
//! taken by another pod) is kept as a departed owner with the time span
//! it owned the IP, for a retention longer than any flow can stay live
//! after its last packet (the idle timeouts). Departed pods keep their
//! policies up to date, so a re-judged flow uses today's policies with
//! the pod it really was.
//!
//! Times are Unix nanoseconds, as flow records carry them; an ownership
//! change is stamped when this state learns it.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use super::cluster::{ClusterState, PodInfo, Resolved};
use crate::model::PodRef;

/// How long departed owners are remembered unless configured: well over
/// the default idle timeouts (60 s) plus answer window and drain.
pub const DEFAULT_HISTORY_RETENTION: Duration = Duration::from_secs(300);

/// How much earlier than the API reports a pod's IP its traffic may be
/// captured (the watch's delay): a flow seen that much before its pod
/// became the owner is still the pod's.
const OWNER_LAG_NS: i128 = 2_000_000_000;

/// Departed owners kept at most, whatever the churn (oldest forgotten
/// first; about 200 bytes each, their shapes shared).
const MAX_DEPARTED: usize = 65_536;

/// A pod that owned an IP from `since` (unknown: before anything was
/// recorded) until `until`.
#[derive(Clone, Debug)]
pub(super) struct Departed {
    pub(super) pod: PodInfo,
    since: Option<i128>,
    until: i128,
}

/// The ownership history of pod IPs.
#[derive(Clone, Debug, Default)]
pub(super) struct IpHistory {
    departed: HashMap<IpAddr, Vec<Departed>>,
    /// Every departure in time order, to forget the oldest.
    order: VecDeque<(i128, IpAddr)>,
    /// When the current owner of an IP with a history took it.
    owner_since: HashMap<IpAddr, i128>,
    retention: Option<Duration>,
    frozen_now: Option<i128>,
}

/// Who owned the IPs a change touches, before it: `(ip, owner's id)`.
pub(super) type OwnersBefore = Vec<(IpAddr, Option<PodRef>)>;

impl ClusterState {
    /// How long a pod that left is remembered as its IPs' owner: at least
    /// the longest idle timeout, so a flow judged at its end still finds
    /// the pod it belonged to.
    pub fn set_history_retention(&mut self, retention: Duration) {
        self.history.retention = Some(retention);
    }

    /// Stops the clock of the ownership history at `unix_nanos` (tests).
    #[cfg(test)]
    pub(crate) fn freeze_clock(&mut self, unix_nanos: i128) {
        self.history.frozen_now = Some(unix_nanos);
    }

    fn now(&self) -> i128 {
        self.history
            .frozen_now
            .unwrap_or_else(crate::model::clock::unix_now_nanos)
    }

    /// What `ip` was for a flow seen from `first_seen` to `last_seen`: the
    /// pod that owned it at `first_seen`, even if it left since; not a pod
    /// that took the IP only after the flow's last packet.
    pub fn resolve_at(&self, ip: IpAddr, first_seen: i128, last_seen: i128) -> Resolved<'_> {
        let departed = self.history.departed.get(&ip).and_then(|owners| {
            owners
                .iter()
                .rev()
                .find(|d| d.since.is_none_or(|since| since <= first_seen) && first_seen < d.until)
        });
        if let Some(departed) = departed {
            return Resolved::Pod(&departed.pod);
        }
        match self.history.owner_since.get(&ip) {
            Some(since) if last_seen + OWNER_LAG_NS < *since => self.resolve_not_pod(ip),
            _ => self.resolve(ip),
        }
    }

    /// The owners of `ips` now, to compare after a change.
    pub(super) fn owners(&self, ips: impl IntoIterator<Item = IpAddr>) -> OwnersBefore {
        ips.into_iter()
            .map(|ip| (ip, self.pod_owning(ip).map(PodInfo::id)))
            .collect()
    }

    /// Records what changed hands since `before`: a previous owner that
    /// lost its IP departs (`removed` is the pod the change deleted, if
    /// any: no longer in the state), a new owner is stamped.
    pub(super) fn record_ownership(&mut self, before: OwnersBefore, removed: Option<&PodInfo>) {
        let changes = self.ownership_changes(before, |id, _| {
            removed
                .filter(|r| r.id() == *id)
                .cloned()
                .or_else(|| self.pod(&id.namespace, &id.name).cloned())
        });
        self.apply_ownership_changes(changes);
    }

    /// For each IP whose owner is not the one in `before`: the previous
    /// owner (`previous(id, ip)` finds its pod) and whether it has a new one.
    fn ownership_changes(
        &self,
        before: OwnersBefore,
        previous: impl Fn(&PodRef, IpAddr) -> Option<PodInfo>,
    ) -> Vec<(IpAddr, Option<PodInfo>, bool)> {
        before
            .into_iter()
            .filter_map(|(ip, owner)| {
                let current = self.pod_owning(ip).map(PodInfo::id);
                (current != owner).then(|| {
                    let departed = owner.and_then(|id| previous(&id, ip));
                    (ip, departed, current.is_some())
                })
            })
            .collect()
    }

    fn apply_ownership_changes(&mut self, changes: Vec<(IpAddr, Option<PodInfo>, bool)>) {
        let now = self.now();
        for (ip, departed, new_owner) in changes {
            if let Some(pod) = departed {
                self.depart(ip, pod, now);
            }
            if new_owner && self.history.departed.contains_key(&ip) {
                self.history.owner_since.insert(ip, now);
            }
        }
    }

    fn depart(&mut self, ip: IpAddr, pod: PodInfo, now: i128) {
        let history = &mut self.history;
        let since = history.owner_since.remove(&ip);
        history.departed.entry(ip).or_default().push(Departed {
            pod,
            since,
            until: now,
        });
        history.order.push_back((now, ip));
        let horizon = now
            - history
                .retention
                .unwrap_or(DEFAULT_HISTORY_RETENTION)
                .as_nanos() as i128;
        while let Some(&(until, ip)) = history.order.front() {
            if until >= horizon && history.order.len() <= MAX_DEPARTED {
                break;
            }
            history.order.pop_front();
            if let Some(owners) = history.departed.get_mut(&ip) {
                owners.remove(0);
                if owners.is_empty() {
                    history.departed.remove(&ip);
                    history.owner_since.remove(&ip);
                }
            }
        }
    }

    /// Brings the policies of departed pods up to date (all, or those of
    /// `namespace`).
    pub(super) fn refresh_departed(&mut self, namespace: Option<&str>) {
        let mut history = std::mem::take(&mut self.history);
        for owner in history.departed.values_mut().flatten() {
            if namespace.is_none_or(|n| *owner.pod.namespace == *n) {
                self.assign_policies(&mut owner.pod);
            }
        }
        self.history = history;
    }

    /// Replaces this state with `next`, a fresh load of the whole cluster
    /// (a reloaded manifest file), keeping the ownership history: pods
    /// that owned an IP here and do not in `next` departed now.
    pub fn succeed(&mut self, mut next: ClusterState) {
        let ips: Vec<IpAddr> = self.pod_by_ip.keys().chain(next.pod_by_ip.keys()).collect();
        let before = self.owners(ips);
        next.history = std::mem::take(&mut self.history);
        next.generation += self.generation + 1;
        let previous = std::mem::replace(self, next);
        let changes = self.ownership_changes(before, |_, ip| previous.pod_owning(ip).cloned());
        self.apply_ownership_changes(changes);
        self.refresh_departed(None);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::core::v1::Pod;

    use super::*;

    const SECOND: i128 = 1_000_000_000;

    fn pod(name: &str, app: &str, ip: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ml", "labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"podIP": ip},
        }))
        .expect("pod")
    }

    /// The pod `ip` resolves to for a flow seen from `first` to `last`
    /// seconds, as `name app`, or `-` for no pod.
    fn owner(cluster: &ClusterState, ip: &str, (first, last): (i128, i128)) -> String {
        match cluster.resolve_at(ip.parse().expect("ip"), first * SECOND, last * SECOND) {
            Resolved::Pod(pod) => {
                format!("{} {}", pod.name, pod.labels.get("app").unwrap_or_default())
            }
            _ => "-".into(),
        }
    }

    const IP: &str = "10.244.0.5";

    /// `a` owns the IP from the start, is deleted at 100 s; `b` takes the
    /// IP at 103 s.
    fn churned() -> ClusterState {
        let mut cluster = ClusterState::new();
        cluster.freeze_clock(10 * SECOND);
        cluster.upsert_pod(&pod("a", "trainer", IP));
        cluster.freeze_clock(100 * SECOND);
        cluster.delete_pod("ml", "a");
        cluster.freeze_clock(103 * SECOND);
        cluster.upsert_pod(&pod("b", "intruder", IP));
        cluster
    }

    #[test]
    fn a_flow_keeps_the_pod_that_owned_its_ip_when_it_was_seen() {
        let cluster = churned();
        let rows = [
            ("before the delete", (50, 99), "a trainer"),
            (
                "started before the delete, judged long after",
                (99, 99),
                "a trainer",
            ),
            ("in the gap, long before b", (100, 100), "-"),
            (
                "in the gap, just before b was reported",
                (101, 102),
                "b intruder",
            ),
            ("after b took the IP", (104, 110), "b intruder"),
        ];
        for (name, seen, expected) in rows {
            assert_eq!(owner(&cluster, IP, seen), expected, "{name}");
        }
        assert_eq!(
            match cluster.resolve(IP.parse().expect("ip")) {
                Resolved::Pod(pod) => pod.name.to_string(),
                _ => "-".into(),
            },
            "b",
            "now, the IP is b's"
        );
    }

    #[test]
    fn an_update_of_the_same_pod_is_not_a_new_owner() {
        let mut cluster = churned();
        cluster.freeze_clock(200 * SECOND);
        cluster.upsert_pod(&pod("b", "trainer", IP));
        assert_eq!(
            owner(&cluster, IP, (104, 110)),
            "b trainer",
            "b's flows use b's labels of now"
        );
        assert_eq!(owner(&cluster, IP, (50, 99)), "a trainer");
    }

    #[test]
    fn a_departed_pod_gets_policies_made_after_it_left() {
        let mut cluster = churned();
        let policy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "deny", "namespace": "ml"},
            "spec": {"podSelector": {"matchLabels": {"app": "trainer"}}, "policyTypes": ["Ingress"]},
        }))
        .expect("policy");
        cluster.upsert_policy(&policy).expect("valid");
        let Resolved::Pod(a) =
            cluster.resolve_at(IP.parse().expect("ip"), 50 * SECOND, 60 * SECOND)
        else {
            panic!("a departed pod");
        };
        assert_eq!(ClusterState::isolation(a), (true, false));
    }

    #[test]
    fn departed_owners_are_forgotten_after_the_retention() {
        let mut cluster = churned();
        cluster.set_history_retention(Duration::from_secs(30));
        cluster.freeze_clock(200 * SECOND);
        cluster.upsert_pod(&pod("c", "other", "10.244.0.6"));
        cluster.delete_pod("ml", "c");
        assert_eq!(
            owner(&cluster, IP, (50, 99)),
            "b intruder",
            "a is forgotten"
        );
        assert_eq!(owner(&cluster, "10.244.0.6", (150, 199)), "c other");
    }

    #[test]
    fn a_reload_of_the_whole_state_keeps_the_history() {
        let mut cluster = ClusterState::new();
        cluster.freeze_clock(10 * SECOND);
        cluster.upsert_pod(&pod("a", "trainer", IP));
        let generation = cluster.generation();
        let mut next = ClusterState::new();
        next.upsert_pod(&pod("b", "intruder", IP));
        cluster.freeze_clock(100 * SECOND);
        cluster.succeed(next);
        assert!(
            cluster.generation() > generation,
            "live flows are judged again"
        );
        assert_eq!(owner(&cluster, IP, (50, 99)), "a trainer");
        assert_eq!(owner(&cluster, IP, (100, 101)), "b intruder");
    }
}
