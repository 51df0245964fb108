//! Prompt sources: readers that turn files into explicit (unsafe, safe) prompt pairs or single
//! unsafe prompts to rewrite. A malformed row never stops a build: it becomes a [`Reject`] with
//! the file, line (or row) and reason, and reading goes on.
//!
//! - fixed layouts: [`PairsJsonl`], [`PairsCsv`], [`PromptsTxt`]
//! - column-mapped tables (CSV, JSONL, Parquet; presets of published prompt sets, I2P among
//!   them): [`MappedSource`] over a [`table::Table`], [`PairsJoin`] for two joined tables
//! - where the files are: local paths, or a Hugging Face dataset repository ([`repo`])

mod categories;
mod csv_pairs;
mod i2p;
mod join;
mod jsonl;
#[cfg(test)]
mod line_endings;
mod mapped;
mod repo;
mod table;
mod txt;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::AcsError;
use crate::manifest::{
    LoadedManifest, Preset, SourceKind, SourceSection, TableFormat, BENIGN_CATEGORY,
    MAX_GUIDANCE_SCALE,
};
use crate::runtime::RuntimeError;

pub use categories::{canonical_category, row_categories};
pub use csv_pairs::PairsCsv;
pub use i2p::I2pFilter;
pub use join::PairsJoin;
pub use jsonl::PairsJsonl;
pub use mapped::{ColumnMap, MappedSource};
pub use txt::PromptsTxt;

/// Where an input came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// Source file.
    pub file: PathBuf,
    /// 1-based line (text formats) or data row (Parquet, CSV records).
    pub line: usize,
    /// The row's id or case number, when the source maps an id column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// The prompts of an input.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompts {
    /// An explicit pair.
    Pair {
        /// The prompt holding the unsafe concept.
        unsafe_prompt: String,
        /// The minimally edited safe counterpart.
        safe_prompt: String,
    },
    /// An unsafe prompt whose safe counterpart the rewriter makes.
    Unsafe(String),
    /// A benign prompt, rendered once (its row's safe side equals its unsafe side).
    Benign(String),
}

/// One input read from a source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceItem {
    /// The prompts.
    pub prompts: Prompts,
    /// Candidate categories, in order (one for explicit pairs; I2P rows may list several).
    pub categories: Vec<String>,
    /// A seed fixed by the source (e.g. I2P's sd_seed), else derived later.
    pub seed: Option<u64>,
    /// A guidance scale fixed by the source, else the manifest's.
    pub guidance_scale: Option<f32>,
    /// Where it came from.
    pub origin: Origin,
}

/// An input that did not become a pair, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reject {
    /// Source file.
    pub source: PathBuf,
    /// 1-based line or row.
    pub line: usize,
    /// The row's id or case number, when the source has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Short reason code (e.g. `invalid-utf8`, `no-concept-term`).
    pub reason: String,
    /// Human-readable detail.
    pub detail: String,
    /// The unsafe prompt, when one was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsafe_prompt: Option<String>,
    /// The safe prompt, when one was read or made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safe_prompt: Option<String>,
}

impl Reject {
    /// A reject at `origin`.
    pub fn at(origin: &Origin, reason: &str, detail: impl Into<String>) -> Self {
        Self {
            source: origin.file.clone(),
            line: origin.line,
            id: origin.id.clone(),
            reason: reason.to_owned(),
            detail: detail.into(),
            unsafe_prompt: None,
            safe_prompt: None,
        }
    }

    /// The same reject with the prompts attached.
    pub fn with_prompts(mut self, unsafe_prompt: &str, safe_prompt: Option<&str>) -> Self {
        self.unsafe_prompt = Some(unsafe_prompt.to_owned());
        self.safe_prompt = safe_prompt.map(str::to_owned);
        self
    }
}

/// What reading the sources gave.
#[derive(Debug, Default)]
pub struct SourceBatch {
    /// Inputs, in source order.
    pub items: Vec<SourceItem>,
    /// Rows that could not be read.
    pub rejects: Vec<Reject>,
    /// Rows left out by a source's filters (not rejects: the user asked for it).
    pub filtered: usize,
    /// Every file read, in order.
    pub files: Vec<SourceFile>,
}

/// A file a source reads: how the build records it (the manifest's path, or
/// `hf://datasets/org/name@commit/file`) and where it is on disk.
pub type SourceFile = (String, PathBuf);

/// A reader of one source format.
pub trait PromptSource {
    /// Reads the source; unreadable files are errors, unreadable rows are rejects.
    fn read(&self, batch: &mut SourceBatch) -> Result<(), AcsError>;
}

