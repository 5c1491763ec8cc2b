//! NetworkPolicy objects compiled once into matchers: selectors, CIDRs and
//! ports parsed and validated, so judging a flow parses nothing.

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::PolicyError;
use super::selector::Selector;
use crate::model::Name;
use crate::model::Protocol;

/// Which ports of a protocol a rule admits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSpec {
    /// Every port of the protocol (`port` omitted).
    Any,
    /// `port` through `endPort` (a single port has both equal).
    Range(u16, u16),
    /// A named container port, resolved against the destination pod.
    Named(Name),
}

/// One entry of a rule's `ports`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMatch {
    /// Protocol (defaults to TCP).
    pub protocol: Protocol,
    /// Ports.
    pub port: PortSpec,
}

/// How a peer selects namespaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceScope {
    /// Only the policy's own namespace (`podSelector` without
    /// `namespaceSelector`).
    Own,
    /// Namespaces whose labels match.
    Matching(Selector),
}

/// One entry of a rule's `from` / `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// Pods matching `pods` in the namespaces of `namespaces`.
    Pods {
        /// Namespace scope.
        namespaces: NamespaceScope,
        /// Pod selector (everything when omitted).
        pods: Selector,
    },
    /// Addresses in `cidr` but in none of `except`.
    IpBlock {
        /// The block.
        cidr: IpNet,
        /// Holes in it.
        except: Vec<IpNet>,
    },
}

/// One ingress or egress rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Peers; `None` (omitted or empty) admits every peer.
    pub peers: Option<Vec<Peer>>,
    /// Ports; `None` (omitted or empty) admits every port and protocol.
    pub ports: Option<Vec<PortMatch>>,
}

/// A policy ready to judge flows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledPolicy {
    /// `namespace/name`.
    pub id: Name,
    /// Which pods of the namespace it selects.
    pub pod_selector: Selector,
    /// Ingress rules when the policy has the Ingress type.
    pub ingress: Option<Vec<Rule>>,
    /// Egress rules when the policy has the Egress type.
    pub egress: Option<Vec<Rule>>,
}

impl CompiledPolicy {
    /// Takes each of its selectors' strings and port names from `share`,
    /// which returns one shared copy of each.
    pub fn share_strings(&mut self, share: &mut impl FnMut(&str) -> Name) {
        self.pod_selector.share_strings(share);
        let rules = self.ingress.iter_mut().chain(&mut self.egress).flatten();
        for rule in rules {
            for peer in rule.peers.iter_mut().flatten() {
                if let Peer::Pods { namespaces, pods } = peer {
                    pods.share_strings(share);
                    if let NamespaceScope::Matching(selector) = namespaces {
                        selector.share_strings(share);
                    }
                }
            }
            for port in rule.ports.iter_mut().flatten() {
                if let PortSpec::Named(name) = &mut port.port {
                    *name = share(name);
                }
            }
        }
    }

    /// Its namespace (the part of its id before the first `/`: a
    /// namespace's name has none).
    pub fn namespace(&self) -> &str {
        self.id
            .split_once('/')
            .map_or("", |(namespace, _)| namespace)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        self.id.split_once('/').map_or(&*self.id, |(_, name)| name)
    }
}

/// Compiles a NetworkPolicy.
///
/// `policyTypes` defaults as the API server does: `Ingress` always, plus
/// `Egress` when the policy has at least one egress rule.
///
/// # Errors
/// [`PolicyError::Invalid`] naming the object and the field: a bad CIDR or
/// `except`, an unknown selector operator, a port out of range, a named
/// port with `endPort`, an unknown protocol or policy type, a peer that
/// names nothing.
pub fn compile(policy: &NetworkPolicy) -> Result<CompiledPolicy, PolicyError> {
    let namespace = policy
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = policy
        .metadata
        .name
        .clone()
        .ok_or_else(|| PolicyError::Invalid {
            object: format!("NetworkPolicy in {namespace}"),
            field: "metadata.name".into(),
            reason: "missing".into(),
        })?;
    let object = format!("NetworkPolicy {namespace}/{name}");
    let spec = policy.spec.clone().unwrap_or_default();
    let pod_selector = Selector::compile(
        &spec.pod_selector.unwrap_or_default(),
        &object,
        "spec.podSelector",
    )?;

    let egress_rules = spec.egress.unwrap_or_default();
    let (mut has_ingress, mut has_egress) = (false, false);
    match spec.policy_types.as_deref() {
        None | Some([]) => {
            has_ingress = true;
            has_egress = !egress_rules.is_empty();
        }
        Some(types) => {
            for (i, kind) in types.iter().enumerate() {
                match kind.as_str() {
                    "Ingress" => has_ingress = true,
                    "Egress" => has_egress = true,
                    other => {
                        return Err(PolicyError::Invalid {
                            object,
                            field: format!("spec.policyTypes[{i}]"),
                            reason: format!("unknown policy type `{other}` (Ingress, Egress)"),
                        });
                    }
                }
            }
        }
    }

    let ingress = spec
        .ingress
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            compile_rule(
                rule.from.as_deref(),
                rule.ports.as_deref(),
                &object,
                &format!("spec.ingress[{i}]"),
                "from",
            )
        })
        .collect::<Result<Vec<_>, _>>()
        .map(exact)?;
    let egress = egress_rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            compile_rule(
                rule.to.as_deref(),
                rule.ports.as_deref(),
                &object,
                &format!("spec.egress[{i}]"),
                "to",
            )
        })
        .collect::<Result<Vec<_>, _>>()
        .map(exact)?;
    Ok(CompiledPolicy {
        id: Name::from(format!("{namespace}/{name}")),
        pod_selector,
        ingress: has_ingress.then_some(ingress),
        egress: has_egress.then_some(egress),
    })
}

