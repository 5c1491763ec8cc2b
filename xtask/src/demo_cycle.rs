//! The demo's last act: the policy change cycle on the traffic the demo
//! agent just recorded (its flow log). A proposed change is replayed
//! against it (what would break), the policies in force are audited (what
//! is unused or too broad) and least-privilege policies are advised —
//! each a real `netgov` command whose output is printed as it comes.

use std::path::Path;
use std::process::Command;

use crate::{XtaskError, workspace_root};

/// Runs `netgov` with `args`, printing the command line and its output.
fn show(netgov: &Path, args: &[&str]) -> Result<(), XtaskError> {
    let root = workspace_root();
    let shown: Vec<String> = args
        .iter()
        .map(|a| {
            Path::new(a)
                .strip_prefix(&root)
                .map_or_else(|_| (*a).to_owned(), |p| p.display().to_string())
        })
        .collect();
    println!("\n$ netgov {}", shown.join(" "));
    let output = Command::new(netgov)
        .args(args)
        .output()
        .map_err(|source| XtaskError::Io {
            what: format!("running netgov {}", args.join(" ")),
            source,
        })?;
    print!("{}", String::from_utf8_lossy(&output.stdout));
    print!("{}", String::from_utf8_lossy(&output.stderr));
    println!("(exit {})", output.status.code().unwrap_or(-1));
    Ok(())
}

/// Replay, audit and advise on `flow_log`, with the policies of
/// `cluster_state` (the demo's) in force.
///
/// # Errors
/// When `netgov` cannot be run.
pub fn governance_cycle(
    netgov: &Path,
    flow_log: &Path,
    cluster_state: &Path,
) -> Result<(), XtaskError> {
    let (log, current, proposed) = (
        flow_log.to_string_lossy().into_owned(),
        cluster_state.to_string_lossy().into_owned(),
        workspace_root()
            .join("examples/proposed-change/policies.yaml")
            .to_string_lossy()
            .into_owned(),
    );
    println!(
        "\nThe policy change cycle, on the traffic the agent just recorded ({}):",
        flow_log.display()
    );
    println!(
        "\n1. Would a proposed change (allow-monitoring moves to port 9090) break observed traffic?"
    );
    show(
        netgov,
        &[
            "replay",
            "--flow-log",
            &log,
            "-f",
            &proposed,
            "--fail-on",
            "would-deny",
        ],
    )?;
    println!("\n2. Which rules in force did the traffic use, and what is broader than needed?");
    show(netgov, &["audit", "--flow-log", &log, "-f", &current])?;
    println!("\n3. Least-privilege policies for ai-platform, checked against the recording:");
    show(
        netgov,
        &[
            "advise",
            "--flow-log",
            &log,
            "-f",
            &current,
            "--namespace",
            "ai-platform",
        ],
    )
}
