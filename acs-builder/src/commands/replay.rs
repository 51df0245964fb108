//! Replay (SPEC "strictly aligned" #6): re-render a seeded random sample of a dataset's rows
//! from their recorded configuration and check that x_T, the final latents and the trajectory
//! targets are the same.
//!
//! Bits are only promised on one kernel path (`runtime::kernel_path`): each row is re-rendered
//! on the path it records when this CPU can run it (unless `ACS_KERNEL_PATH` forces one), and
//! compared bit for bit; a row whose path cannot be run here (or that records none) is
//! compared within [`CROSS_PATH_TOLERANCE`] of its latents' range, and the report says so.

use std::collections::BTreeMap;
use std::path::Path;

use acs_schema::{DatasetManifest, PairRecord};
use sha2::{Digest, Sha256};

use crate::error::AcsError;
use crate::manifest::attention_section::attention_settings;
use crate::manifest::BuildManifest;
use crate::runtime::kernel_path::{self, KernelPath};
use crate::runtime::model::embedded::EmbeddedModel;
use crate::runtime::model::StableDiffusion;
use crate::runtime::sampler::{PairSampler, RenderJob};
use crate::store::imaging::{f16_le_bytes, f32_from_f16_le};

/// How far a re-render on another kernel path may be from the stored latents: the largest
/// absolute difference over the latent's range (max - min of the stored values). The same
/// bound as the parity tests against diffusers, whose kernels differ from acs's as much.
pub const CROSS_PATH_TOLERANCE: f32 = 1e-3;

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
    /// Rows re-rendered on their own kernel path whose x_T and latents matched bit for bit.
    pub identical: usize,
    /// Rows re-rendered on another kernel path than the one they record (this CPU cannot run
    /// theirs, or `ACS_KERNEL_PATH` forced another) and compared within the tolerance.
    pub cross_path: usize,
    /// The largest difference of a cross-path row, over its latent's range.
    pub cross_path_max_difference: f32,
    /// `recorded path -> replayed path: rows`, for the cross-path rows.
    pub cross_path_notes: Vec<String>,
    /// One line per mismatch, naming the row.
    pub mismatches: Vec<String>,
}

/// Activates the path to re-render a row on: the row's own when this CPU runs it, else this
/// CPU's best. (Where `ACS_KERNEL_PATH` forces a path, the caller leaves that one active.)
fn activate_replay_path(recorded: Option<&str>) -> Result<(), AcsError> {
    let own = recorded
        .and_then(|name| KernelPath::parse(name).ok())
        .filter(|path| path.supported());
    kernel_path::activate(own.unwrap_or_else(KernelPath::best))?;
    Ok(())
}

