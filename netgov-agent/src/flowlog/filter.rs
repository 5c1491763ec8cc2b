//! The one filter of judged flows: `netgov observe`'s flags (clap), the
//! query `/flows` takes (serde, an unknown key or a bad value a 400) and
//! the agent's matching are this type.
//!
//! Pods are named as Hubble names them, `[namespace/]name-prefix`:
//! `--to-pod shop/b` is every pod of `shop` whose name starts with `b`.
//! Without a namespace, the pod filter takes the namespace filter of the
//! same end (`--to-namespace`, or `--namespace` for `--pod`), else any
//! namespace. Hubble's CLI assumes `default` there; netgov keeps any, as
//! `--pod x` always matched in every namespace.
//!
//! A filter that cannot match anything is an error, never an empty
//! stream: a namespace or a pod prefix no Kubernetes name can have, a
//! pod's namespace that contradicts the namespace filter of its end, or
//! either end's namespace that is neither end's. (Filters that could
//! match but match nothing kept or live give an empty answer: that is an
//! answer.) An empty namespace names the ends without one: outside the
//! cluster, and nodes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::capture::record::FlowRecord;
use crate::engine::Decision;
use crate::judge::{Enforcement, Judgement};
use crate::model::{Identity, Protocol};

/// A namespace, as Kubernetes allows one (an RFC 1123 label); empty for
/// the ends that have none (outside the cluster, nodes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceFilter(String);

/// Pods by `[namespace/]name-prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFilter {
    /// The pods' namespace, when given.
    pub namespace: Option<NamespaceFilter>,
    /// The start of the pods' names (empty: every pod of the namespace).
    pub prefix: String,
}

/// A filter value that cannot match anything.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Not a namespace name.
    #[error(
        "`{0}` is not a namespace name (lowercase letters, digits and `-`, at most 63, starting and ending with a letter or digit; empty for ends outside the cluster and nodes)"
    )]
    Namespace(String),
    /// Not the start of a pod name.
    #[error(
        "`{0}` cannot start a pod name (lowercase letters, digits, `-` and `.`, at most 253); pods are `[namespace/]name-prefix`"
    )]
    PodPrefix(String),
    /// Neither a namespace nor a prefix.
    #[error("an empty pod filter matches nothing; pods are `[namespace/]name-prefix`")]
    EmptyPod,
    /// Either end's namespace is neither the source's nor the
    /// destination's.
    #[error(
        "`{flag}` asks for namespace `{namespace}` at either end, but `from_namespace` is `{from}` and `to_namespace` is `{to}`: nothing can match"
    )]
    EitherEnd {
        /// `namespace` or `pod`.
        flag: &'static str,
        /// The namespace asked for.
        namespace: String,
        /// The source's.
        from: String,
        /// The destination's.
        to: String,
    },
    /// A pod's namespace that contradicts its end's namespace filter.
    #[error(
        "`{flag}` names namespace `{pod_namespace}` but `{namespace_flag}` is `{namespace}`: nothing can match both"
    )]
    Contradiction {
        /// The pod flag (`to_pod`, ...).
        flag: &'static str,
        /// The namespace in its value.
        pod_namespace: String,
        /// The namespace flag of the same end.
        namespace_flag: &'static str,
        /// Its value.
        namespace: String,
    },
}

impl FromStr for NamespaceFilter {
    type Err = FilterError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let edge =
            |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let valid = text.is_empty()
            || text.len() <= 63
                && text
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && edge(text.chars().next())
                && edge(text.chars().last());
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(FilterError::Namespace(text.to_owned()))
        }
    }
}

impl FromStr for PodFilter {
    type Err = FilterError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (namespace, prefix) = match text.split_once('/') {
            Some(("", _)) => return Err(FilterError::Namespace(String::new())),
            Some((namespace, prefix)) => (Some(namespace.parse()?), prefix),
            None => (None, text),
        };
        if namespace.is_none() && prefix.is_empty() {
            return Err(FilterError::EmptyPod);
        }
        let valid = prefix.len() <= 253
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !valid {
            return Err(FilterError::PodPrefix(prefix.to_owned()));
        }
        Ok(Self {
            namespace,
            prefix: prefix.to_owned(),
        })
    }
}

impl fmt::Display for NamespaceFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for PodFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{namespace}/{}", self.prefix),
            None => f.write_str(&self.prefix),
        }
    }
}

impl<'de> Deserialize<'de> for NamespaceFilter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::model::deserialize_parsed(deserializer)
    }
}

impl<'de> Deserialize<'de> for PodFilter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::model::deserialize_parsed(deserializer)
    }
}

