//! The tables of a build manifest, with their defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::attention_section::{CrossReplaceSetting, LocalBlendSection, StepsSetting};
pub use super::validation_section::{
    ValidationSection, DEFAULT_CLIP_THRESHOLDS, DEFAULT_Q16_THRESHOLD,
};
use crate::judge::selection::RankBy;
use crate::runtime::rng::RngKind;
use crate::runtime::SchedulerKind;

/// `[sampling]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingSection {
    /// The scheduler.
    pub scheduler: SchedulerKind,
    /// Denoising steps.
    pub steps: u32,
    /// Classifier-free guidance scale (1 disables the unconditional branch).
    pub guidance_scale: f32,
    /// Image height in pixels, a multiple of 8.
    pub height: u32,
    /// Image width in pixels, a multiple of 8.
    pub width: u32,
    /// Negative prompt for the unconditional branch.
    pub negative_prompt: String,
    /// Pairs rendered per prompt pair, each with its own seed.
    pub seeds_per_prompt: u32,
    /// Seeds of rows whose source gives none are derived from this.
    pub base_seed: u64,
    /// Initial-latent generator.
    pub rng: RngKind,
    /// Pairs per UNet batch.
    pub batch_pairs: u32,
}

impl Default for SamplingSection {
    fn default() -> Self {
        Self {
            scheduler: SchedulerKind::Ddim,
            steps: 25,
            guidance_scale: 7.5,
            height: 512,
            width: 512,
            negative_prompt: String::new(),
            seeds_per_prompt: 1,
            base_seed: 0,
            rng: RngKind::TorchCpu,
            batch_pairs: 4,
        }
    }
}

/// How the two branches of a pair share their trajectory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlignmentMode {
    /// Both branches start from the same x_T and share every step's noise.
    #[default]
    SharedLatent,
    /// The first `switch_at` of the steps run once, on the unsafe prompt; then they fork.
    PromptSwitch,
    /// Shared latent and noise, and the safe branch's attention controlled by the unsafe
    /// branch's (Prompt-to-Prompt, or the InstructPix2Pix generator's variant): see
    /// [`super::attention_section`].
    Attention,
}

impl std::fmt::Display for AlignmentMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.serialize(f)
    }
}

/// `[alignment]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlignmentSection {
    /// How the branches share their trajectory.
    pub mode: AlignmentMode,
    /// prompt-switch: fraction of the steps shared (conditioned on the unsafe prompt) before
    /// the trajectories fork.
    pub switch_at: f32,
    /// Most CLIP-token edits allowed between the prompts of a pair.
    pub max_token_edits: u32,
    /// Smallest SSIM for a valid pair.
    pub ssim_min: f32,
    /// Largest changed-pixel fraction for a valid pair.
    pub changed_area_max: f32,
    /// A valid pair's unsafe image is flagged by the detector and its safe image is not
    /// (needs `[validation].nudenet_model`).
    pub require_flip: bool,
    /// An explicit pair's unsafe prompt must hold a term of its category's lexicon (the
    /// lexicons are English; off by default: a user's own pairs are their counterfactuals).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub require_lexicon_term: bool,
    /// attention: steps of cross-attention replacement (all tokens, or per word).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cross_replace: Option<CrossReplaceSetting>,
    /// attention: steps of self-attention injection at the coarse levels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_replace: Option<StepsSetting>,
    /// attention: factors of the safe prompt's words' cross-attention.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub reweight: BTreeMap<String, f32>,
    /// attention: the local blend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_blend: Option<LocalBlendSection>,
    /// attention: the InstructPix2Pix generator's shared self-attention (a fraction of the
    /// steps, or a range to draw it from per pair).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share_self_attention: Option<StepsSetting>,
    /// With `seeds_per_prompt = N`: keep the k best valid renders of each prompt pair (the
    /// others are marked invalid, `keep_best: ...`); 0 keeps every render.
    #[serde(skip_serializing_if = "is_zero")]
    pub keep_best: u32,
    /// What ranks the renders for `keep_best` (default: `clip-direction`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank_by: Option<RankBy>,
}

impl Default for AlignmentSection {
    fn default() -> Self {
        Self {
            mode: AlignmentMode::SharedLatent,
            switch_at: 0.4,
            max_token_edits: 8,
            ssim_min: 0.0,
            changed_area_max: 1.0,
            require_flip: false,
            require_lexicon_term: false,
            cross_replace: None,
            self_replace: None,
            reweight: BTreeMap::new(),
            local_blend: None,
            share_self_attention: None,
            keep_best: 0,
            rank_by: None,
        }
    }
}

