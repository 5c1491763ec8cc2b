//! The ledger: what was counted for each live flow, so that every flow is
//! counted once, a violation once, egress once and unexpected egress once,
//! whatever happens to the flow while it lives.
//!
//! [`step`] is pure: given what the ledger holds for a flow ([`Entry`]),
//! what judging it found now ([`Seen`]) and when ([`Moment`]), it says
//! what to count, log and publish ([`Emit`]) and what to hold next
//! ([`Next`]). The judge stage (`agent::pipeline`) judges, steps, and
//! applies the emit. The rules, upstream of any metric:
//!
//! - A flow is counted in `netgov_flows_total` when first judged, and
//!   again under its new verdict each time the verdict changes (the
//!   cluster changed while it lived).
//! - A violation is counted once per verdict: when its enforcement is
//!   known (`gap`, `enforced`), or at the flow's end (`unknown` then). A
//!   flow whose verdict changes to deny again is a new violation.
//! - Egress to outside the cluster is counted once, and unexpected egress
//!   once, when first judged unexpected (a cluster change can make it so
//!   later). A TCP flow to outside without a destination name waits up to
//!   the name window for its ClientHello's before either.
//! - Traffic that is not policy traffic is counted once as not judged. A
//!   flow judged before that is not judged now (its initiator moved to
//!   another node) is not counted again either way; one not judged before
//!   that is judged now is a new flow.
//! - A flow is logged (flow log, `/flows`) when first judged, when its
//!   verdict, enforcement, staged change or names change, and when it
//!   ends; published (Hubble) when first judged and when its verdict or
//!   enforcement changes.
//! - An ended flow leaves the ledger: the same ports again are a new flow.

use std::time::Duration;

use crate::engine::Decision;
use crate::engine::tiers::Tier;
use crate::export::metrics::StagedChange;
use crate::judge::{DeniedBy, Enforcement, Judgement, NotJudged};
use crate::model::Protocol;
use crate::names::DestinationName;

/// What the ledger holds for a live flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    /// Not policy traffic, counted as such.
    NotJudged,
    /// Judged: what was counted.
    Judged(&'a Counted),
}

/// What the ledger holds next for the flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing: the flow ended.
    Forget,
    /// Not policy traffic, counted as such.
    NotJudged,
    /// Judged: what was counted.
    Judged(Counted),
}

/// What was counted for a judged live flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counted {
    /// The verdict it is counted under in `netgov_flows_total`.
    pub verdict: Decision,
    /// The enforcement last judged.
    pub enforcement: Option<Enforcement>,
    /// Its violation (under this verdict) is counted.
    pub violation: bool,
    /// Its egress to outside the cluster.
    pub egress: Egress,
    /// Its enforcement is unknown and its answer window has not passed:
    /// judge it again when it has, even if no packet moves.
    pub awaiting_answer: bool,
    /// How the staged policies would change its verdict, as counted.
    pub staged: Option<StagedChange>,
    /// Its destination's names so far.
    pub names: Vec<DestinationName>,
}

/// A flow's egress to outside the cluster, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Egress {
    /// Not counted: not egress to outside the cluster (yet).
    NotCounted,
    /// TCP to outside without a destination name: counted once named, or
    /// once the name window has passed.
    AwaitingName,
    /// Counted in `netgov_egress_flows_total`; `unexpected`: in
    /// `netgov_unexpected_egress_total` too.
    Counted {
        /// Counted as unexpected.
        unexpected: bool,
    },
}

/// What judging the flow found now.
#[derive(Clone, Copy, Debug)]
pub enum Seen<'a> {
    /// Not policy traffic, and why.
    NotJudged(NotJudged),
    /// Judged.
    Judged {
        /// The judgement.
        judgement: &'a Judgement,
        /// The flow's protocol.
        protocol: Protocol,
        /// How the staged policies change the verdict, when they were
        /// judged now (`None`: not judged now, as it was).
        staged: Option<Option<StagedChange>>,
    },
}

/// When the flow is seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moment {
    /// The record is the flow's last: it ended.
    pub ended: bool,
    /// Since its first packet.
    pub age: Duration,
}

/// How long a flow waits for what may still come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    /// For an answer, before a denied flow without one is `enforced` (the
    /// answer window, plus a drain interval for the answer to be read).
    pub answer: Duration,
    /// For a TCP flow to outside the cluster: for its destination's name.
    pub name: Duration,
}

/// What to do for the flow now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Emit {
    /// Count it once as not judged, for this reason.
    pub not_judged: Option<NotJudged>,
    /// Count it in `netgov_flows_total` under the judgement's verdict.
    pub flow: bool,
    /// Count its violation.
    pub violation: Option<Violation>,
    /// Count its egress to outside the cluster.
    pub egress: Option<EgressCount>,
    /// Count this staged change.
    pub staged: Option<StagedChange>,
    /// Write it to the flow log and the recent flows.
    pub log: bool,
    /// Publish it to Hubble.
    pub publish: bool,
}

/// A violation to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which side denies.
    pub denied_by: DeniedBy,
    /// The tier whose rule denies.
    pub tier: Tier,
    /// Whether the network enforced it.
    pub enforcement: Enforcement,
}

