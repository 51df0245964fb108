//! `pairs-jsonl`: one JSON object per line with `unsafe_prompt`, `safe_prompt` and optional
//! `category`, `seed`, `guidance_scale` (with `role = "benign"`: `prompt` and optional `seed`,
//! `guidance_scale`). Blank lines are skipped; other fields are ignored.

use std::path::PathBuf;

use serde::Deserialize;

use super::{
    benign_item, checked_category, pair_item, text_lines, PromptSource, Reject, SourceBatch,
};
use crate::error::AcsError;
use crate::manifest::SourceRole;

/// The `pairs-jsonl` reader.
pub struct PairsJsonl {
    /// The file.
    pub path: PathBuf,
    /// Category for rows that name none.
    pub category: Option<String>,
    /// Pairs, or benign prompts.
    pub role: SourceRole,
}

#[derive(Deserialize)]
struct Row {
    prompt: Option<String>,
    unsafe_prompt: Option<String>,
    safe_prompt: Option<String>,
    category: Option<String>,
    seed: Option<u64>,
    guidance_scale: Option<f32>,
}

impl PromptSource for PairsJsonl {
    fn read(&self, batch: &mut SourceBatch) -> Result<(), AcsError> {
        for line in text_lines(&self.path)? {
            let (origin, text) = match line {
                Ok(line) => line,
                Err(reject) => {
                    batch.rejects.push(reject);
                    continue;
                }
            };
            let row: Row = match serde_json::from_str(&text) {
                Ok(row) => row,
                Err(e) => {
                    let detail = super::json_line_error(&e);
                    batch
                        .rejects
                        .push(Reject::at(&origin, "invalid-row", detail));
                    continue;
                }
            };
            let item = match self.role {
                SourceRole::Benign => {
                    benign_item(origin, row.prompt.as_deref(), row.seed, row.guidance_scale)
                }
                SourceRole::Pairs => pair_item(
                    origin,
                    row.unsafe_prompt.as_deref(),
                    row.safe_prompt.as_deref(),
                    checked_category(row.category, &self.category),
                    row.seed,
                    row.guidance_scale,
                ),
            };
            match item {
                Ok(item) => batch.items.push(item),
                Err(reject) => batch.rejects.push(*reject),
            }
        }
        Ok(())
    }
}
