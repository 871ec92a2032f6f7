//! The `pkv` binary; everything lives in the library.

fn main() {
    std::process::exit(pkv::cli::main());
}