/// `list` without room to grow. Compiled policies are held as long as
/// they stand, ten thousand of them in a large cluster, and a collected
/// list keeps room for four.
pub(crate) fn exact<T>(mut list: Vec<T>) -> Vec<T> {
    list.shrink_to_fit();
    list
}

fn compile_rule(
    peers: Option<&[NetworkPolicyPeer]>,
    ports: Option<&[NetworkPolicyPort]>,
    object: &str,
    field: &str,
    peers_field: &str,
) -> Result<Rule, PolicyError> {
    let peers = match peers {
        None | Some([]) => None,
        Some(peers) => Some(
            peers
                .iter()
                .enumerate()
                .map(|(i, peer)| compile_peer(peer, object, &format!("{field}.{peers_field}[{i}]")))
                .collect::<Result<Vec<_>, _>>()
                .map(exact)?,
        ),
    };
    let ports = match ports {
        None | Some([]) => None,
        Some(ports) => Some(
            ports
                .iter()
                .enumerate()
                .map(|(i, port)| compile_port(port, object, &format!("{field}.ports[{i}]")))
                .collect::<Result<Vec<_>, _>>()
                .map(exact)?,
        ),
    };
    Ok(Rule { peers, ports })
}

fn compile_peer(peer: &NetworkPolicyPeer, object: &str, field: &str) -> Result<Peer, PolicyError> {
    let invalid = |field: String, reason: String| PolicyError::Invalid {
        object: object.to_owned(),
        field,
        reason,
    };
    match (&peer.ip_block, &peer.pod_selector, &peer.namespace_selector) {
        (Some(block), None, None) => {
            let cidr_field = format!("{field}.ipBlock.cidr");
            let cidr: IpNet = block.cidr.parse().map_err(|_| {
                invalid(
                    cidr_field.clone(),
                    format!("`{}` is not a CIDR", block.cidr),
                )
            })?;
            let mut except = Vec::new();
            for (i, hole) in block.except.iter().flatten().enumerate() {
                let hole_field = format!("{field}.ipBlock.except[{i}]");
                let hole: IpNet = hole
                    .parse()
                    .map_err(|_| invalid(hole_field.clone(), format!("`{hole}` is not a CIDR")))?;
                if !cidr.contains(&hole) || hole.prefix_len() <= cidr.prefix_len() {
                    return Err(invalid(
                        hole_field,
                        format!("`{hole}` is not strictly inside `{cidr}`"),
                    ));
                }
                except.push(hole);
            }
            Ok(Peer::IpBlock {
                cidr,
                except: exact(except),
            })
        }
        (Some(_), _, _) => Err(invalid(
            format!("{field}.ipBlock"),
            "ipBlock cannot be combined with podSelector or namespaceSelector".into(),
        )),
        (None, None, None) => Err(invalid(
            field.to_owned(),
            "a peer must set podSelector, namespaceSelector or ipBlock".into(),
        )),
        (None, pods, namespaces) => {
            let pods = match pods {
                Some(selector) => {
                    Selector::compile(selector, object, &format!("{field}.podSelector"))?
                }
                None => Selector::everything(),
            };
            let namespaces = match namespaces {
                Some(selector) => NamespaceScope::Matching(Selector::compile(
                    selector,
                    object,
                    &format!("{field}.namespaceSelector"),
                )?),
                None => NamespaceScope::Own,
            };
            Ok(Peer::Pods { namespaces, pods })
        }
    }
}

fn compile_port(
    port: &NetworkPolicyPort,
    object: &str,
    field: &str,
) -> Result<PortMatch, PolicyError> {
    let invalid = |field: String, reason: String| PolicyError::Invalid {
        object: object.to_owned(),
        field,
        reason,
    };
    let protocol = match port.protocol.as_deref() {
        None => Protocol::Tcp,
        Some(text) => Protocol::parse_port_protocol(text).ok_or_else(|| {
            invalid(
                format!("{field}.protocol"),
                format!("unknown protocol `{text}` (TCP, UDP, SCTP)"),
            )
        })?,
    };
    let number = |value: i32, name: &str| {
        u16::try_from(value).ok().filter(|n| *n > 0).ok_or_else(|| {
            invalid(
                format!("{field}.{name}"),
                format!("{value} is not a port (1-65535)"),
            )
        })
    };
    let spec = match (&port.port, port.end_port) {
        (None, None) => PortSpec::Any,
        (None, Some(_)) => {
            return Err(invalid(
                format!("{field}.endPort"),
                "endPort needs a numeric port".into(),
            ));
        }
        (Some(IntOrString::Int(start)), end) => {
            let start = number(*start, "port")?;
            let end = match end {
                Some(end) => number(end, "endPort")?,
                None => start,
            };
            if end < start {
                return Err(invalid(
                    format!("{field}.endPort"),
                    format!("{end} is below port {start}"),
                ));
            }
            PortSpec::Range(start, end)
        }
        (Some(IntOrString::String(name)), None) => {
            if !is_valid_port_name(name) {
                return Err(invalid(
                    format!("{field}.port"),
                    format!(
                        "`{name}` is not a port name (at most 15 lowercase letters, digits and \
                         single dashes, with at least one letter)"
                    ),
                ));
            }
            PortSpec::Named(Name::from(name.as_str()))
        }
        (Some(IntOrString::String(name)), Some(_)) => {
            return Err(invalid(
                format!("{field}.endPort"),
                format!("endPort cannot be used with the named port `{name}`"),
            ));
        }
    };
    Ok(PortMatch {
        protocol,
        port: spec,
    })
}

/// IANA service name syntax, as the API server validates port names.
fn is_valid_port_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}
