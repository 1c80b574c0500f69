//! `hako`: the engine's command line (images for now).

fn main() {
    eprintln!("hako: not yet");
    std::process::exit(1);
}
