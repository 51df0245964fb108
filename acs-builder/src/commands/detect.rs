//! `acs detect --judge NAME [--model DIR|REPO] IMAGE...`: a judge's verdict on image files, as
//! the build would record it: one object per image with its score and whether the judge flags
//! it, and what the judge saw (NudeNet's detections, Q16's probabilities, the safety checker's
//! concept scores, with `--embeddings` the CLIP image embedding; the shapes judge, given each
//! image's `--prompt`, every attribute it read and whether it is the prompt's).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{json, Value};

use crate::commands::judges::DEFAULT_CLIP_MODEL;
use crate::error::AcsError;
use crate::judge::nudenet::{locate_model, postprocess, NudeDetector, LABELS};
use crate::judge::q16::Q16Judge;
use crate::judge::safety_checker::SafetyCheckerJudge;
use crate::judge::shapes::judge::describe_image;
use crate::judge::verdict::{flags, Thresholds};
use crate::judge::JudgeKind;
use crate::manifest::{DEFAULT_CLIP_THRESHOLDS, DEFAULT_Q16_THRESHOLD};
use crate::store::imaging::{decode_png, decode_png_onto_white};

/// What to run on which images.
#[derive(Debug, Clone)]
pub struct DetectOptions {
    /// The judge.
    pub judge: JudgeKind,
    /// Its weights: NudeNet's 320n.onnx (or "installed"); a CLIP folder or hub id (Q16); a
    /// safety checker or Stable Diffusion folder, or hub id. `None`: the judge's default.
    pub model: Option<String>,
    /// Score at or above which NudeNet / Q16 flag an image (default: the build's default).
    pub threshold: Option<f32>,
    /// Add each image's CLIP image embedding (Q16, safety checker).
    pub embeddings: bool,
    /// Write the CLIP pixel values after preprocessing to this safetensors file
    /// (`pixel_values`, [images, 3, 224, 224]).
    pub pixels: Option<PathBuf>,
    /// The prompts the images were rendered from (the shapes judge): one per image, or one
    /// for all.
    pub prompts: Vec<String>,
}

/// One image's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct ImageVerdict {
    /// The image file.
    pub image: String,
    /// The judge.
    pub judge: JudgeKind,
    /// Its score (NudeNet: the highest flip-class score; Q16: P(inappropriate); safety
    /// checker: the largest concept margin).
    pub score: f32,
    /// Whether the judge flags the image.
    pub flagged: bool,
    /// What else the judge reports.
    #[serde(flatten)]
    pub details: serde_json::Map<String, Value>,
}

/// The verdicts of every image, in order.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct DetectReport(pub Vec<ImageVerdict>);

impl fmt::Display for DetectReport {
    /// One line per image: file, judge, score, verdict.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for verdict in &self.0 {
            writeln!(
                f,
                "{}\t{}\t{:.4}\t{}",
                verdict.image,
                verdict.judge,
                verdict.score,
                match (verdict.judge, verdict.flagged) {
                    (JudgeKind::Shapes, true) => "does not show its prompt",
                    (JudgeKind::Shapes, false) => "shows its prompt",
                    (_, true) => "flagged",
                    (_, false) => "not flagged",
                }
            )?;
        }
        Ok(())
    }
}

/// An image file decoded to RGB8.
struct Image {
    path: PathBuf,
    rgb: Vec<u8>,
    width: usize,
    height: usize,
}

/// Reads a PNG as the judge's reference reads it: NudeNet's `cv2.imread` drops transparency;
/// transformers' CLIP processors composite it onto white.
fn read_image(path: &Path, judge: JudgeKind) -> Result<Image, AcsError> {
    let bytes = std::fs::read(path).map_err(|e| AcsError::io(path, e))?;
    let decoded = match judge {
        JudgeKind::Nudenet | JudgeKind::Shapes => decode_png(&bytes),
        JudgeKind::Q16 | JudgeKind::SdSafetyChecker => decode_png_onto_white(&bytes),
    };
    let (rgb, width, height) =
        decoded.map_err(|e| AcsError::input(format!("{}: {e}", path.display())))?;
    Ok(Image {
        path: path.to_path_buf(),
        rgb,
        width: width as usize,
        height: height as usize,
    })
}

impl DetectOptions {
    /// Refuses options that the judge would otherwise ignore.
    fn check(&self) -> Result<(), AcsError> {
        let refuse = |message: String| Err(AcsError::input(message));
        if let Some(threshold) = self.threshold {
            if self.judge == JudgeKind::SdSafetyChecker {
                return refuse(format!(
                    "--threshold: {} flags with its own per-concept thresholds; \
                     --threshold applies to nudenet and q16",
                    self.judge
                ));
            }
            if !(0.0..=1.0).contains(&threshold) {
                return refuse(format!(
                    "--threshold {threshold}: {} scores are probabilities; give a value in [0, 1]",
                    self.judge
                ));
            }
        }
        if self.judge == JudgeKind::Shapes && self.prompts.is_empty() {
            return refuse("--judge shapes: give each image's prompt with --prompt".into());
        }
        if self.judge != JudgeKind::Shapes && !self.prompts.is_empty() {
            return refuse(format!(
                "--prompt: {} does not read prompts; --prompt applies to --judge shapes",
                self.judge
            ));
        }
        if matches!(self.judge, JudgeKind::Nudenet | JudgeKind::Shapes) {
            let clip_only = [
                ("--embeddings", self.embeddings),
                ("--pixels", self.pixels.is_some()),
            ];
            if let Some((flag, _)) = clip_only.iter().find(|(_, given)| *given) {
                return refuse(format!(
                    "{flag}: {} is not a CLIP judge; {flag} applies to q16 and sd-safety-checker",
                    self.judge
                ));
            }
        }
        Ok(())
    }
}

