//! Comparing two variants on the same tokens: metrics as pure functions (`metrics`), the
//! procedure (`run`), prompts or a text corpus (`corpus`), variants and thresholds.

pub mod blame;
pub mod compat;
pub mod corpus;
pub mod metrics;
pub mod prompts;
pub mod run;
pub mod thresholds;
pub mod token_map;
pub mod variant;
