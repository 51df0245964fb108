//! `acs model ...`: fetch a model into the Hugging Face cache, list the cache, write the tiny
//! model, tokenize prompts, run one component, write an initial latent. Each returns a report
//! that prints itself.

use std::fmt;
use std::path::{Path, PathBuf};

use acs_schema::write_atomic;
use indicatif::HumanBytes;
use serde::Serialize;

use crate::error::AcsError;
use crate::runtime::hub::list::format_models;
use crate::runtime::hub::{fetch_model, list_models, FetchOptions, HubSettings};
use crate::runtime::model::embedded::EmbeddedModel;
use crate::runtime::model::forward::{run_components, SchedulerChoice};
use crate::runtime::rng::Mt19937;
use crate::runtime::{ClipTokenizer, Dtype, RuntimeError, Setting, StableDiffusion};
use crate::store::imaging::npy_f32;

/// A runtime error in the terms of `acs model fetch`'s command line.
fn on_command_line(err: RuntimeError) -> AcsError {
    match err {
        RuntimeError::Setting {
            setting: Setting::Revision,
            reason,
        } => AcsError::input(format!("--revision: {reason}")),
        other => other.into(),
    }
}

/// What `acs model fetch` did.
#[derive(Debug, Clone, Serialize)]
pub struct FetchSummary {
    /// The hub id.
    pub repo: String,
    /// The revision asked for.
    pub revision: String,
    /// The commit it named.
    pub commit: String,
    /// The snapshot folder.
    pub snapshot: PathBuf,
    /// Files the pipeline uses.
    pub files: usize,
    /// Files downloaded this time.
    pub downloaded_files: usize,
    /// Bytes downloaded this time.
    pub downloaded_bytes: u64,
}

/// Downloads a model into the Hugging Face cache (HF_ENDPOINT, HF_TOKEN, HF_HOME).
pub fn fetch(options: &FetchOptions) -> Result<FetchSummary, AcsError> {
    let settings = HubSettings::from_env().map_err(on_command_line)?;
    let report = fetch_model(&settings, options, &mut |line| {
        tracing::info!("note: {line}")
    })
    .map_err(on_command_line)?;
    Ok(FetchSummary {
        repo: options.repo.clone(),
        revision: options.revision.clone(),
        commit: report.commit,
        snapshot: report.snapshot,
        files: report.files,
        downloaded_files: report.downloaded_files,
        downloaded_bytes: report.downloaded_bytes,
    })
}

impl fmt::Display for FetchSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}@{} (commit {}) is in {}",
            self.repo,
            self.revision,
            self.commit,
            self.snapshot.display()
        )?;
        if self.downloaded_files == 0 {
            writeln!(f, "  all {} files were already in the cache", self.files)
        } else {
            writeln!(
                f,
                "  downloaded {} of {} files ({})",
                self.downloaded_files,
                self.files,
                HumanBytes(self.downloaded_bytes)
            )
        }
    }
}

/// The models in the Hugging Face cache and the embedded models, as a table.
pub fn list() -> Result<String, AcsError> {
    let cache = crate::runtime::hub::cache::hub_cache_dir();
    let models = list_models(&cache)?;
    Ok(format_models(&cache, &models, &EmbeddedModel::ALL))
}

/// Writes an embedded model into `dir`; the line to print.
pub fn init_embedded(model: EmbeddedModel, dir: &Path) -> Result<String, AcsError> {
    model.write(dir)?;
    Ok(format!("wrote {} to {}\n", model.id(), dir.display()))
}

/// One tokenized prompt.
#[derive(Debug, Clone, Serialize)]
pub struct Tokenized {
    /// The 77 padded ids.
    pub ids: Vec<u32>,
    /// The ids between the start and end tokens.
    pub content: Vec<u32>,
    /// The prompt was longer than 77 tokens.
    pub truncated: bool,
}

