//! Compiling ClusterNetworkPolicy, AdminNetworkPolicy and
//! BaselineAdminNetworkPolicy objects into [`ClusterPolicy`]. Objects come
//! as JSON values (no generated types exist for these CRDs); every error
//! names the object and the field.
//!
//! A peer or a `protocols`/`ports` entry with no field this engine knows
//! is what a newer API version looks like to an older reader: it is kept
//! as [`Peer::Unknown`] / [`PortMatch::Unknown`] and fails closed as the
//! API asks (an `Accept` rule then matches nothing, `Deny` and `Pass`
//! match everything), and counted in [`ClusterPolicy::unknown_fields`].

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

use super::{Action, ClusterPolicy, Peer, PortMatch, Rule, Subject, Tier};
use crate::engine::PolicyError;
use crate::engine::selector::Selector;
use crate::model::Name;
use crate::model::Protocol;

/// The kinds of cluster-wide policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClusterPolicyKind {
    /// `ClusterNetworkPolicy` (v1alpha2, v1beta1).
    ClusterNetworkPolicy,
    /// `AdminNetworkPolicy` (v1alpha1).
    AdminNetworkPolicy,
    /// `BaselineAdminNetworkPolicy` (v1alpha1).
    BaselineAdminNetworkPolicy,
}

impl ClusterPolicyKind {
    /// The kind for a manifest's `kind`.
    pub fn from_kind(kind: &str) -> Option<Self> {
        match kind {
            "ClusterNetworkPolicy" => Some(Self::ClusterNetworkPolicy),
            "AdminNetworkPolicy" => Some(Self::AdminNetworkPolicy),
            "BaselineAdminNetworkPolicy" => Some(Self::BaselineAdminNetworkPolicy),
            _ => None,
        }
    }

    /// The kind's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ClusterNetworkPolicy => "ClusterNetworkPolicy",
            Self::AdminNetworkPolicy => "AdminNetworkPolicy",
            Self::BaselineAdminNetworkPolicy => "BaselineAdminNetworkPolicy",
        }
    }

    fn v1alpha1(self) -> bool {
        self != Self::ClusterNetworkPolicy
    }
}

/// Compiles one object of `kind` (its whole JSON value).
///
/// # Errors
/// [`PolicyError::Invalid`] naming the object and the field.
pub fn compile_cluster_policy(
    kind: ClusterPolicyKind,
    object: &Value,
) -> Result<ClusterPolicy, PolicyError> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let id = format!("{} {name}", kind.name());
    let c = Compiler {
        object: &id,
        kind,
        unknown: std::cell::Cell::new(0),
    };
    if name.is_empty() {
        return Err(c.invalid("metadata.name", "missing"));
    }
    let spec = &object["spec"];
    if !spec.is_object() {
        return Err(c.invalid("spec", "missing"));
    }
    let tier = match kind {
        ClusterPolicyKind::ClusterNetworkPolicy => match spec["tier"].as_str() {
            Some("Admin") => Tier::Admin,
            Some("Baseline") => Tier::Baseline,
            _ => return Err(c.invalid("spec.tier", "must be Admin or Baseline")),
        },
        ClusterPolicyKind::AdminNetworkPolicy => Tier::Admin,
        ClusterPolicyKind::BaselineAdminNetworkPolicy => Tier::Baseline,
    };
    let priority = if kind == ClusterPolicyKind::BaselineAdminNetworkPolicy {
        0
    } else {
        spec["priority"]
            .as_u64()
            .filter(|p| *p <= 1000)
            .ok_or_else(|| c.invalid("spec.priority", "must be an integer from 0 to 1000"))?
            as u32
    };
    let subject = c.subject(&spec["subject"])?;
    let ingress = c.rules(&spec["ingress"], "spec.ingress", "from", false)?;
    let egress = c.rules(&spec["egress"], "spec.egress", "to", true)?;
    Ok(ClusterPolicy {
        id: Name::from(id.as_str()),
        tier,
        priority,
        subject,
        port_summary: [super::port_summary(&ingress), super::port_summary(&egress)],
        ingress,
        egress,
        unknown_fields: c.unknown.get(),
    })
}

struct Compiler<'a> {
    object: &'a str,
    kind: ClusterPolicyKind,
    unknown: std::cell::Cell<usize>,
}

