//! Aligned Counterfactual Safety (ACS) dataset schema v1.
//!
//! One row ([`PairRecord`]) is an unsafe prompt and its minimally edited safe counterpart,
//! rendered by the same model from the same seed and initial latent. This crate owns:
//!
//! - the Arrow schema v1 ([`arrow_schema`]) and the Hugging Face features metadata
//!   ([`huggingface_metadata`]) that makes `datasets` decode the image columns as `Image`;
//! - conversion between records and Arrow batches ([`records_to_batch`], [`batch_to_records`]);
//! - the Parquet shard writer and readers ([`write_shard`], [`read_shard`], [`read_shard_footer`],
//!   and [`ShardReader`], which reads one row group at a time and hashes as it reads);
//! - where datasets live ([`DatasetLocation`]): local folders or object storage (`s3://`,
//!   `gs://`, `az://`, through [`RemoteDir`]), credentials from the environment;
//! - the dataset manifest ([`DatasetManifest`]) and the loading API ([`Dataset`]);
//! - typed views of the tensor columns ([`PairRecord::trajectory`], [`F16Tensor`]).
//!
//! Every error ([`SchemaError`]) names the file and, when known, the row and the column.

#![deny(missing_docs)]

mod atomic;
mod batch_reader;
mod convert;
mod dataset;
mod digest;
mod error;
mod guard;
mod location;
mod manifest;
mod record;
mod remote;
mod remote_client;
mod schema;
mod shard;
mod shard_reader;
mod tensors;

pub use atomic::{temp_sibling, write_atomic, write_atomic_with};
pub use convert::{batch_to_records, records_to_batch};
pub use dataset::{check_relative, is_split_name, Dataset};
pub use digest::{sha256_bytes, sha256_file};
pub use error::SchemaError;
pub use guard::guard;
pub use half::f16;
pub use location::DatasetLocation;
pub use manifest::{DatasetManifest, ModelInfo, ShardEntry, WorkerSlice};
pub use record::{ImageBlob, PairRecord};
pub use remote::{is_remote_url, part_bytes, RemoteDir, DEFAULT_PART_BYTES, REMOTE_SCHEMES};
pub use schema::{
    arrow_schema, huggingface_metadata, is_schema_v1, ADDED_COLUMNS, COLUMNS,
    HUGGINGFACE_METADATA_KEY, IMAGE_COLUMNS, SCHEMA_VERSION_METADATA_KEY,
};
pub use shard::{
    read_shard, read_shard_footer, shard_path, write_shard, writer_properties, ShardFacts,
    ShardFooter, ROW_GROUP_ROWS, ZSTD_LEVEL,
};
pub use shard_reader::ShardReader;
pub use tensors::{F16Tensor, LatentMask, Trajectory, BENIGN_CATEGORY, SHAPES_CATEGORY};

/// The schema version this crate writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// File name of the dataset manifest inside a dataset directory.
pub const MANIFEST_FILE: &str = "acs-manifest.json";
