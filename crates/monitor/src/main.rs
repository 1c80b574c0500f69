//! `hako-monitor`: see the `daemon` module of the hako_monitor library.

fn main() {
    std::process::exit(hako_monitor::daemon::main(std::env::args_os().skip(1)));
}
