//! The build manifest (TOML): parsing, unknown-key detection with suggestions, defaults and
//! range checks. Relative paths are resolved against the manifest file's folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::edit_distance::nearest;
use crate::error::{one_line, AcsError};

/// Most pairs rendered per prompt pair (each with its own seed).
pub const MAX_SEEDS_PER_PROMPT: u32 = 10_000;

/// The I2P taxonomy of unsafe categories.
pub const CATEGORIES: [&str; 7] = [
    "sexual",
    "violence",
    "hate",
    "harassment",
    "self-harm",
    "shocking",
    "illegal-activity",
];

/// A parsed, checked build manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildManifest {
    /// The model; absent means the embedded tiny model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSection>,
    /// Sampler settings.
    #[serde(default)]
    pub sampling: SamplingSection,
    /// Alignment mode and thresholds.
    #[serde(default)]
    pub alignment: AlignmentSection,
    /// Prompt sources, at least one.
    #[serde(default)]
    pub sources: Vec<SourceSection>,
    /// How unsafe prompts without a safe counterpart are rewritten.
    #[serde(default)]
    pub rewrite: RewriteSection,
    /// Shard output settings.
    #[serde(default)]
    pub output: OutputSection,
    /// The safety detector that decides whether a pair's label flips.
    #[serde(default, skip_serializing_if = "ValidationSection::is_default")]
    pub validation: ValidationSection,
}

/// `[model]`: a local diffusers-layout folder, or a hub id found in the Hugging Face cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Folder in diffusers layout (model_index.json, unet/, vae/, text_encoder/, tokenizer/).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Hub id (org/name), resolved in the local Hugging Face cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Branch, tag or commit of `repo`.
    #[serde(default = "default_revision")]
    pub revision: String,
    /// Weight dtype: f32, f16 or bf16.
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// cpu, cuda, cuda:N, metal or metal:N (GPUs need the `cuda` / `metal` cargo feature).
    #[serde(default = "default_device")]
    pub device: String,
}

/// `[sampling]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingSection {
    /// Scheduler name: ddim, euler, euler-ancestral, dpmpp-2m or dpmpp-2m-karras.
    pub scheduler: String,
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
    /// Initial-latent generator: torch-cpu.
    pub rng: String,
    /// Pairs per UNet batch.
    pub batch_pairs: u32,
}

impl Default for SamplingSection {
    fn default() -> Self {
        Self {
            scheduler: "ddim".into(),
            steps: 25,
            guidance_scale: 7.5,
            height: 512,
            width: 512,
            negative_prompt: String::new(),
            seeds_per_prompt: 1,
            base_seed: 0,
            rng: "torch-cpu".into(),
            batch_pairs: 4,
        }
    }
}

/// `[alignment]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlignmentSection {
    /// shared-latent or prompt-switch.
    pub mode: String,
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
}

impl Default for AlignmentSection {
    fn default() -> Self {
        Self {
            mode: "shared-latent".into(),
            switch_at: 0.4,
            max_token_edits: 8,
            ssim_min: 0.0,
            changed_area_max: 1.0,
            require_flip: false,
        }
    }
}

/// `[validation]`: the NudeNet detector that scores both images of every pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationSection {
    /// Path to NudeNet's 320n.onnx (relative to the manifest), or "installed" for the one in
    /// the `nudenet` Python package; absent: no detector, the nudenet columns stay null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nudenet_model: Option<String>,
    /// Score at or above which an image counts as flagged.
    pub nudenet_threshold: f32,
    /// The classes whose detections count (NudeNet's labels).
    pub nudenet_classes: Vec<String>,
}

impl Default for ValidationSection {
    fn default() -> Self {
        Self {
            nudenet_model: None,
            nudenet_threshold: 0.45,
            nudenet_classes: crate::nudenet::DEFAULT_FLIP_CLASSES
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
        }
    }
}

impl ValidationSection {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Source kinds.
pub const SOURCE_KINDS: [&str; 5] = [
    "pairs-jsonl",
    "pairs-csv",
    "prompts-txt",
    "i2p-csv",
    "i2p-parquet",
];

/// One `[[sources]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// Source format, one of [`SOURCE_KINDS`].
    pub kind: String,
    /// The file, relative to the manifest's folder.
    pub path: PathBuf,
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
    /// Folder of one lexicon TOML per category; absent: the lexicons built into acs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lexicons: Option<PathBuf>,
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
        }
    }
}

fn default_revision() -> String {
    "main".into()
}

