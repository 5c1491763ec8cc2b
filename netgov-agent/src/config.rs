//! The agent's YAML configuration (`--config FILE`): cluster CIDRs,
//! expected egress, cardinality limits. Validated once at load; every
//! error names the field.
//!
//! ```yaml
//! clusterCIDRs: [10.244.0.0/16, 10.96.0.0/12]
//! expectedEgress:
//!   - namespace: ai-platform
//!     workload: data-ingestion        # optional: every workload of the namespace
//!     cidrs: [192.0.2.0/24]
//!     ports: ["443", "8000-8100"]     # optional: every port
//!   - namespace: ai-platform
//!     workload: model-server
//!     domains: ["*.mirror.example", hub.example]  # DNS names it resolved
//! maxWorkloads: 2000
//! answerWindowSeconds: 5
//! names:                              # destination names (all optional)
//!   minTtlSeconds: 30
//!   maxTtlSeconds: 3600
//!   maxEntries: 100000
//!   maxPerPod: 10000                  # names one pod holds at most
//!   maxPerWorkload: 100               # distinct names per workload in metrics
//! ```

use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::names::{DomainPattern, NameLimits};

/// An inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port.
    pub end: u16,
}

impl PortRange {
    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }
}

/// Egress that is expected although no policy names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedEgress {
    /// Namespace of the source pods.
    pub namespace: String,
    /// Workload name of the source pods; `None` means every workload.
    pub workload: Option<String>,
    /// Destination addresses.
    pub cidrs: Vec<IpNet>,
    /// Destination names, matched against the names the source pod's DNS
    /// answers gave the address (not server names: the client writes
    /// those itself).
    pub domains: Vec<DomainPattern>,
    /// Destination ports; empty means every port.
    pub ports: Vec<PortRange>,
}

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// Addresses inside the cluster (pods, services) even when no object
    /// names them: egress there is never "unexpected".
    pub cluster_cidrs: Vec<IpNet>,
    /// Declared egress.
    pub expected_egress: Vec<ExpectedEgress>,
    /// Distinct `(namespace, workload)` label values before `_overflow`.
    pub max_workloads: usize,
    /// How long a denied flow to another node may stay unanswered before it
    /// counts as enforced.
    pub answer_window: Duration,
    /// How long and how many destination names are kept.
    pub names: NameLimits,
    /// Distinct destination names per source workload in metrics; further
    /// names are shown by their address block.
    pub max_names_per_workload: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            cluster_cidrs: Vec::new(),
            expected_egress: Vec::new(),
            max_workloads: 2000,
            answer_window: Duration::from_secs(5),
            names: NameLimits::default(),
            max_names_per_workload: 100,
        }
    }
}

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not parse or does not fit the schema.
    #[error("{path}: {field}: {reason}")]
    Syntax {
        /// The file.
        path: String,
        /// The field's path in the file (`(top level)` for the document).
        field: String,
        /// The parser's message.
        reason: String,
    },
    /// A value is invalid.
    #[error("{path}: {field}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// The field, e.g. `expectedEgress[1].cidrs[0]`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a mapping with clusterCIDRs, expectedEgress, maxWorkloads, answerWindowSeconds, names"
)]
struct RawConfig {
    #[serde(default, rename = "clusterCIDRs")]
    cluster_cidrs: Vec<String>,
    #[serde(default)]
    expected_egress: Vec<RawExpectedEgress>,
    max_workloads: Option<usize>,
    answer_window_seconds: Option<f64>,
    #[serde(default)]
    names: RawNames,
}

#[derive(Deserialize, Default)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a mapping with minTtlSeconds, maxTtlSeconds, maxEntries, maxPerPod, maxPerWorkload"
)]
struct RawNames {
    min_ttl_seconds: Option<u64>,
    max_ttl_seconds: Option<u64>,
    max_entries: Option<usize>,
    max_per_pod: Option<usize>,
    max_per_workload: Option<usize>,
}

#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a mapping with namespace, workload, cidrs, domains, ports"
)]
struct RawExpectedEgress {
    namespace: String,
    workload: Option<String>,
    #[serde(default)]
    cidrs: Vec<String>,
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    ports: Vec<String>,
}

