//! The `flowgate` daemon and its offline tools.
fn main() {}
