//! The series of workloads gone from the cluster, removed after a grace
//! period. A deleted workload's series are removed at once when the
//! cluster changes, but its flows may still be counted after that: a late
//! report judged with the identity it had, a violation whose enforcement
//! becomes known, a live flow judged again after a policy change. Such
//! series would otherwise stay for good — and hold places under the
//! workload cap, pushing live workloads into `_overflow` (seen in the churn
//! soak: series grew by ~500 a minute).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::export::metrics::OVERFLOW;

/// A workload as `(namespace, name)`.
type Workload = (String, String);

/// Workloads that name series but are gone from the cluster, and since
/// when they were seen so.
#[derive(Debug)]
pub(super) struct DepartedSeries {
    since: HashMap<Workload, Instant>,
    grace: Duration,
}

impl DepartedSeries {
    /// Series are removed `grace` after their workload was first seen gone.
    pub(super) fn new(grace: Duration) -> Self {
        Self {
            since: HashMap::new(),
            grace,
        }
    }

    /// Given the workloads that name series and which are in the cluster
    /// at `now`, returns the workloads whose series to remove now.
    pub(super) fn sweep(
        &mut self,
        with_series: impl IntoIterator<Item = Workload>,
        current: impl Fn(&Workload) -> bool,
        now: Instant,
    ) -> Vec<Workload> {
        for workload in with_series {
            if !current(&workload) && workload.1 != OVERFLOW {
                self.since.entry(workload).or_insert(now);
            }
        }
        let mut expired = Vec::new();
        self.since.retain(|workload, since| {
            if current(workload) {
                return false;
            }
            if now.duration_since(*since) >= self.grace {
                expired.push(workload.clone());
                return false;
            }
            true
        });
        expired.sort();
        expired
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn set(names: &[&str]) -> HashSet<Workload> {
        names
            .iter()
            .map(|n| ("ml".to_owned(), (*n).to_owned()))
            .collect()
    }

    #[test]
    fn gone_workloads_are_swept_after_the_grace_only() {
        let start = Instant::now();
        let minute = Duration::from_secs(60);
        let mut departed = DepartedSeries::new(5 * minute);
        // (at, with series, current, expected removals)
        type Step<'a> = (Duration, &'a [&'a str], &'a [&'a str], &'a [&'a str]);
        let steps: [Step; 6] = [
            (Duration::ZERO, &["a", "old", "_overflow"], &["a"], &[]),
            (4 * minute, &["a", "old", "older"], &["a"], &[]),
            // `old` has been gone 5 minutes; `older` only 1.
            (5 * minute, &["a", "old", "older"], &["a"], &["old"]),
            // `older` comes back (a pod of that workload again): kept.
            (6 * minute, &["a", "older"], &["a", "older"], &[]),
            // Gone again: the grace starts over.
            (8 * minute, &["a", "older"], &["a"], &[]),
            (13 * minute, &["a", "older"], &["a"], &["older"]),
        ];
        for (at, with_series, current, expected) in steps {
            let current = set(current);
            let swept = departed.sweep(set(with_series), |w| current.contains(w), start + at);
            let expected: Vec<Workload> = expected
                .iter()
                .map(|n| ("ml".to_owned(), (*n).to_owned()))
                .collect();
            assert_eq!(swept, expected, "at {at:?}");
        }
    }
}