/// Compares stored float16 bytes with re-rendered values: bit for bit when `exact`, else
/// within [`CROSS_PATH_TOLERANCE`] of the stored values' range. `Err` says what differs;
/// `Ok` carries the difference over the range.
fn compare(stored: &[u8], rendered: &[f32], exact: bool) -> Result<f32, String> {
    let rendered_bytes = f16_le_bytes(rendered);
    if rendered_bytes == stored {
        return Ok(0.0);
    }
    if exact {
        return Err("differs".to_owned());
    }
    let values = match f32_from_f16_le(stored) {
        Some(values) if values.len() == rendered.len() => values,
        _ => return Err("has another length".to_owned()),
    };
    let rendered = f32_from_f16_le(&rendered_bytes).unwrap_or_default();
    let (min, max) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    let largest = values
        .iter()
        .zip(&rendered)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let relative = largest / (max - min).max(f32::MIN_POSITIVE);
    if relative.is_finite() && relative <= CROSS_PATH_TOLERANCE {
        Ok(relative)
    } else {
        Err(format!(
            "differs by {relative:.2e} of its range (more than {CROSS_PATH_TOLERANCE:.0e})"
        ))
    }
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
    // A sampler encodes the negative prompt when it is made: one per kernel path.
    let mut sampler: Option<(String, PairSampler)> = None;
    let per_row_path = model.device.is_cpu() && !kernel_path::forced_by_env();
    let mut report = ReplayReport::default();
    let mut cross_paths: BTreeMap<(String, String), usize> = BTreeMap::new();
    let attention = attention_settings(&build.alignment);
    for (name, record) in records {
        if !sampled(&record.pair_id, fraction) {
            continue;
        }
        if per_row_path {
            activate_replay_path(record.kernel_path.as_deref())?;
        }
        let replayed_on = model.kernel_path();
        let exact = record.kernel_path.as_deref() == Some(replayed_on.as_str());
        if sampler
            .as_ref()
            .is_none_or(|(path, _)| *path != replayed_on)
        {
            sampler = Some((replayed_on.clone(), build.pair_sampler(model)?));
        }
        let Some((_, sampler)) = &sampler else {
            return Err(AcsError::internal("replay has no sampler"));
        };
        let control = match (&attention, record.is_benign()) {
            (Some(settings), false) => Some(std::sync::Arc::new(
                settings
                    .pair_control(
                        &model.tokenizer,
                        &record.unsafe_prompt,
                        &record.safe_prompt,
                        record.seed,
                        build.sampling.steps as usize,
                    )
                    .map_err(|reason| {
                        AcsError::input(format!(
                            "replay: pair {}: attention control: {reason}",
                            record.pair_id
                        ))
                    })?,
            )),
            _ => None,
        };
        let job = RenderJob {
            seed: record.seed,
            unsafe_ids: model.tokenizer.encode(&record.unsafe_prompt)?.ids,
            safe_ids: if record.is_benign() {
                None
            } else {
                Some(model.tokenizer.encode(&record.safe_prompt)?.ids)
            },
            guidance_scale: record.guidance_scale,
            control,
        };
        let rendered = sampler
            .render(std::slice::from_ref(&job))?
            .pop()
            .ok_or_else(|| AcsError::internal("replay rendered no pair"))?;
        report.rows += 1;
        let mut problems = Vec::new();
        let mut largest = 0f32;
        if rendered.x_t_sha256 != record.x_t_sha256 {
            problems.push("x_t_sha256 differs".to_owned());
        }
        if exact && rendered.blend_mask != record.blend_mask {
            problems.push("blend_mask differs".to_owned());
        }
        let mut columns = vec![
            (
                "unsafe_latent",
                &record.unsafe_latent,
                &rendered.unsafe_latent,
            ),
            ("safe_latent", &record.safe_latent, &rendered.safe_latent),
        ];
        if let Some(trajectory) = &rendered.trajectory {
            columns.extend([
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
            ]);
        }
        for (column, stored, values) in columns {
            match stored {
                Some(bytes) => match compare(bytes, values, exact) {
                    Ok(difference) => largest = largest.max(difference),
                    Err(what) => problems.push(format!("{column} {what}")),
                },
                None => problems.push(format!("{column} not stored")),
            }
        }
        let recorded = record.kernel_path.as_deref().unwrap_or("unrecorded");
        if !exact {
            *cross_paths
                .entry((recorded.to_owned(), replayed_on.clone()))
                .or_default() += 1;
        }
        if !problems.is_empty() {
            let paths = if exact {
                String::new()
            } else {
                format!(" (recorded on {recorded}, replayed on {replayed_on})")
            };
            report.mismatches.push(format!(
                "{name} (pair {}): {}{paths}",
                record.pair_id,
                problems.join(", ")
            ));
        } else if exact {
            report.identical += 1;
        } else {
            report.cross_path += 1;
            report.cross_path_max_difference = report.cross_path_max_difference.max(largest);
        }
    }
    report.cross_path_notes = cross_paths
        .into_iter()
        .map(|((recorded, replayed), rows)| {
            format!("{rows} rows recorded on {recorded}, replayed on {replayed}")
        })
        .collect();
    Ok(report)
}

/// Loads the model a dataset was built with: `model_dir` when given, else the embedded model
/// (the one whose id the dataset records: datasets of acs before the demonstrator name no
/// embedded model and were rendered by the tiny one) or the hub cache entry its manifest names,
/// with the build's dtype and device.
pub fn load_dataset_model(
    build: &BuildManifest,
    model_id: &str,
    model_dir: Option<&Path>,
) -> Result<StableDiffusion, AcsError> {
    let embedded = crate::commands::build::embedded_model(build.model.as_ref())
        .map(|named| EmbeddedModel::from_id(model_id).unwrap_or(named));
    let dir = match (model_dir, &build.model, embedded) {
        (Some(dir), _, _) => dir.to_path_buf(),
        (None, _, Some(embedded)) => embedded.ensure()?,
        (None, None, None) => {
            return Err(AcsError::internal("no model section and no embedded model"))
        }
        (None, Some(section), None) => match (&section.repo, &section.path) {
            (Some(repo), _) => crate::runtime::hub::cache::resolve_snapshot(
                &crate::runtime::hub::cache::hub_cache_dir(),
                repo,
                &section.revision,
            )?,
            (None, Some(_)) => return Err(AcsError::input(
                "replay: the dataset was built from a local model folder; name it with --model DIR",
            )),
            (None, None) => return Err(AcsError::internal("an embedded model without a name")),
        },
    };
    // The kernel path is chosen per row (see `replay`), not from the recorded manifest.
    Ok(crate::commands::build::open_model(
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
    let model = load_dataset_model(&build, &manifest.model.id, model_dir)?;
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
