//! Flows as `netgov check` reads them: JSON objects (`--flows`) and
//! `SRC -> DST:PORT/PROTO` text (`--flow`), with ends named by IP or
//! `namespace/pod`.

use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::engine::ClusterState;
use crate::engine::FlowQuery;
use crate::model::Protocol;

/// A flow that cannot be judged as given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlowError {
    /// Not JSON, or not an object.
    #[error("{origin}: not a JSON object: {reason}")]
    Json {
        /// `file:line` or `--flow N`.
        origin: String,
        /// Parser message.
        reason: String,
    },
    /// A field is missing or invalid.
    #[error("{origin}: field `{field}`: {reason}")]
    Field {
        /// `file:line` or `--flow N`.
        origin: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A line is not UTF-8 text.
    #[error("{origin}: not UTF-8 text (byte {position} of the line)")]
    Utf8 {
        /// `file:line`.
        origin: String,
        /// The first invalid byte's 1-based position in the line.
        position: usize,
    },
    /// `--flow` text does not have the `SRC -> DST:PORT/PROTO` shape.
    #[error("{origin}: `{text}` is not `SRC -> DST:PORT/PROTO` (or `SRC -> DST/ICMP`)")]
    Syntax {
        /// `--flow N`.
        origin: String,
        /// The text.
        text: String,
    },
}

/// Resolves `SRC`/`DST` text: an IP, or `namespace/pod` (its first IP of
/// the wanted family, if any).
pub(super) fn endpoint(
    cluster: &ClusterState,
    text: &str,
    origin: &str,
    field: &'static str,
    family_of: Option<IpAddr>,
) -> Result<IpAddr, FlowError> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(ip);
    }
    let invalid = |reason: String| FlowError::Field {
        origin: origin.to_owned(),
        field,
        reason,
    };
    let (namespace, name) = text.split_once('/').ok_or_else(|| {
        invalid(format!(
            "`{text}` is neither an IP address nor namespace/pod"
        ))
    })?;
    let pod = cluster
        .pod(namespace, name)
        .ok_or_else(|| invalid(format!("no pod {namespace}/{name} in the manifests")))?;
    let same_family = |ip: &&IpAddr| family_of.is_none_or(|other| ip.is_ipv4() == other.is_ipv4());
    pod.ips
        .iter()
        .find(same_family)
        .or(pod.ips.first())
        .copied()
        .ok_or_else(|| {
            invalid(format!(
                "pod {namespace}/{name} has no IP (status.podIP / podIPs)"
            ))
        })
}

/// Parses one JSON-lines flow: `{"src", "dst", "protocol", "dst_port",
/// "src_port"?}`. Returns the query and the input object, to be echoed.
///
/// # Errors
/// [`FlowError`] naming the line and field.
pub fn parse_json_flow(
    cluster: &ClusterState,
    line: &str,
    origin: &str,
) -> Result<(FlowQuery, Map<String, Value>), FlowError> {
    let value: Value = serde_json::from_str(line).map_err(|e| FlowError::Json {
        origin: origin.to_owned(),
        reason: e.to_string(),
    })?;
    let Value::Object(input) = value else {
        return Err(FlowError::Json {
            origin: origin.to_owned(),
            reason: "a flow is an object".into(),
        });
    };
    let text = |field: &'static str| {
        input
            .get(field)
            .and_then(Value::as_str)
            .ok_or_else(|| FlowError::Field {
                origin: origin.to_owned(),
                field,
                reason: "missing, or not a string".into(),
            })
    };
    let protocol_text = text("protocol")?;
    let protocol = Protocol::parse(protocol_text).ok_or_else(|| FlowError::Field {
        origin: origin.to_owned(),
        field: "protocol",
        reason: format!("`{protocol_text}` is not TCP, UDP, SCTP, ICMP or ICMPv6"),
    })?;
    let dst_port = match (protocol.has_ports(), input.get("dst_port")) {
        (false, _) => 0,
        (true, Some(port)) => port
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| FlowError::Field {
                origin: origin.to_owned(),
                field: "dst_port",
                reason: format!("{port} is not a port (1-65535)"),
            })?,
        (true, None) => {
            return Err(FlowError::Field {
                origin: origin.to_owned(),
                field: "dst_port",
                reason: format!("missing (required for {protocol_text})"),
            });
        }
    };
    if let Some(port) = input.get("src_port")
        && port.as_u64().and_then(|p| u16::try_from(p).ok()).is_none()
    {
        return Err(FlowError::Field {
            origin: origin.to_owned(),
            field: "src_port",
            reason: format!("{port} is not a port"),
        });
    }
    let (src_text, dst_text) = (text("src")?, text("dst")?);
    let dst = endpoint(cluster, dst_text, origin, "dst", src_text.parse().ok())?;
    let src = endpoint(cluster, src_text, origin, "src", Some(dst))?;
    Ok((
        FlowQuery {
            src,
            dst,
            protocol,
            dst_port,
        },
        input,
    ))
}

/// Parses `SRC -> DST:PORT/PROTO` (IPv6 as `[addr]:port/proto`) or
/// `SRC -> DST/ICMP`.
///
/// # Errors
/// [`FlowError`] naming the flag's position.
pub fn parse_flow_flag(
    cluster: &ClusterState,
    text: &str,
    origin: &str,
) -> Result<(FlowQuery, Map<String, Value>), FlowError> {
    let syntax = || FlowError::Syntax {
        origin: origin.to_owned(),
        text: text.to_owned(),
    };
    let (src, rest) = text.split_once("->").ok_or_else(syntax)?;
    let (destination, protocol) = rest.trim().rsplit_once('/').ok_or_else(syntax)?;
    let (dst, port) = if Protocol::parse(protocol).is_some_and(|p| !p.has_ports()) {
        (destination, None)
    } else {
        let (dst, port) = destination.rsplit_once(':').ok_or_else(syntax)?;
        let port: u16 = port.parse().map_err(|_| syntax())?;
        (dst, Some(port))
    };
    let dst = dst.trim_start_matches('[').trim_end_matches(']');
    let mut input = Map::new();
    input.insert("src".into(), Value::from(src.trim()));
    input.insert("dst".into(), Value::from(dst));
    input.insert("protocol".into(), Value::from(protocol));
    if let Some(port) = port {
        input.insert("dst_port".into(), Value::from(port));
    }
    let line = Value::Object(input).to_string();
    parse_json_flow(cluster, &line, origin)
}