fn default_dtype() -> String {
    "f32".into()
}

fn default_device() -> String {
    "cpu".into()
}

impl BuildManifest {
    /// Denoising steps both branches share: round(switch_at * steps) in prompt-switch mode,
    /// 0 in shared-latent mode.
    pub fn switch_step(&self) -> usize {
        if self.alignment.mode == "prompt-switch" {
            (self.alignment.switch_at as f64 * self.sampling.steps as f64).round() as usize
        } else {
            0
        }
    }
}

/// The keys each table accepts; anything else is an error with a suggestion.
const TOP_KEYS: &[&str] = &[
    "model",
    "sampling",
    "alignment",
    "sources",
    "rewrite",
    "output",
    "validation",
];
const MODEL_KEYS: &[&str] = &["path", "repo", "revision", "dtype", "device"];
const SAMPLING_KEYS: &[&str] = &[
    "scheduler",
    "steps",
    "guidance_scale",
    "height",
    "width",
    "negative_prompt",
    "seeds_per_prompt",
    "base_seed",
    "rng",
    "batch_pairs",
];
const ALIGNMENT_KEYS: &[&str] = &[
    "mode",
    "switch_at",
    "max_token_edits",
    "ssim_min",
    "changed_area_max",
    "require_flip",
];
const SOURCE_KEYS: &[&str] = &[
    "kind",
    "path",
    "category",
    "use_seed",
    "use_guidance",
    "categories",
    "hard",
    "min_inappropriate_percentage",
    "min_nudity_percentage",
    "min_q16_percentage",
    "min_sd_safety_percentage",
    "min_prompt_toxicity",
];
const REWRITE_KEYS: &[&str] = &["lexicons", "llm"];
const LLM_KEYS: &[&str] = &[
    "base_url",
    "model",
    "api_key_env",
    "instruction",
    "concurrency",
    "timeout_s",
    "retries",
    "cache",
];
const OUTPUT_KEYS: &[&str] = &["shard_rows", "shard_bytes", "splits", "store_latents"];
const VALIDATION_KEYS: &[&str] = &["nudenet_model", "nudenet_threshold", "nudenet_classes"];

/// A manifest together with the file it came from.
#[derive(Debug, Clone)]
pub struct LoadedManifest {
    /// The checked manifest.
    pub manifest: BuildManifest,
    /// The manifest file as given.
    pub file: PathBuf,
    /// The folder relative paths are resolved against.
    pub base_dir: PathBuf,
}

impl LoadedManifest {
    /// Reads, parses and checks a manifest file.
    pub fn load(file: &Path) -> Result<Self, AcsError> {
        let bytes = std::fs::read(file).map_err(|e| AcsError::io(file, e))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            AcsError::input(format!(
                "{}: line {line}: invalid UTF-8 at byte {at}",
                file.display()
            ))
        })?;
        let manifest = parse_manifest(&text, &file.display().to_string())?;
        let base_dir = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let base_dir = if base_dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base_dir
        };
        Ok(Self {
            manifest,
            file: file.to_path_buf(),
            base_dir,
        })
    }

    /// A manifest path resolved against the manifest's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }
}

/// Parses and checks manifest text; `origin` names the file in messages.
pub fn parse_manifest(text: &str, origin: &str) -> Result<BuildManifest, AcsError> {
    let table: toml::Table = toml::from_str(text)
        .map_err(|e| AcsError::input(format!("{origin}: {}", one_line(&e.to_string()))))?;
    check_keys(&table, origin)?;
    let manifest: BuildManifest =
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| {
                AcsError::input(format!("{origin}: {}", one_line(&e.to_string())))
            })?;
    check_values(&manifest, origin)?;
    Ok(manifest)
}

fn unknown_key(origin: &str, table: &str, key: &str, valid: &[&str]) -> AcsError {
    let hint = match nearest(key, valid) {
        Some(near) => format!(" (did you mean `{near}`?)"),
        None => format!(" (valid keys: {})", valid.join(", ")),
    };
    AcsError::input(format!("{origin}: {table}: unknown key `{key}`{hint}"))
}

fn check_table(
    value: &toml::Value,
    origin: &str,
    name: &str,
    valid: &[&str],
) -> Result<(), AcsError> {
    let Some(table) = value.as_table() else {
        return Err(AcsError::input(format!("{origin}: {name} must be a table")));
    };
    for key in table.keys() {
        if !valid.contains(&key.as_str()) {
            return Err(unknown_key(origin, name, key, valid));
        }
    }
    Ok(())
}

