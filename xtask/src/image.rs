//! `cargo xtask image`: the agent's container image without Docker or a
//! registry. A static `netgov` (glibc linked in: `-C
//! target-feature=+crt-static`) is the one file of a `FROM scratch` image,
//! written as an OCI image layout and archived to
//! `target/image/netgov-oci.tar` — what `podman run oci-archive:...`,
//! `podman load` and `skopeo copy oci-archive:... docker://<registry>/...`
//! take. The Dockerfile builds the same binary for registries.
//!
//! `cargo xtask test` runs the image ([`image_e2e`]): `netgov version`
//! inside it, and a capture against a namespace pod with exactly the
//! DaemonSet's capabilities.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{XtaskError, cargo, run, workspace_root};

/// Where the archive is written.
pub fn archive_path() -> PathBuf {
    workspace_root().join("target/image/netgov-oci.tar")
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> XtaskError {
    let what = what.into();
    move |source| XtaskError::Io { what, source }
}

fn failure(detail: String) -> XtaskError {
    XtaskError::Output {
        tool: "image",
        detail,
    }
}

/// `podman run` as this test bed allows it: runc, because crun refuses a
/// hybrid cgroup layout (v1 controllers, v2 unified), and resource limits
/// at or below the test process's own, which podman otherwise raises (not
/// permitted without CAP_SYS_RESOURCE here).
fn podman_run() -> Command {
    let mut command = Command::new("podman");
    command.args(["--runtime", "runc", "run", "--rm"]);
    command.args([
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ]);
    command
}

/// podman's default seccomp profile with `bpf(2)` allowed to holders of
/// CAP_BPF, as the RuntimeDefault profiles of containerd ≥ 1.6 and CRI-O
/// allow it (podman 4.3's predates CAP_BPF: CAP_SYS_ADMIN only), written
/// next to the archive.
fn runtime_default_seccomp() -> Result<PathBuf, XtaskError> {
    let source = Path::new("/usr/share/containers/seccomp.json");
    let text = std::fs::read_to_string(source).map_err(io_error(source.display().to_string()))?;
    let mut profile: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| failure(format!("{}: {e}", source.display())))?;
    let syscalls = profile["syscalls"]
        .as_array_mut()
        .ok_or_else(|| failure(format!("{}: no syscalls", source.display())))?;
    for rule in syscalls.iter_mut() {
        if rule["action"] == "SCMP_ACT_ERRNO"
            && let Some(names) = rule["names"].as_array_mut()
        {
            names.retain(|name| name != "bpf");
        }
    }
    syscalls.push(json!({
        "names": ["bpf"],
        "action": "SCMP_ACT_ALLOW",
        "includes": {"caps": ["CAP_BPF"]},
    }));
    let path = workspace_root().join("target/image/seccomp-runtime-default.json");
    std::fs::write(&path, profile.to_string()).map_err(io_error(path.display().to_string()))?;
    Ok(path)
}

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Builds the static binary and the OCI archive; returns the archive.
///
/// # Errors
/// When the build or writing fails.
pub fn image() -> Result<PathBuf, XtaskError> {
    let target = "x86_64-unknown-linux-gnu";
    run(cargo()
        .args(["build", "--release", "--locked", "--target", target])
        .args(["-p", "netgov-agent", "--bin", "netgov"])
        // With --target, RUSTFLAGS reach the target only (not build
        // scripts): a static executable for an empty image.
        .env("RUSTFLAGS", "-C target-feature=+crt-static"))?;
    let binary = workspace_root().join(format!("target/{target}/release/netgov"));
    let version = env!("CARGO_PKG_VERSION");
    let archive = archive_path();
    write_archive(&binary, version, &archive)?;
    println!("image: {} (oci-archive, tag {version})", archive.display());
    Ok(archive)
}

/// The layer: `/usr/local/bin/netgov`, and the empty directories the
/// agent may use (`/run`, `/tmp`), owned by root, timestamps zero.
fn layer(binary: &Path) -> Result<Vec<u8>, XtaskError> {
    let contents = std::fs::read(binary).map_err(io_error(binary.display().to_string()))?;
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, mode: u32, kind: tar::EntryType, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        tar.append_data(&mut header, path, data)
            .map_err(io_error(format!("layer entry {path}")))
    };
    for directory in ["usr/", "usr/local/", "usr/local/bin/", "run/", "tmp/"] {
        let mode = if directory == "tmp/" { 0o1777 } else { 0o755 };
        add(directory, mode, tar::EntryType::Directory, &[])?;
    }
    add(
        "usr/local/bin/netgov",
        0o755,
        tar::EntryType::Regular,
        &contents,
    )?;
    tar.into_inner().map_err(io_error("layer"))
}

