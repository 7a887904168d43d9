fn main() -> std::process::ExitCode {
    omamori::cli::run()
}
