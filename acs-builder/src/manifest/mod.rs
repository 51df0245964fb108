//! The build manifest (TOML): its tables ([`sections`], [`model_section`]), unknown-key detection with
//! suggestions ([`keys`]), and value checks ([`checks`]). Relative paths are resolved against
//! the manifest file's folder.

pub mod attention_section;
pub mod checks;
pub mod keys;
pub mod model_section;
pub mod sections;
mod source_checks;
pub mod validation_section;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use acs_schema::{BENIGN_CATEGORY, SHAPES_CATEGORY};
pub use model_section::ModelSection;
pub use sections::{
    AlignmentMode, AlignmentSection, ColumnsSection, LlmSection, OutputSection, Preset,
    RewriteSection, SamplingSection, SourceKind, SourceRole, SourceSection, TableFormat,
    ValidationSection, DEFAULT_CLIP_THRESHOLDS, DEFAULT_MASK_THRESHOLD, DEFAULT_Q16_THRESHOLD,
};

use crate::error::{one_line, AcsError};
use crate::judge::selection::RankBy;
use crate::judge::verdict::Thresholds;
use crate::runtime::{PairSampler, RuntimeError, Setting, StableDiffusion};

/// Most pairs rendered per prompt pair (each with its own seed).
pub const MAX_SEEDS_PER_PROMPT: u32 = 10_000;

/// The largest classifier-free guidance scale a manifest or a source row may ask for: far
/// above any useful value (Stable Diffusion uses 1-15), below the typos (`1e9`, `750`).
pub const MAX_GUIDANCE_SCALE: f32 = 100.0;

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

/// Whether a manifest or source may label pairs with `category`: one of [`CATEGORIES`] or the
/// shapes demonstrator's own category.
pub fn is_pair_category(category: &str) -> bool {
    CATEGORIES.contains(&category) || category == SHAPES_CATEGORY
}

/// What [`is_pair_category`] accepts, for messages.
pub fn pair_categories() -> String {
    format!("{}, {SHAPES_CATEGORY}", CATEGORIES.join(", "))
}

/// A parsed, checked build manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildManifest {
    /// The model; absent means the embedded shapes demonstrator.
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

impl BuildManifest {
    /// Denoising steps both branches share: round(switch_at * steps) in prompt-switch mode,
    /// 0 in shared-latent mode.
    pub fn switch_step(&self) -> usize {
        match self.alignment.mode {
            AlignmentMode::PromptSwitch => {
                (self.alignment.switch_at as f64 * self.sampling.steps as f64).round() as usize
            }
            AlignmentMode::SharedLatent | AlignmentMode::Attention => 0,
        }
    }

    /// The pair sampler of this build's `[sampling]`, `[alignment]` and trajectory outputs,
    /// on `model` (it encodes the negative prompt on the active kernel path).
    pub fn pair_sampler<'m>(
        &self,
        model: &'m StableDiffusion,
    ) -> Result<PairSampler<'m>, RuntimeError> {
        let s = &self.sampling;
        let blend =
            attention_section::attention_settings(&self.alignment).and_then(|a| a.local_blend);
        if let Some(blend) = blend {
            let unet = &model.unet_config;
            let served = match blend.level {
                Some(level) => unet.has_cross_attention(level),
                None => unet.blend_level().is_some(),
            };
            if !served {
                return Err(RuntimeError::Setting {
                    setting: Setting::LocalBlend,
                    reason: format!(
                        "the model's UNet has no down or up block with cross-attention at {} \
                         to read the blend maps from (its levels: {})",
                        blend
                            .level
                            .map_or("any level".to_owned(), |l| format!("latent/{}", 1 << l)),
                        (0..unet.levels.len())
                            .filter(|&l| unet.has_cross_attention(l))
                            .map(|l| format!("latent/{}", 1 << l))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        PairSampler::new(
            model,
            s.scheduler,
            s.steps as usize,
            s.height as usize,
            s.width as usize,
            &s.negative_prompt,
            self.switch_step(),
        )?
        .recording(&self.output.trajectory_step_indices())
    }

    /// Whether every pair is scored with CLIP: asked for, or needed by `keep_best`'s rank.
    pub fn clip_similarity(&self) -> bool {
        self.validation.clip_similarity
            || self
                .keep_best()
                .is_some_and(|(_, by)| by == RankBy::ClipDirection)
    }

    /// `keep_best`'s k and rank, when it is on.
    pub fn keep_best(&self) -> Option<(usize, RankBy)> {
        let a = &self.alignment;
        (a.keep_best > 0).then(|| (a.keep_best as usize, a.rank_by.unwrap_or_default()))
    }

    /// The thresholds every pair is held to.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            max_token_edits: self.alignment.max_token_edits,
            ssim_min: self.alignment.ssim_min,
            changed_area_max: self.alignment.changed_area_max,
            require_flip: self.alignment.require_flip,
            nudenet_threshold: self.validation.nudenet_threshold,
            q16_threshold: self.validation.q16_threshold,
            clip_direction_min: self.validation.clip_direction_min,
            clip_image_min: self.validation.clip_image_min,
            clip_text_min: self.validation.clip_text_min,
            flip_judges: CATEGORIES
                .iter()
                .chain(&[SHAPES_CATEGORY])
                .filter_map(|c| Some(((*c).to_owned(), self.validation.flip_judge(c)?)))
                .collect(),
        }
    }
}

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
        let base_dir = match file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
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

    /// A runtime error in this manifest's terms: a runtime setting becomes the key it came
    /// from, with the file named.
    pub fn runtime_error(&self, err: RuntimeError) -> AcsError {
        match err {
            RuntimeError::Setting { setting, reason } => AcsError::input(format!(
                "{}: {}: {reason}",
                self.file.display(),
                setting_key(setting)
            )),
            other => other.into(),
        }
    }
}

