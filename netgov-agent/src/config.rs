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
//! maxWorkloads: 2000
//! answerWindowSeconds: 5
//! ```

use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

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
    /// Destinations.
    pub cidrs: Vec<IpNet>,
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
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            cluster_cidrs: Vec::new(),
            expected_egress: Vec::new(),
            max_workloads: 2000,
            answer_window: Duration::from_secs(5),
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
    expecting = "a mapping with clusterCIDRs, expectedEgress, maxWorkloads, answerWindowSeconds"
)]
struct RawConfig {
    #[serde(default, rename = "clusterCIDRs")]
    cluster_cidrs: Vec<String>,
    #[serde(default)]
    expected_egress: Vec<RawExpectedEgress>,
    max_workloads: Option<usize>,
    answer_window_seconds: Option<f64>,
}

#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a mapping with namespace, workload, cidrs, ports"
)]
struct RawExpectedEgress {
    namespace: String,
    workload: Option<String>,
    cidrs: Vec<String>,
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
            if entry.cidrs.is_empty() {
                return Err(invalid(
                    format!("expectedEgress[{i}].cidrs"),
                    "at least one CIDR".into(),
                ));
            }
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
        Ok(Self {
            cluster_cidrs,
            expected_egress,
            max_workloads,
            answer_window,
        })
    }
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
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let config = AgentConfig::parse(
            "clusterCIDRs: [10.244.0.0/16]\nexpectedEgress:\n  - namespace: ai\n    workload: ingest\n    cidrs: [192.0.2.0/24]\n    ports: [\"443\", \"8000-8100\"]\nmaxWorkloads: 10\nanswerWindowSeconds: 2.5\n",
            "agent.yaml",
        )
        .expect("valid");
        assert_eq!(config.cluster_cidrs.len(), 1);
        assert_eq!(
            config.expected_egress[0].ports,
            [
                PortRange {
                    start: 443,
                    end: 443
                },
                PortRange {
                    start: 8000,
                    end: 8100
                }
            ]
        );
        assert_eq!(config.max_workloads, 10);
        assert_eq!(config.answer_window, Duration::from_millis(2500));
        assert_eq!(
            AgentConfig::parse("{}", "empty").expect("defaults"),
            AgentConfig::default()
        );
    }

    #[test]
    fn errors_name_the_field() {
        let rows = [
            ("clusterCIDRs: [10.0.0.0/40]", "clusterCIDRs[0]"),
            (
                "expectedEgress: [{namespace: a, cidrs: [nope]}]",
                "expectedEgress[0].cidrs[0]",
            ),
            (
                "expectedEgress: [{namespace: a, cidrs: []}]",
                "expectedEgress[0].cidrs",
            ),
            (
                "expectedEgress: [{namespace: a, cidrs: [1.2.3.0/24], ports: [\"90-80\"]}]",
                "expectedEgress[0].ports[0]",
            ),
            (
                "expectedEgress: [{namespace: a, cidrs: [1.2.3.0/24], ports: [\"0\"]}]",
                "expectedEgress[0].ports[0]",
            ),
            ("maxWorkloads: 0", "maxWorkloads"),
            ("answerWindowSeconds: -1", "answerWindowSeconds"),
            (
                "expectedEgress: [{namespace: a, cidr: [1.2.3.0/24]}]",
                "expectedEgress[0]",
            ),
            ("clusterCidrs: []", "clusterCidrs"),
            ("vm", "(top level)"),
            ("expectedEgress: [vm]", "expectedEgress[0]"),
        ];
        for (text, field) in rows {
            let error = AgentConfig::parse(text, "agent.yaml")
                .expect_err(text)
                .to_string();
            assert!(error.starts_with("agent.yaml: "), "{error}");
            assert!(error.contains(field), "{text}: {error}");
            assert!(!error.contains("Raw"), "no Rust type names: {error}");
        }
    }
}
