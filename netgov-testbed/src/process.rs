//! Figures of a running process from `/proc`, for benchmarks.

/// A `/proc/PID/status` figure: `VmRSS`, `VmHWM` (KiB), `Threads`; 0 when
/// the process or the field is gone.
pub fn status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