/// Which judged flows to show, and how (`follow`, `last`). `namespace`
/// and `pod` match either end; the `from_` and `to_` ones the source or
/// the destination.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct FlowFilter {
    /// Either end's namespace.
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<NamespaceFilter>,
    /// Either end's pod, `[namespace/]name-prefix`.
    #[arg(long, value_name = "[NAMESPACE/]POD")]
    pub pod: Option<PodFilter>,
    /// The source's namespace.
    #[arg(long, value_name = "NAMESPACE")]
    pub from_namespace: Option<NamespaceFilter>,
    /// The source pod, `[namespace/]name-prefix`.
    #[arg(long, value_name = "[NAMESPACE/]POD")]
    pub from_pod: Option<PodFilter>,
    /// The destination's namespace.
    #[arg(long, value_name = "NAMESPACE")]
    pub to_namespace: Option<NamespaceFilter>,
    /// The destination pod, `[namespace/]name-prefix`.
    #[arg(long, value_name = "[NAMESPACE/]POD")]
    pub to_pod: Option<PodFilter>,
    /// The protocol (TCP, UDP, SCTP, ICMP, ICMPv6, IP-<number>; any case).
    #[arg(long, value_name = "PROTOCOL")]
    pub protocol: Option<Protocol>,
    /// The destination port judged (a Service flow's backend port).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// The verdict: allow, deny or not-applicable.
    #[arg(long, value_name = "VERDICT")]
    pub verdict: Option<Decision>,
    /// The enforcement of a denied flow: gap, enforced or unknown.
    #[arg(long, value_name = "ENFORCEMENT")]
    pub enforcement: Option<Enforcement>,
    /// Keep answering with each flow as it is judged (newline-delimited
    /// JSON). Not a filter: how to answer.
    #[arg(short = 'f', long)]
    #[serde(default)]
    pub follow: bool,
    /// Only the last N kept flows that pass the filters (with `follow`:
    /// before the live ones; default all kept ones, or none when
    /// following).
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
}

impl FlowFilter {
    /// Fails when the filters together cannot match anything.
    ///
    /// # Errors
    /// [`FilterError::Contradiction`], [`FilterError::EitherEnd`].
    pub fn check(&self) -> Result<(), FilterError> {
        for (flag, pod, namespace_flag, namespace) in [
            ("pod", &self.pod, "namespace", &self.namespace),
            (
                "from_pod",
                &self.from_pod,
                "from_namespace",
                &self.from_namespace,
            ),
            ("to_pod", &self.to_pod, "to_namespace", &self.to_namespace),
        ] {
            if let (
                Some(PodFilter {
                    namespace: Some(of_pod),
                    ..
                }),
                Some(namespace),
            ) = (pod, namespace)
                && of_pod != namespace
            {
                return Err(FilterError::Contradiction {
                    flag,
                    pod_namespace: of_pod.to_string(),
                    namespace_flag,
                    namespace: namespace.to_string(),
                });
            }
        }
        let either_end = [
            (
                "pod",
                self.pod.as_ref().and_then(|pod| pod.namespace.as_ref()),
            ),
            ("namespace", self.namespace.as_ref()),
        ];
        if let (Some(from), Some(to)) = (&self.from_namespace, &self.to_namespace) {
            for (flag, namespace) in either_end {
                if let Some(namespace) = namespace
                    && namespace != from
                    && namespace != to
                {
                    return Err(FilterError::EitherEnd {
                        flag,
                        namespace: namespace.to_string(),
                        from: from.to_string(),
                        to: to.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Whether a judged flow passes every filter given.
    pub fn matches(&self, record: &FlowRecord, judgement: &Judgement) -> bool {
        let (src, dst) = (&judgement.src, &judgement.dst);
        let end =
            |identity: &Identity, namespace: &Option<NamespaceFilter>, pod: &Option<PodFilter>| {
                let in_namespace = namespace
                    .as_ref()
                    .is_none_or(|namespace| *identity.namespace == namespace.0);
                in_namespace && pod.as_ref().is_none_or(|pod| pod.matches(identity))
            };
        end(src, &self.from_namespace, &self.from_pod)
            && end(dst, &self.to_namespace, &self.to_pod)
            && (end(src, &self.namespace, &self.pod) || end(dst, &self.namespace, &self.pod))
            && self
                .protocol
                .is_none_or(|protocol| record.protocol == protocol)
            && self.port.is_none_or(|port| judgement.dst_port == port)
            && self
                .verdict
                .is_none_or(|verdict| judgement.verdict.verdict == verdict)
            && self
                .enforcement
                .is_none_or(|enforcement| judgement.enforcement == Some(enforcement))
    }

    /// The query string `/flows` takes for these filters (without `?`),
    /// each value percent-encoded.
    pub fn to_query(&self) -> String {
        let pairs: [(&str, Option<String>); 12] = [
            (
                "namespace",
                self.namespace.as_ref().map(ToString::to_string),
            ),
            ("pod", self.pod.as_ref().map(ToString::to_string)),
            (
                "from_namespace",
                self.from_namespace.as_ref().map(ToString::to_string),
            ),
            ("from_pod", self.from_pod.as_ref().map(ToString::to_string)),
            (
                "to_namespace",
                self.to_namespace.as_ref().map(ToString::to_string),
            ),
            ("to_pod", self.to_pod.as_ref().map(ToString::to_string)),
            ("protocol", self.protocol.map(|p| p.name().into_owned())),
            ("port", self.port.map(|p| p.to_string())),
            ("verdict", self.verdict.map(|v| v.as_str().to_owned())),
            (
                "enforcement",
                self.enforcement.map(|e| e.as_str().to_owned()),
            ),
            ("follow", self.follow.then(|| "true".to_owned())),
            ("last", self.last.map(|n| n.to_string())),
        ];
        pairs
            .into_iter()
            .filter_map(|(name, value)| Some(format!("{name}={}", encode(&value?))))
            .collect::<Vec<_>>()
            .join("&")
    }
}

impl PodFilter {
    /// Whether `identity` is a pod this filter names.
    fn matches(&self, identity: &Identity) -> bool {
        let in_namespace = self
            .namespace
            .as_ref()
            .is_none_or(|namespace| *identity.namespace == namespace.0);
        in_namespace
            && identity
                .pod
                .as_deref()
                .is_some_and(|pod| pod.starts_with(&self.prefix))
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests;
