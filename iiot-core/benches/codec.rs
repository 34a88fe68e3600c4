//! Codec benchmark (lands with the codecs).
fn main() {}
