//! Builds `netgov-ebpf` for the BPF target with the nightly toolchain and
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
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "netgov-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
