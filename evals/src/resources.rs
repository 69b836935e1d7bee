//! Process resource usage from `getrusage(2)`: CPU time of all threads (user + system) and the
//! peak resident set size. Both are whole-process figures, so a run's CPU cost is the difference
//! of two readings and the peak RSS includes the loaded model weights.

use std::time::Duration;

fn usage() -> Option<libc::rusage> {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `u` is a valid, writable, zero-initialised rusage; getrusage only writes into it and
    // reports failure through its return value, which is checked before `assume_init`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: getrusage returned 0, so it filled the struct (and it was zeroed before anyway).
    Some(unsafe { u.assume_init() })
}

fn tv(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
}

/// User + system CPU time consumed by this process so far.
pub fn cpu_time() -> Option<Duration> {
    usage().map(|u| tv(u.ru_utime) + tv(u.ru_stime))
}

/// Peak resident set size of this process so far, in MiB (Linux reports `ru_maxrss` in KiB).
pub fn peak_rss_mb() -> Option<f64> {
    usage().map(|u| u.ru_maxrss as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work_and_rss_is_plausible() {
        let a = cpu_time().unwrap();
        // Spin until 50 ms of CPU have been charged; a clock that does not move fails on the
        // wall-time bound instead of hanging.
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        let mut b = a;
        while b - a < Duration::from_millis(50) {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "CPU time did not advance"
            );
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            std::hint::black_box(x);
            b = cpu_time().unwrap();
        }
        let rss = peak_rss_mb().unwrap();
        assert!(rss > 1.0 && rss < 1_000_000.0, "{rss}");
    }
}
