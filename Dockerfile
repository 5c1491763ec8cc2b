# netgov agent image: builds the eBPF object and the `netgov` binary, then
# ships the binary alone on a distroless base.
#
#   docker build -t ghcr.io/netgov/netgov:0.1.0 .
#
# The eBPF crate needs a nightly toolchain with rust-src and a bpf-linker
# built against that nightly's LLVM; `cargo xtask setup --build-only`
# installs exactly those (the same step CI and developers run).

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
# The nightly the eBPF crate is known to build with (bpf-linker 0.13 links
# against its LLVM 22); setup installs it, and build.rs uses it.
ENV NETGOV_EBPF_TOOLCHAIN=nightly-2026-05-20
COPY . .
RUN cargo xtask setup --build-only \
 && cargo build --release --locked -p netgov-agent --bin netgov \
 && cp target/release/netgov /netgov

# glibc and libgcc, nothing else; root (uid 0) because the DaemonSet grants
# capabilities (BPF, NET_ADMIN, PERFMON), which a non-root process would
# lose at exec.
FROM gcr.io/distroless/cc-debian12
COPY --from=build /netgov /usr/local/bin/netgov
ENTRYPOINT ["/usr/local/bin/netgov"]
CMD ["agent"]
