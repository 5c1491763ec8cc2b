//! Kernel timestamps (`bpf_ktime_get_ns`, CLOCK_MONOTONIC) to wall-clock
//! time.

/// Reads a clock in nanoseconds.
fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// The wall clock now, in Unix nanoseconds (as flow records carry times).
pub fn unix_now_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// CLOCK_MONOTONIC now, in the unit and epoch of `bpf_ktime_get_ns`.
pub fn monotonic_now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

/// Maps monotonic timestamps to Unix time with the offset measured at
/// creation (wall-clock steps after that are not followed, so durations
/// between records stay exact).
#[derive(Clone, Copy, Debug)]
pub struct MonotonicClock {
    offset_ns: i128,
}

impl MonotonicClock {
    /// Measures the offset between the two clocks now.
    pub fn new() -> Self {
        Self {
            offset_ns: clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl WallClock for MonotonicClock {
    fn to_unix_nanos(&self, monotonic_ns: u64) -> i128 {
        i128::from(monotonic_ns) + self.offset_ns
    }
}

/// Converts kernel monotonic nanoseconds to wall-clock nanoseconds since
/// the Unix epoch.
pub trait WallClock {
    /// Unix-epoch nanoseconds for a `bpf_ktime_get_ns` value.
    fn to_unix_nanos(&self, monotonic_ns: u64) -> i128;
}
