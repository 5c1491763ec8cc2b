//! The `netgov advise` command: derive, check, print. Exit 1 for bad input
//! or advice that fails its check (never printed).

use std::process::ExitCode;

use crate::cli::AdviseArgs;
use crate::policy::manifests::{self, Manifests};
use crate::replay::Change;
use crate::replay::command::fail;

/// Why advice was not printed.
#[derive(Debug, thiserror::Error)]
pub enum AdviceError {
    /// The advice does not decode or validate as NetworkPolicies.
    #[error("the advice is not valid NetworkPolicies (a netgov bug): {0}")]
    Invalid(String),
    /// Replaying the recording against the advice would deny flows it saw
    /// allowed.
    #[error(
        "the advice would deny {0} recorded flows that were allowed (a netgov bug); not printed"
    )]
    WouldDeny(u64),
}

/// Runs `netgov advise`.
pub fn run(args: &AdviseArgs) -> ExitCode {
    let (flows, errors) = crate::replay::recording::read(&args.flow_logs);
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
    let advice = super::advise(&flows, args.namespace.as_deref());
    let header = format!(
        "netgov advise: least-privilege NetworkPolicies from {} recorded flows{}.\nChecked: replaying the recording against the policies given plus these denies none of the flows it saw allowed.",
        flows.len(),
        args.namespace
            .as_ref()
            .map(|ns| format!(" (namespace {ns})"))
            .unwrap_or_default()
    );
    let yaml = super::to_yaml(&advice, &header);
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

/// Checks advice before it is printed: it decodes and compiles as
/// NetworkPolicies, and the recording replayed against `current` plus the
/// advice has no `would-deny`.
///
/// # Errors
/// [`AdviceError`].
pub fn check(
    current: Manifests,
    yaml: &str,
    flows: &[crate::replay::RecordedFlow],
) -> Result<(), AdviceError> {
    let mut advised = Manifests::default();
    let mut problems = Vec::new();
    manifests::parse_file(
        std::path::Path::new("advice.yaml"),
        yaml,
        &mut advised,
        &mut problems,
    );
    let mut all = current;
    all.objects.extend(advised.objects);
    let (mut cluster, compile_problems) = all.into_cluster();
    problems.extend(compile_problems);
    if !problems.is_empty() {
        let text: Vec<String> = problems.iter().map(|p| crate::error_chain(p)).collect();
        return Err(AdviceError::Invalid(text.join("; ")));
    }
    let report = crate::replay::replay(&mut cluster, flows);
    match report.count(Change::WouldDeny) {
        0 => Ok(()),
        denied => Err(AdviceError::WouldDeny(denied)),
    }
}
