//! Compiles the Hubble API protos (`proto/`, with protox: no protoc
//! needed) into tonic services, prost messages and their protojson
//! (pbjson), plus the descriptor set server reflection serves; then builds
//! `netgov-ebpf` for the BPF target with the nightly toolchain (or
//! the one `NETGOV_EBPF_TOOLCHAIN` names) and
//! bpf-linker (installed by `cargo xtask setup`); the object is embedded in
//! the `netgov` binary.
use std::path::Path;

fn main() -> anyhow::Result<()> {
    compile_hubble_protos()?;
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

/// The Hubble protos: messages and services (tonic), their JSON in
/// protojson's form with proto field names (pbjson, for the export file),
/// and `hubble_descriptor.bin` for gRPC server reflection.
fn compile_hubble_protos() -> anyhow::Result<()> {
    use prost::Message as _;
    println!("cargo:rerun-if-changed=proto");
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let files = [
        "proto/flow/flow.proto",
        "proto/observer/observer.proto",
        "proto/peer/peer.proto",
    ];
    let descriptors = protox::compile(files, ["proto"])?;
    let encoded = descriptors.encode_to_vec();
    std::fs::write(out_dir.join("hubble_descriptor.bin"), &encoded)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .generate_default_stubs(true)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(descriptors)?;
    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .preserve_proto_field_names()
        .build(&[".flow", ".observer", ".peer", ".relay"])?;
    Ok(())
}
