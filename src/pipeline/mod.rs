//! Lineages: a manifest of pipeline steps (`manifest`), and bisecting them (`run`) for the
//! `bisect` and `gate` commands; training runs as lineages (`training`).

pub mod causes;
pub mod manifest;
pub mod run;
pub mod train_log;
pub mod training;
