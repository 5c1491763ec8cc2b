//! `netgov check`: would these flows be allowed? Offline, for CI pipelines.

use std::io::{BufRead, Write};

use serde_json::{Map, Value};

use crate::engine::ClusterState;
use crate::engine::{Decision, FlowQuery, Verdict, evaluate};
use crate::model::Protocol;

mod input;
mod json;

use input::endpoint;
pub use input::{FlowError, parse_flow_flag, parse_json_flow};

/// Writes one JSON result: the input object as given (every field echoed,
/// byte for byte), `src_ip` / `dst_ip` when an end was named as
/// `namespace/pod`, then the verdict's fields: `verdict`, `egress`,
/// `ingress`, `source`, `destination`, and for Services `backends`. The
/// verdict is serialised into `scratch` (kept from flow to flow, so that
/// a verdict allocates nothing), then its fields follow the input's.
///
/// # Errors
/// The I/O error writing.
pub fn write_json(
    out: &mut impl Write,
    scratch: &mut Vec<u8>,
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
        // An end is an IP address as given, or `namespace/pod`, which no
        // address contains.
        if given.contains('/') {
            write!(out, ",\"{field}\":\"{ip}\"")?;
        }
    }
    scratch.clear();
    json::write_verdict(scratch, verdict);
    scratch[0] = b',';
    scratch.push(b'\n');
    out.write_all(scratch)
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
/// The table's column headings.
pub const TABLE_HEADER: [&str; 6] = [
    "SOURCE",
    "DESTINATION",
    "PORT",
    "VERDICT",
    "EGRESS (source)",
    "INGRESS (destination)",
];

/// Lays out rows (tab-separated cells, as [`table_row`] writes them) as a
/// table whose columns fit their content (comfy-table), wrapping to the
/// terminal's width when there is one.
pub fn render_table(rows: &str) -> String {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Dynamic)
        .set_header(TABLE_HEADER);
    for row in rows.lines() {
        table.add_row(row.split('\t'));
    }
    // Two spaces between columns, none before the first.
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
        .lines()
        .map(|line| line.trim_end().to_owned() + "\n")
        .collect()
}

fn side_text(side: &crate::engine::verdict::SideVerdict) -> String {
    let verdict = side.verdict.as_str();
    if !side.allowed_by.is_empty() {
        format!(
            "{verdict} by {}",
            crate::engine::verdict::rule_list(&side.allowed_by)
        )
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
    [
        input.src.to_string(),
        input.dst.to_string(),
        port,
        decision,
        side_text(&verdict.egress),
        side_text(&verdict.ingress),
    ]
    .join("\t")
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
) -> Result<Tally, CheckError> {
    let mut tally = Tally::default();
    let mut scratch = Vec::new();
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
        let decision = match fast_parse(cluster, line) {
            Some((query, text)) => {
                write_result(cluster, &query, line, &text, format, out, &mut scratch)?
            }
            None => {
                let origin = format!("{source_name}:{number}");
                let (query, fields) = parse_json_flow(cluster, line, &origin)?;
                judge_parsed(cluster, &query, &fields, format, out, &mut scratch)?
            }
        };
        tally.add(decision);
    }
    Ok(tally)
}

/// Judges a flow parsed by [`parse_json_flow`] or [`parse_flow_flag`] and
/// writes its result (`scratch`: see [`write_json`]).
///
/// # Errors
/// The I/O error writing output.
pub fn judge_parsed(
    cluster: &ClusterState,
    query: &FlowQuery,
    fields: &Map<String, Value>,
    format: CheckFormat,
    out: &mut impl Write,
    scratch: &mut Vec<u8>,
) -> Result<Decision, CheckError> {
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
    write_result(cluster, query, &object, &flow_text, format, out, scratch)
}

/// Judges one flow and writes its result (`scratch`: see [`write_json`]).
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
    scratch: &mut Vec<u8>,
) -> Result<Decision, CheckError> {
    let verdict = evaluate(cluster, query);
    match format {
        CheckFormat::Json => {
            write_json(out, scratch, input_object, text, query, &verdict)
                .map_err(CheckError::Io)?;
        }
        CheckFormat::Table => {
            writeln!(out, "{}", table_row(text, query, &verdict)).map_err(CheckError::Io)?;
        }
    }
    Ok(verdict.verdict)
}

/// The verdicts `netgov check` gave, for its exit status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Flows allowed.
    pub allow: u64,
    /// Flows denied.
    pub deny: u64,
    /// Flows no policy applies to.
    pub not_applicable: u64,
}

