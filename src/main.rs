//! The `kmproxy` binary: parse the command line and hand over to [`kmproxy::cli`].
//!
//! The allocator is jemalloc with its background threads on, so memory freed
//! after a burst of large request bodies goes back to the system within
//! seconds; glibc's malloc kept most of it (figures: BENCHMARKS.md "Memory").

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    // Purging freed pages on jemalloc's own threads, not only when the
    // process next allocates (an idle proxy would keep them).
    #[cfg(not(target_env = "msvc"))]
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    kmproxy::cli::main()
}
