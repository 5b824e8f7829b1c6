//! `flowgatectl`: the operator's client of a running flowgate.
fn main() {}
