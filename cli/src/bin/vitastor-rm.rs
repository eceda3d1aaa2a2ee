//! `vitastor-rm`: removes an inode's data (same as `vitastor-cli rm-data`).

fn main() -> std::process::ExitCode {
    vitastor_cli::cli::main_rm()
}
