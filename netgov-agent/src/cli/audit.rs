//! The `netgov audit` command: exit 3 when a finding `--fail-on` names is
//! found (1 for bad input).

use std::process::ExitCode;

use crate::cli::AuditArgs;
use crate::cli::replay::{fail, load};
use crate::commands::audit::{AuditReport, Finding};

/// Runs `netgov audit`.
pub fn run(args: &AuditArgs, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let mut loaded = match load(&args.input, runtime, "audit") {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let report = crate::commands::audit::audit(&mut loaded.cluster, &loaded.flows);
    let mut out = std::io::stdout().lock();
    if let Err(error) = crate::commands::audit::render(&report, args.format, &mut out) {
        return fail(&error);
    }
    eprintln!(
        "netgov audit: {} flows: {} of {} rules unused, {} over-broad ipBlocks, {} unprotected workload directions; {} lines not used",
        report.flows,
        found(&report, Finding::UnusedRule),
        report.rules.len(),
        found(&report, Finding::BroadIpBlock),
        found(&report, Finding::Unprotected),
        loaded.bad_lines
    );
    if args
        .fail_on
        .iter()
        .any(|finding| found(&report, *finding) > 0)
    {
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}

fn found(report: &AuditReport, finding: Finding) -> usize {
    match finding {
        Finding::UnusedRule => report.rules.iter().filter(|r| r.flows == 0).count(),
        Finding::BroadIpBlock => report.broad.len(),
        Finding::Unprotected => report.unprotected.len(),
    }
}
