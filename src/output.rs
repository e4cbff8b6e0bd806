//! What the commands print on stdout and stderr. Rust ignores `SIGPIPE`,
//! so a write to a pipe whose reader has gone (`kmproxy check | head -1`)
//! fails with `EPIPE`, and `println!` panics on that. [`out`] and [`err`]
//! treat a reader that has gone as one that stopped listening: the rest of
//! that stream's output is dropped and the command ends as it would have,
//! with its own exit status. Any other failure to write stdout (a full
//! disk, say) is said on stderr and ends the command with status 1, so
//! that a truncated `check` summary never looks like a whole one.

use std::fmt;
use std::io::{self, Write};

/// Prints `args` on stdout (as `print!`).
pub fn out(args: fmt::Arguments<'_>) {
    let mut stdout = io::stdout().lock();
    match stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            err(format_args!("kmproxy: cannot write to stdout: {e}\n"));
            std::process::exit(1);
        }
        _ => {}
    }
}

/// Prints `args` on stderr (as `eprint!`); a failure has nobody to tell.
pub fn err(args: fmt::Arguments<'_>) {
    let mut stderr = io::stderr().lock();
    let _ = stderr.write_fmt(args).and_then(|()| stderr.flush());
}