/// The manifest key a runtime setting comes from.
pub fn setting_key(setting: Setting) -> &'static str {
    match setting {
        Setting::Steps => "[sampling].steps",
        Setting::Device => "[model].device",
        Setting::Repo => "[model].repo",
        Setting::Revision => "[model].revision",
        Setting::KernelPath => "[model].kernel_path",
        Setting::LocalBlend => "[alignment].local_blend",
    }
}

/// Parses and checks manifest text; `origin` names the file in messages.
pub fn parse_manifest(text: &str, origin: &str) -> Result<BuildManifest, AcsError> {
    let table: toml::Table =
        toml::from_str(text).map_err(|e| crate::error::toml_error(text, origin, &e))?;
    keys::check_keys(&table, origin)?;
    let manifest: BuildManifest = serde_path_to_error::deserialize(toml::Value::Table(table))
        .map_err(|e| {
            AcsError::input(format!(
                "{origin}: {}: {}",
                key_of_path(e.path()),
                plain_message(&one_line(e.inner().message()))
            ))
        })?;
    checks::check_values(&manifest, origin)?;
    Ok(manifest)
}

/// A serde path (`sampling.steps`, `sources[0].kind`) written as manifest keys
/// (`[sampling].steps`, `[[sources]] #1.kind`).
fn key_of_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut names: Vec<String> = Vec::new();
    let mut table = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } if table == "sources" => {
                table = format!("[[sources]] #{}", index + 1);
            }
            Segment::Seq { index } => match names.last_mut() {
                Some(name) => name.push_str(&format!("[{index}]")),
                None => names.push(format!("[{index}]")),
            },
            Segment::Map { key } if table.is_empty() => table = key.clone(),
            Segment::Map { key } => names.push(key.clone()),
            Segment::Enum { variant } => names.push(variant.clone()),
            Segment::Unknown => names.push("?".into()),
        }
    }
    if !table.starts_with("[[") {
        // A nested table ([rewrite.llm]) is named whole.
        let nested = names.len().saturating_sub(1);
        let inner: Vec<String> = names.drain(..nested).collect();
        table = format!(
            "[{}]",
            std::iter::once(table)
                .chain(inner)
                .collect::<Vec<_>>()
                .join(".")
        );
    }
    std::iter::once(table)
        .chain(names)
        .collect::<Vec<_>>()
        .join(".")
}

