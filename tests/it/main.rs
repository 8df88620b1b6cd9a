//! The integration tests, as one binary: each module was once its own `tests/*.rs` binary, and
//! each of those linked candle and the whole crate again. `common` holds the shared helpers.

mod common;

mod bisect;
mod blame;
mod checkpoint;
mod compare;
mod completions;
mod corpus;
mod engine;
mod gate_action;
mod gemma2;
mod gguf;
mod gguf_cli;
mod gguf_engine;
mod gguf_lora;
mod hostile_config;
mod hostile_findings;
mod hostile_io;
mod html_report;
mod hub;
mod inspect;
mod layers;
mod lint;
mod lora;
mod moe;
mod moe_lora;
mod quant;
mod quant_lora;
mod snapshots_cli;
mod splice;
mod spm;
mod tekken;
mod token_map;
mod training;
mod vlm;
mod zoo;
