//! The `flowgate` binary: everything lives in the library; this only hands over the exit code.

/// mimalloc: the request path allocates many small, short-lived objects (headers, records,
/// futures) across worker threads; malloc/free were about 12 % of a profile at load, and
/// this allocator took the peer benchmark from 0.71x to 0.94x of HAProxy's full job
/// (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    flowgate::cli::main()
}
