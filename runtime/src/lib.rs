//! The pg-status runtime.