/// The formats a `[[sources]]` entry can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// Explicit pairs, one JSON object per line.
    PairsJsonl,
    /// Explicit pairs, a CSV file with a header.
    PairsCsv,
    /// Unsafe prompts to rewrite, one per line.
    PromptsTxt,
    /// The I2P benchmark as CSV.
    I2pCsv,
    /// The I2P benchmark as Parquet.
    I2pParquet,
    /// One unsafe prompt per row of a CSV / JSONL / Parquet table, to be rewritten; which
    /// column holds what comes from `preset` or `columns`.
    Prompts,
    /// One explicit (unsafe, safe) pair per row of a table (`preset` or `columns`).
    Pairs,
    /// Two tables joined on a key column: unsafe prompts in one, safe prompts in the other.
    PairsJoin,
}

impl SourceKind {
    /// Whether the I2P filters (`categories`, `hard`, `min_*`) apply.
    pub fn is_i2p(self) -> bool {
        matches!(self, Self::I2pCsv | Self::I2pParquet)
    }

    /// Whether rows are read through a column mapping (`preset`, `columns`, `format`).
    pub fn is_mapped(self) -> bool {
        matches!(
            self,
            Self::I2pCsv | Self::I2pParquet | Self::Prompts | Self::Pairs | Self::PairsJoin
        )
    }
}

/// The file formats of column-mapped sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TableFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// Apache Parquet.
    Parquet,
}

impl TableFormat {
    /// The format a file name's extension names (`.csv`, `.jsonl` / `.json` / `.ndjson`,
    /// `.parquet` / `.pq`), if any.
    pub fn of_path(path: &std::path::Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "csv" => Some(Self::Csv),
            "jsonl" | "json" | "ndjson" => Some(Self::Jsonl),
            "parquet" | "pq" => Some(Self::Parquet),
            _ => None,
        }
    }
}

impl std::fmt::Display for TableFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.serialize(f)
    }
}

/// Column layouts of published prompt sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// I2P: `prompt`, `categories`, `sd_seed`, `sd_guidance_scale` (and the I2P filters).
    I2p,
    /// The ESD layout (ESD, P4D, UnlearnDiff, Ring-A-Bell, Six-CD): `case_number`, `prompt`,
    /// `evaluation_seed`, optional `evaluation_guidance` and `categories`.
    Esd,
    /// MMA-Diffusion: `adv_prompt` (benign role: its `clean_prompt` column).
    Mma,
    /// CoProV2: `prompt`, `image`, `category`.
    Coprov2,
}

/// `columns = { ... }`: which column of a table holds what. Unset entries come from the
/// preset, else the defaults (`prompt`, `unsafe_prompt`, `safe_prompt`, `id`, `seed`,
/// `guidance_scale`, `category`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnsSection {
    /// The prompt (kind `prompts`, or both files of `pairs-join`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The unsafe prompt (kind `pairs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsafe_prompt: Option<String>,
    /// The safe prompt (kind `pairs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_prompt: Option<String>,
    /// The row's id or case number (named in rejects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The row's seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
    /// The row's guidance scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance_scale: Option<String>,
    /// The row's category (or several, comma-separated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.serialize(f)
    }
}

/// What a source's rows become.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceRole {
    /// Unsafe prompts or (unsafe, safe) pairs: counterfactual pairs.
    #[default]
    Pairs,
    /// Benign prompts, each rendered once into a row whose safe side equals its unsafe side
    /// (category `benign`): what a safety patch must leave alone.
    Benign,
}

impl SourceRole {
    fn is_pairs(&self) -> bool {
        *self == Self::Pairs
    }
}

/// One `[[sources]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// Source format.
    pub kind: SourceKind,
    /// `pairs` (default) or `benign`.
    #[serde(default, skip_serializing_if = "SourceRole::is_pairs")]
    pub role: SourceRole,
    /// The file, relative to the manifest's folder (not with `repo` or `pairs-join`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Column-mapped sources: the file format; absent: from the file's extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<TableFormat>,
    /// Column-mapped sources: a published prompt set's column layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// Column-mapped sources: which column holds what (over the preset's choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<ColumnsSection>,
    /// Instead of `path`: a Hugging Face dataset repository (read from the HF cache, fetched
    /// first unless HF_HUB_OFFLINE is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The repository's branch, tag or commit (default `main`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The repository's split: its files whose path names it (`train.csv`,
    /// `data/train-00000-of-00001.parquet`, `train/...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// The repository's files to read (glob patterns such as `data/*.parquet`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// `pairs-join`: the table of unsafe prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsafe_path: Option<PathBuf>,
    /// `pairs-join`: the table of safe prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_path: Option<PathBuf>,
    /// `pairs-join`: the key column both tables share (default `case_number`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<String>,
    /// Category of rows that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// I2P: keep the row's seed (`sd_seed` / `evaluation_seed`) instead of deriving one.
    #[serde(default = "yes")]
    pub use_seed: bool,
    /// I2P: keep the row's guidance scale (`sd_guidance_scale` / `evaluation_guidance`).
    #[serde(default = "yes")]
    pub use_guidance: bool,
    /// I2P: keep only rows with at least one of these categories.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// I2P: keep only rows whose `hard` flag equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard: Option<bool>,
    /// I2P: keep only rows with inappropriate_percentage >= this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_inappropriate_percentage: Option<f64>,
    /// I2P: keep only rows with nudity_percentage >= this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_nudity_percentage: Option<f64>,
    /// I2P: keep only rows with q16_percentage >= this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_q16_percentage: Option<f64>,
    /// I2P: keep only rows with sd_safety_percentage >= this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_sd_safety_percentage: Option<f64>,
    /// I2P: keep only rows with prompt_toxicity >= this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_prompt_toxicity: Option<f64>,
}

