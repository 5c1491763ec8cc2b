//! `netgov check`: would these flows be allowed? Offline, for CI pipelines.

use std::io::{BufRead, Write};
use std::net::IpAddr;

use serde_json::{Map, Value};

use super::{FlowQuery, Verdict, evaluate};
use crate::state::{ClusterState, Protocol};

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

/// Writes one JSON result: the input object as given (every field echoed,
/// byte for byte), `src_ip` / `dst_ip` when an end was named as
/// `namespace/pod`, then the verdict's fields: `verdict`, `egress`,
/// `ingress`, `source`, `destination`, and for Services `backends`.
///
/// # Errors
/// The I/O error writing.
pub fn write_json(
    out: &mut impl Write,
    input_object: &str,
    input: &FlowText<'_>,
    query: &FlowQuery,
    verdict: &Verdict,
) -> std::io::Result<()> {
    let body = input_object.trim().strip_suffix('}').unwrap_or("{");
    out.write_all(body.as_bytes())?;
    for (field, given, ip) in [
        ("src_ip", input.src, query.src),
        ("dst_ip", input.dst, query.dst),
    ] {
        if given.parse::<IpAddr>().ok() != Some(ip) {
            write!(out, ",\"{field}\":\"{ip}\"")?;
        }
    }
    let verdict = serde_json::to_string(verdict).map_err(std::io::Error::other)?;
    out.write_all(b",")?;
    out.write_all(verdict.strip_prefix('{').unwrap_or(&verdict).as_bytes())?;
    out.write_all(b"\n")
}

/// The text of a flow's ends, as given.
#[derive(Clone, Copy, Debug)]
pub struct FlowText<'a> {
    /// `src` as given.
    pub src: &'a str,
    /// `dst` as given.
    pub dst: &'a str,
}

/// The fields of a JSON flow, borrowed from the line (the fast path; lines
/// it cannot take, such as escaped strings or bad values, go through
/// [`parse_json_flow`], which names what is wrong).
#[derive(serde::Deserialize)]
struct BorrowedFlow<'a> {
    src: &'a str,
    dst: &'a str,
    protocol: &'a str,
    #[serde(default)]
    dst_port: Option<u64>,
    #[serde(default)]
    src_port: Option<u64>,
}

fn fast_parse<'a>(cluster: &ClusterState, line: &'a str) -> Option<(FlowQuery, FlowText<'a>)> {
    let flow: BorrowedFlow<'a> = serde_json::from_str(line).ok()?;
    let protocol = Protocol::parse(flow.protocol)?;
    let dst_port = match protocol.has_ports().then_some(protocol) {
        None => 0,
        Some(_) => u16::try_from(flow.dst_port?).ok().filter(|p| *p > 0)?,
    };
    if let Some(port) = flow.src_port {
        u16::try_from(port).ok()?;
    }
    let dst = endpoint(cluster, flow.dst, "", "dst", flow.src.parse().ok()).ok()?;
    let src = endpoint(cluster, flow.src, "", "src", Some(dst)).ok()?;
    let query = FlowQuery {
        src,
        dst,
        protocol,
        dst_port,
    };
    Some((
        query,
        FlowText {
            src: flow.src,
            dst: flow.dst,
        },
    ))
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

fn side_text(side: &super::verdict::SideVerdict) -> String {
    let verdict = side.verdict.as_str();
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
pub fn table_row(input: &FlowText<'_>, query: &FlowQuery, verdict: &Verdict) -> String {
    let port = match query.protocol.has_ports().then_some(query.protocol) {
        Some(protocol) => format!("{}/{protocol}", query.dst_port),
        None => query.protocol.to_string(),
    };
    let mut decision = verdict.verdict.to_string();
    if verdict.backends_disagree {
        decision.push_str(" (mixed)");
    }
    format!(
        "{:<28} {:<28} {:<12} {:<15} {:<40} {}",
        input.src,
        input.dst,
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
    mut input: impl BufRead,
    source_name: &str,
    format: CheckFormat,
    out: &mut impl Write,
) -> Result<u64, CheckError> {
    let mut count = 0;
    let mut bytes = Vec::new();
    let mut number = 0;
    loop {
        bytes.clear();
        if input
            .read_until(b'\n', &mut bytes)
            .map_err(CheckError::Io)?
            == 0
        {
            break;
        }
        number += 1;
        let line = std::str::from_utf8(&bytes).map_err(|error| FlowError::Utf8 {
            origin: format!("{source_name}:{number}"),
            position: error.valid_up_to() + 1,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        match fast_parse(cluster, line) {
            Some((query, text)) => write_result(cluster, &query, line, &text, format, out)?,
            None => {
                let origin = format!("{source_name}:{number}");
                let (query, fields) = parse_json_flow(cluster, line, &origin)?;
                judge_parsed(cluster, &query, &fields, format, out)?;
            }
        }
        count += 1;
    }
    Ok(count)
}

/// Judges a flow parsed by [`parse_json_flow`] or [`parse_flow_flag`] and
/// writes its result.
///
/// # Errors
/// The I/O error writing output.
pub fn judge_parsed(
    cluster: &ClusterState,
    query: &FlowQuery,
    fields: &Map<String, Value>,
    format: CheckFormat,
    out: &mut impl Write,
) -> Result<(), CheckError> {
    let text = |field| {
        fields
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let object = Value::Object(fields.clone()).to_string();
    let flow_text = FlowText {
        src: text("src"),
        dst: text("dst"),
    };
    write_result(cluster, query, &object, &flow_text, format, out)
}

/// Judges one flow and writes its result.
///
/// # Errors
/// The I/O error writing output.
pub fn write_result(
    cluster: &ClusterState,
    query: &FlowQuery,
    input_object: &str,
    text: &FlowText<'_>,
    format: CheckFormat,
    out: &mut impl Write,
) -> Result<(), CheckError> {
    let verdict = evaluate(cluster, query);
    match format {
        CheckFormat::Json => {
            write_json(out, input_object, text, query, &verdict).map_err(CheckError::Io)
        }
        CheckFormat::Table => {
            writeln!(out, "{}", table_row(text, query, &verdict)).map_err(CheckError::Io)
        }
    }
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
    tracing::info!(
        pods = cluster.pod_count(),
        policies = cluster.policies().count(),
        "cluster state loaded from manifests"
    );
    if options.format == CheckFormat::Table {
        writeln!(out, "{}", table_header()).map_err(CheckError::Io)?;
    }
    let mut count = 0;
    for (i, text) in options.flows.iter().enumerate() {
        let (query, fields) = parse_flow_flag(&cluster, text, &format!("--flow #{}", i + 1))
            .map_err(CheckError::from)?;
        judge_parsed(&cluster, &query, &fields, options.format, out)?;
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
