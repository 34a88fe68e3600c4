//! The iiot-rs reference deployment (placeholder until its issue lands).

fn main() {
    println!(
        "iiot-reference: the end-to-end demo is not built yet. Run `cargo test --workspace` to exercise the SDK."
    );
}
