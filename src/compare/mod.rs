//! Comparing two variants on the same tokens: metrics as pure functions (`metrics`).

pub mod metrics;