/// Opens the reader for a `[[sources]]` entry (`index` counts from 0): its files resolved
/// against the manifest's folder, or fetched from the hub for a dataset repository. Returns
/// the reader and the files it reads, as the build records them.
pub fn open_source(
    section: &SourceSection,
    index: usize,
    manifest: &LoadedManifest,
) -> Result<(Box<dyn PromptSource>, Vec<SourceFile>), AcsError> {
    let category = section.category.clone();
    let role = section.role;
    let local = |path: &Option<PathBuf>| -> (String, PathBuf) {
        let path = path.clone().unwrap_or_default();
        (path.display().to_string(), manifest.resolve(&path))
    };
    let map = || {
        let preset = match section.kind {
            SourceKind::I2pCsv | SourceKind::I2pParquet => Some(Preset::I2p),
            _ => section.preset,
        };
        (
            preset,
            ColumnMap::new(preset, role, section.columns.as_ref()),
        )
    };
    if section.kind == SourceKind::PairsJoin {
        let files = vec![local(&section.unsafe_path), local(&section.safe_path)];
        let reader = PairsJoin {
            unsafe_path: files[0].1.clone(),
            safe_path: files[1].1.clone(),
            format: section.format,
            on: section
                .on
                .clone()
                .unwrap_or_else(|| "case_number".to_owned()),
            map: map().1,
            category,
            use_seed: section.use_seed,
            use_guidance: section.use_guidance,
        };
        return Ok((Box::new(reader), files));
    }
    let files = match &section.repo {
        Some(repo) => {
            let snapshot = repo::source_files(section, repo).map_err(|e| match e {
                RuntimeError::Setting { reason, .. } => AcsError::input(format!(
                    "{}: [[sources]] #{}.repo: {reason}",
                    manifest.file.display(),
                    index + 1
                )),
                other => {
                    let message = AcsError::from(other).to_string();
                    let message = message.strip_prefix("internal error: ").unwrap_or(&message);
                    AcsError::input(format!(
                        "{}: [[sources]] #{} (dataset {repo}): {message}",
                        manifest.file.display(),
                        index + 1
                    ))
                }
            })?;
            snapshot
                .files
                .iter()
                .map(|f| {
                    let key = format!("hf://datasets/{repo}@{}/{f}", snapshot.commit);
                    (key, snapshot.path(f))
                })
                .collect()
        }
        None => vec![local(&section.path)],
    };
    let path = files[0].1.clone();
    let reader: Box<dyn PromptSource> = match section.kind {
        SourceKind::PairsJsonl => Box::new(PairsJsonl {
            path,
            category,
            role,
        }),
        SourceKind::PairsCsv => Box::new(PairsCsv {
            path,
            category,
            role,
        }),
        SourceKind::PromptsTxt => Box::new(PromptsTxt {
            path,
            category,
            role,
        }),
        kind => {
            let (preset, map) = map();
            let format = match kind {
                SourceKind::I2pCsv => Some(TableFormat::Csv),
                SourceKind::I2pParquet => Some(TableFormat::Parquet),
                _ => section.format,
            };
            Box::new(MappedSource {
                paths: files.iter().map(|(_, p)| p.clone()).collect(),
                format,
                kind,
                role,
                map,
                category,
                i2p: (preset == Some(Preset::I2p)).then(|| I2pFilter::from_section(section)),
                use_seed: section.use_seed,
                use_guidance: section.use_guidance,
            })
        }
    };
    Ok((reader, files))
}

/// Reads every source of a manifest, in manifest order. A source without a single row is an
/// error (an empty file is almost always a mistake).
pub fn read_all(manifest: &LoadedManifest) -> Result<SourceBatch, AcsError> {
    let mut batch = SourceBatch::default();
    for (index, section) in manifest.manifest.sources.iter().enumerate() {
        let before = (batch.items.len(), batch.rejects.len(), batch.filtered);
        let (reader, files) = open_source(section, index, manifest)?;
        reader.read(&mut batch)?;
        if (batch.items.len(), batch.rejects.len(), batch.filtered) == before {
            let names: Vec<String> = files.iter().map(|(_, p)| p.display().to_string()).collect();
            return Err(AcsError::input(format!(
                "{}: empty: the {} source holds no rows",
                names.join(", "),
                section.kind
            )));
        }
        batch.files.extend(files);
    }
    Ok(batch)
}

