//! Lineages: a manifest of pipeline steps (`manifest`), and bisecting them (`run`) for the
//! `bisect` and `gate` commands.

pub mod causes;
pub mod manifest;
pub mod run;
