//! Storing a dataset: the shard sink, the build journal, staged output folders, the dataset
//! card, the image and latent encodings of a row, publishing to object storage, and fault
//! injection for crash tests.

pub mod card;
pub mod fault;
pub mod imaging;
pub mod journal;
pub mod publish;
pub mod resume;
pub mod sink;
pub mod staging;

/// Inputs that did not become pairs, one JSON object per line, in the dataset folder.
pub const REJECTS_FILE: &str = "rejects.jsonl";
