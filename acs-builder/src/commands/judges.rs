//! The safety judges a manifest's `[validation]` table asks for, loaded from where it says:
//! NudeNet's ONNX file, Q16's CLIP ViT-L/14 (a folder or a hub id, fetched into the Hugging Face
//! cache unless offline), the safety checker (the model folder's `safety_checker/`, a folder or
//! a hub id). Shared by `acs build` and `acs validate`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use serde_json::json;

use crate::commands::build::resolve_or_fetch;
use crate::error::AcsError;
use crate::judge::clip_similarity::ClipSimilarity;
use crate::judge::nudenet::{locate_model, NudeNetJudge, INSTALLED};
use crate::judge::q16::Q16Judge;
use crate::judge::safety_checker::SafetyCheckerJudge;
use crate::judge::shapes::judge::{ShapesJudge, READER_ID};
use crate::judge::{Judge, JudgeKind};
use crate::manifest::ValidationSection;
use crate::runtime::hub::cache::valid_repo_id;
use crate::runtime::hub::FetchOptions;

/// Q16's image tower when `[validation].clip_model` names none.
pub const DEFAULT_CLIP_MODEL: &str = "openai/clip-vit-large-patch14";

/// Where the judges' files are found and on what they run.
pub struct JudgeContext<'a> {
    /// The folder relative paths are resolved against (the manifest's).
    pub base_dir: &'a Path,
    /// The Stable Diffusion model folder (for `safety_checker = "model"`), if known.
    pub model_dir: Option<&'a Path>,
    /// The device the CLIP judges run on.
    pub device: &'a Device,
    /// Their dtype.
    pub dtype: DType,
}

/// A loaded judge and where its weights came from.
pub struct LoadedJudge {
    /// The judge.
    pub judge: Box<dyn Judge>,
    /// The file or folder it loaded (for messages and the build config).
    pub source: PathBuf,
    /// It had no preprocessor config and uses CLIP's default preprocessing.
    pub default_preprocessing: bool,
}

/// A folder given as a path (relative to `base_dir`) or a hub id (resolved in the Hugging Face
/// cache, fetched unless offline); `key` names the setting in messages.
pub fn folder_or_repo(
    spec: &str,
    base_dir: &Path,
    key: &str,
    sd: bool,
) -> Result<PathBuf, AcsError> {
    let path = base_dir.join(spec);
    if path.is_dir() {
        return Ok(path);
    }
    if Path::new(spec).is_absolute() || !valid_repo_id(spec) {
        return Err(AcsError::input(format!(
            "{key}: `{spec}` is neither a folder nor a hub id (org/name)"
        )));
    }
    let options = FetchOptions {
        repo: spec.to_owned(),
        revision: "main".into(),
        variant: None,
        safety_checker: sd,
    };
    resolve_or_fetch(&options).map_err(|e| AcsError::input(format!("{key}: {e}")))
}

/// Loads the judge `kind` as `section` configures it.
pub fn load_judge(
    kind: JudgeKind,
    section: &ValidationSection,
    context: &JudgeContext,
) -> Result<LoadedJudge, AcsError> {
    let mut default_preprocessing = false;
    let (judge, source): (Box<dyn Judge>, PathBuf) = match kind {
        JudgeKind::Nudenet => {
            let spec = section.nudenet_model.as_deref().unwrap_or(INSTALLED);
            let path = locate_model(spec, context.base_dir)
                .map_err(|e| e.with_note(" ([validation].nudenet_model)"))?;
            let judge = NudeNetJudge::load(&path, &section.nudenet_classes)?;
            (Box::new(judge), path)
        }
        JudgeKind::Q16 => {
            let spec = section.clip_model.as_deref().unwrap_or(DEFAULT_CLIP_MODEL);
            let dir = folder_or_repo(spec, context.base_dir, "[validation].clip_model", false)?;
            let judge = Q16Judge::load(&dir, context.dtype, context.device)
                .map_err(|e| e.with_note(" ([validation].clip_model)"))?;
            default_preprocessing = judge.clip().default_preprocessing;
            (Box::new(judge), dir)
        }
        JudgeKind::SdSafetyChecker => {
            let dir = match section.safety_checker.as_deref().unwrap_or("model") {
                "model" => context
                    .model_dir
                    .filter(|dir| dir.join("safety_checker/config.json").is_file())
                    .map(Path::to_path_buf)
                    .ok_or_else(|| {
                        AcsError::input(
                            "[validation].safety_checker: the model folder has no \
                             safety_checker/ (the embedded tiny model has none); name a \
                             checker folder or hub id, e.g. CompVis/stable-diffusion-safety-checker",
                        )
                    })?,
                spec => folder_or_repo(spec, context.base_dir, "[validation].safety_checker", true)?,
            };
            let judge = SafetyCheckerJudge::load(&dir, context.dtype, context.device)
                .map_err(|e| e.with_note(" ([validation].safety_checker)"))?;
            default_preprocessing = judge.clip().default_preprocessing;
            (Box::new(judge), dir)
        }
        JudgeKind::Shapes => (Box::new(ShapesJudge), PathBuf::from(READER_ID)),
    };
    if default_preprocessing {
        tracing::warn!(
            "{kind}: {} has no preprocessor_config.json; using CLIP's default preprocessing",
            source.display()
        );
    }
    Ok(LoadedJudge {
        judge,
        source,
        default_preprocessing,
    })
}

