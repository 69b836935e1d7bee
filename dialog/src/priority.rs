//! OS scheduling priority per thread (issue 17's CPU budget): the LLM threads, whose work can
//! wait a little, yield the cores to the VAD, recogniser and loop threads, whose lateness the
//! user hears. On Linux a nice value belongs to a thread (`setpriority(PRIO_PROCESS, tid)`), and
//! threads a thread creates inherit it, so llama.cpp's own compute threads follow its worker.

/// Lowers the calling thread's priority by `nice` steps below the process's own (capped at the
/// lowest, 19). Raising needs privileges, so only lowering is offered; a failure is logged and
/// the thread runs on at its current priority.
pub fn lower_this_thread(nice: i32, role: &str) {
    if nice <= 0 {
        return;
    }
    match lower(nice) {
        Ok(now) => tracing::debug!(role, nice = now, "thread priority lowered"),
        Err(reason) => {
            tracing::warn!(role, nice, %reason, "cannot lower the thread's priority; it keeps the default")
        }
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn lower(nice: i32) -> Result<i32, String> {
    // SAFETY: plain system calls on the calling thread's id; no memory is shared with them.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        // -1 is a valid priority: errno tells an error apart.
        *libc::__errno_location() = 0;
        let current = libc::getpriority(libc::PRIO_PROCESS, tid);
        if current == -1 && *libc::__errno_location() != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        let target = current.saturating_add(nice).min(19);
        if libc::setpriority(libc::PRIO_PROCESS, tid, target) != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        Ok(target)
    }
}

#[cfg(not(target_os = "linux"))]
fn lower(_nice: i32) -> Result<i32, String> {
    Err("per-thread priorities are only set on Linux".into())
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn a_lowered_thread_runs_at_the_higher_nice_value_and_others_keep_theirs() {
        // SAFETY: reads the calling thread's priority.
        let nice_of_this = || unsafe {
            libc::getpriority(
                libc::PRIO_PROCESS,
                libc::syscall(libc::SYS_gettid) as libc::id_t,
            )
        };
        let before = nice_of_this();
        let lowered = std::thread::spawn(move || {
            super::lower_this_thread(5, "test");
            nice_of_this()
        })
        .join()
        .expect("thread");
        assert_eq!(lowered, (before + 5).min(19));
        assert_eq!(nice_of_this(), before, "only the calling thread changes");
    }
}