fn check_keys(table: &toml::Table, origin: &str) -> Result<(), AcsError> {
    for (key, value) in table {
        match key.as_str() {
            "model" => check_table(value, origin, "[model]", MODEL_KEYS)?,
            "sampling" => check_table(value, origin, "[sampling]", SAMPLING_KEYS)?,
            "alignment" => check_table(value, origin, "[alignment]", ALIGNMENT_KEYS)?,
            "output" => check_table(value, origin, "[output]", OUTPUT_KEYS)?,
            "validation" => check_table(value, origin, "[validation]", VALIDATION_KEYS)?,
            "rewrite" => {
                check_table(value, origin, "[rewrite]", REWRITE_KEYS)?;
                if let Some(llm) = value.get("llm") {
                    check_table(llm, origin, "[rewrite.llm]", LLM_KEYS)?;
                }
            }
            "sources" => {
                let Some(entries) = value.as_array() else {
                    return Err(AcsError::input(format!(
                        "{origin}: sources must be an array of tables ([[sources]])"
                    )));
                };
                for (i, entry) in entries.iter().enumerate() {
                    check_table(
                        entry,
                        origin,
                        &format!("[[sources]] #{}", i + 1),
                        SOURCE_KEYS,
                    )?;
                }
            }
            other => return Err(unknown_key(origin, "top level", other, TOP_KEYS)),
        }
    }
    Ok(())
}

/// Parses sizes such as "500MB", "2GiB", "1000000".
pub fn parse_byte_size(text: &str) -> Option<u64> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KIB" => 1024.0,
        "MIB" => 1024.0 * 1024.0,
        "GIB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = number * multiplier;
    (bytes >= 1.0 && bytes.is_finite()).then_some(bytes as u64)
}

