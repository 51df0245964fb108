//! Replay (SPEC "strictly aligned" #6): re-render a seeded random sample of a dataset's rows
//! from their recorded configuration and check that x_T, the final latents and the trajectory
//! targets are the same.

use std::path::Path;

use acs_schema::{DatasetManifest, PairRecord};
use sha2::{Digest, Sha256};

use crate::error::AcsError;
use crate::manifest::BuildManifest;
use crate::runtime::model::StableDiffusion;
use crate::runtime::sampler::{PairSampler, RenderJob};
use crate::store::imaging::f16_le_bytes;

/// Whether a row is in the replay sample: a uniform draw from its pair_id (so the sample is the
/// same on every run) below `fraction`.
pub fn sampled(pair_id: &str, fraction: f64) -> bool {
    let digest = Sha256::digest(format!("acs-replay-v1:{pair_id}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let u = (u64::from_le_bytes(first) >> 11) as f64 / (1u64 << 53) as f64;
    u < fraction
}

/// What the replay found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReplayReport {
    /// Rows re-rendered.
    pub rows: usize,
    /// Rows whose x_T and both latents matched bit for bit.
    pub identical: usize,
    /// One line per mismatch, naming the row.
    pub mismatches: Vec<String>,
}

/// Re-renders the rows of `records` (with their shard-relative names) that the sample holds,
/// with `model`, and compares them with what the dataset stored.
pub fn replay(
    manifest: &DatasetManifest,
    build: &BuildManifest,
    model: &StableDiffusion,
    records: &[(String, PairRecord)],
    fraction: f64,
) -> Result<ReplayReport, AcsError> {
    if model.sha256 != manifest.model.sha256 {
        return Err(AcsError::input(format!(
            "replay: the model's fingerprint {} differs from the dataset's {}",
            model.sha256, manifest.model.sha256
        )));
    }
    let s = &build.sampling;
    let sampler = PairSampler::new(
        model,
        s.scheduler,
        s.steps as usize,
        s.height as usize,
        s.width as usize,
        &s.negative_prompt,
        build.switch_step(),
    )?
    .recording(&build.output.trajectory_step_indices())?;
    let mut report = ReplayReport::default();
    for (name, record) in records {
        if !sampled(&record.pair_id, fraction) {
            continue;
        }
        let job = RenderJob {
            seed: record.seed,
            unsafe_ids: model.tokenizer.encode(&record.unsafe_prompt)?.ids,
            safe_ids: if record.is_benign() {
                None
            } else {
                Some(model.tokenizer.encode(&record.safe_prompt)?.ids)
            },
            guidance_scale: record.guidance_scale,
        };
        let rendered = sampler
            .render(std::slice::from_ref(&job))?
            .pop()
            .ok_or_else(|| AcsError::internal("replay rendered no pair"))?;
        report.rows += 1;
        let mut problems = Vec::new();
        if rendered.x_t_sha256 != record.x_t_sha256 {
            problems.push("x_t_sha256 differs".to_owned());
        }
        for (side, stored, latent) in [
            ("unsafe", &record.unsafe_latent, &rendered.unsafe_latent),
            ("safe", &record.safe_latent, &rendered.safe_latent),
        ] {
            match stored {
                Some(bytes) if *bytes != f16_le_bytes(latent) => {
                    problems.push(format!("{side}_latent differs"))
                }
                Some(_) => {}
                None => problems.push(format!("{side}_latent not stored")),
            }
        }
        if let Some(trajectory) = &rendered.trajectory {
            for (column, stored, values) in [
                (
                    "trajectory_latents",
                    &record.trajectory_latents,
                    &trajectory.latents,
                ),
                (
                    "trajectory_eps_unsafe",
                    &record.trajectory_eps_unsafe,
                    &trajectory.eps_unsafe,
                ),
                (
                    "trajectory_eps_safe",
                    &record.trajectory_eps_safe,
                    &trajectory.eps_safe,
                ),
            ] {
                if stored.as_deref() != Some(f16_le_bytes(values).as_slice()) {
                    problems.push(format!("{column} differs"));
                }
            }
        }
        if problems.is_empty() {
            report.identical += 1;
        } else {
            report.mismatches.push(format!(
                "{name} (pair {}): {}",
                record.pair_id,
                problems.join(", ")
            ));
        }
    }
    Ok(report)
}

/// Loads the model a dataset was built with: `model_dir` when given, else the embedded tiny
/// model or the hub cache entry its manifest names, with the build's dtype and device.
pub fn load_dataset_model(
    build: &BuildManifest,
    model_dir: Option<&Path>,
) -> Result<StableDiffusion, AcsError> {
    let dir = match (model_dir, &build.model) {
        (Some(dir), _) => dir.to_path_buf(),
        (None, None) => crate::runtime::model::tiny::ensure_tiny_model()?,
        (None, Some(section)) => match (&section.repo, &section.path) {
            (Some(repo), _) => crate::runtime::hub::cache::resolve_snapshot(
                &crate::runtime::hub::cache::hub_cache_dir(),
                repo,
                &section.revision,
            )?,
            (None, Some(_)) => return Err(AcsError::input(
                "replay: the dataset was built from a local model folder; name it with --model DIR",
            )),
            (None, None) => crate::runtime::model::tiny::ensure_tiny_model()?,
        },
    };
    Ok(crate::commands::build::load_model_from(
        &dir,
        build.model.as_ref(),
    )?)
}

/// Replays a fraction of a validated dataset's rows with the model it was built with
/// (`model_dir` when it was built from a local folder).
pub fn replay_dataset(
    dir: &Path,
    fraction: f64,
    model_dir: Option<&Path>,
) -> Result<ReplayReport, AcsError> {
    let location = acs_schema::DatasetLocation::from_path(dir)?;
    let manifest = DatasetManifest::load_from(&location)?;
    let build = crate::commands::validate::recorded_build(dir, &manifest)?;
    // Only the sampled rows are kept, read one row group at a time.
    let mut records = Vec::new();
    for shard in &manifest.shards {
        let mut reader = location.open_shard(&shard.path)?;
        let mut row = 0;
        while let Some(group) = reader.next_row_group()? {
            for record in group {
                if sampled(&record.pair_id, fraction) {
                    records.push((format!("{}: row {row}", shard.path), record));
                }
                row += 1;
            }
        }
    }
    let model = load_dataset_model(&build, model_dir)?;
    replay(&manifest, &build, &model, &records, fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_stable_and_has_the_asked_size() {
        let ids: Vec<String> = (0..4000).map(|i| format!("{i:032x}")).collect();
        let picked = ids.iter().filter(|id| sampled(id, 0.05)).count();
        assert!((150..250).contains(&picked), "{picked}");
        assert_eq!(picked, ids.iter().filter(|id| sampled(id, 0.05)).count());
        assert!(ids.iter().all(|id| sampled(id, 1.0)));
        assert!(!ids.iter().any(|id| sampled(id, 0.0)));
    }
}
