//! The `poolparty` binary: everything happens in [`poolparty::run`].

// mimalloc: a million-job plan makes millions of small allocations; with glibc's allocator
// they cost ~20 % of `validate` and fragment the heap (bench/million.sh, #14).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(poolparty::run(std::env::args_os()))
}
