//! migrosd: the migros device daemon (being written).
fn main() {}