/// The tokens of every line of `input` (`-`: stdin), with a model folder's tokenizer or the
/// embedded one; one JSON object per line.
pub fn tokenize(input: &Path, model: Option<&Path>) -> Result<String, AcsError> {
    let tokenizer = tokenizer_of(model)?;
    let text = read_input(input)?;
    let mut out = String::new();
    for prompt in text.lines() {
        let tokens = tokenizer.encode(prompt)?;
        let line = Tokenized {
            ids: tokens.ids,
            content: tokens.content,
            truncated: tokens.truncated,
        };
        out.push_str(&serde_json::to_string(&line)?);
        out.push('\n');
    }
    Ok(out)
}

/// The token map of every pair of `input` (`-`: stdin; JSON lines with `unsafe` and `safe`):
/// one JSON object per line, `{"kind": "swap"|"refine", "columns": [...]}` where a column is
/// `"own"` or a list of `[source position, weight]`, or `{"error": why}` for a pair that cannot
/// be mapped.
pub fn token_map(input: &Path, model: Option<&Path>) -> Result<String, AcsError> {
    use crate::runtime::attention::token_map::{pair_map, ColumnSource};

    let tokenizer = tokenizer_of(model)?;
    let text = read_input(input)?;
    let mut out = String::new();
    for (number, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let where_ = format!("{}:{}", input.display(), number + 1);
        let pair: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| AcsError::input(format!("{where_}: not a JSON object: {e}")))?;
        let field = |key: &str| {
            pair[key].as_str().map(str::to_owned).ok_or_else(|| {
                AcsError::input(format!("{where_}: `{key}` is missing or not a string"))
            })
        };
        let record = match pair_map(&tokenizer, &field("unsafe")?, &field("safe")?) {
            Ok((kind, map)) => {
                let columns: Vec<serde_json::Value> = map
                    .columns
                    .iter()
                    .map(|column| match column {
                        ColumnSource::Own => serde_json::json!("own"),
                        ColumnSource::Mix(terms) => serde_json::json!(terms),
                    })
                    .collect();
                serde_json::json!({ "kind": kind.name(), "columns": columns })
            }
            Err(why) => serde_json::json!({ "error": why }),
        };
        out.push_str(&serde_json::to_string(&record)?);
        out.push('\n');
    }
    Ok(out)
}

/// The CLIP tokenizer of a model folder's `tokenizer/`, or the embedded one.
fn tokenizer_of(model: Option<&Path>) -> Result<ClipTokenizer, AcsError> {
    Ok(match model {
        Some(dir) => ClipTokenizer::from_folder(&dir.join("tokenizer"))?,
        None => ClipTokenizer::embedded()?,
    })
}

/// The text of `input`, or of stdin for `-`.
fn read_input(input: &Path) -> Result<String, AcsError> {
    if input.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| AcsError::input(format!("stdin: {e}")))
    } else {
        std::fs::read_to_string(input).map_err(|e| AcsError::io(input, e))
    }
}

/// Runs the components whose inputs `inputs` holds; the names of the outputs, one per line.
pub fn forward(
    model: &Path,
    inputs: &Path,
    out: &Path,
    scheduler: Option<SchedulerChoice>,
    dtype: Dtype,
) -> Result<String, AcsError> {
    let model = StableDiffusion::load(model, dtype.candle(), candle_core::Device::Cpu, None)?;
    let names = run_components(&model, inputs, out, scheduler)?;
    Ok(names.iter().map(|n| format!("{n}\n")).collect())
}

/// Writes the x_T acs draws for `seed` as a float32 `.npy` file of `shape`.
pub fn initial_latent(seed: u64, shape: &[usize], out: &Path) -> Result<(), AcsError> {
    let count: usize = shape.iter().product();
    if count == 0 || count > 1 << 28 {
        return Err(AcsError::input(format!(
            "--shape: {shape:?} must have between 1 and 2^28 elements"
        )));
    }
    let values = Mt19937::new(seed).randn_f32(count);
    write_atomic(out, &npy_f32(&values, shape))?;
    Ok(())
}
