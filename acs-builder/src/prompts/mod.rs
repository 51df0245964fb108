//! The prompt stage: from source files to checked, planned prompt pairs.
//!
//! sources -> text hygiene -> rewrite (lexicon, LLM) -> pairing and minimal-edit checks (CLIP
//! token alignment) -> plan (pair ids, splits, seeds). Nothing here renders or writes a dataset.

pub mod align;
pub mod lexicon;
pub mod pairing;
pub mod plan;
pub mod rewrite;
pub mod sources;
pub mod text;