/// Loads CLIP similarity's towers: `[validation].clip_model` (default: OpenAI's ViT-L/14,
/// the InstructPix2Pix generator's), a `CLIPModel` folder or hub id.
pub fn load_clip_similarity(
    section: &ValidationSection,
    context: &JudgeContext,
) -> Result<ClipSimilarity, AcsError> {
    let spec = section.clip_model.as_deref().unwrap_or(DEFAULT_CLIP_MODEL);
    let dir = folder_or_repo(spec, context.base_dir, "[validation].clip_model", false)?;
    let clip = ClipSimilarity::load(&dir, context.dtype, context.device)
        .map_err(|e| e.with_note(" ([validation].clip_model, for CLIP similarity)"))?;
    if clip.default_preprocessing() {
        tracing::warn!(
            "CLIP similarity: {} has no preprocessor_config.json; using CLIP's default \
             preprocessing",
            dir.display()
        );
    }
    Ok(clip)
}

/// CLIP similarity's entry of the build config: the sha256 of its towers, tokenizer and
/// preprocessing.
pub fn record_clip_similarity(config: &mut serde_json::Value, clip: &ClipSimilarity) {
    let mut entry = json!({"sha256": clip.sha256()});
    if clip.default_preprocessing() {
        entry["default_preprocessing"] = json!(true);
    }
    config["clip_similarity"] = entry;
}

/// Whether a dataset's build config says CLIP similarity ran.
pub fn recorded_clip_similarity(config: &serde_json::Value) -> bool {
    config["clip_similarity"]["sha256"].is_string()
}

/// Loads every judge `section` asks for, in column order.
pub fn load_judges(
    section: &ValidationSection,
    context: &JudgeContext,
) -> Result<Vec<LoadedJudge>, AcsError> {
    section
        .active_judges()
        .into_iter()
        .map(|kind| load_judge(kind, section, context))
        .collect()
}

/// The judges' entries of the build config: `detector` for NudeNet (as acs has always
/// recorded it) and `judges` for the CLIP judges, each with the sha256 of its weights.
pub fn record_judges(config: &mut serde_json::Value, judges: &[LoadedJudge]) {
    let mut clip = Vec::new();
    for loaded in judges {
        let judge = &loaded.judge;
        match judge.kind() {
            JudgeKind::Nudenet => {
                config["detector"] = json!({
                    "name": crate::commands::build::DETECTOR_NAME,
                    "sha256": judge.weights_sha256(),
                });
            }
            kind => {
                let mut entry = json!({"name": kind, "sha256": judge.weights_sha256()});
                if loaded.default_preprocessing {
                    entry["default_preprocessing"] = json!(true);
                }
                clip.push(entry);
            }
        }
    }
    if !clip.is_empty() {
        config["judges"] = json!(clip);
    }
}

/// The judges a dataset's build config says ran, with their weights' sha256.
pub fn recorded_judges(config: &serde_json::Value) -> Vec<(JudgeKind, String)> {
    let mut judges = Vec::new();
    if let Some(sha) = config["detector"]["sha256"].as_str() {
        judges.push((JudgeKind::Nudenet, sha.to_owned()));
    }
    for entry in config["judges"].as_array().into_iter().flatten() {
        let kind = entry["name"].as_str().and_then(|n| n.parse().ok());
        if let (Some(kind), Some(sha)) = (kind, entry["sha256"].as_str()) {
            judges.push((kind, sha.to_owned()));
        }
    }
    judges
}
