//! The `netgov` binary: parses the command line and runs the subcommand.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use netgov_agent::cli::{Cli, Command, LogFormat};
use netgov_agent::{agent, capture};
use tracing_subscriber::EnvFilter;

/// The log filter: `NETGOV_LOG` when set, else the standard `RUST_LOG`,
/// else `warn`.
fn log_filter() -> EnvFilter {
    EnvFilter::try_from_env("NETGOV_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("warn"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
    // The agent captures on the main thread and judges on a worker, so the
    // ring-buffer reader never waits for the judge; the other commands are
    // one loop each.
    let mut builder = match cli.command {
        Command::Agent(_) => {
            netgov_agent::agent::memory::limit_arenas();
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(2);
            builder
        }
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error),
    };
    match cli.command {
        Command::Observe(args) => {
            let mut out = std::io::stdout().lock();
            match runtime.block_on(netgov_agent::commands::observe::run(
                &args.options(),
                &mut out,
            )) {
                Ok(_) => ExitCode::SUCCESS,
                Err(error) => fail(&error),
            }
        }
        Command::Version => {
            println!(
                "netgov {} (revision {})",
                netgov_agent::VERSION,
                netgov_agent::REVISION
            );
            ExitCode::SUCCESS
        }
        Command::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "netgov", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Capture(args) => {
            let options = args.options();
            let ready = |info: &_| eprintln!("netgov capture: ready ({info})");
            let format = options.format;
            let mut writer = match capture::RecordWriter::new(std::io::stdout().lock(), format) {
                Ok(writer) => writer,
                Err(error) => return fail(&error),
            };
            match runtime.block_on(capture::run(options, &mut writer, ready)) {
                Ok(summary) => {
                    let json = serde_json::to_string(&summary).unwrap_or_default();
                    eprintln!("netgov capture: summary {json}");
                    ExitCode::SUCCESS
                }
                Err(error) => fail(&error),
            }
        }
        Command::Agent(args) => {
            let options = match args.options() {
                Ok(options) => options,
                Err(error) => return fail(&error),
            };
            let ready = |addr| eprintln!("netgov agent: ready (HTTP on {addr})");
            match runtime.block_on(agent::run::run(options, ready)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&error),
            }
        }
        Command::Check(args) => netgov_agent::cli::check::run(&args, &runtime),
        Command::Replay(args) => netgov_agent::cli::replay::run(&args, &runtime),
        Command::Audit(args) => netgov_agent::cli::audit::run(&args, &runtime),
        Command::Advise(args) => netgov_agent::cli::advise::run(&args),
    }
}

fn fail(error: &dyn std::error::Error) -> ExitCode {
    eprintln!("netgov: {}", netgov_agent::error_chain(error));
    ExitCode::FAILURE
}
