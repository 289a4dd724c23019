// jemalloc: glibc malloc was a tenth of the proxy's CPU under load.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    edgepop::cli::main()
}
