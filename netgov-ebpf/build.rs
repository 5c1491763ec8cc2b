//! Rebuilds the eBPF programs when bpf-linker changes: the linker does the
//! final code generation, so a new linker means new bytecode.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(error) => {
            println!("cargo:warning=bpf-linker not found: {error}; run `cargo xtask setup`")
        }
    }
}