impl Tally {
    fn add(&mut self, decision: Decision) {
        match decision {
            Decision::Allow => self.allow += 1,
            Decision::Deny => self.deny += 1,
            Decision::NotApplicable => self.not_applicable += 1,
        }
    }

    fn merged(self, other: Self) -> Self {
        Self {
            allow: self.allow + other.allow,
            deny: self.deny + other.deny,
            not_applicable: self.not_applicable + other.not_applicable,
        }
    }

    /// Flows judged.
    pub fn flows(&self) -> u64 {
        self.allow + self.deny + self.not_applicable
    }

    /// The flows whose verdict is one of `fail_on`, and which verdicts
    /// those are (for the message), if any.
    pub fn failing(&self, fail_on: &[FailOn]) -> Option<String> {
        let mut parts = Vec::new();
        for verdict in fail_on {
            let (count, name) = match verdict {
                FailOn::Deny => (self.deny, "denied"),
                FailOn::NotApplicable => (self.not_applicable, "not governed by any policy"),
            };
            if count > 0 {
                parts.push(format!("{count} {name}"));
            }
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// Verdicts that make `netgov check` exit non-zero (`--fail-on`), for CI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    /// A flow the policies deny.
    Deny,
    /// A flow no policy governs (`not-applicable`).
    NotApplicable,
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
    Manifests(Vec<crate::sources::manifests::ManifestError>),
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
pub fn run(options: &CheckOptions, out: &mut impl Write) -> Result<Tally, CheckRunError> {
    if options.flows.is_empty() && options.flows_file.is_none() {
        return Err(CheckRunError::NoFlows);
    }
    let manifests =
        crate::sources::manifests::load(&options.manifests).map_err(CheckRunError::Manifests)?;
    let (cluster, errors) = manifests.into_cluster();
    if !errors.is_empty() {
        return Err(CheckRunError::Manifests(errors));
    }
    tracing::info!(
        pods = cluster.pod_count(),
        policies = cluster.policies().count(),
        "cluster state loaded from manifests"
    );
    judge_all(&cluster, options, out)
}

/// Judges `--flow` flows and then the flows file against `cluster` (from
/// manifests, or a live cluster's), writing one result per flow in input
/// order.
///
/// # Errors
/// [`CheckRunError`] for a bad flow or failing output.
pub fn judge_all(
    cluster: &ClusterState,
    options: &CheckOptions,
    out: &mut impl Write,
) -> Result<Tally, CheckRunError> {
    if options.flows.is_empty() && options.flows_file.is_none() {
        return Err(CheckRunError::NoFlows);
    }
    let tally = match options.format {
        CheckFormat::Json => judge_into(cluster, options, out)?,
        CheckFormat::Table => {
            // A table is laid out once every row is known: its rows are
            // collected (tab-separated), then printed.
            let mut rows = Vec::new();
            let tally = judge_into(cluster, options, &mut rows)?;
            out.write_all(render_table(&String::from_utf8_lossy(&rows)).as_bytes())
                .map_err(CheckError::Io)?;
            tally
        }
    };
    out.flush().map_err(CheckError::Io)?;
    Ok(tally)
}

/// Judges every flow, writing each result to `out` (JSON, or a table's
/// row) as it goes: one writer type, so that the many small writes of
/// serialising a verdict are inlined.
fn judge_into(
    cluster: &ClusterState,
    options: &CheckOptions,
    out: &mut impl Write,
) -> Result<Tally, CheckRunError> {
    let mut tally = Tally::default();
    let mut scratch = Vec::new();
    for (i, text) in options.flows.iter().enumerate() {
        let (query, fields) = parse_flow_flag(cluster, text, &format!("--flow #{}", i + 1))
            .map_err(CheckError::from)?;
        tally.add(judge_parsed(
            cluster,
            &query,
            &fields,
            options.format,
            out,
            &mut scratch,
        )?);
    }
    match options.flows_file.as_deref() {
        None => {}
        Some(path) if path == std::path::Path::new("-") => {
            let stdin = std::io::stdin().lock();
            let read = check_json_lines(cluster, stdin, "stdin", options.format, out)?;
            tally = tally.merged(read);
        }
        Some(path) => {
            let file = std::fs::File::open(path).map_err(|source| CheckRunError::FlowsFile {
                path: path.to_owned(),
                source,
            })?;
            let reader = std::io::BufReader::new(file);
            let read = check_json_lines(
                cluster,
                reader,
                &path.display().to_string(),
                options.format,
                out,
            )?;
            tally = tally.merged(read);
        }
    }
    Ok(tally)
}
