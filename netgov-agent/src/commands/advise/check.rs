//! Advice is checked before it is printed.

use crate::commands::replay::Change;
use crate::flowlog::RecordedFlow;
use crate::sources::manifests::{self, ManifestError, Manifests};

/// Why advice was not printed.
#[derive(Debug, thiserror::Error)]
pub enum AdviceError {
    /// The advice does not decode or validate as NetworkPolicies.
    #[error("the advice is not valid NetworkPolicies (a netgov bug): {}", list(.0))]
    Invalid(Vec<ManifestError>),
    /// Replaying the recording against the advice would deny flows it saw
    /// allowed.
    #[error(
        "the advice would deny {0} recorded flows that were allowed (a netgov bug); not printed"
    )]
    WouldDeny(u64),
}

/// Checks advice before it is printed: it decodes and compiles as
/// NetworkPolicies, and the recording replayed against `current` plus the
/// advice has no `would-deny`.
///
/// # Errors
/// [`AdviceError`].
pub fn check(current: Manifests, yaml: &str, flows: &[RecordedFlow]) -> Result<(), AdviceError> {
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
        return Err(AdviceError::Invalid(problems));
    }
    let report = crate::commands::replay::replay(&mut cluster, flows);
    match report.count(Change::WouldDeny) {
        0 => Ok(()),
        denied => Err(AdviceError::WouldDeny(denied)),
    }
}

fn list(problems: &[ManifestError]) -> String {
    let text: Vec<String> = problems.iter().map(|p| crate::error_chain(p)).collect();
    text.join("; ")
}
