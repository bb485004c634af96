//! The `poolparty` binary: everything happens in [`poolparty::run`].

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(poolparty::run(std::env::args_os()))
}