/// Column names for a message: each quoted and escaped, so odd bytes cannot break the line.
pub(crate) fn quoted_names(names: &[String]) -> String {
    if names.is_empty() {
        return "no columns".into();
    }
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads a whole source file.
fn read_file(path: &Path) -> Result<Vec<u8>, AcsError> {
    std::fs::read(path).map_err(|e| AcsError::io(path, e))
}

/// serde_json's error on one line of a JSONL file, with the column but not its "line 1" (the
/// reject names the file's own line).
fn json_line_error(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let message = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(m, _)| m);
    format!("invalid JSON object: {message} (column {})", err.column())
}

/// A decoded line with its origin, or the reject of a line that is not valid UTF-8.
type TextLine = Result<(Origin, String), Reject>;

/// The non-blank lines of a text source, in order.
fn text_lines(path: &Path) -> Result<Vec<TextLine>, AcsError> {
    let bytes = read_file(path)?;
    let mut lines = Vec::new();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let origin = Origin {
            file: path.to_path_buf(),
            line: index + 1,
            id: None,
        };
        match crate::prompts::text::decode(raw) {
            Ok(text) if text.trim().is_empty() => {}
            Ok(text) => lines.push(Ok((origin, text.to_owned()))),
            Err(reason) => lines.push(Err(Reject::at(&origin, "invalid-utf8", reason))),
        }
    }
    Ok(lines)
}

/// A category named by a row or the source, checked against the taxonomy.
fn checked_category(named: Option<String>, default: &Option<String>) -> Result<String, String> {
    match named {
        Some(name) => canonical_category(&name).map(str::to_owned).ok_or_else(|| {
            format!(
                "category `{}` is not one of {}",
                categories::normalise_category(&name),
                crate::manifest::pair_categories()
            )
        }),
        None => default
            .clone()
            .ok_or_else(|| "no category (set `category` in the row or in [[sources]])".into()),
    }
}

/// A prompt field after text hygiene; `Err` when it is missing or blank.
fn prompt_field(value: Option<&str>, field: &str) -> Result<String, String> {
    let value = value.ok_or_else(|| format!("missing field `{field}`"))?;
    let cleaned = crate::prompts::text::clean(value);
    if cleaned.is_empty() {
        return Err(format!("field `{field}` is empty"));
    }
    Ok(cleaned)
}

/// An explicit pair's item, or the reject that says why it is not one.
fn pair_item(
    origin: Origin,
    unsafe_prompt: Option<&str>,
    safe_prompt: Option<&str>,
    category: Result<String, String>,
    seed: Option<u64>,
    guidance_scale: Option<f32>,
) -> Result<SourceItem, Box<Reject>> {
    let reject = |reason: &str, detail: String| Box::new(Reject::at(&origin, reason, detail));
    let unsafe_prompt =
        prompt_field(unsafe_prompt, "unsafe_prompt").map_err(|e| reject("invalid-row", e))?;
    let safe_prompt =
        prompt_field(safe_prompt, "safe_prompt").map_err(|e| reject("invalid-row", e))?;
    let category = category.map_err(|e| reject("bad-category", e))?;
    check_guidance(guidance_scale).map_err(|e| reject("invalid-row", e))?;
    Ok(SourceItem {
        prompts: Prompts::Pair {
            unsafe_prompt,
            safe_prompt,
        },
        categories: vec![category],
        seed,
        guidance_scale,
        origin,
    })
}

/// A source's guidance scale, when it gives one, must be a number >= 0.
fn check_guidance(guidance_scale: Option<f32>) -> Result<(), String> {
    match guidance_scale {
        Some(g) if !(g.is_finite() && (0.0..=MAX_GUIDANCE_SCALE).contains(&g)) => Err(format!(
            "guidance_scale must be in [0, {MAX_GUIDANCE_SCALE}] (got {g})"
        )),
        _ => Ok(()),
    }
}

/// A benign prompt's item (the `prompt` field of a benign JSONL / CSV source), or the reject
/// that says why it is not one.
fn benign_item(
    origin: Origin,
    prompt: Option<&str>,
    seed: Option<u64>,
    guidance_scale: Option<f32>,
) -> Result<SourceItem, Box<Reject>> {
    let reject = |detail: String| Box::new(Reject::at(&origin, "invalid-row", detail));
    let prompt = prompt_field(prompt, "prompt").map_err(reject)?;
    check_guidance(guidance_scale).map_err(reject)?;
    Ok(SourceItem {
        prompts: Prompts::Benign(prompt),
        categories: vec![BENIGN_CATEGORY.to_owned()],
        seed,
        guidance_scale,
        origin,
    })
}
