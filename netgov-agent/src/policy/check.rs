//! `netgov check`: would these flows be allowed? Offline, for CI pipelines.

use std::io::{BufRead, Write};
use std::net::IpAddr;

use serde_json::{Map, Value};

use super::{ClusterState, FlowProtocol, FlowQuery, Verdict, evaluate};

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
fn endpoint(
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
    let protocol = FlowProtocol::parse(protocol_text).ok_or_else(|| FlowError::Field {
        origin: origin.to_owned(),
        field: "protocol",
        reason: format!("`{protocol_text}` is not TCP, UDP, SCTP, ICMP or ICMPv6"),
    })?;
    let dst_port = match (protocol.port_protocol(), input.get("dst_port")) {
        (None, _) => 0,
        (Some(_), Some(port)) => port
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| FlowError::Field {
                origin: origin.to_owned(),
                field: "dst_port",
                reason: format!("{port} is not a port (1-65535)"),
            })?,
        (Some(_), None) => {
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
    let (dst, port) = if FlowProtocol::parse(protocol).is_some_and(|p| p.port_protocol().is_none())
    {
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

/// Adds the verdict to the echoed input: `verdict`, `egress`, `ingress`,
/// `source`, `destination`, and for Services `backends`.
pub fn annotate(
    mut input: Map<String, Value>,
    query: &FlowQuery,
    verdict: &Verdict,
) -> Map<String, Value> {
    if !input.contains_key("src_ip")
        && input.get("src").and_then(Value::as_str) != Some(&query.src.to_string())
    {
        input.insert("src_ip".into(), Value::from(query.src.to_string()));
    }
    if !input.contains_key("dst_ip")
        && input.get("dst").and_then(Value::as_str) != Some(&query.dst.to_string())
    {
        input.insert("dst_ip".into(), Value::from(query.dst.to_string()));
    }
    if let Ok(Value::Object(judged)) = serde_json::to_value(verdict) {
        input.extend(judged);
    }
    input
}

/// Output format of `netgov check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CheckFormat {
    /// One JSON object per input flow, in input order.
    #[default]
    Json,
    /// A table for people.
    Table,
}

/// Column headings of the table format.
pub fn table_header() -> String {
    format!(
        "{:<28} {:<28} {:<12} {:<15} {:<40} {}",
        "SOURCE", "DESTINATION", "PORT", "VERDICT", "EGRESS (source)", "INGRESS (destination)"
    )
}

fn side_text(side: &super::evaluate::SideVerdict) -> String {
    let verdict = serde_json::to_value(side.verdict).ok();
    let verdict = verdict.as_ref().and_then(Value::as_str).unwrap_or("?");
    if !side.allowed_by.is_empty() {
        let rules: Vec<String> = side
            .allowed_by
            .iter()
            .map(|r| format!("{}#{}", r.policy, r.rule))
            .collect();
        format!("{verdict} by {}", rules.join(","))
    } else if side.isolated {
        format!(
            "{verdict}: isolated by {}",
            side.isolating_policies.join(",")
        )
    } else {
        verdict.to_owned()
    }
}

/// One table row.
pub fn table_row(input: &Map<String, Value>, query: &FlowQuery, verdict: &Verdict) -> String {
    let text = |field: &str| {
        input
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let port = match query.protocol.port_protocol() {
        Some(_) => format!("{}/{:?}", query.dst_port, query.protocol).to_uppercase(),
        None => format!("{:?}", query.protocol).to_uppercase(),
    };
    let decision = serde_json::to_value(verdict.verdict).ok();
    let mut decision = decision
        .as_ref()
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_owned();
    if verdict.backends_disagree {
        decision.push_str(" (mixed)");
    }
    format!(
        "{:<28} {:<28} {:<12} {:<15} {:<40} {}",
        text("src"),
        text("dst"),
        port,
        decision,
        side_text(&verdict.egress),
        side_text(&verdict.ingress)
    )
}

/// Judges every flow read from `input` (JSON lines) and writes one result
/// per flow, in order. Stops at the first bad line.
///
/// # Errors
/// A [`FlowError`] for a bad line, or the I/O error writing output.
pub fn check_json_lines(
    cluster: &ClusterState,
    input: impl BufRead,
    source_name: &str,
    format: CheckFormat,
    out: &mut impl Write,
) -> Result<u64, CheckError> {
    let mut count = 0;
    for (number, line) in input.lines().enumerate() {
        let line = line.map_err(CheckError::Io)?;
        if line.trim().is_empty() {
            continue;
        }
        let origin = format!("{source_name}:{}", number + 1);
        let (query, fields) = parse_json_flow(cluster, &line, &origin)?;
        write_result(cluster, &query, fields, format, out)?;
        count += 1;
    }
    Ok(count)
}

/// Judges one parsed flow and writes its result.
///
/// # Errors
/// The I/O error writing output.
pub fn write_result(
    cluster: &ClusterState,
    query: &FlowQuery,
    fields: Map<String, Value>,
    format: CheckFormat,
    out: &mut impl Write,
) -> Result<(), CheckError> {
    let verdict = evaluate(cluster, query);
    let line = match format {
        CheckFormat::Json => Value::Object(annotate(fields, query, &verdict)).to_string(),
        CheckFormat::Table => table_row(&fields, query, &verdict),
    };
    writeln!(out, "{line}").map_err(CheckError::Io)
}

/// Errors of `netgov check`.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A flow is malformed.
    #[error(transparent)]
    Flow(#[from] FlowError),
    /// Reading flows or writing results failed.
    #[error("I/O: {0}")]
    Io(#[source] std::io::Error),
}

/// What `netgov check` was asked.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Manifest files or directories.
    pub manifests: Vec<std::path::PathBuf>,
    /// A JSON-lines file of flows, or `-` for standard input.
    pub flows_file: Option<std::path::PathBuf>,
    /// `SRC -> DST:PORT/PROTO` flows.
    pub flows: Vec<String>,
    /// Output format.
    pub format: CheckFormat,
}

/// Why `netgov check` could not answer.
#[derive(Debug, thiserror::Error)]
pub enum CheckRunError {
    /// Manifests could not be read or hold invalid objects; every problem is
    /// listed.
    #[error("{} problem(s) in the manifests:\n{}", .0.len(), .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Manifests(Vec<super::manifests::ManifestError>),
    /// No flow was given.
    #[error(
        "no flows: give --flows FILE (or - for standard input) or --flow 'SRC -> DST:PORT/PROTO'"
    )]
    NoFlows,
    /// The flows file cannot be opened.
    #[error("{path}: {source}")]
    FlowsFile {
        /// The path.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A flow is bad, or output failed.
    #[error(transparent)]
    Check(#[from] CheckError),
}

/// Runs `netgov check`: loads the manifests, then judges `--flow` flows and
/// then the flows file, writing one result per flow in input order.
///
/// # Errors
/// [`CheckRunError`]; nothing is judged when the manifests have problems.
pub fn run(options: &CheckOptions, out: &mut impl Write) -> Result<u64, CheckRunError> {
    if options.flows.is_empty() && options.flows_file.is_none() {
        return Err(CheckRunError::NoFlows);
    }
    let manifests = super::manifests::load(&options.manifests).map_err(CheckRunError::Manifests)?;
    let (cluster, errors) = manifests.into_cluster();
    if !errors.is_empty() {
        return Err(CheckRunError::Manifests(errors));
    }
    if options.format == CheckFormat::Table {
        writeln!(out, "{}", table_header()).map_err(CheckError::Io)?;
    }
    let mut count = 0;
    for (i, text) in options.flows.iter().enumerate() {
        let (query, fields) = parse_flow_flag(&cluster, text, &format!("--flow #{}", i + 1))
            .map_err(CheckError::from)?;
        write_result(&cluster, &query, fields, options.format, out)?;
        count += 1;
    }
    match options.flows_file.as_deref() {
        None => {}
        Some(path) if path == std::path::Path::new("-") => {
            let stdin = std::io::stdin().lock();
            count += check_json_lines(&cluster, stdin, "stdin", options.format, out)?;
        }
        Some(path) => {
            let file = std::fs::File::open(path).map_err(|source| CheckRunError::FlowsFile {
                path: path.to_owned(),
                source,
            })?;
            let reader = std::io::BufReader::new(file);
            count += check_json_lines(
                &cluster,
                reader,
                &path.display().to_string(),
                options.format,
                out,
            )?;
        }
    }
    out.flush().map_err(CheckError::Io)?;
    Ok(count)
}