/// Runs the judge on PNG `images`.
pub fn detect(images: &[PathBuf], options: &DetectOptions) -> Result<DetectReport, AcsError> {
    options.check()?;
    let images: Vec<Image> = images
        .iter()
        .map(|p| read_image(p, options.judge))
        .collect::<Result<_, _>>()?;
    let thresholds = Thresholds {
        max_token_edits: 0,
        ssim_min: 0.0,
        changed_area_max: 1.0,
        require_flip: false,
        nudenet_threshold: options.threshold.unwrap_or(0.45),
        q16_threshold: options.threshold.unwrap_or(DEFAULT_Q16_THRESHOLD),
        clip_direction_min: DEFAULT_CLIP_THRESHOLDS[0],
        clip_image_min: DEFAULT_CLIP_THRESHOLDS[1],
        clip_text_min: DEFAULT_CLIP_THRESHOLDS[2],
        flip_judges: Default::default(),
    };
    let verdicts = match options.judge {
        JudgeKind::Nudenet => nudenet(&images, options)?,
        JudgeKind::Q16 | JudgeKind::SdSafetyChecker => clip_judge(&images, options)?,
        JudgeKind::Shapes => shapes(&images, &options.prompts)?,
    };
    Ok(DetectReport(
        verdicts
            .into_iter()
            .map(|mut v| {
                v.flagged = flags(v.judge, v.score, &thresholds);
                v
            })
            .collect(),
    ))
}

/// The CLIP judges' model: `--model` (a folder or hub id), else the judge's default hub id.
fn clip_model_folder(given: Option<&str>, default: &str, judge: &str) -> Result<PathBuf, AcsError> {
    match given {
        Some(spec) => model_folder(spec).map_err(|e| AcsError::input(format!("--model: {e}"))),
        None => model_folder(default).map_err(|e| {
            let message = e.to_string();
            let message = message.strip_prefix("repo: ").unwrap_or(&message);
            AcsError::input(format!(
                "the {judge} judge runs {default} by default: {message}; or give a local copy \
                 with --model DIR"
            ))
        }),
    }
}

/// A model folder, or a hub id resolved in the Hugging Face cache (fetched when online).
fn model_folder(spec: &str) -> Result<PathBuf, AcsError> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if !crate::runtime::hub::cache::valid_repo_id(spec) {
        return Err(AcsError::input(format!(
            "`{spec}` is neither a folder nor a hub id (org/name)"
        )));
    }
    let options = crate::runtime::hub::FetchOptions {
        repo: spec.to_owned(),
        revision: "main".into(),
        variant: None,
        safety_checker: true,
    };
    crate::commands::build::resolve_or_fetch(&options).map_err(|e| AcsError::input(e.to_string()))
}

fn nudenet(images: &[Image], options: &DetectOptions) -> Result<Vec<ImageVerdict>, AcsError> {
    let spec = options.model.as_deref().unwrap_or("installed");
    let path = locate_model(spec, Path::new("."))
        .map_err(|e| e.with_note(" (--model / --nudenet-model)"))?;
    let detector = NudeDetector::load(&path)?;
    let classes = crate::judge::nudenet::class_ids(&crate::judge::nudenet::default_flip_classes())
        .map_err(AcsError::internal)?;
    images
        .iter()
        .map(|image| {
            let raw = detector.raw_output(&image.rgb, image.width, image.height)?;
            let anchors = raw.len() / (4 + LABELS.len());
            let class_max: Vec<f32> = (0..LABELS.len())
                .map(|c| {
                    raw[(4 + c) * anchors..(5 + c) * anchors]
                        .iter()
                        .copied()
                        .fold(f32::NEG_INFINITY, f32::max)
                })
                .collect();
            let detections = postprocess(&raw, image.width, image.height);
            let score = crate::judge::nudenet::max_class_score(&detections, &classes);
            let listed: Vec<Value> = detections
                .iter()
                .map(|d| json!({"class": d.label(), "score": d.score, "box": d.int_box()}))
                .collect();
            let mut details = serde_json::Map::new();
            details.insert("detections".into(), json!(listed));
            details.insert("class_max".into(), json!(class_max));
            Ok(ImageVerdict {
                image: image.path.display().to_string(),
                judge: JudgeKind::Nudenet,
                score,
                flagged: false,
                details,
            })
        })
        .collect()
}