impl AgentConfig {
    /// Reads and validates `path`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and the field.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: name.clone(),
            source,
        })?;
        Self::parse(&text, &name)
    }

    /// Parses and validates YAML text (`origin` names it in errors).
    ///
    /// # Errors
    /// [`ConfigError`] naming the field.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        if let Some(line) = crate::input::too_deep(text) {
            return Err(ConfigError::Syntax {
                path: origin.to_owned(),
                field: format!("line {line}"),
                reason: format!(
                    "nested more than {} levels deep; not parsed",
                    crate::input::MAX_NESTING
                ),
            });
        }
        let deserializer = serde_yaml_ng::Deserializer::from_str(text);
        let raw: RawConfig =
            serde_path_to_error::deserialize(deserializer).map_err(|e| ConfigError::Syntax {
                path: origin.to_owned(),
                field: match e.path().to_string() {
                    root if root == "." => "(top level)".to_owned(),
                    field => field,
                },
                reason: e.inner().to_string(),
            })?;
        let invalid = |field: String, reason: String| ConfigError::Invalid {
            path: origin.to_owned(),
            field,
            reason,
        };
        let cidr = |text: &str, field: String| {
            text.parse::<IpNet>()
                .map_err(|_| invalid(field, format!("`{text}` is not a CIDR")))
        };
        let cluster_cidrs = raw
            .cluster_cidrs
            .iter()
            .enumerate()
            .map(|(i, c)| cidr(c, format!("clusterCIDRs[{i}]")))
            .collect::<Result<_, _>>()?;
        let mut expected_egress = Vec::new();
        for (i, entry) in raw.expected_egress.iter().enumerate() {
            if entry.namespace.is_empty() {
                return Err(invalid(
                    format!("expectedEgress[{i}].namespace"),
                    "empty".into(),
                ));
            }
            if entry.cidrs.is_empty() && entry.domains.is_empty() {
                return Err(invalid(
                    format!("expectedEgress[{i}].cidrs"),
                    "at least one CIDR or domain".into(),
                ));
            }
            let domains = entry
                .domains
                .iter()
                .enumerate()
                .map(|(j, d)| {
                    DomainPattern::parse(d).map_err(|error| {
                        invalid(
                            format!("expectedEgress[{i}].domains[{j}]"),
                            format!("`{d}`: {error}"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
            let cidrs = entry
                .cidrs
                .iter()
                .enumerate()
                .map(|(j, c)| cidr(c, format!("expectedEgress[{i}].cidrs[{j}]")))
                .collect::<Result<_, _>>()?;
            let ports = entry
                .ports
                .iter()
                .enumerate()
                .map(|(j, p)| {
                    parse_ports(p).ok_or_else(|| {
                        invalid(
                            format!("expectedEgress[{i}].ports[{j}]"),
                            format!("`{p}` is not a port or an ascending range like 8000-8100"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
            expected_egress.push(ExpectedEgress {
                namespace: entry.namespace.clone(),
                workload: entry.workload.clone(),
                cidrs,
                domains,
                ports,
            });
        }
        let max_workloads = raw
            .max_workloads
            .unwrap_or(AgentConfig::default().max_workloads);
        if max_workloads == 0 {
            return Err(invalid("maxWorkloads".into(), "must be at least 1".into()));
        }
        let answer_window = match raw.answer_window_seconds {
            None => AgentConfig::default().answer_window,
            Some(seconds) => Duration::try_from_secs_f64(seconds)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    invalid(
                        "answerWindowSeconds".into(),
                        format!("{seconds} is not a positive number"),
                    )
                })?,
        };
        let (names, max_names_per_workload) = names_settings(&raw.names, &invalid)?;
        Ok(Self {
            cluster_cidrs,
            expected_egress,
            max_workloads,
            answer_window,
            names,
            max_names_per_workload,
        })
    }
}

/// The `names` section, with the defaults for what it leaves out.
fn names_settings(
    raw: &RawNames,
    invalid: &dyn Fn(String, String) -> ConfigError,
) -> Result<(NameLimits, usize), ConfigError> {
    let defaults = AgentConfig::default();
    let positive = |value: Option<usize>, default: usize, field: &str| match value {
        Some(0) => Err(invalid(
            format!("names.{field}"),
            "must be at least 1".into(),
        )),
        Some(value) => Ok(value),
        None => Ok(default),
    };
    let limits = NameLimits {
        min_ttl: raw
            .min_ttl_seconds
            .map_or(defaults.names.min_ttl, Duration::from_secs),
        max_ttl: raw
            .max_ttl_seconds
            .map_or(defaults.names.max_ttl, Duration::from_secs),
        max_entries: positive(raw.max_entries, defaults.names.max_entries, "maxEntries")?,
        max_per_pod: positive(raw.max_per_pod, defaults.names.max_per_pod, "maxPerPod")?,
    };
    if limits.max_ttl < limits.min_ttl || limits.max_ttl.is_zero() {
        return Err(invalid(
            "names.maxTtlSeconds".into(),
            format!(
                "{} s is below minTtlSeconds ({} s) or zero",
                limits.max_ttl.as_secs(),
                limits.min_ttl.as_secs()
            ),
        ));
    }
    let per_workload = positive(
        raw.max_per_workload,
        defaults.max_names_per_workload,
        "maxPerWorkload",
    )?;
    Ok((limits, per_workload))
}

fn parse_ports(text: &str) -> Option<PortRange> {
    let port = |t: &str| t.trim().parse::<u16>().ok().filter(|p| *p > 0);
    match text.split_once('-') {
        Some((start, end)) => {
            let (start, end) = (port(start)?, port(end)?);
            (start <= end).then_some(PortRange { start, end })
        }
        None => port(text).map(|p| PortRange { start: p, end: p }),
    }
}

#[cfg(test)]
mod tests;
