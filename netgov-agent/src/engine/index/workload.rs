//! A pod's workload: its top owner, derived from the pod object alone.
//!
//! The rule, without extra API calls:
//! - owner `ReplicaSet` whose name is `<deployment>-<pod-template-hash>`
//!   (the pod's `pod-template-hash` label) → `Deployment <deployment>`;
//!   a ReplicaSet without that suffix is its own workload;
//! - owner `Job` whose name is `<cronjob>-<digits>` (the CronJob
//!   controller names jobs after their scheduled time, in minutes since
//!   the epoch: 8 or more digits) → `CronJob <cronjob>`; else the `Job`;
//! - owner `StatefulSet`, `DaemonSet`, `ReplicationController` or any other
//!   kind → that owner;
//! - no controller owner → the pod itself (`Pod <name>`).
//!
//! The controller owner (`controller: true`) is preferred when a pod has
//! several owner references.

use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

use crate::model::Name;

/// A workload: the kind and name of a pod's top owner.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Workload {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `CronJob`, `Job`,
    /// `ReplicaSet`, ..., or `Pod` for a bare pod.
    pub kind: String,
    /// The owner's name.
    pub name: Name,
}

/// Minimum digits of a CronJob-created Job's suffix (minutes since the
/// epoch have had 8 digits since 1989).
const CRONJOB_SUFFIX_MIN_DIGITS: usize = 8;

/// The workload of `pod` (see the module docs for the rule).
///
/// # Examples
/// ```
/// use netgov_agent::engine::index::workload::workload_of;
/// let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_str(r#"{
///   "metadata": {"name": "api-7d4b9c-x2k4p", "labels": {"pod-template-hash": "7d4b9c"},
///     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-7d4b9c",
///       "uid": "1", "controller": true}]}}"#).unwrap();
/// let workload = workload_of(&pod);
/// assert_eq!((workload.kind.as_str(), &*workload.name), ("Deployment", "api"));
/// ```
pub fn workload_of(pod: &Pod) -> Workload {
    let owners = pod.metadata.owner_references.as_deref().unwrap_or_default();
    let owner = owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or_else(|| owners.first());
    let Some(owner) = owner else {
        return Workload {
            kind: "Pod".into(),
            name: Name::from(pod.metadata.name.as_deref().unwrap_or_default()),
        };
    };
    let workload = |kind: &str, name: &str| Workload {
        kind: kind.into(),
        name: name.into(),
    };
    match owner.kind.as_str() {
        "ReplicaSet" => {
            let hash = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get("pod-template-hash"));
            match hash.and_then(|hash| owner.name.strip_suffix(hash.as_str())?.strip_suffix('-')) {
                Some(deployment) if !deployment.is_empty() => workload("Deployment", deployment),
                _ => workload("ReplicaSet", &owner.name),
            }
        }
        "Job" => match owner.name.rsplit_once('-') {
            Some((cronjob, suffix))
                if !cronjob.is_empty()
                    && suffix.len() >= CRONJOB_SUFFIX_MIN_DIGITS
                    && suffix.bytes().all(|b| b.is_ascii_digit()) =>
            {
                workload("CronJob", cronjob)
            }
            _ => workload("Job", &owner.name),
        },
        kind => workload(kind, &owner.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, labels: &str, owners: &str) -> Pod {
        serde_json::from_str(&format!(
            r#"{{"metadata": {{"name": "{name}", "labels": {labels}, "ownerReferences": {owners}}}}}"#
        ))
        .expect("pod json")
    }

    fn owner(kind: &str, name: &str, controller: bool) -> String {
        format!(
            r#"{{"apiVersion": "v1", "kind": "{kind}", "name": "{name}", "uid": "u", "controller": {controller}}}"#
        )
    }

    #[test]
    fn owner_rules() {
        let rows = [
            (
                pod(
                    "api-5f7-abc",
                    r#"{"pod-template-hash": "5f7"}"#,
                    &format!("[{}]", owner("ReplicaSet", "api-5f7", true)),
                ),
                ("Deployment", "api"),
            ),
            (
                pod(
                    "my-api-v2-5f7-abc",
                    r#"{"pod-template-hash": "5f7"}"#,
                    &format!("[{}]", owner("ReplicaSet", "my-api-v2-5f7", true)),
                ),
                ("Deployment", "my-api-v2"),
            ),
            (
                pod(
                    "rs-abc",
                    "{}",
                    &format!("[{}]", owner("ReplicaSet", "standalone", true)),
                ),
                ("ReplicaSet", "standalone"),
            ),
            (
                pod(
                    "db-0",
                    "{}",
                    &format!("[{}]", owner("StatefulSet", "db", true)),
                ),
                ("StatefulSet", "db"),
            ),
            (
                pod(
                    "agent-x",
                    "{}",
                    &format!("[{}]", owner("DaemonSet", "agent", true)),
                ),
                ("DaemonSet", "agent"),
            ),
            (
                pod(
                    "backup-28999860-q",
                    "{}",
                    &format!("[{}]", owner("Job", "backup-28999860", true)),
                ),
                ("CronJob", "backup"),
            ),
            (
                pod(
                    "migrate-q",
                    "{}",
                    &format!("[{}]", owner("Job", "migrate-v2", true)),
                ),
                ("Job", "migrate-v2"),
            ),
            (
                pod(
                    "job-123-q",
                    "{}",
                    &format!("[{}]", owner("Job", "job-123", true)),
                ),
                ("Job", "job-123"),
            ),
            (pod("bare", "{}", "[]"), ("Pod", "bare")),
            (
                pod(
                    "two",
                    "{}",
                    &format!(
                        "[{}, {}]",
                        owner("Other", "not-controller", false),
                        owner("StatefulSet", "ss", true)
                    ),
                ),
                ("StatefulSet", "ss"),
            ),
        ];
        for (pod, (kind, name)) in rows {
            let workload = workload_of(&pod);
            assert_eq!(
                (workload.kind.as_str(), &*workload.name),
                (kind, name),
                "{:?}",
                pod.metadata.name
            );
        }
    }
}