fn check_values(m: &BuildManifest, origin: &str) -> Result<(), AcsError> {
    let fail =
        |field: &str, reason: String| Err(AcsError::input(format!("{origin}: {field}: {reason}")));
    if let Some(model) = &m.model {
        if model.path.is_some() == model.repo.is_some() {
            return fail("[model]", "set exactly one of `path` and `repo`".into());
        }
        if !["f32", "f16", "bf16"].contains(&model.dtype.as_str()) {
            return fail(
                "[model].dtype",
                format!("`{}` is not one of f32, f16, bf16", model.dtype),
            );
        }
        let device = match crate::device::DeviceSpec::parse(&model.device) {
            Ok(device) => device,
            Err(reason) => return fail("[model].device", reason),
        };
        if model.dtype == "bf16" && device == crate::device::DeviceSpec::Cpu {
            return fail(
                "[model].dtype",
                "bf16 needs a GPU device (candle's CPU matmul has no bf16); use f32 or f16 on cpu"
                    .into(),
            );
        }
        if !device.compiled_in() {
            return fail(
                "[model].device",
                format!(
                    "`{}` needs a build with GPU support (cargo build --release --features {})",
                    model.device,
                    if matches!(device, crate::device::DeviceSpec::Metal(_)) {
                        "metal"
                    } else {
                        "cuda"
                    }
                ),
            );
        }
    }
    let s = &m.sampling;
    const SCHEDULERS: [&str; 5] = [
        "ddim",
        "euler",
        "euler-ancestral",
        "dpmpp-2m",
        "dpmpp-2m-karras",
    ];
    if !SCHEDULERS.contains(&s.scheduler.as_str()) {
        return fail(
            "[sampling].scheduler",
            format!(
                "`{}` is not supported (supported: {})",
                s.scheduler,
                SCHEDULERS.join(", ")
            ),
        );
    }
    if s.steps == 0 || s.steps > 1000 {
        return fail(
            "[sampling].steps",
            format!("must be 1..=1000 (got {})", s.steps),
        );
    }
    if !(s.guidance_scale.is_finite() && s.guidance_scale >= 0.0) {
        return fail(
            "[sampling].guidance_scale",
            format!("must be a finite number >= 0 (got {})", s.guidance_scale),
        );
    }
    for (field, value) in [("height", s.height), ("width", s.width)] {
        if value == 0 || value % 8 != 0 {
            return fail(
                &format!("[sampling].{field}"),
                format!("must be a positive multiple of 8 (got {value})"),
            );
        }
        if value > 4096 {
            return fail(
                &format!("[sampling].{field}"),
                format!("must be at most 4096 (got {value})"),
            );
        }
    }
    if s.seeds_per_prompt == 0 || s.seeds_per_prompt > MAX_SEEDS_PER_PROMPT {
        return fail(
            "[sampling].seeds_per_prompt",
            format!(
                "must be 1..={MAX_SEEDS_PER_PROMPT} (got {})",
                s.seeds_per_prompt
            ),
        );
    }
    if s.rng != "torch-cpu" {
        return fail(
            "[sampling].rng",
            format!("`{}` is not supported (supported: torch-cpu)", s.rng),
        );
    }
    if s.batch_pairs == 0 {
        return fail("[sampling].batch_pairs", "must be at least 1".into());
    }
    let a = &m.alignment;
    if a.mode != "shared-latent" && a.mode != "prompt-switch" {
        return fail(
            "[alignment].mode",
            format!("`{}` is not one of shared-latent, prompt-switch", a.mode),
        );
    }
    if !(0.0..=1.0).contains(&a.switch_at) {
        return fail(
            "[alignment].switch_at",
            format!("must be in [0, 1] (got {})", a.switch_at),
        );
    }
    if !(-1.0..=1.0).contains(&a.ssim_min) {
        return fail(
            "[alignment].ssim_min",
            format!("must be in [-1, 1] (got {})", a.ssim_min),
        );
    }
    if !(0.0..=1.0).contains(&a.changed_area_max) {
        return fail(
            "[alignment].changed_area_max",
            format!("must be in [0, 1] (got {})", a.changed_area_max),
        );
    }
    let v = &m.validation;
    if !(v.nudenet_threshold.is_finite() && (0.0..=1.0).contains(&v.nudenet_threshold)) {
        return fail(
            "[validation].nudenet_threshold",
            format!("must be in [0, 1] (got {})", v.nudenet_threshold),
        );
    }
    if v.nudenet_classes.is_empty() {
        return fail(
            "[validation].nudenet_classes",
            "name at least one class".into(),
        );
    }
    if let Err(reason) = crate::nudenet::class_ids(&v.nudenet_classes) {
        return fail("[validation].nudenet_classes", reason);
    }
    if v.nudenet_model.as_deref() == Some("") {
        return fail(
            "[validation].nudenet_model",
            "empty; give the path to 320n.onnx or \"installed\"".into(),
        );
    }
    if a.require_flip && v.nudenet_model.is_none() {
        return fail(
            "[alignment].require_flip",
            "needs a detector: set [validation].nudenet_model (a path to 320n.onnx, or \"installed\")"
                .into(),
        );
    }
    if m.sources.is_empty() {
        return fail("[[sources]]", "at least one source is required".into());
    }
    for (i, source) in m.sources.iter().enumerate() {
        let field = format!("[[sources]] #{}", i + 1);
        if !SOURCE_KINDS.contains(&source.kind.as_str()) {
            return fail(
                &format!("{field}.kind"),
                format!(
                    "`{}` is not supported (supported: {})",
                    source.kind,
                    SOURCE_KINDS.join(", ")
                ),
            );
        }
        for category in source.category.iter().chain(&source.categories) {
            if !CATEGORIES.contains(&category.as_str()) {
                return fail(
                    &format!("{field}.category"),
                    format!("`{category}` is not one of {}", CATEGORIES.join(", ")),
                );
            }
        }
        let is_i2p = source.kind.starts_with("i2p-");
        let i2p_only = [
            ("categories", !source.categories.is_empty()),
            ("hard", source.hard.is_some()),
            (
                "min_inappropriate_percentage",
                source.min_inappropriate_percentage.is_some(),
            ),
            (
                "min_nudity_percentage",
                source.min_nudity_percentage.is_some(),
            ),
            ("min_q16_percentage", source.min_q16_percentage.is_some()),
            (
                "min_sd_safety_percentage",
                source.min_sd_safety_percentage.is_some(),
            ),
            ("min_prompt_toxicity", source.min_prompt_toxicity.is_some()),
        ];
        if let Some((key, _)) = i2p_only.iter().find(|(_, set)| *set && !is_i2p) {
            return fail(
                &format!("{field}.{key}"),
                format!(
                    "only applies to i2p-csv and i2p-parquet sources, not {}",
                    source.kind
                ),
            );
        }
    }
    if let Some(llm) = &m.rewrite.llm {
        if !(llm.base_url.starts_with("http://") || llm.base_url.starts_with("https://")) {
            return fail(
                "[rewrite.llm].base_url",
                format!("`{}` is not an http(s) URL", llm.base_url),
            );
        }
        if llm.model.trim().is_empty() {
            return fail("[rewrite.llm].model", "must not be empty".into());
        }
        if !(1..=256).contains(&llm.concurrency) {
            return fail(
                "[rewrite.llm].concurrency",
                format!("must be 1..=256 (got {})", llm.concurrency),
            );
        }
        if let Some(cache) = &llm.cache {
            // A manifest may come from someone else: it must not make acs write elsewhere.
            let escapes = cache.is_absolute()
                || cache
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir));
            if escapes || cache.as_os_str().is_empty() {
                return fail(
                    "[rewrite.llm].cache",
                    format!(
                        "`{}` must be a relative path inside the manifest's folder (no `..`, not \
                         absolute); leave it out to use $ACS_HOME/llm-cache",
                        cache.display()
                    ),
                );
            }
        }
        if !(llm.timeout_s.is_finite() && llm.timeout_s > 0.0) {
            return fail(
                "[rewrite.llm].timeout_s",
                format!("must be > 0 (got {})", llm.timeout_s),
            );
        }
        if llm.retries > 20 {
            return fail(
                "[rewrite.llm].retries",
                format!("must be at most 20 (got {})", llm.retries),
            );
        }
    }
    let o = &m.output;
    if o.shard_rows == 0 {
        return fail("[output].shard_rows", "must be at least 1".into());
    }
    if parse_byte_size(&o.shard_bytes).is_none() {
        return fail(
            "[output].shard_bytes",
            format!("`{}` is not a size such as \"500MB\"", o.shard_bytes),
        );
    }
    if o.splits.is_empty() {
        return fail("[output].splits", "at least one split is required".into());
    }
    for (name, fraction) in &o.splits {
        let well_named =
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !well_named {
            return fail(
                "[output].splits",
                format!("split name `{name}` must be alphanumeric or _"),
            );
        }
        if !(fraction.is_finite() && *fraction >= 0.0) {
            return fail(
                &format!("[output].splits.{name}"),
                format!("must be >= 0 (got {fraction})"),
            );
        }
    }
    let total: f64 = o.splits.values().sum();
    if (total - 1.0).abs() > 1e-6 {
        return fail(
            "[output].splits",
            format!("fractions must sum to 1 (got {total})"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[[sources]]\nkind = \"pairs-jsonl\"\npath = \"p.jsonl\"\n";

    #[test]
    fn defaults_fill_missing_tables() {
        let m = parse_manifest(MINIMAL, "m.toml").unwrap();
        assert_eq!(m.sampling.steps, 25);
        assert_eq!(m.output.splits.len(), 3);
        assert!(m.model.is_none());
    }

    #[test]
    fn unknown_keys_are_named_with_a_suggestion() {
        let text = format!("[sampling]\nstpes = 3\n{MINIMAL}");
        let err = parse_manifest(&text, "m.toml").unwrap_err().to_string();
        assert_eq!(
            err,
            "m.toml: [sampling]: unknown key `stpes` (did you mean `steps`?)"
        );
        let err = parse_manifest(&format!("[sampler]\n{MINIMAL}"), "m.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown key `sampler` (did you mean `sampling`?)"),
            "{err}"
        );
    }

    #[test]
    fn range_errors_name_the_field() {
        for (snippet, field) in [
            ("[sampling]\nsteps = 0\n", "[sampling].steps"),
            ("[sampling]\nheight = 60\n", "[sampling].height"),
            ("[output]\nsplits = { train = 0.5 }\n", "[output].splits"),
            ("[sampling]\nscheduler = \"plms\"\n", "[sampling].scheduler"),
            ("[model]\npath = \"a\"\nrepo = \"o/n\"\n", "[model]"),
            ("[model]\ndtype = \"f32\"\n", "[model]"),
        ] {
            let err = parse_manifest(&format!("{snippet}{MINIMAL}"), "m.toml")
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(&format!("m.toml: {field}: ")), "{err}");
        }
        let err = parse_manifest("", "m.toml").unwrap_err().to_string();
        assert!(err.contains("at least one source"), "{err}");
    }

    #[test]
    fn type_errors_are_one_line() {
        let err = parse_manifest(&format!("[sampling]\nsteps = \"x\"\n{MINIMAL}"), "m.toml")
            .unwrap_err()
            .to_string();
        assert!(!err.contains('\n'));
        assert!(err.contains("steps"), "{err}");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("500MB"), Some(500_000_000));
        assert_eq!(parse_byte_size("1 GiB"), Some(1 << 30));
        assert_eq!(parse_byte_size("12"), Some(12));
        assert_eq!(parse_byte_size("lots"), None);
    }
}