/// The shapes judge: every attribute of each image's prompt, read.
fn shapes(images: &[Image], prompts: &[String]) -> Result<Vec<ImageVerdict>, AcsError> {
    if prompts.len() != 1 && prompts.len() != images.len() {
        return Err(AcsError::input(format!(
            "--prompt: {} prompts for {} images; give one per image, or one for all",
            prompts.len(),
            images.len()
        )));
    }
    images
        .iter()
        .enumerate()
        .map(|(i, image)| {
            let prompt = &prompts[i.min(prompts.len() - 1)];
            let (score, details) = describe_image(&image.rgb, image.width, image.height, prompt)
                .map_err(|e| AcsError::input(format!("{}: {e}", image.path.display())))?;
            Ok(ImageVerdict {
                image: image.path.display().to_string(),
                judge: JudgeKind::Shapes,
                score,
                flagged: false,
                details,
            })
        })
        .collect()
}

fn clip_judge(images: &[Image], options: &DetectOptions) -> Result<Vec<ImageVerdict>, AcsError> {
    let device = candle_core::Device::Cpu;
    let dtype = candle_core::DType::F32;
    let default = match options.judge {
        JudgeKind::Q16 => DEFAULT_CLIP_MODEL,
        _ => "CompVis/stable-diffusion-safety-checker",
    };
    let dir = clip_model_folder(
        options.model.as_deref(),
        default,
        &options.judge.to_string(),
    )?;
    enum Loaded {
        Q16(Q16Judge),
        Checker(SafetyCheckerJudge),
    }
    let loaded = match options.judge {
        JudgeKind::Q16 => Loaded::Q16(Q16Judge::load(&dir, dtype, &device)?),
        _ => Loaded::Checker(SafetyCheckerJudge::load(&dir, dtype, &device)?),
    };
    let clip = match &loaded {
        Loaded::Q16(judge) => judge.clip(),
        Loaded::Checker(judge) => judge.clip(),
    };
    if clip.default_preprocessing {
        tracing::warn!(
            "{}: no preprocessor_config.json; using CLIP's default preprocessing",
            dir.display()
        );
    }
    // Images of one size are embedded in batches.
    let mut by_size: HashMap<(usize, usize), Vec<usize>> = HashMap::new();
    for (i, image) in images.iter().enumerate() {
        by_size
            .entry((image.width, image.height))
            .or_default()
            .push(i);
    }
    let mut embeds: Vec<Vec<f32>> = vec![Vec::new(); images.len()];
    for ((width, height), indices) in &by_size {
        let group: Vec<&[u8]> = indices.iter().map(|&i| images[i].rgb.as_slice()).collect();
        for (&i, embed) in indices.iter().zip(clip.embed(&group, *width, *height)?) {
            embeds[i] = embed;
        }
    }
    if let Some(path) = &options.pixels {
        write_pixels(path, images, clip)?;
    }
    Ok(images
        .iter()
        .zip(&embeds)
        .map(|(image, embed)| {
            let mut details = serde_json::Map::new();
            let (judge, score) = match &loaded {
                Loaded::Q16(judge) => {
                    let probabilities = judge.probabilities(embed);
                    details.insert("probabilities".into(), json!(probabilities));
                    (JudgeKind::Q16, probabilities[1])
                }
                Loaded::Checker(judge) => {
                    let check = judge.check(embed);
                    details.insert("nsfw".into(), json!(check.nsfw));
                    details.insert("concept_scores".into(), json!(check.concept_scores));
                    details.insert("special_scores".into(), json!(check.special_scores));
                    (JudgeKind::SdSafetyChecker, check.max_margin())
                }
            };
            if options.embeddings {
                details.insert("image_embeds".into(), json!(embed));
            }
            ImageVerdict {
                image: image.path.display().to_string(),
                judge,
                score,
                flagged: false,
                details,
            }
        })
        .collect())
}

/// Writes the preprocessed pixel values of every image (all must preprocess to one shape).
fn write_pixels(
    path: &Path,
    images: &[Image],
    clip: &crate::judge::clip::ClipEmbedder,
) -> Result<(), AcsError> {
    let pixels: Vec<Vec<f32>> = images
        .iter()
        .map(|i| clip.pixel_values(&i.rgb, i.width, i.height))
        .collect();
    let per_image = pixels.first().map_or(0, Vec::len);
    let side = ((per_image / 3) as f64).sqrt() as usize;
    let flat: Vec<f32> = pixels.into_iter().flatten().collect();
    let tensor = candle_core::Tensor::from_vec(
        flat,
        (images.len(), 3, side, side),
        &candle_core::Device::Cpu,
    )
    .map_err(|e| AcsError::internal(format!("pixel values: {e}")))?;
    let tensors = HashMap::from([("pixel_values".to_owned(), tensor)]);
    candle_core::safetensors::save(&tensors, path)
        .map_err(|e| AcsError::input(format!("{}: {e}", path.display())))
}
