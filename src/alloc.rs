//! The process's allocator settings, applied first thing in `main`, and the release of freed
//! memory when a session ends.
//!
//! glibc's malloc gives a thread that finds the arenas busy one of its own, up to eight per core,
//! and memory freed into an arena stays with the process. `serve` starts threads per session
//! (conversation, recogniser, synthesis), so their transient buffers spread over up to 16 arenas
//! on a 2-core machine. Measured by `tests/soak.rs` (two sessions per cycle, 38–44 sessions, RSS
//! idle after warm-up → idle at the end): default +22 %, climbing about 6 MB a session; one
//! arena per core +5.7 %, still creeping about 0.4 MB a session; that plus [`release_free_memory`] when each conversation
//! ends +0.4 %, flat from the first cycle. The real-time threads do not allocate, so the extra
//! lock contention of fewer arenas is on model and network threads only. `MALLOC_ARENA_MAX` in
//! the environment still wins.

pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only changes the allocator's tuning; called before any other thread
        // of ours exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// Hands the free memory of every arena back to the system (glibc's `malloc_trim`): called when
/// a session's conversation has ended and dropped its buffers, so what one session freed does not
/// sit in an arena until another session happens to reuse it. Takes the arenas' locks while it
/// walks them (milliseconds; logged), which only the model and network threads can notice.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let t0 = std::time::Instant::now();
        // SAFETY: malloc_trim only returns unused pages; it is thread-safe.
        let released = unsafe { libc::malloc_trim(0) } == 1;
        tracing::debug!(
            released,
            took_us = t0.elapsed().as_micros() as u64,
            "freed memory returned to the system"
        );
    }
}
