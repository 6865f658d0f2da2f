//! The C allocator's settings for fanout's processes.

/// Makes glibc's malloc serve every thread from one arena.
///
/// By default glibc gives busy threads arenas of their own (up to eight per core), and an
/// arena returns memory to the system only from its top. A worker's threads take turns
/// on the same batches, so its resident memory grew towards the sum of every arena's
/// high-water mark rather than the process's own: on a 1 GiB chunk the same work peaked
/// anywhere between 240 and 300 MiB from run to run, and at 225 MiB every time with one
/// arena, at no measurable CPU cost (BENCHMARKS.md). A `MALLOC_ARENA_MAX` set in the
/// environment is left to glibc. A no-op where the C library is not glibc.
///
/// Call it first in `main`, before the async runtime starts its threads.
pub fn one_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `mallopt` sets one allocator parameter from two plain integers and takes
    // the allocator's own lock; it touches no memory of ours.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
