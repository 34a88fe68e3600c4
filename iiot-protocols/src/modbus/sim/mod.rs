//! Simulator (todo).