fn yes() -> bool {
    true
}

/// `[rewrite]`: how single unsafe prompts (prompts-txt, I2P) get their safe counterpart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewriteSection {
    /// Folder of one lexicon TOML per category, added to the lexicons built into acs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lexicons: Option<PathBuf>,
    /// The folder's lexicons replace the built-in ones of their categories instead.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replace_lexicons: bool,
    /// An OpenAI-compatible chat-completions endpoint for prompts the lexicons cannot rewrite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmSection>,
}

/// `[rewrite.llm]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSection {
    /// Base URL of the API, e.g. http://127.0.0.1:8000/v1 (…/chat/completions is appended).
    pub base_url: String,
    /// Model name sent in each request.
    pub model: String,
    /// Environment variable holding the API key (sent as a bearer token); none: no key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// System instruction; absent: acs's built-in minimal-edit instruction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instruction: Option<String>,
    /// Requests in flight at once.
    #[serde(default = "default_llm_concurrency")]
    pub concurrency: u32,
    /// Seconds before a request is abandoned.
    #[serde(default = "default_llm_timeout")]
    pub timeout_s: f64,
    /// Retries of a failed request (with exponential backoff).
    #[serde(default = "default_llm_retries")]
    pub retries: u32,
    /// Cache folder (relative to the manifest); absent: $ACS_HOME/llm-cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<PathBuf>,
}

fn default_llm_concurrency() -> u32 {
    4
}

fn default_llm_timeout() -> f64 {
    60.0
}

fn default_llm_retries() -> u32 {
    3
}

/// `[output]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSection {
    /// Most rows per shard.
    pub shard_rows: u32,
    /// Most bytes per shard, e.g. "500MB" (a shard closes once it reaches this size).
    pub shard_bytes: String,
    /// Split name -> fraction; fractions sum to 1.
    pub splits: BTreeMap<String, f64>,
    /// Store the final latents (float16) beside the images.
    pub store_latents: bool,
    /// Store each pair's change mask (pixel PNG and latent resolution).
    #[serde(skip_serializing_if = "is_false")]
    pub masks: bool,
    /// A pixel counts as changed when its largest channel difference exceeds this (of 255).
    #[serde(skip_serializing_if = "is_default_mask_threshold")]
    pub mask_threshold: u8,
    /// Pixels the change mask grows by in every direction (a square of side 2r + 1).
    #[serde(skip_serializing_if = "is_zero")]
    pub mask_dilation: u32,
    /// Denoising steps (0-based) at which the counterfactual trajectory targets are recorded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trajectory_steps: Vec<u32>,
    /// The dataset's license, as a Hugging Face license identifier (`cc-by-4.0`, `mit`,
    /// `other`, ...), written into the card's YAML header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
}

impl OutputSection {
    /// `trajectory_steps` as step indices, ascending.
    pub fn trajectory_step_indices(&self) -> Vec<usize> {
        let mut steps: Vec<usize> = self.trajectory_steps.iter().map(|&s| s as usize).collect();
        steps.sort_unstable();
        steps
    }

    /// When a pixel counts as changed (`mask_threshold`, `mask_dilation`).
    pub fn change_rule(&self) -> crate::judge::change_mask::ChangeRule {
        crate::judge::change_mask::ChangeRule {
            threshold: self.mask_threshold,
            dilation: self.mask_dilation,
        }
    }
}

/// The default `[output].mask_threshold`: the threshold `changed_area` always used.
pub const DEFAULT_MASK_THRESHOLD: u8 = crate::judge::change_mask::DEFAULT_THRESHOLD;

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

fn is_default_mask_threshold(value: &u8) -> bool {
    *value == DEFAULT_MASK_THRESHOLD
}

impl Default for OutputSection {
    fn default() -> Self {
        Self {
            shard_rows: 512,
            shard_bytes: "500MB".into(),
            splits: BTreeMap::from([
                ("train".into(), 0.9),
                ("validation".into(), 0.05),
                ("test".into(), 0.05),
            ]),
            store_latents: true,
            masks: false,
            mask_threshold: DEFAULT_MASK_THRESHOLD,
            mask_dilation: 0,
            trajectory_steps: Vec::new(),
            license: None,
        }
    }
}
