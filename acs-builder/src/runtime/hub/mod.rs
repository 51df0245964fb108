//! Downloading diffusers models (and prompt datasets) from the Hugging Face hub into its cache, the way the Python
//! `huggingface_hub` library does, so that [`crate::runtime::hub::cache::resolve_snapshot`] (and Python
//! tools) find them afterwards.
//!
//! One module per job:
//!
//! - [`cache`]: finding a cached model (the reading side, also used offline)
//! - [`settings`]: HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE and the cache folder
//! - [`client`]: the HTTP client (redirects, where the token may go, transport errors)
//! - [`api`]: the hub's model-info endpoint and its error codes
//! - [`select`]: which of a repository's files the pipeline needs
//! - [`cache_layout`]: `blobs/`, `snapshots/` and `refs/` of a cached repository
//! - [`digest`]: verifying a blob against its ETag (LFS sha256 or git blob sha1)
//! - [`download`]: one file: metadata, resumable transfer, verification, final name
//! - [`fetch`]: a whole model, with a progress bar
//! - [`dataset`]: the files of a dataset repository that a prompt source reads
//! - [`list`]: what the cache holds

pub mod api;
pub mod cache;
pub mod cache_layout;
pub mod client;
pub mod dataset;
pub mod digest;
pub mod download;
pub mod fetch;
pub mod list;
pub mod select;
pub mod settings;

pub use dataset::{dataset_files, DatasetSnapshot};
pub use fetch::{fetch_model, FetchOptions, FetchReport};
pub use list::{list_models, CachedModel};
pub use select::Variant;
pub use settings::HubSettings;
