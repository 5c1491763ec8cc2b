//! The real Hubble clients the Hubble tests run, as `cargo xtask setup`
//! installs them: the `hubble` CLI (built from its vendored source),
//! grpcurl and hubble-audit2policy.

use std::path::PathBuf;
use std::process::{Command, Output};

use netgov_testbed::Netns;

/// `~/.local/share/netgov/hubble-tools` (xtask's `hubble_tools_dir`).
pub fn tools_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".local/share/netgov/hubble-tools")
}

/// The path of a client; panics, naming the fix, when it is missing (the
/// Hubble tests are never skipped).
pub fn tool(name: &str) -> PathBuf {
    let path = match name {
        "hubble" => tools_dir().join("bin/hubble"),
        other => tools_dir().join("venv/bin").join(other),
    };
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask setup` (it installs the Hubble test clients)",
        path.display()
    );
    path
}

/// A client command run inside `netns`.
pub fn command_in(netns: &Netns, name: &str) -> Command {
    netns.command(tool(name).to_str().expect("UTF-8 path"))
}

/// Runs `hubble ARGS --server ADDR` inside `netns`.
pub fn hubble(netns: &Netns, server: &str, args: &[&str]) -> Output {
    command_in(netns, "hubble")
        .args(args)
        .args(["--server", server])
        .output()
        .expect("run hubble")
}

/// The JSON lines of a client's standard output.
pub fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The JSON values of a client's standard output, however laid out
/// (grpcurl prints each message indented over several lines).
pub fn json_values(output: &Output) -> Vec<serde_json::Value> {
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::Deserializer::from_str(&text)
        .into_iter::<serde_json::Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}: {text}"))
}
