//! Reading the flow log back: a flow is its latest line (a flow is
//! written when first judged, when its verdict or enforcement changes and
//! when it ends). Lines that cannot be used are reported with file and
//! line, never silently dropped.

use std::collections::HashMap;
use std::io::BufRead;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::engine::Decision;
use crate::judge::Enforcement;
use crate::judge::context::EndContext;
use crate::model::{FlowId, Protocol};

/// One end's identity as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
pub struct RecordedIdentity {
    /// Namespace (`""` outside the cluster).
    pub namespace: String,
    /// Pod, when a pod.
    #[serde(default)]
    pub pod: Option<String>,
    /// Workload.
    pub workload: String,
}

impl std::fmt::Display for RecordedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.workload)
        } else {
            write!(f, "{}/{}", self.namespace, self.workload)
        }
    }
}

/// A time as the flow log writes it (RFC 3339, UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordedTime(pub OffsetDateTime);

impl std::str::FromStr for RecordedTime {
    type Err = time::error::Parse;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        OffsetDateTime::parse(text, &Rfc3339).map(Self)
    }
}

impl std::fmt::Display for RecordedTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.format(&Rfc3339) {
            Ok(text) => f.write_str(&text),
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

impl serde::Serialize for RecordedTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RecordedTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::model::deserialize_parsed(deserializer)
    }
}

/// A name of the destination, and how it was learned.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RecordedName {
    /// The name.
    pub name: String,
    /// How it was learned: `dns` or `sni` (text, so that a line from a
    /// later agent with another source still reads).
    pub learned: String,
}

/// A flow as the flow log recorded it (its latest line).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RecordedFlow {
    /// Flow-log format (0 when absent).
    #[serde(default)]
    pub format: u32,
    /// Source address.
    pub src: IpAddr,
    /// Source port.
    pub src_port: u16,
    /// Destination address as captured.
    pub dst: IpAddr,
    /// Destination port as captured.
    pub dst_port: u16,
    /// Where the initiator sent to, when the node translated it (a
    /// Service's cluster IP, a node port).
    #[serde(default)]
    pub original_dst: Option<std::net::SocketAddr>,
    /// How the node masqueraded the initiator, when it did.
    #[serde(default)]
    pub translated_src: Option<std::net::SocketAddr>,
    /// The protocol.
    pub protocol: Protocol,
    /// When the flow began.
    pub first_seen: RecordedTime,
    /// When it was last seen.
    pub last_seen: RecordedTime,
    /// The source.
    pub src_identity: RecordedIdentity,
    /// The destination (a Service flow's backend).
    pub dst_identity: RecordedIdentity,
    /// The verdict.
    pub verdict: Decision,
    /// Whether the network dropped a denied flow, when it was denied.
    #[serde(default)]
    pub enforcement: Option<Enforcement>,
    /// The destination's names.
    #[serde(default)]
    pub dst_names: Vec<RecordedName>,
    /// The port the verdict applied to.
    pub judged_dst_port: u16,
    /// The source pod as policies saw it.
    #[serde(default)]
    pub src_context: Option<EndContext>,
    /// The destination pod as policies saw it.
    #[serde(default)]
    pub dst_context: Option<EndContext>,
}

/// A line that cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The line is not a flow-log record.
    #[error("{path}:{line}: not a flow-log record: {source}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The line number (from 1).
        line: usize,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The line was written before the flow log carried what replay needs.
    #[error(
        "{path}:{line}: flow-log format {format} has no pod labels (format 1 from netgov 0.1 on); not replayed"
    )]
    TooOld {
        /// The file.
        path: PathBuf,
        /// The line number.
        line: usize,
        /// Its format.
        format: u32,
    },
}

impl RecordedFlow {
    /// The flow's identity, as the agent's ([`crate::model::FlowId`]; the
    /// masqueraded initiator's translated end when recorded).
    pub fn flow_id(&self) -> FlowId {
        FlowId::opened(
            (self.src, self.src_port),
            self.translated_src,
            (self.dst, self.dst_port),
            self.protocol,
        )
    }
}

/// Reads every file; returns each flow's latest record, in the order flows
/// first appear, and the lines that could not be used.
pub fn read(paths: &[PathBuf]) -> (Vec<RecordedFlow>, Vec<LineError>) {
    let mut flows: Vec<RecordedFlow> = Vec::new();
    let mut index: HashMap<FlowId, usize> = HashMap::new();
    let mut errors = Vec::new();
    for path in paths {
        if let Err(error) = read_file(path, &mut flows, &mut index, &mut errors) {
            errors.push(error);
        }
    }
    (flows, errors)
}

fn read_file(
    path: &Path,
    flows: &mut Vec<RecordedFlow>,
    index: &mut HashMap<FlowId, usize>,
    errors: &mut Vec<LineError>,
) -> Result<(), LineError> {
    let read_error = |source| LineError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    for (number, line) in std::io::BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(read_error)?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let flow: RecordedFlow = match serde_json::from_slice(&line) {
            Ok(flow) => flow,
            Err(source) => {
                errors.push(LineError::Malformed {
                    path: path.to_owned(),
                    line: number + 1,
                    source,
                });
                continue;
            }
        };
        if flow.format < 1 {
            errors.push(LineError::TooOld {
                path: path.to_owned(),
                line: number + 1,
                format: flow.format,
            });
            continue;
        }
        let key = flow.flow_id();
        match index.get(&key) {
            // The latest record wins, whatever the order of the files
            // (a rotated `.1` may be read after the current file).
            Some(&at) => {
                if flow.last_seen >= flows[at].last_seen {
                    flows[at] = flow;
                }
            }
            None => {
                index.insert(key, flows.len());
                flows.push(flow);
            }
        }
    }
    Ok(())
}
