//! The `netgov replay` command: reads the flow logs, loads the policies
//! (manifests or the live cluster), replays, prints, and picks the exit
//! code (1: bad input; 3: a change `--fail-on` names).

use std::process::ExitCode;

use super::Change;
use crate::cli::ReplayArgs;

/// `netgov replay`: recorded flows against manifests or the live cluster's
/// policies; exit 3 when a change `--fail-on` names was found.
pub fn run(args: &ReplayArgs, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let (flows, errors) = super::recording::read(&args.flow_logs);
    for error in errors.iter().take(20) {
        eprintln!("netgov replay: {error}");
    }
    if errors.len() > 20 {
        eprintln!(
            "netgov replay: ... and {} more lines not replayed",
            errors.len() - 20
        );
    }
    if args.strict && !errors.is_empty() {
        eprintln!(
            "netgov replay: {} lines not replayed (--strict)",
            errors.len()
        );
        return ExitCode::FAILURE;
    }
    let cluster = if args.cluster || args.kubeconfig.is_some() {
        let wait = std::time::Duration::from_secs(60);
        match runtime.block_on(crate::cluster::snapshot::snapshot(
            args.kubeconfig.as_deref(),
            wait,
        )) {
            Ok(state) => std::mem::take(&mut *state.write().unwrap_or_else(|e| e.into_inner())),
            Err(error) => return fail(&error),
        }
    } else {
        match crate::policy::manifests::load(&args.manifests).map(|m| m.into_cluster()) {
            Ok((cluster, problems)) if problems.is_empty() => cluster,
            Ok((_, problems)) | Err(problems) => {
                for problem in &problems {
                    eprintln!("netgov: {}", crate::error_chain(problem));
                }
                return ExitCode::FAILURE;
            }
        }
    };
    let mut cluster = cluster;
    let report = super::replay(&mut cluster, &flows);
    let mut out = std::io::stdout().lock();
    if let Err(error) = super::render(&report, args.format, &mut out) {
        return fail(&error);
    }
    let (deny, allow) = (
        report.count(Change::WouldDeny),
        report.count(Change::WouldAllow),
    );
    eprintln!(
        "netgov replay: {} flows replayed: {deny} would be denied, {allow} would be allowed, {} unchanged; {} lines not replayed",
        report.replayed,
        report.unchanged,
        errors.len()
    );
    if args.fail_on.iter().any(|change| report.count(*change) > 0) {
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}

fn fail(error: &dyn std::error::Error) -> ExitCode {
    eprintln!("netgov: {}", crate::error_chain(error));
    ExitCode::FAILURE
}
