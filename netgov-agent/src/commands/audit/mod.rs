//! `netgov audit`: which policy rules the recorded traffic used, and what
//! to tighten. For each NetworkPolicy rule, the recorded flows it admitted;
//! rules that admitted nothing; ipBlocks much broader than the addresses
//! that used them; workloads whose traffic no policy isolated.
//!
//! Decisions:
//! - Flows are judged as `netgov replay` judges them (recorded identities,
//!   today's policies), so the audit is of the policies given, against
//!   the traffic recorded — give every node's flow log, or a rule used
//!   only on another node reads unused.
//! - A rule admits a flow when it is among the flow's `allowed_by` on its
//!   side (egress: the source's rules; ingress: the destination's).
//! - An ipBlock is over-broad when it holds at least 65,536 addresses for
//!   each address that used it (`0.0.0.0/0` used by two destinations; a
//!   `/8` used by one host): the suggestion is those addresses.
//! - Cluster-wide policy tiers (ClusterNetworkPolicy, AdminNetworkPolicy)
//!   are not audited rule by rule yet.

mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::commands::replay::judge_recorded;
use crate::engine::ClusterState;
use crate::engine::compile::Peer;
use crate::engine::verdict::SideVerdict;
use crate::flowlog::{RecordedFlow, RecordedIdentity};
pub use report::{AuditFormat, render};

/// Addresses an ipBlock may hold per address that used it before it is
/// called over-broad.
const BROAD_RATIO: u128 = 65_536;

/// What `--fail-on` can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Finding {
    /// A rule that admitted no recorded flow.
    UnusedRule,
    /// An ipBlock much broader than what used it.
    BroadIpBlock,
    /// A workload whose traffic no policy isolated.
    Unprotected,
}

/// A direction of a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The policy's `ingress` rules.
    Ingress,
    /// Its `egress` rules.
    Egress,
}

/// One rule and the recorded flows it admitted.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RuleUse {
    /// `namespace/name` of the policy.
    pub policy: String,
    /// Which list.
    pub direction: Direction,
    /// Index in the list.
    pub rule: usize,
    /// Flows it admitted (0: unused).
    pub flows: u64,
}

/// An ipBlock much broader than what used it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BroadBlock {
    /// `namespace/name` of the policy.
    pub policy: String,
    /// Which list.
    pub direction: Direction,
    /// Index of the rule.
    pub rule: usize,
    /// The block.
    pub cidr: String,
    /// The addresses that used it, in order.
    pub used_by: Vec<IpAddr>,
}

/// A workload whose recorded traffic no policy isolated in a direction.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Unprotected {
    /// `namespace/workload`.
    pub workload: String,
    /// The direction nothing isolated.
    pub direction: Direction,
    /// Its recorded flows in that direction.
    pub flows: u64,
}

/// What the audit found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Flows judged.
    pub flows: u64,
    /// Every rule of every policy, with its use.
    pub rules: Vec<RuleUse>,
    /// Over-broad ipBlocks.
    pub broad: Vec<BroadBlock>,
    /// Unprotected workloads.
    pub unprotected: Vec<Unprotected>,
}

type RuleKey = (String, Direction, usize);

/// Audits `cluster`'s policies against `flows`.
pub fn audit(cluster: &mut ClusterState, flows: &[RecordedFlow]) -> AuditReport {
    // The rules and their ipBlocks, before recorded pods are placed.
    let mut uses: BTreeMap<RuleKey, u64> = BTreeMap::new();
    let mut blocks: BTreeMap<RuleKey, Vec<(IpNet, Vec<IpNet>)>> = BTreeMap::new();
    for policy in cluster.policies() {
        for (direction, rules) in [
            (Direction::Ingress, &policy.ingress),
            (Direction::Egress, &policy.egress),
        ] {
            for (index, rule) in rules.iter().flatten().enumerate() {
                let key = (policy.id.to_string(), direction, index);
                let cidrs = rule.peers.iter().flatten().filter_map(|peer| match peer {
                    Peer::IpBlock { cidr, except } => Some((*cidr, except.clone())),
                    Peer::Pods { .. } => None,
                });
                blocks.insert(key.clone(), cidrs.collect());
                uses.insert(key, 0);
            }
        }
    }
    let mut used_blocks: BTreeMap<(RuleKey, IpNet), BTreeSet<IpAddr>> = BTreeMap::new();
    let mut open: BTreeMap<(String, Direction), u64> = BTreeMap::new();
    let mut report = AuditReport::default();
    for flow in flows {
        let Some((query, verdict)) = judge_recorded(cluster, flow) else {
            continue;
        };
        report.flows += 1;
        for (direction, side, identity, remote) in [
            (
                Direction::Egress,
                &verdict.egress,
                &flow.src_identity,
                query.dst,
            ),
            (
                Direction::Ingress,
                &verdict.ingress,
                &flow.dst_identity,
                query.src,
            ),
        ] {
            record_side(
                direction,
                side,
                remote,
                &mut uses,
                &blocks,
                &mut used_blocks,
            );
            if identity.pod.is_some() && !side.isolated {
                *open.entry((workload(identity), direction)).or_default() += 1;
            }
        }
    }
    report.rules = uses
        .into_iter()
        .map(|((policy, direction, rule), flows)| RuleUse {
            policy,
            direction,
            rule,
            flows,
        })
        .collect();
    report.broad = used_blocks
        .into_iter()
        .filter(|((_, cidr), used)| block_size(cidr) / used.len() as u128 >= BROAD_RATIO)
        .map(|(((policy, direction, rule), cidr), used)| BroadBlock {
            policy,
            direction,
            rule,
            cidr: cidr.to_string(),
            used_by: used.into_iter().collect(),
        })
        .collect();
    report.unprotected = open
        .into_iter()
        .map(|((workload, direction), flows)| Unprotected {
            workload,
            direction,
            flows,
        })
        .collect();
    report
}

/// Counts the rules that admitted the flow on one side, and the remote
/// address against their ipBlocks.
fn record_side(
    direction: Direction,
    side: &SideVerdict,
    remote: IpAddr,
    uses: &mut BTreeMap<RuleKey, u64>,
    blocks: &BTreeMap<RuleKey, Vec<(IpNet, Vec<IpNet>)>>,
    used_blocks: &mut BTreeMap<(RuleKey, IpNet), BTreeSet<IpAddr>>,
) {
    for rule in &side.allowed_by {
        let key = (rule.policy.to_string(), direction, rule.rule);
        if let Some(count) = uses.get_mut(&key) {
            *count += 1;
        }
        for (cidr, except) in blocks.get(&key).into_iter().flatten() {
            // An address in a hole is not the block's (another peer of the
            // rule admitted it).
            if cidr.contains(&remote) && !except.iter().any(|hole| hole.contains(&remote)) {
                used_blocks
                    .entry((key.clone(), *cidr))
                    .or_default()
                    .insert(remote);
            }
        }
    }
}

fn workload(identity: &RecordedIdentity) -> String {
    RecordedIdentity {
        pod: None,
        ..identity.clone()
    }
    .to_string()
}

fn block_size(cidr: &IpNet) -> u128 {
    let host_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
    1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
}

#[cfg(test)]
mod tests;
