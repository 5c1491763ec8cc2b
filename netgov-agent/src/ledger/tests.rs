//! Every transition of the ledger, a row each: what it held, what was
//! seen and when, and the whole step as one line — `EMIT → NEXT` — written
//! from the counting rules in the module's documentation.

use super::*;
use crate::model::{Identity, Name};
use crate::names::{Hostname, NameSource};

const YOUNG: Duration = Duration::from_millis(500);
const OLD: Duration = Duration::from_secs(30);
const WINDOWS: Windows = Windows {
    answer: Duration::from_secs(6),
    name: Duration::from_secs(2),
};

fn pod(name: &str) -> Identity {
    Identity {
        namespace: Name::from("ml"),
        pod: Some(Name::from(name)),
        workload: Name::from(name),
    }
}

fn allowed() -> Judgement {
    Judgement::allowed(pod("client-0"), pod("server-0"))
}

/// Denied by the destination's NetworkPolicies, enforced as given.
fn denied(enforcement: Enforcement) -> Judgement {
    let mut judgement = allowed();
    judgement.verdict.verdict = Decision::Deny;
    judgement.denied_by = Some(DeniedBy::Ingress);
    judgement.denying_tier = Some(Tier::NetworkPolicy);
    judgement.enforcement = Some(enforcement);
    judgement
}

/// To outside the cluster, declared or not, with the names given.
fn outside(unexpected: bool, names: &[&str]) -> Judgement {
    let mut judgement = allowed();
    judgement.dst = Identity::world();
    judgement.outside_egress = true;
    judgement.unexpected_egress = unexpected;
    judgement.dst_names = names
        .iter()
        .map(|name| DestinationName {
            name: Hostname::parse(name).expect("a hostname"),
            learned: NameSource::Dns,
        })
        .collect();
    judgement
}

/// What the ledger held: the step of seeing `judgement` first, live.
fn after(judgement: &Judgement, age: Duration) -> Counted {
    held(step(None, judged(judgement), live(age), WINDOWS).0)
}

fn held(next: Next) -> Counted {
    match next {
        Next::Judged(counted) => counted,
        other => panic!("not judged: {other:?}"),
    }
}

fn judged(judgement: &Judgement) -> Seen<'_> {
    Seen::Judged {
        judgement,
        protocol: Protocol::Tcp,
        staged: None,
    }
}

fn live(age: Duration) -> Moment {
    Moment { ended: false, age }
}

fn ended(age: Duration) -> Moment {
    Moment { ended: true, age }
}

/// `EMIT → NEXT`: the counts, log and publish of the step (`-` for none),
/// then what the ledger holds.
fn line((next, emit): (Next, Emit)) -> String {
    let mut done = Vec::new();
    if let Some(reason) = emit.not_judged {
        done.push(format!("not-judged({reason})"));
    }
    if emit.flow {
        done.push("flow".into());
    }
    if let Some(v) = emit.violation {
        done.push(format!("violation({}, {})", v.denied_by, v.enforcement));
    }
    if let Some(e) = emit.egress {
        let mut text = format!(
            "egress({}",
            if e.unexpected {
                "unexpected"
            } else {
                "expected"
            }
        );
        if !e.flow {
            text += ", already counted";
        }
        if e.newly_unexpected {
            text += ", newly unexpected";
        }
        done.push(text + ")");
    }
    if let Some(change) = emit.staged {
        done.push(format!("staged({change})"));
    }
    if emit.log {
        done.push("log".into());
    }
    if emit.publish {
        done.push("publish".into());
    }
    let done = if done.is_empty() {
        "-".to_owned()
    } else {
        done.join(" ")
    };
    let held = match next {
        Next::Forget => "forget".to_owned(),
        Next::NotJudged => "not judged".to_owned(),
        Next::Judged(c) => {
            let mut text = format!("judged {}", c.verdict);
            if let Some(enforcement) = c.enforcement {
                text += &format!(" {enforcement}");
            }
            if c.violation {
                text += ", violation counted";
            }
            match c.egress {
                Egress::NotCounted => {}
                Egress::AwaitingName => text += ", awaiting name",
                Egress::Counted { unexpected: false } => text += ", egress counted",
                Egress::Counted { unexpected: true } => text += ", egress counted unexpected",
            }
            if c.awaiting_answer {
                text += ", awaiting answer";
            }
            if let Some(change) = c.staged {
                text += &format!(", staged {change}");
            }
            text
        }
    };
    format!("{done} → {held}")
}

