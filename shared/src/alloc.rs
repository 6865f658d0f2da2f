//! The C allocator's settings for fanout's processes.

/// Caps glibc's malloc arenas at one per two cores (one on a 2-core machine or in Lambda).
///
/// By default glibc gives busy threads arenas of their own (up to eight per core), and an
/// arena returns memory to the system only from its top. A worker's threads take turns
/// on the same batches, so its resident memory grew towards the sum of every arena's
/// high-water mark rather than the process's own: on a 1 GiB chunk the same work peaked
/// anywhere between 228 and 290 MiB from run to run, and at 223–226 MiB in one arena, at
/// no measurable CPU cost with two threads (BENCHMARKS.md). More arenas on larger hosts
/// keep many workers in one process from all waiting on one arena's lock.
///
/// `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES` set in the environment are left to glibc. A
/// no-op where the C library is not glibc. Returns whether the cap was set.
///
/// Call it first in `main`, before the async runtime starts its threads.
pub fn limit_arenas() -> bool {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || std::env::var_os("GLIBC_TUNABLES").is_some()
    {
        return false;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let arenas = i32::try_from((cores / 2).max(1)).unwrap_or(i32::MAX);
    set_arena_max(arenas)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_arena_max(arenas: i32) -> bool {
    // SAFETY: `mallopt` sets one allocator parameter from two plain integers under the
    // allocator's own lock; it reads or writes no memory of ours.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_arenas: i32) -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cap_is_set_on_glibc_unless_the_environment_sets_it() {
        let set_outside = std::env::var_os("MALLOC_ARENA_MAX").is_some()
            || std::env::var_os("GLIBC_TUNABLES").is_some();
        let glibc = cfg!(all(target_os = "linux", target_env = "gnu"));
        assert_eq!(super::limit_arenas(), glibc && !set_outside);
    }
}
