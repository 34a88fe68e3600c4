//! Modbus planner benchmark (placeholder).

fn main() {}
