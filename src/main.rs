//! The `dirsync` binary: parses the command line, runs the command, maps the result to
//! an exit code. All behaviour lives in the library.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
