# netgov agent image for registries: the same image `cargo xtask image`
# writes as an OCI archive without Docker — a static `netgov` (glibc linked
# in) at /usr/local/bin/netgov in an otherwise empty image, plus empty
# /run and /tmp.
#
#   docker build --build-arg NETGOV_REVISION=$(git rev-parse --short=12 HEAD) \
#     -t ghcr.io/netgov/netgov:0.1.0 .
#
# The eBPF crate needs a nightly toolchain with rust-src and a bpf-linker
# built against that nightly's LLVM; `cargo xtask setup --build-only`
# installs exactly those (the same step CI and developers run).

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
# The nightly the eBPF crate is known to build with (bpf-linker 0.13 links
# against its LLVM 22); setup installs it, and build.rs uses it.
ENV NETGOV_EBPF_TOOLCHAIN=nightly-2026-05-20
# `netgov version` and netgov_build_info report it (no .git in the context).
ARG NETGOV_REVISION=unknown
ENV NETGOV_REVISION=${NETGOV_REVISION}
COPY . .
RUN cargo xtask setup --build-only \
 && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked \
      --target x86_64-unknown-linux-gnu -p netgov-agent --bin netgov \
 && mkdir -p /rootfs/usr/local/bin /rootfs/run /rootfs/tmp \
 && chmod 1777 /rootfs/tmp \
 && cp target/x86_64-unknown-linux-gnu/release/netgov /rootfs/usr/local/bin/netgov

# Nothing but the binary; root (uid 0) because the DaemonSet grants
# capabilities (BPF, NET_ADMIN, PERFMON), which a non-root process would
# lose at exec.
FROM scratch
COPY --from=build /rootfs /
ENTRYPOINT ["/usr/local/bin/netgov"]
CMD ["agent"]
