//! `prompts-txt`: unsafe prompts, one per line, to be rewritten (or, with `role = "benign"`,
//! benign prompts to render once). Blank lines and lines starting with `#` are skipped. The
//! category comes from the source entry (or, when it has none, from the first lexicon that
//! finds a concept term in the prompt).

use std::path::PathBuf;

use super::{text_lines, PromptSource, Prompts, SourceBatch, SourceItem};
use crate::error::AcsError;
use crate::manifest::{SourceRole, BENIGN_CATEGORY, CATEGORIES};

/// The `prompts-txt` reader.
pub struct PromptsTxt {
    /// The file.
    pub path: PathBuf,
    /// The category of every prompt; none: any category whose lexicon matches.
    pub category: Option<String>,
    /// Unsafe prompts to rewrite, or benign prompts.
    pub role: SourceRole,
}

impl PromptSource for PromptsTxt {
    fn read(&self, batch: &mut SourceBatch) -> Result<(), AcsError> {
        let categories: Vec<String> = match (&self.category, self.role) {
            (_, SourceRole::Benign) => vec![BENIGN_CATEGORY.to_owned()],
            (Some(category), _) => vec![category.clone()],
            (None, _) => CATEGORIES.iter().map(|c| c.to_string()).collect(),
        };
        for line in text_lines(&self.path)? {
            let (origin, text) = match line {
                Ok(line) => line,
                Err(reject) => {
                    batch.rejects.push(reject);
                    continue;
                }
            };
            let prompt = crate::prompts::text::clean(&text);
            if prompt.is_empty() || prompt.starts_with('#') {
                continue;
            }
            batch.items.push(SourceItem {
                prompts: match self.role {
                    SourceRole::Pairs => Prompts::Unsafe(prompt),
                    SourceRole::Benign => Prompts::Benign(prompt),
                },
                categories: categories.clone(),
                seed: None,
                guidance_scale: None,
                origin,
            });
        }
        Ok(())
    }
}
