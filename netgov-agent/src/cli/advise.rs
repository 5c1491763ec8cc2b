//! The `netgov advise` command: derive, check, print. Exit 1 for bad input
//! or advice that fails its check (never printed).

use std::process::ExitCode;

use crate::cli::AdviseArgs;
use crate::cli::replay::fail;
use crate::commands::advise::check;
use crate::sources::manifests;

/// Runs `netgov advise`.
pub fn run(args: &AdviseArgs) -> ExitCode {
    let (flows, errors) = crate::flowlog::read(&args.flow_logs);
    for error in &errors {
        eprintln!("netgov advise: {error}");
    }
    if args.strict && !errors.is_empty() {
        return ExitCode::FAILURE;
    }
    let current = match manifests::load(&args.manifests) {
        Ok(loaded) => loaded,
        Err(problems) => {
            for problem in &problems {
                eprintln!("netgov: {}", crate::error_chain(problem));
            }
            return ExitCode::FAILURE;
        }
    };
    let advice = crate::commands::advise::advise(&flows, args.namespace.as_deref());
    let header = format!(
        "netgov advise: least-privilege NetworkPolicies from {} recorded flows{}.\nChecked: replaying the recording against the policies given plus these denies none of the flows it saw allowed.",
        flows.len(),
        args.namespace
            .as_ref()
            .map(|ns| format!(" (namespace {ns})"))
            .unwrap_or_default()
    );
    let yaml = crate::commands::advise::to_yaml(&advice, &header);
    match check(current, &yaml, &flows) {
        Ok(()) => {
            print!("{yaml}");
            eprintln!(
                "netgov advise: {} policies from {} flows; {} not covered; {} lines not used",
                advice.policies.len(),
                flows.len(),
                advice.not_covered.len(),
                errors.len()
            );
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error),
    }
}
