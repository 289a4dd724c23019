fn main() -> std::process::ExitCode {
    edgepop::cli::main()
}
