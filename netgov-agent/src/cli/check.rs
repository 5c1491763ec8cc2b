//! `netgov check`.

use std::process::ExitCode;

use super::CheckArgs;
use crate::cli::replay::fail;

/// `netgov check`: against manifests, or the live cluster's state; exit 3
/// when a verdict `--fail-on` names was given.
pub fn run(args: &CheckArgs, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let judged = if args.cluster || args.kubeconfig.is_some() {
        let wait = std::time::Duration::from_secs(60);
        match runtime.block_on(crate::sources::snapshot::snapshot(
            args.kubeconfig.as_deref(),
            wait,
        )) {
            Ok(state) => {
                let state = state.read().unwrap_or_else(|e| e.into_inner());
                crate::commands::check::judge_all(&state, &args.options(), &mut out)
            }
            Err(error) => return fail(&error),
        }
    } else {
        crate::commands::check::run(&args.options(), &mut out)
    };
    match judged {
        Ok(tally) => {
            drop(out);
            match tally.failing(&args.fail_on) {
                Some(what) => {
                    eprintln!(
                        "netgov check: {what} of {} flows (--fail-on)",
                        tally.flows()
                    );
                    ExitCode::from(3)
                }
                None => ExitCode::SUCCESS,
            }
        }
        Err(error) => {
            drop(out);
            fail(&error)
        }
    }
}