#[test]
fn transitions() {
    let allow = after(&allowed(), YOUNG);
    let unknown = after(&denied(Enforcement::Unknown), YOUNG);
    let gap = after(&denied(Enforcement::Gap), YOUNG);
    let awaiting_name = after(&outside(true, &[]), YOUNG);
    let egress_expected = after(&outside(false, &["api.example"]), YOUNG);
    let named = outside(true, &["upload.example"]);
    let nameless = outside(true, &[]);
    let staged_deny = |judgement| Seen::Judged {
        judgement,
        protocol: Protocol::Tcp,
        staged: Some(Some(StagedChange::WouldDeny)),
    };
    let staged_none = |judgement| Seen::Judged {
        judgement,
        protocol: Protocol::Tcp,
        staged: Some(None),
    };
    let would_deny = after_staged(&allowed());
    let udp = |judgement| Seen::Judged {
        judgement,
        protocol: Protocol::Udp,
        staged: None,
    };
    let not_judged = Seen::NotJudged(NotJudged::CountedBySourceNode);
    let (allow_now, deny_gap, deny_enforced, deny_unknown) = (
        allowed(),
        denied(Enforcement::Gap),
        denied(Enforcement::Enforced),
        denied(Enforcement::Unknown),
    );
    let rows: Vec<(&str, (Next, Emit), &str)> = vec![
        (
            "first seen live",
            step(None, judged(&allow_now), live(YOUNG), WINDOWS),
            "flow log publish → judged allow",
        ),
        (
            "first seen ended",
            step(None, judged(&allow_now), ended(YOUNG), WINDOWS),
            "flow log publish → forget",
        ),
        (
            "seen again, nothing new",
            step(
                Some(Entry::Judged(&allow)),
                judged(&allow_now),
                live(OLD),
                WINDOWS,
            ),
            "- → judged allow",
        ),
        (
            "the verdict changes (a policy came): counted under the new one, a violation with it",
            step(
                Some(Entry::Judged(&allow)),
                judged(&deny_gap),
                live(OLD),
                WINDOWS,
            ),
            "flow violation(ingress, gap) log publish → judged deny gap, violation counted",
        ),
        (
            "the verdict changes back: counted again, no violation",
            step(
                Some(Entry::Judged(&gap)),
                judged(&allow_now),
                live(OLD),
                WINDOWS,
            ),
            "flow log publish → judged allow",
        ),
        (
            "denied, enforcement unknown within the window: the violation waits",
            step(None, judged(&deny_unknown), live(YOUNG), WINDOWS),
            "flow log publish → judged deny unknown, awaiting answer",
        ),
        (
            "unknown → enforced after the answer window",
            step(
                Some(Entry::Judged(&unknown)),
                judged(&deny_enforced),
                live(OLD),
                WINDOWS,
            ),
            "violation(ingress, enforced) log publish → judged deny enforced, violation counted",
        ),
        (
            "unknown → gap: answered within the window",
            step(
                Some(Entry::Judged(&unknown)),
                judged(&deny_gap),
                live(YOUNG),
                WINDOWS,
            ),
            "violation(ingress, gap) log publish → judged deny gap, violation counted",
        ),
        (
            "still unknown past the window (one-way to another node): not due again",
            step(
                Some(Entry::Judged(&unknown)),
                judged(&deny_unknown),
                live(OLD),
                WINDOWS,
            ),
            "- → judged deny unknown",
        ),
        (
            "unknown at its end: the violation counted as unknown",
            step(
                Some(Entry::Judged(&unknown)),
                judged(&deny_unknown),
                ended(OLD),
                WINDOWS,
            ),
            "violation(ingress, unknown) log → forget",
        ),
        (
            "a violation counted is not counted again",
            step(
                Some(Entry::Judged(&gap)),
                judged(&deny_gap),
                ended(OLD),
                WINDOWS,
            ),
            "log → forget",
        ),
        (
            "TCP to outside without a name: its egress waits",
            step(None, judged(&nameless), live(YOUNG), WINDOWS),
            "flow log publish → judged allow, awaiting name",
        ),
        (
            "UDP to outside without a name: no ClientHello to wait for",
            step(None, udp(&nameless), live(YOUNG), WINDOWS),
            "flow egress(unexpected, newly unexpected) log publish → judged allow, egress counted unexpected",
        ),
        (
            "the name arrives within the wait",
            step(
                Some(Entry::Judged(&awaiting_name)),
                judged(&named),
                live(YOUNG),
                WINDOWS,
            ),
            "egress(unexpected, newly unexpected) log → judged allow, egress counted unexpected",
        ),
        (
            "no name within the wait: counted by address",
            step(
                Some(Entry::Judged(&awaiting_name)),
                judged(&nameless),
                live(OLD),
                WINDOWS,
            ),
            "egress(unexpected, newly unexpected) → judged allow, egress counted unexpected",
        ),
        (
            "no name, but the flow ends within the wait: counted at its end",
            step(
                Some(Entry::Judged(&awaiting_name)),
                judged(&nameless),
                ended(YOUNG),
                WINDOWS,
            ),
            "egress(unexpected, newly unexpected) log → forget",
        ),
        (
            "expected egress becomes unexpected (a policy went): unexpected once",
            step(
                Some(Entry::Judged(&egress_expected)),
                judged(&outside(true, &["api.example"])),
                live(OLD),
                WINDOWS,
            ),
            "egress(unexpected, already counted, newly unexpected) → judged allow, egress counted unexpected",
        ),
        (
            "the destination became a pod while the flow waited for a name",
            step(
                Some(Entry::Judged(&awaiting_name)),
                judged(&allow_now),
                live(YOUNG),
                WINDOWS,
            ),
            "- → judged allow",
        ),
        (
            "a staged change, first judged",
            step(
                Some(Entry::Judged(&allow)),
                staged_deny(&allow_now),
                live(OLD),
                WINDOWS,
            ),
            "staged(would_deny) log → judged allow, staged would_deny",
        ),
        (
            "the same staged change again",
            step(
                Some(Entry::Judged(&would_deny)),
                staged_deny(&allow_now),
                live(OLD),
                WINDOWS,
            ),
            "- → judged allow, staged would_deny",
        ),
        (
            "the staged copy not judged now: as it was",
            step(
                Some(Entry::Judged(&would_deny)),
                judged(&allow_now),
                live(OLD),
                WINDOWS,
            ),
            "- → judged allow, staged would_deny",
        ),
        (
            "the staged policies no longer change it",
            step(
                Some(Entry::Judged(&would_deny)),
                staged_none(&allow_now),
                live(OLD),
                WINDOWS,
            ),
            "log → judged allow",
        ),
        (
            "not judged, first seen",
            step(None, not_judged, live(YOUNG), WINDOWS),
            "not-judged(counted_by_source_node) → not judged",
        ),
        (
            "not judged, seen again",
            step(Some(Entry::NotJudged), not_judged, live(OLD), WINDOWS),
            "- → not judged",
        ),
        (
            "not judged, ended",
            step(Some(Entry::NotJudged), not_judged, ended(OLD), WINDOWS),
            "- → forget",
        ),
        (
            "not judged, first seen ended",
            step(None, not_judged, ended(YOUNG), WINDOWS),
            "not-judged(counted_by_source_node) → forget",
        ),
        (
            "not judged → judged (its initiator's pod is now known on this node): a flow",
            step(
                Some(Entry::NotJudged),
                judged(&allow_now),
                live(OLD),
                WINDOWS,
            ),
            "flow log publish → judged allow",
        ),
        (
            "judged → not judged (its initiator moved to another node): not counted again",
            step(Some(Entry::Judged(&allow)), not_judged, live(OLD), WINDOWS),
            "- → not judged",
        ),
        (
            "ended",
            step(
                Some(Entry::Judged(&allow)),
                judged(&allow_now),
                ended(OLD),
                WINDOWS,
            ),
            "log → forget",
        ),
        (
            "the same ports after an end: forgotten, so a new flow",
            step(None, judged(&allow_now), live(YOUNG), WINDOWS),
            "flow log publish → judged allow",
        ),
    ];
    let failures: Vec<String> = rows
        .into_iter()
        .filter_map(|(name, got, expected)| {
            let got = line(got);
            (got != expected).then(|| format!("{name}:\n  expected {expected}\n  got      {got}"))
        })
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// What the ledger held after a staged change was first counted.
fn after_staged(judgement: &Judgement) -> Counted {
    let seen = Seen::Judged {
        judgement,
        protocol: Protocol::Tcp,
        staged: Some(Some(StagedChange::WouldDeny)),
    };
    held(step(None, seen, live(OLD), WINDOWS).0)
}

#[test]
fn what_is_due() {
    let unknown = after(&denied(Enforcement::Unknown), YOUNG);
    let awaiting_name = after(&outside(true, &[]), YOUNG);
    let allow = after(&allowed(), YOUNG);
    assert!(!unknown.due(YOUNG, WINDOWS));
    assert!(unknown.due(WINDOWS.answer, WINDOWS));
    assert!(!awaiting_name.due(YOUNG, WINDOWS));
    assert!(awaiting_name.due(WINDOWS.name, WINDOWS));
    assert!(!allow.due(OLD, WINDOWS));
}
