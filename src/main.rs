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
    cli::main()
}