impl Compiler<'_> {
    fn invalid(&self, field: &str, reason: &str) -> PolicyError {
        PolicyError::Invalid {
            object: self.object.to_owned(),
            field: field.to_owned(),
            reason: reason.to_owned(),
        }
    }

    fn selector(&self, value: &Value, field: &str) -> Result<Selector, PolicyError> {
        if value.is_null() {
            return Ok(Selector::everything());
        }
        let selector: LabelSelector = serde_json::from_value(value.clone())
            .map_err(|e| self.invalid(field, &format!("not a label selector: {e}")))?;
        Selector::compile(&selector, self.object, field)
    }

    /// `namespaces` or `pods` (exactly one).
    fn subject(&self, value: &Value) -> Result<Subject, PolicyError> {
        match (value.get("namespaces"), value.get("pods")) {
            (Some(namespaces), None) => Ok(Subject::Namespaces(
                self.selector(namespaces, "spec.subject.namespaces")?,
            )),
            (None, Some(pods)) => {
                let (namespaces, pods) = self.namespaced_pods(pods, "spec.subject.pods")?;
                Ok(Subject::Pods { namespaces, pods })
            }
            _ => Err(self.invalid("spec.subject", "must set exactly one of namespaces, pods")),
        }
    }

    fn namespaced_pods(
        &self,
        value: &Value,
        field: &str,
    ) -> Result<(Selector, Selector), PolicyError> {
        Ok((
            self.selector(
                &value["namespaceSelector"],
                &format!("{field}.namespaceSelector"),
            )?,
            self.selector(&value["podSelector"], &format!("{field}.podSelector"))?,
        ))
    }

    fn rules(
        &self,
        value: &Value,
        field: &str,
        peers_key: &str,
        egress: bool,
    ) -> Result<Vec<Rule>, PolicyError> {
        let Some(rules) = value.as_array() else {
            return if value.is_null() {
                Ok(Vec::new())
            } else {
                Err(self.invalid(field, "must be a list"))
            };
        };
        rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                self.rule(rule, &format!("{field}[{index}]"), index, peers_key, egress)
            })
            .collect()
    }

    fn rule(
        &self,
        rule: &Value,
        field: &str,
        index: usize,
        peers_key: &str,
        egress: bool,
    ) -> Result<Rule, PolicyError> {
        let action = match (rule["action"].as_str(), self.kind.v1alpha1()) {
            (Some("Accept"), false) | (Some("Allow"), true) => Action::Accept,
            (Some("Deny"), _) => Action::Deny,
            (Some("Pass"), _) if self.kind != ClusterPolicyKind::BaselineAdminNetworkPolicy => {
                Action::Pass
            }
            _ => {
                let allowed = match self.kind {
                    ClusterPolicyKind::ClusterNetworkPolicy => "Accept, Deny or Pass",
                    ClusterPolicyKind::AdminNetworkPolicy => "Allow, Deny or Pass",
                    ClusterPolicyKind::BaselineAdminNetworkPolicy => "Allow or Deny",
                };
                return Err(self.invalid(&format!("{field}.action"), &format!("must be {allowed}")));
            }
        };
        let peers_field = format!("{field}.{peers_key}");
        let peers = rule[peers_key]
            .as_array()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| self.invalid(&peers_field, "at least one peer"))?
            .iter()
            .enumerate()
            .map(|(i, peer)| self.peer(peer, &format!("{peers_field}[{i}]"), egress))
            .collect::<Result<Vec<_>, _>>()?;
        if action != Action::Accept && peers.iter().any(|p| matches!(p, Peer::DomainNames(_))) {
            return Err(self.invalid(
                &peers_field,
                "domainNames peers are only supported in Accept rules",
            ));
        }
        let ports_key = if self.kind.v1alpha1() {
            "ports"
        } else {
            "protocols"
        };
        let ports = match rule.get(ports_key) {
            None | Some(Value::Null) => None,
            Some(Value::Array(entries)) => Some(
                entries
                    .iter()
                    .enumerate()
                    .map(|(i, entry)| self.ports(entry, &format!("{field}.{ports_key}[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => return Err(self.invalid(&format!("{field}.{ports_key}"), "must be a list")),
        };
        Ok(Rule {
            name: rule["name"].as_str().map(str::to_owned),
            index,
            action,
            peers,
            ports,
        })
    }

    fn peer(&self, peer: &Value, field: &str, egress: bool) -> Result<Peer, PolicyError> {
        if let Some(namespaces) = peer.get("namespaces") {
            return Ok(Peer::Namespaces(
                self.selector(namespaces, &format!("{field}.namespaces"))?,
            ));
        }
        if let Some(pods) = peer.get("pods") {
            let (namespaces, pods) = self.namespaced_pods(pods, &format!("{field}.pods"))?;
            return Ok(Peer::Pods { namespaces, pods });
        }
        if egress && let Some(nodes) = peer.get("nodes") {
            return Ok(Peer::Nodes(
                self.selector(nodes, &format!("{field}.nodes"))?,
            ));
        }
        if egress && let Some(networks) = peer.get("networks") {
            let networks = networks
                .as_array()
                .ok_or_else(|| self.invalid(&format!("{field}.networks"), "must be a list"))?;
            let cidrs = networks
                .iter()
                .enumerate()
                .map(|(i, cidr)| {
                    cidr.as_str()
                        .and_then(|c| c.parse::<IpNet>().ok())
                        .ok_or_else(|| {
                            self.invalid(&format!("{field}.networks[{i}]"), "not a CIDR")
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Peer::Networks(cidrs));
        }
        if egress && let Some(names) = peer.get("domainNames") {
            let names = names
                .as_array()
                .ok_or_else(|| self.invalid(&format!("{field}.domainNames"), "must be a list"))?;
            let names = names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    name.as_str()
                        .filter(|n| valid_domain_name(n))
                        .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
                        .ok_or_else(|| {
                            self.invalid(
                                &format!("{field}.domainNames[{i}]"),
                                "not a domain name (`example.com` or `*.example.com`)",
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Peer::DomainNames(names));
        }
        if peer.as_object().is_some_and(|o| !o.is_empty()) {
            self.unknown.set(self.unknown.get() + 1);
            return Ok(Peer::Unknown);
        }
        Err(self.invalid(field, "a peer must set one field"))
    }

    fn ports(&self, entry: &Value, field: &str) -> Result<PortMatch, PolicyError> {
        let port = |value: &Value, field: &str| {
            value
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| self.invalid(field, "must be a port from 1 to 65535"))
        };
        let protocol = |text: Option<&str>, field: &str| {
            Protocol::parse_port_protocol(text.unwrap_or("TCP"))
                .ok_or_else(|| self.invalid(field, "must be TCP, UDP or SCTP"))
        };
        let range = |protocol: Protocol, start: u16, end: u16, field: &str| {
            if start > end {
                Err(self.invalid(field, "start must not be above end"))
            } else {
                Ok(PortMatch::Range(protocol, start, end))
            }
        };
        if self.kind.v1alpha1() {
            if let Some(number) = entry.get("portNumber") {
                let protocol = protocol(
                    number["protocol"].as_str(),
                    &format!("{field}.portNumber.protocol"),
                )?;
                let p = port(&number["port"], &format!("{field}.portNumber.port"))?;
                return Ok(PortMatch::Range(protocol, p, p));
            }
            if let Some(r) = entry.get("portRange") {
                let protocol = protocol(
                    r["protocol"].as_str(),
                    &format!("{field}.portRange.protocol"),
                )?;
                let start = port(&r["start"], &format!("{field}.portRange.start"))?;
                let end = port(&r["end"], &format!("{field}.portRange.end"))?;
                return range(protocol, start, end, &format!("{field}.portRange"));
            }
            if let Some(name) = entry["namedPort"].as_str() {
                return Ok(PortMatch::Named(name.to_owned()));
            }
        } else {
            for (key, protocol) in [
                ("tcp", Protocol::Tcp),
                ("udp", Protocol::Udp),
                ("sctp", Protocol::Sctp),
            ] {
                let Some(spec) = entry.get(key) else {
                    continue;
                };
                let destination = &spec["destinationPort"];
                let field = format!("{field}.{key}.destinationPort");
                if let Some(number) = destination.get("number") {
                    let p = port(number, &format!("{field}.number"))?;
                    return Ok(PortMatch::Range(protocol, p, p));
                }
                if let Some(r) = destination.get("range") {
                    let start = port(&r["start"], &format!("{field}.range.start"))?;
                    let end = port(&r["end"], &format!("{field}.range.end"))?;
                    return range(protocol, start, end, &format!("{field}.range"));
                }
                // A newer way to name ports: fails closed.
                self.unknown.set(self.unknown.get() + 1);
                return Ok(PortMatch::Unknown);
            }
            if let Some(name) = entry["destinationNamedPort"].as_str() {
                return Ok(PortMatch::Named(name.to_owned()));
            }
        }
        if entry.as_object().is_some_and(|o| !o.is_empty()) {
            self.unknown.set(self.unknown.get() + 1);
            return Ok(PortMatch::Unknown);
        }
        Err(self.invalid(field, "an entry must set one field"))
    }
}

/// `example.com`, `*.example.com` (a trailing dot allowed): labels of
/// letters, digits, `-` and `_`, not starting or ending with `-`.
fn valid_domain_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    let name = name.strip_suffix('.').unwrap_or(name);
    let labels: Vec<&str> = name.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Whether `name` (lower case, no trailing dot) matches `pattern`: the
/// same name, or for `*.suffix` one or more labels before `suffix`.
pub fn domain_matches(pattern: &str, name: &str) -> bool {
    let name = name.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            name.len() > suffix.len() + 1
                && name.ends_with(suffix)
                && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
        }
        None => name.eq_ignore_ascii_case(pattern),
    }
}
