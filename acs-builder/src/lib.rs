//! acs-builder: builds Aligned Counterfactual Safety datasets.
//!
//! The pipeline flows one way, one folder per stage:
//!
//! ```text
//! manifest  ->  prompts  ->  runtime  ->  judge  ->  store
//! (TOML)        sources,     candle SD:   metrics,   Parquet shards,
//!               rewrite,     pair         detectors, journal, manifest,
//!               alignment,   sampler      verdict    dataset card
//!               plan
//! ```
//!
//! - [`manifest`]: the build manifest: its tables, unknown keys, value checks
//! - [`prompts`]: prompt sources, text hygiene, lexicons, rewriters, pairing and token
//!   alignment, the render plan
//! - [`runtime`]: the diffusion runtime (networks, schedulers, pair sampler, torch-compatible
//!   RNG, tokenizer, devices, model loading, hub cache); it imports no other stage
//! - [`judge`]: image and latent metrics, safety judges (NudeNet), the verdict
//! - [`store`]: the shard sink, the build journal, staged folders, the dataset card
//! - [`commands`]: what the `acs` binary runs (build, validate, repair, replay, merge, stats,
//!   preview, plot, detect, metrics, model), each printing its own report
//! - [`error`]: the error type of the commands and its exit codes

pub mod commands;
pub mod error;
pub mod judge;
pub mod manifest;
pub mod prompts;
pub mod runtime;
pub mod store;

pub use error::AcsError;

/// The acs version recorded in manifests and rows.
pub const ACS_VERSION: &str = env!("CARGO_PKG_VERSION");
