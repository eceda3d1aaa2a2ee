//! `vitastor-cli`: see the crate docs.

fn main() -> std::process::ExitCode {
    vitastor_cli::cli::main_cli()
}
