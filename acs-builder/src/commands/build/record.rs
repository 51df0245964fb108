//! From a rendered pair to its schema v1 row: metrics, judge scores, verdict, PNG and float16
//! encodings.

use acs_schema::{ImageBlob, PairRecord};
use rayon::prelude::*;

use crate::error::AcsError;
use crate::judge::change_mask::{ChangeMask, ChangeRule};
use crate::judge::clip_similarity::{ClipScores, ClipSimilarity};
use crate::judge::metrics::{pair_metrics_with_mask, ChangedBox, PairMetrics};
use crate::judge::selection::{rank_score, RankBy};
use crate::judge::verdict::{
    clip_violations, store_scores, verdict, JudgeScores, SafetyScores, Thresholds,
};
use crate::judge::Judge;
use crate::manifest::BuildManifest;
use crate::prompts::plan::PlannedPair;
use crate::runtime::{RecordedTrajectory, RenderedPair};
use crate::store::imaging::{encode_png, f16_le_bytes, f32_from_f16_le};
use crate::ACS_VERSION;

/// What every row of a build shares, and the judge that scores both images.
pub struct RowMaker<'a> {
    /// Model id recorded in every row.
    pub model_id: String,
    /// Model fingerprint recorded in every row.
    pub model_sha256: String,
    /// The code path that renders (recorded in every row).
    pub kernel_path: String,
    /// Steps both branches share.
    pub switch_step: i32,
    /// (c, h, w) of every latent.
    pub latent_shape: Vec<i32>,
    /// The build manifest.
    pub manifest: &'a BuildManifest,
    /// The thresholds of the verdict.
    pub thresholds: Thresholds,
    /// The safety judges the manifest configures.
    pub judges: Vec<&'a dyn Judge>,
    /// CLIP similarity, when the manifest asks for it.
    pub clip: Option<&'a ClipSimilarity>,
    /// What ranks renders for `keep_best`, when it is on.
    pub rank_by: Option<RankBy>,
}

/// A row and its `keep_best` rank score (NaN when keep_best is off).
pub type RankedRow = (PairRecord, f32);

/// A pair's metrics on its latents as stored (float16, so `acs validate` recomputes the same
/// values), with the stored latent bytes (unsafe, safe).
pub fn metrics_as_stored(
    unsafe_rgb: &[u8],
    safe_rgb: &[u8],
    width: usize,
    height: usize,
    unsafe_latent: &[f32],
    safe_latent: &[f32],
    rule: ChangeRule,
) -> (PairMetrics, Vec<u8>, Vec<u8>) {
    let images = (unsafe_rgb, safe_rgb, width, height);
    metrics_with_mask_as_stored(images, unsafe_latent, safe_latent, rule, None)
}

/// As [`metrics_as_stored`], reading the changed area and box off the row's change mask when
/// the build stores one (made once, for the mask columns and the metrics).
fn metrics_with_mask_as_stored(
    (unsafe_rgb, safe_rgb, width, height): (&[u8], &[u8], usize, usize),
    unsafe_latent: &[f32],
    safe_latent: &[f32],
    rule: ChangeRule,
    mask: Option<&ChangeMask>,
) -> (PairMetrics, Vec<u8>, Vec<u8>) {
    let unsafe_f16 = f16_le_bytes(unsafe_latent);
    let safe_f16 = f16_le_bytes(safe_latent);
    let as_stored = |bytes: &[u8]| f32_from_f16_le(bytes).unwrap_or_default();
    let metrics = pair_metrics_with_mask(
        unsafe_rgb,
        safe_rgb,
        width,
        height,
        &as_stored(&unsafe_f16),
        &as_stored(&safe_f16),
        rule,
        mask,
    );
    (metrics, unsafe_f16, safe_f16)
}

/// (height, width) of a `[c, h, w]` latent shape.
fn latent_size(latent_shape: &[i32]) -> Result<(usize, usize), AcsError> {
    match latent_shape {
        [_, h, w] => Ok((*h as usize, *w as usize)),
        _ => Err(AcsError::internal("latent shape is not [c, h, w]")),
    }
}

/// The change-mask columns of a row: the mask PNG and its latent-resolution bytes.
fn mask_columns(
    mask: &ChangeMask,
    pair_id: &str,
    latent_shape: &[i32],
) -> Result<(ImageBlob, Vec<u8>), AcsError> {
    let (lh, lw) = latent_size(latent_shape)?;
    let image = ImageBlob {
        bytes: mask.to_png()?,
        path: Some(format!("{pair_id}-mask.png")),
    };
    Ok((image, mask.at_latent_resolution(lh, lw)))
}

