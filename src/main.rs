//! The `kmproxy` binary: parse the command line and hand over to [`kmproxy::cli`].

fn main() -> std::process::ExitCode {
    kmproxy::cli::main()
}
