//! Ledger benchmarks (filled in below).
fn main() {}