/// serde's wording of a wrong value in a user's terms: `invalid type: string "ten", expected
/// u32` -> `must be a whole number (got the string "ten")`; `unknown variant `x`, expected one
/// of `a`, `b`` -> `` `x` is not one of a, b``.
fn plain_message(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        if let Some((value, expected)) = rest.split_once(", expected ") {
            let names = expected
                .trim_start_matches("one of ")
                .replace('`', "")
                .replace(" or ", ", ");
            let candidates: Vec<&str> = names.split(", ").collect();
            let hint = keys::nearest(value.trim_matches('`'), &candidates)
                .map_or(String::new(), |near| format!(" (did you mean `{near}`?)"));
            return format!("{value} is not one of {names}{hint}");
        }
    }
    if let Some(rest) = message.strip_prefix("invalid value: integer ") {
        if let Some((got, expected)) = rest.rsplit_once(", expected ") {
            let max = match expected {
                "u8" => Some(u64::from(u8::MAX)),
                "u16" => Some(u64::from(u16::MAX)),
                "u32" => Some(u64::from(u32::MAX)),
                "u64" | "usize" => Some(u64::MAX),
                _ => None,
            };
            if let Some(max) = max {
                return format!(
                    "must be a whole number from 0 to {max} (got {})",
                    got.trim_matches('`')
                );
            }
        }
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        if let Some((got, expected)) = rest.rsplit_once(", expected ") {
            let wanted = match expected {
                "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" => "a whole number",
                "f32" | "f64" => "a number",
                "a boolean" => "true or false",
                "a string" | "a borrowed string" => "a string (in quotes)",
                "a sequence" => "a list ([...])",
                other => other,
            };
            let got = got
                .replace("string ", "the string ")
                .replace("floating point ", "the number ")
                .replace("integer ", "the number ");
            return format!("must be {wanted} (got {got})");
        }
    }
    message.to_owned()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Dtype;

    const MINIMAL: &str = "[[sources]]\nkind = \"pairs-jsonl\"\npath = \"p.jsonl\"\n";

    #[test]
    fn defaults_fill_missing_tables() {
        let m = parse_manifest(MINIMAL, "m.toml").unwrap();
        assert_eq!(m.sampling.steps, 25);
        assert_eq!(m.output.splits.len(), 3);
        assert!(m.model.is_none());
        // A [model] table naming neither path nor repo: the embedded model, as configured.
        let m = parse_manifest(&format!("[model]\ndtype = \"f16\"\n{MINIMAL}"), "m.toml").unwrap();
        let model = m.model.unwrap();
        assert_eq!(
            (model.path, model.repo, model.dtype),
            (None, None, Dtype::F16)
        );
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
    fn names_are_checked_by_their_types() {
        for (snippet, needles) in [
            (
                "[sampling]\nscheduler = \"plms\"\n",
                &["m.toml: [sampling].scheduler: ", "`plms`", "ddim"][..],
            ),
            (
                "[model]\npath = \"a\"\ndtype = \"f64\"\n",
                &["m.toml: [model].dtype: ", "`f64`", "bf16"],
            ),
            (
                "[model]\npath = \"a\"\ndevice = \"tpu\"\n",
                &["m.toml: [model].device: ", "`tpu`", "cuda:N"],
            ),
            (
                "[alignment]\nmode = \"fork\"\n",
                &["m.toml: [alignment].mode: ", "`fork`", "prompt-switch"],
            ),
        ] {
            let err = parse_manifest(&format!("{snippet}{MINIMAL}"), "m.toml")
                .unwrap_err()
                .to_string();
            for needle in needles {
                assert!(err.contains(needle), "{err} lacks {needle}");
            }
        }
        let err = parse_manifest(
            "[[sources]]\nkind = \"pairs-xml\"\npath = \"p\"\n",
            "m.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("m.toml: [[sources]] #1.kind: "), "{err}");
        let err = parse_manifest(
            &format!(
                "[rewrite.llm]\nbase_url = \"http://x\"\nmodel = \"m\"\nretries = -1\n{MINIMAL}"
            ),
            "m.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("m.toml: [rewrite.llm].retries: "), "{err}");
    }

    #[test]
    fn wrong_types_are_said_plainly() {
        for (snippet, expected) in [
            (
                "[sampling]\nsteps = \"ten\"\n",
                "m.toml: [sampling].steps: must be a whole number (got the string \"ten\")",
            ),
            (
                "[sampling]\nheight = 64.5\n",
                "m.toml: [sampling].height: must be a whole number (got the number `64.5`)",
            ),
            (
                "[output]\nstore_latents = \"yes\"\n",
                "m.toml: [output].store_latents: must be true or false (got the string \"yes\")",
            ),
            (
                "[model]\npath = \"a\"\ndtype = \"f64\"\n",
                "m.toml: [model].dtype: `f64` is not one of f32, f16, bf16 (did you mean `f32`?)",
            ),
            (
                "[[sources]]\nkind = \"pairs-jsonll\"\npath = \"p.jsonl\"\n",
                "m.toml: [[sources]] #1.kind: `pairs-jsonll` is not one of pairs-jsonl, pairs-csv, \
                 prompts-txt, i2p-csv, i2p-parquet, prompts, pairs, pairs-join (did you mean \
                 `pairs-jsonl`?)",
            ),
        ] {
            let err = parse_manifest(&format!("{snippet}{MINIMAL}"), "m.toml")
                .unwrap_err()
                .to_string();
            assert_eq!(err, expected);
        }
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
