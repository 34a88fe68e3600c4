//! Unit tests with injected storage.
