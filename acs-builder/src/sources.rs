//! Prompt sources: readers that turn files into explicit (unsafe, safe) prompt pairs.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{LoadedManifest, SourceSection, CATEGORIES};
use crate::error::AcsError;

/// One explicit prompt pair read from a source, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptPair {
    /// The prompt holding the unsafe concept.
    pub unsafe_prompt: String,
    /// The minimally edited safe counterpart.
    pub safe_prompt: String,
    /// One of [`CATEGORIES`].
    pub category: String,
    /// A seed fixed by the source (e.g. I2P's sd_seed), else derived later.
    pub seed: Option<u64>,
    /// A guidance scale fixed by the source, else the manifest's.
    pub guidance_scale: Option<f32>,
    /// Source file.
    pub file: PathBuf,
    /// 1-based line in the source file.
    pub line: usize,
}

/// A reader of one source format.
pub trait PromptSource {
    /// Reads every pair of the source, failing on the first malformed row.
    fn read_pairs(&self) -> Result<Vec<PromptPair>, AcsError>;
}

/// Opens the reader for a `[[sources]]` entry.
pub fn open_source(
    section: &SourceSection,
    manifest: &LoadedManifest,
) -> Result<Box<dyn PromptSource>, AcsError> {
    let path = manifest.resolve(&section.path);
    match section.kind.as_str() {
        "pairs-jsonl" => Ok(Box::new(PairsJsonl {
            path,
            default_category: section.category.clone(),
        })),
        other => Err(AcsError::input(format!(
            "{}: unsupported source kind `{other}`",
            manifest.file.display()
        ))),
    }
}

/// Reads every source of a manifest, in manifest order.
pub fn read_all(manifest: &LoadedManifest) -> Result<Vec<PromptPair>, AcsError> {
    let mut pairs = Vec::new();
    for section in &manifest.manifest.sources {
        pairs.extend(open_source(section, manifest)?.read_pairs()?);
    }
    Ok(pairs)
}

/// `pairs-jsonl`: one JSON object per line with `unsafe_prompt`, `safe_prompt` and optional
/// `category`, `seed`, `guidance_scale`. Blank lines are skipped; other fields are ignored.
pub struct PairsJsonl {
    /// The file.
    pub path: PathBuf,
    /// Category for rows that name none.
    pub default_category: Option<String>,
}

#[derive(Deserialize)]
struct JsonlRow {
    unsafe_prompt: Option<String>,
    safe_prompt: Option<String>,
    category: Option<String>,
    seed: Option<u64>,
    guidance_scale: Option<f32>,
}

impl PromptSource for PairsJsonl {
    fn read_pairs(&self) -> Result<Vec<PromptPair>, AcsError> {
        let bytes = std::fs::read(&self.path).map_err(|e| AcsError::io(&self.path, e))?;
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
        let mut pairs = Vec::new();
        for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = index + 1;
            let at = |reason: String| {
                AcsError::input(format!("{}:{line}: {reason}", self.path.display()))
            };
            let text = std::str::from_utf8(raw)
                .map_err(|_| at("line is not valid UTF-8".into()))?
                .trim_end_matches('\r');
            if text.trim().is_empty() {
                continue;
            }
            let row: JsonlRow =
                serde_json::from_str(text).map_err(|e| at(format!("invalid JSON object: {e}")))?;
            let unsafe_prompt = required_prompt(row.unsafe_prompt, "unsafe_prompt").map_err(at)?;
            let safe_prompt = required_prompt(row.safe_prompt, "safe_prompt").map_err(at)?;
            if unsafe_prompt == safe_prompt {
                return Err(at("unsafe_prompt and safe_prompt are identical".into()));
            }
            let category = row
                .category
                .or_else(|| self.default_category.clone())
                .ok_or_else(|| {
                    at("no category (set `category` in the row or in [[sources]])".into())
                })?;
            if !CATEGORIES.contains(&category.as_str()) {
                return Err(at(format!(
                    "category `{category}` is not one of {}",
                    CATEGORIES.join(", ")
                )));
            }
            if let Some(g) = row.guidance_scale {
                if !(g.is_finite() && g >= 0.0) {
                    return Err(at(format!("guidance_scale must be >= 0 (got {g})")));
                }
            }
            pairs.push(PromptPair {
                unsafe_prompt,
                safe_prompt,
                category,
                seed: row.seed,
                guidance_scale: row.guidance_scale,
                file: self.path.clone(),
                line,
            });
        }
        if pairs.is_empty() {
            return Err(AcsError::input(format!(
                "{}: no prompt pairs in file",
                self.path.display()
            )));
        }
        Ok(pairs)
    }
}

/// A prompt field that must be present and not blank; surrounding whitespace is dropped.
fn required_prompt(value: Option<String>, field: &str) -> Result<String, String> {
    let value = value.ok_or_else(|| format!("missing field `{field}`"))?;
    let trimmed: String = value.chars().filter(|c| !c.is_control()).collect();
    let trimmed = trimmed.trim();
    if trimmed.is_empty() {
        return Err(format!("field `{field}` is empty"));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<PromptPair>, AcsError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.jsonl");
        std::fs::write(&path, text).unwrap();
        PairsJsonl {
            path,
            default_category: Some("violence".into()),
        }
        .read_pairs()
    }

    #[test]
    fn reads_pairs_with_bom_crlf_and_blank_lines() {
        let text = "\u{feff}{\"unsafe_prompt\":\"a bloody knife\",\"safe_prompt\":\"a clean knife\"}\r\n\n{\"unsafe_prompt\":\"x nude\",\"safe_prompt\":\"x clothed\",\"category\":\"sexual\",\"seed\":7}\n";
        let pairs = read(text).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].category, "violence");
        assert_eq!(pairs[1].seed, Some(7));
        assert_eq!(pairs[1].line, 3);
    }

    #[test]
    fn bad_rows_name_the_line_and_reason() {
        let cases = [
            (
                "{\"unsafe_prompt\":\"a\",\"safe_prompt\":\"a\"}",
                ":1: unsafe_prompt and safe_prompt are identical",
            ),
            (
                "{\"unsafe_prompt\":\" \",\"safe_prompt\":\"a\"}",
                ":1: field `unsafe_prompt` is empty",
            ),
            (
                "\n{\"safe_prompt\":\"a\"}",
                ":2: missing field `unsafe_prompt`",
            ),
            ("{not json", ":1: invalid JSON object"),
            (
                "{\"unsafe_prompt\":\"a\",\"safe_prompt\":\"b\",\"category\":\"odd\"}",
                ":1: category `odd` is not one of",
            ),
            ("\n\n", ": no prompt pairs in file"),
        ];
        for (text, expected) in cases {
            let err = read(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} lacks {expected}");
            assert_eq!(err.lines().count(), 1);
        }
    }
}