fn write_archive(binary: &Path, version: &str, archive: &Path) -> Result<(), XtaskError> {
    let layer = layer(binary)?;
    let diff_id = sha256(&layer);
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&layer).map_err(io_error("gzip"))?;
    let blob = gzip.finish().map_err(io_error("gzip"))?;
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": ["/usr/local/bin/netgov"],
            "Cmd": ["agent"],
            "Env": ["PATH=/usr/local/bin"],
            "Labels": {"org.opencontainers.image.version": version},
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        "history": [{"created_by": "cargo xtask image"}],
    }))
    .map_err(|e| failure(e.to_string()))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{}", sha256(&config)),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{}", sha256(&blob)),
            "size": blob.len(),
        }],
    }))
    .map_err(|e| failure(e.to_string()))?;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", sha256(&manifest)),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": version},
        }],
    }))
    .map_err(|e| failure(e.to_string()))?;

    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: String, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_mtime(0);
        tar.append_data(&mut header, &path, data)
            .map_err(io_error(format!("archive entry {path}")))
    };
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json".into(), &index)?;
    for blob in [&config, &manifest, &blob] {
        add(format!("blobs/sha256/{}", sha256(blob)), blob)?;
    }
    let bytes = tar.into_inner().map_err(io_error("archive"))?;
    if let Some(parent) = archive.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(parent.display().to_string()))?;
    }
    std::fs::write(archive, bytes).map_err(io_error(archive.display().to_string()))
}

/// Runs the image: `netgov version`, then a capture in a simulated node
/// with exactly the DaemonSet's capabilities, which must see a flow.
///
/// # Errors
/// When the image does not run or does not see the flow.
pub fn image_e2e() -> Result<(), XtaskError> {
    let archive = image()?;
    let image = format!("oci-archive:{}", archive.display());
    let version = podman_run()
        .args([&image, "version"])
        .output()
        .map_err(io_error("podman run"))?;
    let text = String::from_utf8_lossy(&version.stdout);
    let expected = format!("netgov {} (revision ", env!("CARGO_PKG_VERSION"));
    if !version.status.success() || !text.starts_with(&expected) {
        return Err(failure(format!(
            "`netgov version` in the image printed {text:?} ({}): {}",
            version.status,
            String::from_utf8_lossy(&version.stderr)
        )));
    }
    println!("image-e2e: {}", text.trim());

    let prefix = netgov_testbed::Testbed::unique_prefix("img");
    let mut testbed = netgov_testbed::Testbed::new(&prefix).map_err(|e| failure(e.to_string()))?;
    for name in ["client", "server"] {
        testbed.add_pod(name).map_err(|e| failure(e.to_string()))?;
    }
    let node = format!("ns:/run/netns/{}", testbed.node().name());
    let seccomp = format!("seccomp={}", runtime_default_seccomp()?.display());
    let capture = podman_run()
        .args(["--security-opt", &seccomp])
        .args(["--network", &node, "--cap-drop", "ALL"])
        .args(["--cap-add", "CAP_BPF,CAP_NET_ADMIN,CAP_PERFMON"])
        .args([&image, "capture", "--iface", "vethp*", "--duration", "6s"])
        .args(["--cgroup-root", "none"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_error("podman run capture"))?;
    std::thread::sleep(Duration::from_secs(3));
    let server = testbed.pods()[1].ipv4;
    testbed.pods()[0]
        .netns
        .run_in(move || {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
            socket.send_to(b"from the image's capture", (server, 5353))
        })
        .map_err(|e| failure(e.to_string()))?
        .map_err(io_error("send a datagram"))?;
    let output = capture
        .wait_with_output()
        .map_err(io_error("podman run capture"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let seen = stdout.lines().any(|line| {
        serde_json::from_str::<serde_json::Value>(line)
            .is_ok_and(|record| record["protocol"] == "UDP" && record["dst_port"] == 5353)
    });
    if !output.status.success() || !seen {
        return Err(failure(format!(
            "the image's capture with the DaemonSet's capabilities did not see the datagram ({}): {stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    println!("image-e2e: passed (version, capture with BPF, NET_ADMIN, PERFMON only)");
    Ok(())
}
