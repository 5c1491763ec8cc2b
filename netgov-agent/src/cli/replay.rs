//! The `netgov replay` command, and what it shares with `netgov audit`:
//! reading the flow logs (bad lines reported with file and line, skipped or
//! fatal) and loading the policies (manifests or the live cluster). Exit
//! codes: 1 for bad input, 3 for a change `--fail-on` names.

use std::process::ExitCode;

use crate::cli::{RecordingArgs, ReplayArgs};
use crate::commands::replay::Change;
use crate::engine::ClusterState;
use crate::flowlog::RecordedFlow;

/// Lines reported one by one before the rest are only counted.
const LINES_REPORTED: usize = 20;

/// What a recording command works on.
pub struct Loaded {
    /// Each flow's latest record (within `--since`).
    pub flows: Vec<RecordedFlow>,
    /// Lines that could not be used (reported already).
    pub bad_lines: usize,
    /// The policies (and the live cluster's pods, when read from it).
    pub cluster: ClusterState,
}

/// Reads the recording and the policies for `tool` (`replay`, `audit`).
///
/// # Errors
/// The exit code after saying why on standard error: bad lines with
/// `--strict`, manifests with problems, an unreachable cluster.
pub fn load(
    input: &RecordingArgs,
    runtime: &tokio::runtime::Runtime,
    tool: &str,
) -> Result<Loaded, ExitCode> {
    let (mut flows, errors) = crate::flowlog::read(&input.flow_logs);
    for error in errors.iter().take(LINES_REPORTED) {
        eprintln!("netgov {tool}: {error}");
    }
    if errors.len() > LINES_REPORTED {
        eprintln!(
            "netgov {tool}: ... and {} more lines not used",
            errors.len() - LINES_REPORTED
        );
    }
    if input.strict && !errors.is_empty() {
        eprintln!("netgov {tool}: {} lines not used (--strict)", errors.len());
        return Err(ExitCode::FAILURE);
    }
    if let Some(since) = input.since {
        let cutoff = time::OffsetDateTime::now_utc() - since;
        flows.retain(|flow| flow.last_seen.0 >= cutoff);
    }
    let cluster = if input.cluster || input.kubeconfig.is_some() {
        let wait = std::time::Duration::from_secs(60);
        match runtime.block_on(crate::sources::snapshot::snapshot(
            input.kubeconfig.as_deref(),
            wait,
        )) {
            Ok(state) => std::mem::take(&mut *state.write().unwrap_or_else(|e| e.into_inner())),
            Err(error) => return Err(fail(&error)),
        }
    } else {
        match crate::sources::manifests::load(&input.manifests).map(|m| m.into_cluster()) {
            Ok((cluster, problems)) if problems.is_empty() => cluster,
            Ok((_, problems)) | Err(problems) => {
                for problem in &problems {
                    eprintln!("netgov: {}", crate::error_chain(problem));
                }
                return Err(ExitCode::FAILURE);
            }
        }
    };
    Ok(Loaded {
        flows,
        bad_lines: errors.len(),
        cluster,
    })
}

/// `netgov replay`: recorded flows against manifests or the live cluster's
/// policies; exit 3 when a change `--fail-on` names was found.
pub fn run(args: &ReplayArgs, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let mut loaded = match load(&args.input, runtime, "replay") {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let report = crate::commands::replay::replay(&mut loaded.cluster, &loaded.flows);
    let mut out = std::io::stdout().lock();
    if let Err(error) = crate::commands::replay::render(&report, args.format, &mut out) {
        return fail(&error);
    }
    let (deny, allow) = (
        report.count(Change::WouldDeny),
        report.count(Change::WouldAllow),
    );
    eprintln!(
        "netgov replay: {} flows replayed: {deny} would be denied, {allow} would be allowed, {} unchanged; {} lines not replayed",
        report.replayed, report.unchanged, loaded.bad_lines
    );
    if args.fail_on.iter().any(|change| report.count(*change) > 0) {
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}

/// Says why and exits 1.
pub fn fail(error: &dyn std::error::Error) -> ExitCode {
    eprintln!("netgov: {}", crate::error_chain(error));
    ExitCode::FAILURE
}
