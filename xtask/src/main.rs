//! netgov's developer tasks, run as `cargo xtask <task>`:
//!
//! - `setup`: install what the eBPF build and the tests need (idempotent);
//! - `test`: everything — formatting, lints, unit tests and the privileged
//!   eBPF and network-namespace tests (as root; never skipped);
//! - `layers`: the agent crate's modules point only down (part of `test`);
//! - `demo`: a simulated node in network namespaces with traffic, captured;
//! - `bench datapath`: throughput and per-packet cost, netgov beside peers.
//!
//! Every task but `setup` runs `setup` first.

mod bench;
mod bench_agent;
mod bench_cost;
mod bench_datapath;
mod bench_names;
mod demo;
mod demo_cycle;
mod demo_names;
mod image;
mod layers;
mod prometheus_e2e;
mod setup;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use setup::Scope;

/// Errors of the tasks.
#[derive(Debug, thiserror::Error)]
pub enum XtaskError {
    /// A command could not start.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A command failed.
    #[error("`{command}` failed ({status})")]
    Failed {
        /// The command line.
        command: String,
        /// Exit status.
        status: std::process::ExitStatus,
    },
    /// Something required is not there.
    #[error("{what} not found: {hint}")]
    Missing {
        /// What is missing.
        what: String,
        /// What to do.
        hint: String,
    },
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The task needs root.
    #[error("`cargo xtask {task}` must run as root: {why}")]
    NotRoot {
        /// The task.
        task: &'static str,
        /// Why root is needed.
        why: &'static str,
    },
    /// Building the namespaces failed.
    #[error(transparent)]
    Testbed(#[from] netgov_testbed::TestbedError),
    /// A tool printed something unexpected.
    #[error("unexpected output from {tool}: {detail}")]
    Output {
        /// The tool.
        tool: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// Bad command line.
    #[error(
        "usage: cargo xtask setup [--build-only] | test [cargo test args] | layers | test-prometheus | demo | bench datapath [--runs N] [--seconds S] | bench policy | bench cluster [--pods N [--churn-minutes M] [--agent-only]] | bench agent [--flows N] [--live-flows N] [--names] [--hubble] [--memory-only [--baseline-flows N]] | bench soak [--minutes N]\n{0}"
    )]
    Usage(String),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => match args.get(1).map(String::as_str) {
            None => setup::setup(Scope::Everything),
            Some("--build-only") => setup::setup(Scope::Build),
            Some(other) => Err(XtaskError::Usage(format!("unknown setup option {other:?}"))),
        },
        Some("test") => setup::setup(Scope::Everything).and_then(|()| test(&args[1..])),
        Some("layers") => layers::layers(),
        Some("test-prometheus") => {
            setup::setup(Scope::Everything).and_then(|()| prometheus_e2e::prometheus_e2e())
        }
        Some("demo") => setup::setup(Scope::Everything).and_then(|()| demo::demo()),
        Some("image") => setup::setup(Scope::Build).and_then(|()| image::image().map(drop)),
        Some("test-image") => setup::setup(Scope::Everything).and_then(|()| image::image_e2e()),
        Some("bench") => setup::setup(Scope::Everything).and_then(|()| bench::bench(&args[1..])),
        other => Err(XtaskError::Usage(format!("unknown task {other:?}"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

/// Where `cargo install` puts binaries.
pub fn cargo_bin_dir() -> PathBuf {
    if let Some(cargo_home) = std::env::var_os("CARGO_HOME") {
        return PathBuf::from(cargo_home).join("bin");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cargo/bin")
}

/// PATH with cargo's bin directory first, so aya-build finds bpf-linker
/// and rustup even when the caller's PATH lacks them.
pub fn path_with_cargo_bin() -> std::ffi::OsString {
    let mut paths = vec![cargo_bin_dir()];
    if let Some(path) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(paths).unwrap_or_default()
}

/// Whether `command` is on PATH (or in cargo's bin directory).
pub fn command_exists(command: &str) -> bool {
    let path = path_with_cargo_bin();
    std::env::split_paths(&path).any(|dir| dir.join(command).is_file())
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| PathBuf::from(d).join(command).is_file())
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Starts a long-running child.
///
/// # Errors
/// [`XtaskError::Spawn`] naming the command line.
pub fn spawn(command: &mut Command) -> Result<std::process::Child, XtaskError> {
    command.spawn().map_err(|source| XtaskError::Spawn {
        command: describe(command),
        source,
    })
}

/// Runs a command with inherited output, failing on a non-zero exit.
///
/// # Errors
/// [`XtaskError::Spawn`] or [`XtaskError::Failed`].
pub fn run(command: &mut Command) -> Result<(), XtaskError> {
    command.env("PATH", path_with_cargo_bin());
    let status = command.status().map_err(|source| XtaskError::Spawn {
        command: describe(command),
        source,
    })?;
    if !status.success() {
        return Err(XtaskError::Failed {
            command: describe(command),
            status,
        });
    }
    Ok(())
}

/// Runs a command and returns its standard output.
///
/// # Errors
/// [`XtaskError::Spawn`] or [`XtaskError::Failed`].
pub fn run_output(command: &mut Command) -> Result<String, XtaskError> {
    command.env("PATH", path_with_cargo_bin());
    let output = command.output().map_err(|source| XtaskError::Spawn {
        command: describe(command),
        source,
    })?;
    if !output.status.success() {
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
        return Err(XtaskError::Failed {
            command: describe(command),
            status: output.status,
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A `cargo` command in the workspace root.
pub fn cargo() -> Command {
    let mut command = Command::new("cargo");
    command.current_dir(workspace_root());
    command
}

/// Fails unless running as root.
///
/// # Errors
/// [`XtaskError::NotRoot`].
pub fn require_root(task: &'static str, why: &'static str) -> Result<(), XtaskError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(XtaskError::NotRoot { task, why });
    }
    Ok(())
}

/// Builds the `netgov` binary and returns its path.
///
/// # Errors
/// When the build fails.
pub fn build_netgov(release: bool) -> Result<PathBuf, XtaskError> {
    let mut command = cargo();
    command.args(["build", "--package", "netgov-agent", "--bin", "netgov"]);
    if release {
        command.arg("--release");
    }
    run(&mut command)?;
    let profile = if release { "release" } else { "debug" };
    Ok(workspace_root().join("target").join(profile).join("netgov"))
}

/// `cargo xtask test`: formatting, lints, then every test — unit, parser
/// (BPF_PROG_TEST_RUN) and network-namespace tests. Needs root, and fails
/// rather than skip when the privileged tests cannot run.
fn test(extra: &[String]) -> Result<(), XtaskError> {
    require_root(
        "test",
        "the eBPF and network-namespace tests are part of the suite and are never skipped",
    )?;
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    layers::layers()?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let mut command = cargo();
    command.args(["test", "--workspace"]).args(extra);
    let (passed, failed) = run_counting_tests(&mut command)?;
    // One closing line for the whole suite (cargo prints one per test
    // binary, the last of which is usually an empty doc-test run).
    println!("cargo-test: {passed} passed, {failed} failed");
    if passed == 0 {
        return Err(XtaskError::Output {
            tool: "cargo test",
            detail: "no test ran".into(),
        });
    }
    prometheus_e2e::prometheus_e2e()?;
    image::image_e2e()
}

/// Runs `cargo test`, passing its output through, and adds up the
/// `test result:` lines of every test binary.
fn run_counting_tests(command: &mut Command) -> Result<(u64, u64), XtaskError> {
    use std::io::{BufRead, BufReader};
    command
        .env("PATH", path_with_cargo_bin())
        .stdout(std::process::Stdio::piped());
    let mut child = command.spawn().map_err(|source| XtaskError::Spawn {
        command: describe(command),
        source,
    })?;
    let (mut passed, mut failed) = (0, 0);
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            if let Some(result) = line.strip_prefix("test result: ") {
                passed += count_before(result, " passed");
                failed += count_before(result, " failed");
            }
        }
    }
    let status = child.wait().map_err(|source| XtaskError::Spawn {
        command: describe(command),
        source,
    })?;
    if !status.success() {
        println!("cargo-test: {passed} passed, {failed} failed");
        return Err(XtaskError::Failed {
            command: describe(command),
            status,
        });
    }
    Ok((passed, failed))
}

/// The number just before `label` in `ok. 7 passed; 0 failed; ...`.
fn count_before(text: &str, label: &str) -> u64 {
    text.split(';')
        .find_map(|part| part.trim_end().strip_suffix(label))
        .and_then(|part| part.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