/// Egress to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EgressCount {
    /// In `netgov_egress_flows_total` (once per flow).
    pub flow: bool,
    /// It is unexpected now (the `expected` label).
    pub unexpected: bool,
    /// In `netgov_unexpected_egress_total` (once per flow).
    pub newly_unexpected: bool,
}

impl Counted {
    /// Whether something it waits for is due: judge it again now.
    pub fn due(&self, age: Duration, windows: Windows) -> bool {
        (self.awaiting_answer && age >= windows.answer)
            || (self.egress == Egress::AwaitingName && age >= windows.name)
    }
}

/// One step of a flow's ledger: what to count, log and publish for what
/// was seen, and what to hold next.
pub fn step(
    entry: Option<Entry<'_>>,
    seen: Seen<'_>,
    at: Moment,
    windows: Windows,
) -> (Next, Emit) {
    match seen {
        Seen::NotJudged(reason) => not_judged(entry, reason, at),
        Seen::Judged {
            judgement,
            protocol,
            staged,
        } => judged(entry, judgement, protocol, staged, at, windows),
    }
}

fn not_judged(entry: Option<Entry<'_>>, reason: NotJudged, at: Moment) -> (Next, Emit) {
    // Counted once per flow: when first seen. A flow judged before was
    // counted as a flow already.
    let emit = Emit {
        not_judged: entry.is_none().then_some(reason),
        ..Emit::default()
    };
    let next = if at.ended {
        Next::Forget
    } else {
        Next::NotJudged
    };
    (next, emit)
}

fn judged(
    entry: Option<Entry<'_>>,
    judgement: &Judgement,
    protocol: Protocol,
    staged: Option<Option<StagedChange>>,
    at: Moment,
    windows: Windows,
) -> (Next, Emit) {
    // A flow counted as not judged before is a flow from now on.
    let previous = match entry {
        Some(Entry::Judged(counted)) => Some(counted),
        Some(Entry::NotJudged) | None => None,
    };
    let first = previous.is_none();
    let verdict = judgement.verdict.verdict;
    let verdict_changed = previous.is_some_and(|p| p.verdict != verdict);
    let enforcement_changed = previous.is_some_and(|p| p.enforcement != judgement.enforcement);
    let names_changed = previous.is_some_and(|p| p.names != judgement.dst_names);
    let was_staged = previous.and_then(|p| p.staged);
    let staged_now = staged.unwrap_or(was_staged);
    let staged_changed = staged.is_some() && staged_now != was_staged;

    // A verdict that changes makes the flow a (new) violation or not.
    let mut violation_counted = previous.is_some_and(|p| p.violation) && !verdict_changed;
    let mut violation = None;
    if let (Some(denied_by), Some(tier), Some(enforcement)) = (
        judgement.denied_by,
        judgement.denying_tier,
        judgement.enforcement,
    ) && !violation_counted
        && (enforcement != Enforcement::Unknown || at.ended)
    {
        violation = Some(Violation {
            denied_by,
            tier,
            enforcement,
        });
        violation_counted = true;
    }

    let was_egress = previous.map_or(Egress::NotCounted, |p| p.egress);
    let waits_for_name = judgement.outside_egress
        && judgement.dst_names.is_empty()
        && protocol == Protocol::Tcp
        && !at.ended
        && at.age < windows.name;
    let (egress_now, egress) = match was_egress {
        // Counted once: a cluster change that makes the destination a pod
        // does not take it back.
        Egress::Counted { .. } if !judgement.outside_egress => (was_egress, None),
        // Not egress (any more: the destination became a pod): nothing
        // to wait for.
        _ if !judgement.outside_egress => (Egress::NotCounted, None),
        Egress::NotCounted | Egress::AwaitingName if waits_for_name => (Egress::AwaitingName, None),
        Egress::NotCounted | Egress::AwaitingName => (
            Egress::Counted {
                unexpected: judgement.unexpected_egress,
            },
            Some(EgressCount {
                flow: true,
                unexpected: judgement.unexpected_egress,
                newly_unexpected: judgement.unexpected_egress,
            }),
        ),
        Egress::Counted { unexpected } => (
            Egress::Counted {
                unexpected: unexpected || judgement.unexpected_egress,
            },
            (judgement.unexpected_egress && !unexpected).then_some(EgressCount {
                flow: false,
                unexpected: true,
                newly_unexpected: true,
            }),
        ),
    };

    let emit = Emit {
        not_judged: None,
        flow: first || verdict_changed,
        violation,
        egress,
        staged: staged_now.filter(|_| staged_changed),
        log: first
            || verdict_changed
            || enforcement_changed
            || staged_changed
            || names_changed
            || at.ended,
        publish: first || verdict_changed || enforcement_changed,
    };
    let next = if at.ended {
        Next::Forget
    } else {
        Next::Judged(Counted {
            verdict,
            enforcement: judgement.enforcement,
            violation: violation_counted,
            egress: egress_now,
            awaiting_answer: judgement.enforcement == Some(Enforcement::Unknown)
                && at.age < windows.answer,
            staged: staged_now,
            names: judgement.dst_names.clone(),
        })
    };
    (next, emit)
}

#[cfg(test)]
mod tests;
