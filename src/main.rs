//! The `dirsync` binary: parses the command line, runs the command, maps the result to
//! an exit code. All behaviour lives in the library.

mod cli;

/// mimalloc instead of the system allocator: a run allocates millions of small strings
/// from several threads, where glibc's malloc spent a third of the time (see BENCHMARKS.md).
/// The `system-alloc` feature leaves it out, for heap profilers that only see malloc.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

fn main() -> ExitCode {
    tune_allocator();
    cli::main()
}

/// mimalloc returns freed memory to the system 10 ms after it is freed rather than
/// after its default of one second. A run frees the read's transient data (protocol
/// messages, parsed entries) while it plans, and with the default none of it went
/// back before the run ended: 100,000 users peaked at 248 MB instead of 220 MB, at
/// the same speed (BENCHMARKS.md). `MIMALLOC_PURGE_DELAY` still overrides it.
#[cfg(not(feature = "system-alloc"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    use libmimalloc_sys::{mi_option_get, mi_option_set_default, mi_option_t};
    /// `mi_option_purge_delay` in mimalloc.h (v2 and v3), which libmimalloc-sys does
    /// not name.
    const PURGE_DELAY: mi_option_t = 15;
    // SAFETY: both calls read or write one integer option and may be made at any
    // time. The option is set only while it holds the purge delay's documented
    // default (1000 ms in v3, 10 ms in v2), so a renumbered enum in a future
    // mimalloc changes nothing rather than the wrong option.
    unsafe {
        if mi_option_get(PURGE_DELAY) == 1000 {
            mi_option_set_default(PURGE_DELAY, 10);
        }
    }
}

#[cfg(feature = "system-alloc")]
fn tune_allocator() {}
