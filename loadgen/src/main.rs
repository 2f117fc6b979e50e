fn main() {
    eprintln!("stoa-loadgen: not built yet (see issue: stoa-loadgen W1)");
    std::process::exit(2);
}
