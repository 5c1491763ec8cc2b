//! Builds `netgov-ebpf` for the BPF target with the nightly toolchain (or
//! the one `NETGOV_EBPF_TOOLCHAIN` names) and
//! bpf-linker (installed by `cargo xtask setup`); the object is embedded in
//! the `netgov` binary.
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = Path::new(&manifest_dir).join("../netgov-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    println!("cargo:rerun-if-changed=../netgov-common/src");
    // The revision `netgov version` and `netgov_build_info` report: set
    // by the image build (no .git there), else asked of git.
    println!("cargo:rerun-if-env-changed=NETGOV_REVISION");
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/refs/heads");
    let revision = std::env::var("NETGOV_REVISION").ok().unwrap_or_else(|| {
        std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned())
    });
    println!("cargo:rustc-env=NETGOV_REVISION={revision}");
    // `nightly` unless pinned (the container build pins one; `cargo xtask
    // setup` installs whichever is named).
    println!("cargo:rerun-if-env-changed=NETGOV_EBPF_TOOLCHAIN");
    let toolchain = std::env::var("NETGOV_EBPF_TOOLCHAIN").ok();
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "netgov-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        toolchain
            .as_deref()
            .map_or(aya_build::Toolchain::Nightly, aya_build::Toolchain::Custom),
    )
}
