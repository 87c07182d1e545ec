//! The `flowgate` binary: everything lives in the library; this only hands over the exit code.

/// mimalloc: the request path allocates many small, short-lived objects (headers, records,
/// futures) across worker threads, where the system allocator's locking showed as about
/// 12 % of a profile at load (issue 11).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    flowgate::cli::main()
}
