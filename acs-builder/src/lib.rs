//! acs-builder: builds Aligned Counterfactual Safety datasets.
//!
//! The pipeline flows one way — sources -> prompt alignment -> pair sampler (candle) ->
//! metrics and verdict -> shard sink — with one small module per stage:
//!
//! - [`config`]: the build manifest (TOML)
//! - [`sources`]: prompt pair readers
//! - [`tokenizer`], [`align`]: CLIP tokens and the minimal-edit checks
//! - [`plan`]: pair ids, splits and seeds, before any rendering
//! - [`model`], [`hub_cache`], [`scheduler`], [`rng`], [`sampler`]: the diffusion runtime
//! - [`hub`]: downloading models from the Hugging Face hub into its cache
//! - [`metrics`], [`verdict`], [`nudenet`]: alignment metrics, the NudeNet detector and
//!   thresholds
//! - [`imaging`]: PNG and float16 encodings
//! - [`sink`], [`card`]: Parquet shards, manifest, dataset card (through `acs-schema`)
//! - [`build`], [`validate`], [`stats`]: the commands
//! - [`preview`], [`plot`] (drawn with [`draw`]): the contact sheet and the metric histograms

pub mod align;
pub mod build;
pub mod card;
pub mod config;
pub mod device;
pub mod draw;
pub mod edit_distance;
pub mod error;
pub mod fault;
pub mod fingerprint;
pub mod hub;
pub mod hub_cache;
pub mod imaging;
pub mod journal;
pub mod lexicon;
pub mod merge;
pub mod metrics;
pub mod model;
pub mod nudenet;
pub mod pairing;
pub mod plan;
pub mod plot;
pub mod preview;
pub mod repair;
pub mod replay;
pub mod rewrite;
pub mod rng;
pub mod sampler;
pub mod scheduler;
pub mod sink;
pub mod sources;
pub mod staging;
pub mod stats;
pub mod text;
pub mod tokenizer;
pub mod validate;
pub mod verdict;
pub mod worker;

pub use error::AcsError;