/// A blend mask upsampled to the image, as a PNG column.
pub fn blend_mask_image(
    bits: &[u8],
    pair_id: &str,
    latent_shape: &[i32],
    (width, height): (usize, usize),
) -> Result<ImageBlob, AcsError> {
    let (lh, lw) = latent_size(latent_shape)?;
    Ok(ImageBlob {
        bytes: ChangeMask::from_latent(bits, (lh, lw), width, height).to_png()?,
        path: Some(format!("{pair_id}-blend-mask.png")),
    })
}

/// The trajectory columns of a row: steps, timesteps and the three float16 arrays.
type TrajectoryColumns = (Vec<i32>, Vec<i32>, Vec<u8>, Vec<u8>, Vec<u8>);

fn trajectory_columns(trajectory: &RecordedTrajectory) -> TrajectoryColumns {
    (
        trajectory.steps.iter().map(|&s| s as i32).collect(),
        trajectory.timesteps.clone(),
        f16_le_bytes(&trajectory.latents),
        f16_le_bytes(&trajectory.eps_unsafe),
        f16_le_bytes(&trajectory.eps_safe),
    )
}

impl RowMaker<'_> {
    /// The rows of a rendered batch, in order (pairs in parallel), with their rank scores.
    pub fn rows(
        &self,
        pairs: &[PlannedPair],
        rendered: Vec<RenderedPair>,
    ) -> Result<Vec<RankedRow>, AcsError> {
        if pairs.len() != rendered.len() {
            return Err(AcsError::internal(format!(
                "{} pairs rendered for a batch of {}",
                rendered.len(),
                pairs.len()
            )));
        }
        let scores = self.judge_scores(pairs, &rendered)?;
        let clip = self.clip_scores(pairs, &rendered)?;
        pairs
            .par_iter()
            .zip(rendered)
            .zip(scores)
            .zip(clip)
            .map(|(((pair, out), scores), clip)| self.row(pair, out, scores, clip))
            .collect()
    }

    /// The CLIP similarities of every pair of the batch (none when CLIP similarity is off).
    fn clip_scores(
        &self,
        pairs: &[PlannedPair],
        rendered: &[RenderedPair],
    ) -> Result<Vec<Option<ClipScores>>, AcsError> {
        let Some(clip) = self.clip else {
            return Ok(vec![None; pairs.len()]);
        };
        let s = &self.manifest.sampling;
        let images: Vec<(&[u8], &[u8])> = rendered
            .iter()
            .map(|p| (p.unsafe_rgb.as_slice(), p.safe_rgb.as_slice()))
            .collect();
        let prompts: Vec<(&str, &str)> = pairs
            .iter()
            .map(|p| {
                (
                    p.prompts.unsafe_prompt.as_str(),
                    p.prompts.safe_prompt.as_str(),
                )
            })
            .collect();
        let scores = clip.score_pairs(&images, &prompts, s.width as usize, s.height as usize)?;
        Ok(scores.into_iter().map(Some).collect())
    }

    /// Every judge's scores of both images of every pair (all images of the batch at once,
    /// so that the judges can batch them).
    fn judge_scores(
        &self,
        pairs: &[PlannedPair],
        rendered: &[RenderedPair],
    ) -> Result<Vec<JudgeScores>, AcsError> {
        let s = &self.manifest.sampling;
        let images: Vec<&[u8]> = rendered
            .iter()
            .flat_map(|p| [p.unsafe_rgb.as_slice(), p.safe_rgb.as_slice()])
            .collect();
        let prompts: Vec<&str> = pairs
            .iter()
            .flat_map(|p| {
                [
                    p.prompts.unsafe_prompt.as_str(),
                    p.prompts.safe_prompt.as_str(),
                ]
            })
            .collect();
        let mut per_pair = vec![JudgeScores::default(); rendered.len()];
        for judge in &self.judges {
            let (w, h) = (s.width as usize, s.height as usize);
            let scores = judge.score_batch(&images, &prompts, w, h)?;
            for (pair, both) in per_pair.iter_mut().zip(scores.chunks_exact(2)) {
                let scores = SafetyScores {
                    unsafe_score: Some(both[0]),
                    safe_score: Some(both[1]),
                };
                pair.0.insert(judge.kind(), scores);
            }
        }
        Ok(per_pair)
    }

    /// The schema v1 row of one rendered pair.
    fn row(
        &self,
        pair: &PlannedPair,
        out: RenderedPair,
        scores: JudgeScores,
        clip: Option<ClipScores>,
    ) -> Result<RankedRow, AcsError> {
        let s = &self.manifest.sampling;
        let (width, height) = (s.width as usize, s.height as usize);
        let rule = self.manifest.output.change_rule();
        let mask = self
            .manifest
            .output
            .masks
            .then(|| ChangeMask::of(&out.unsafe_rgb, &out.safe_rgb, width, height, rule));
        let (metrics, unsafe_f16, safe_f16) = metrics_with_mask_as_stored(
            (&out.unsafe_rgb, &out.safe_rgb, width, height),
            &out.unsafe_latent,
            &out.safe_latent,
            rule,
            mask.as_ref(),
        );
        // A benign row is one prompt: the minimal-edit rules do not apply to it.
        let prompt_violations = if pair.prompts.is_benign() {
            Vec::new()
        } else {
            pair.alignment.violations(self.thresholds.max_token_edits)
        };
        let mut reasons = verdict(
            &prompt_violations,
            &metrics,
            &pair.prompts.category,
            &scores,
            &self.thresholds,
        );
        let image = |rgb: &[u8], side: &str| -> Result<ImageBlob, AcsError> {
            Ok(ImageBlob {
                bytes: encode_png(rgb, s.width, s.height)?,
                path: Some(format!("{}-{side}.png", pair.pair_id)),
            })
        };
        let store = self.manifest.output.store_latents;
        let mask_columns = mask
            .as_ref()
            .map(|mask| mask_columns(mask, &pair.pair_id, &self.latent_shape))
            .transpose()?;
        let (change_mask, change_mask_latent) = mask_columns.unzip();
        let (steps, timesteps, x_k, eps_unsafe, eps_safe) =
            match out.trajectory.as_ref().map(trajectory_columns) {
                Some((a, b, c, d, e)) => (Some(a), Some(b), Some(c), Some(d), Some(e)),
                None => (None, None, None, None, None),
            };
        let mut record = PairRecord {
            pair_id: pair.pair_id.clone(),
            split: pair.split.clone(),
            category: pair.prompts.category.clone(),
            concepts: pair.alignment.concepts.clone(),
            unsafe_prompt: pair.prompts.unsafe_prompt.clone(),
            safe_prompt: pair.prompts.safe_prompt.clone(),
            negative_prompt: s.negative_prompt.clone(),
            token_edit_distance: pair.alignment.token_edit_distance as i32,
            seed: pair.seed,
            x_t_sha256: out.x_t_sha256,
            model_id: self.model_id.clone(),
            model_sha256: self.model_sha256.clone(),
            scheduler: s.scheduler.to_string(),
            alignment_mode: self.manifest.alignment.mode.to_string(),
            steps: s.steps as i32,
            switch_step: self.switch_step,
            height: s.height as i32,
            width: s.width as i32,
            guidance_scale: pair.guidance_scale,
            unsafe_image: image(&out.unsafe_rgb, "unsafe")?,
            safe_image: image(&out.safe_rgb, "safe")?,
            latent_shape: self.latent_shape.clone(),
            unsafe_latent: store.then_some(unsafe_f16),
            safe_latent: store.then_some(safe_f16),
            ssim: metrics.ssim,
            psnr: metrics.psnr,
            changed_area: metrics.changed_area,
            changed_box: metrics.changed_box.map(ChangedBox::to_vec),
            latent_cosine: metrics.latent_cosine,
            nudenet_unsafe: None,
            nudenet_safe: None,
            q16_unsafe: None,
            q16_safe: None,
            sd_safety_checker_unsafe: None,
            sd_safety_checker_safe: None,
            change_mask,
            change_mask_latent,
            trajectory_steps: steps,
            trajectory_timesteps: timesteps,
            trajectory_latents: x_k,
            trajectory_eps_unsafe: eps_unsafe,
            trajectory_eps_safe: eps_safe,
            valid: false,
            reject_reasons: Vec::new(),
            acs_version: ACS_VERSION.to_owned(),
            kernel_path: Some(self.kernel_path.clone()),
            shapes_unsafe: None,
            shapes_safe: None,
            alignment_settings: pair.attention.as_ref().map(|c| c.settings.clone()),
            blend_mask_image: match (&out.blend_mask, self.manifest.output.masks) {
                (Some(bits), true) => Some(blend_mask_image(
                    bits,
                    &pair.pair_id,
                    &self.latent_shape,
                    (width, height),
                )?),
                _ => None,
            },
            blend_mask: out.blend_mask,
            clip_direction: clip.and_then(|c| c.direction),
            clip_image: clip.and_then(|c| c.image),
            clip_unsafe: clip.map(|c| c.unsafe_text),
            clip_safe: clip.map(|c| c.safe_text),
        };
        for (kind, both) in scores.0 {
            store_scores(&mut record, kind, both);
        }
        reasons.extend(clip_violations(&record, &self.thresholds));
        record.valid = reasons.is_empty();
        record.reject_reasons = reasons;
        let rank = match self.rank_by {
            Some(by) => rank_score(by, &record, Some((&out.unsafe_rgb, &out.safe_rgb))),
            None => f32::NAN,
        };
        Ok((record, rank))
    }
}
