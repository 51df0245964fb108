//! `acs build`: manifest -> sources -> prompt pairs -> aligned rendering -> rows -> shard sink.
//! Everything that can be checked is checked before the output folder is touched.

mod attention;
mod changes;
mod inputs;
mod model;
mod output;
mod record;
mod render;
mod report;
mod restart;
pub mod worker;

use std::path::{Path, PathBuf};

use acs_schema::{write_atomic, DatasetManifest, ModelInfo, WorkerSlice, SCHEMA_VERSION};

use crate::commands::progress::{Progress, ProgressMode};
use crate::error::AcsError;
use crate::prompts::sources::Reject;
use crate::runtime::model::model_fingerprint;
use crate::runtime::{ClipTokenizer, PairSampler, StableDiffusion};
use crate::store::card::dataset_card;
use crate::store::journal::Journal;
use crate::store::sink::{Resumed, ShardSink};
use crate::store::REJECTS_FILE;
use crate::ACS_VERSION;

pub use inputs::{BuildInputs, Prepared, DETECTOR_NAME};
pub use model::{
    cached_model_dir, embedded_model, load_model, load_model_from, model_dir, open_model,
    resolve_or_fetch,
};
pub use record::{metrics_as_stored, RowMaker};
pub use render::StageTimes;
pub use report::{BuildReport, PlannedRow};

use output::{check_output, BuildConfig, OutputState, OutputTarget};
use report::Stopwatch;

/// Appended to errors after which the output folder holds resumable work.
const RESUME_NOTE: &str = " (the finished work is kept: run the same `acs build` again to resume)";

/// Options of one `acs build` run.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The build manifest file.
    pub manifest: PathBuf,
    /// The output dataset folder, or an object-store URL (`s3://bucket/prefix`, ...).
    pub out: PathBuf,
    /// The local folder of the journal of an object-store output (default: under
    /// `$ACS_HOME/journals/`).
    pub journal: Option<PathBuf>,
    /// Plan only: list the pairs, load no model weights beyond the tokenizer, write nothing.
    pub dry_run: bool,
    /// Discard an unfinished build in the output folder first (`--restart`).
    pub restart: bool,
    /// Render only this worker's slice of the pairs (`--worker i/n`).
    pub worker: Option<WorkerSlice>,
    /// How rendering progress is shown.
    pub progress: ProgressMode,
}

/// Runs a build.
pub fn run_build(options: &BuildOptions) -> Result<BuildReport, AcsError> {
    let mut watch = Stopwatch::start();
    let inputs = BuildInputs::read(&options.manifest)?;
    watch.lap("read manifest and sources");
    if options.dry_run {
        return dry_run(&inputs, options, watch);
    }
    let target = OutputTarget::of(&options.out, options.journal.as_deref())?;
    if options.restart {
        restart::discard_unfinished(&target)?;
    }
    let config = BuildConfig {
        value: &inputs.config,
        sha256: &inputs.config_sha256,
    };
    let existing = match check_output(&target, &config, options.worker)? {
        OutputState::Finished(existing) => return up_to_date(&options.out, &target, &existing),
        OutputState::Unfinished(existing) => Some(existing),
        OutputState::Empty => None,
    };
    let model = load_model(&inputs.loaded)?;
    watch.lap("load model");
    let prepared = inputs.prepare(&model.tokenizer, &model.sha256, options.worker)?;
    watch.lap("plan and align prompts");
    if prepared.plan.pairs.is_empty() {
        return Err(nothing_to_render(&inputs, &prepared, &options.out));
    }
    let resuming = existing.is_some();
    let (mut sink, resumed) = open_sink(options, &target, &inputs, &model, &prepared, existing)?;
    if resuming {
        tracing::info!(
            "resuming: {} of {} pairs were already rendered",
            resumed.rows,
            prepared.plan.pairs.len()
        );
    }
    if let Err(err) = write_rejects(&target.work, &prepared.rejects) {
        sink.discard_if_empty();
        return Err(err);
    }
    let mut report = BuildReport {
        out: options.out.clone(),
        resumed_rows: resumed.rows,
        ..inputs.summary(&prepared)
    };
    let (sampler, times) = match render(options, &inputs, &model, &prepared, &mut sink, &resumed) {
        Ok(done) => done,
        Err(err) if sink.holds_work() => return Err(err.with_note(RESUME_NOTE)),
        Err(err) => {
            // Before anything durable there is nothing to resume: leave no trace.
            let _ = std::fs::remove_file(target.work.join(REJECTS_FILE));
            sink.discard_if_empty();
            return Err(err);
        }
    };
    let finished = std::time::Instant::now();
    let (dataset, valid_rows) = finish(sink, &inputs)?;
    report.rows = dataset.total_rows();
    report.valid_rows = valid_rows;
    report.shards = dataset.shards.len();
    let networks = sampler.timings();
    report.unet_evaluations_saved = networks.unet_evaluations_saved;
    report.kernel_path = model.kernel_path();
    watch.add("render: text encoder", networks.text_encoder);
    watch.add(
        &format!("render: UNet ({} calls)", networks.unet_calls),
        networks.unet,
    );
    watch.add("render: VAE decode", networks.vae);
    watch.add(
        "render: other (x_T, batching)",
        times
            .render
            .saturating_sub(networks.text_encoder + networks.unet + networks.vae),
    );
    watch.add("metrics, detector and PNG encoding", times.rows);
    watch.add(
        "write shards, manifest, card",
        times.write + finished.elapsed(),
    );
    report.render_seconds = times.wall.as_secs_f64();
    report.render_idle_share = Some(times.render_idle_share());
    report.stage_seconds = watch.laps();
    Ok(report)
}

/// `--dry-run`: plans with the model's tokenizer and fingerprint only (no weights are loaded)
/// and lists the pairs.
fn dry_run(
    inputs: &BuildInputs,
    options: &BuildOptions,
    mut watch: Stopwatch,
) -> Result<BuildReport, AcsError> {
    let dir = cached_model_dir(&inputs.loaded)?;
    if let Some(device) = inputs.loaded.manifest.model.as_ref().map(|m| m.device) {
        if let (false, Some(feature)) = (device.compiled_in(), device.feature()) {
            tracing::warn!(
                "[model].device `{device}`: this build of acs has no {feature} support; the \
                 real build needs one (cargo build --release --features {feature})"
            );
        }
    }
    let in_manifest = |e| inputs.loaded.runtime_error(e);
    let (tokenizer, fingerprint) = match dir {
        Some(dir) => (
            ClipTokenizer::from_folder(&dir.join("tokenizer")).map_err(in_manifest)?,
            model_fingerprint(&dir).map_err(in_manifest)?,
        ),
        None => {
            // A dry run never downloads: CLIP's BPE (every SD 1.x / 2.x tokenizer's) counts
            // the tokens; the pair ids, which name the model's weights, are provisional.
            tracing::warn!(
                "dry run: the [model] repo is not in the Hugging Face cache and a dry run does \
                 not download it: tokens counted with acs's built-in CLIP tokenizer; pair ids \
                 and the model's files are not checked (the real build fetches it)"
            );
            let tokenizer = ClipTokenizer::embedded().map_err(in_manifest)?;
            (tokenizer, "model-not-downloaded".to_owned())
        }
    };
    let prepared = inputs.prepare(&tokenizer, &fingerprint, options.worker)?;
    watch.lap("plan and align prompts");
    Ok(BuildReport {
        out: options.out.clone(),
        dry_run: true,
        rows: prepared.plan.pairs.len() as u64,
        stage_seconds: watch.laps(),
        planned: prepared.plan.pairs.iter().map(PlannedRow::of).collect(),
        rejected: in_file_order(&prepared.rejects),
        ..inputs.summary(&prepared)
    })
}

/// Rejects in the order of their files (as first named) and lines: the pipeline finds them
/// stage by stage (unreadable rows, then failed rewrites, then alignment), a reader goes down
/// the file.
fn in_file_order(rejects: &[Reject]) -> Vec<Reject> {
    let mut files: Vec<&Path> = Vec::new();
    for reject in rejects {
        if !files.contains(&reject.source.as_path()) {
            files.push(&reject.source);
        }
    }
    let mut sorted = rejects.to_vec();
    sorted.sort_by_key(|r| (files.iter().position(|f| *f == r.source), r.line));
    sorted
}

/// The report of a folder that already holds this build (a kill after the final manifest
/// write can leave the journal behind: it is removed, and a remote build's staging area too).
fn up_to_date(
    out: &Path,
    target: &OutputTarget,
    existing: &DatasetManifest,
) -> Result<BuildReport, AcsError> {
    match &target.remote {
        Some(remote) => crate::store::sink::finish_remote(remote, &target.work),
        None => Journal::remove(out)?,
    }
    Ok(BuildReport {
        out: out.to_path_buf(),
        rows: existing.total_rows(),
        shards: existing.shards.len(),
        up_to_date: true,
        ..BuildReport::default()
    })
}

/// The error of a build whose every input was rejected; the rejects are written to
/// `out/rejects.jsonl` all the same (a rerun into `out` is not refused for them).
fn nothing_to_render(inputs: &BuildInputs, prepared: &Prepared, out: &Path) -> AcsError {
    let counts = inputs.summary(prepared).rejects;
    let reasons: Vec<String> = counts.iter().map(|(r, n)| format!("{r}: {n}")).collect();
    let written = std::fs::create_dir_all(out)
        .map_err(|e| AcsError::io(out, e))
        .and_then(|()| write_rejects(out, &prepared.rejects));
    let listed = match written {
        Ok(()) => format!("see {}", out.join(REJECTS_FILE).display()),
        Err(_) => "`acs build --dry-run` lists them".to_owned(),
    };
    AcsError::input(format!(
        "{}: no pair to render: {} ({}); {listed}",
        inputs.loaded.file.display(),
        match prepared.rejects.len() {
            1 => "the only input was rejected".to_owned(),
            n => format!("all {n} inputs were rejected"),
        },
        reasons.join(", ")
    ))
}

/// `1 pair`, `2 pairs`: `count` and the singular or plural words.
pub fn plural(count: usize, one: &str, many: &str) -> String {
    if count == 1 {
        format!("1 {one}")
    } else {
        format!("{count} {many}")
    }
}

/// A new sink, or the unfinished build's reopened (same model weights required).
fn open_sink(
    options: &BuildOptions,
    target: &OutputTarget,
    inputs: &BuildInputs,
    model: &StableDiffusion,
    prepared: &Prepared,
    existing: Option<DatasetManifest>,
) -> Result<(ShardSink, Resumed), AcsError> {
    // A worker records where its rows stand in the whole plan, for `acs merge`.
    let plan_positions = options.worker.map(|_| {
        prepared
            .plan
            .pairs
            .iter()
            .map(|p| (p.pair_id.clone(), p.position))
            .collect()
    });
    let output = &inputs.loaded.manifest.output;
    let shard_bytes = crate::manifest::parse_byte_size(&output.shard_bytes).unwrap_or(u64::MAX);
    let shard_rows = output.shard_rows as usize;
    if let Some(existing) = existing {
        if existing.model.sha256 != model.sha256 {
            return Err(AcsError::input(format!(
                "{}: the unfinished build used model weights {}, these are {}; the model \
                 changed, choose another folder",
                options.out.display(),
                existing.model.sha256,
                model.sha256
            )));
        }
        return ShardSink::resume(
            &target.work,
            existing,
            shard_rows,
            shard_bytes,
            target.remote.clone(),
            plan_positions,
        );
    }
    Journal::remove(&target.work)?;
    let manifest = DatasetManifest {
        schema_version: SCHEMA_VERSION,
        acs_version: ACS_VERSION.to_owned(),
        build_config: inputs.config.clone(),
        build_config_sha256: inputs.config_sha256.clone(),
        model: ModelInfo {
            id: model.id.clone(),
            sha256: model.sha256.clone(),
        },
        kernel_paths: Vec::new(),
        complete: false,
        shards: Vec::new(),
        worker: options.worker,
    };
    let mut sink = ShardSink::create(&target.work, manifest, shard_rows, shard_bytes)?
        .recording_plan_positions(plan_positions);
    if let Some(remote) = &target.remote {
        sink = sink.publishing_to(remote.clone());
    }
    Ok((sink, Resumed::default()))
}

/// rejects.jsonl: every input that did not become a pair, one JSON object per line.
fn write_rejects(out: &Path, rejects: &[Reject]) -> Result<(), AcsError> {
    let mut lines = Vec::new();
    for reject in rejects {
        serde_json::to_writer(&mut lines, reject)?;
        lines.push(b'\n');
    }
    Ok(write_atomic(&out.join(REJECTS_FILE), &lines)?)
}

/// Renders the planned pairs the sink does not hold yet into it.
fn render<'m>(
    options: &BuildOptions,
    inputs: &BuildInputs,
    model: &'m StableDiffusion,
    prepared: &Prepared,
    sink: &mut ShardSink,
    resumed: &Resumed,
) -> Result<(PairSampler<'m>, StageTimes), AcsError> {
    let manifest = &inputs.loaded.manifest;
    let sampler = manifest
        .pair_sampler(model)
        .map_err(|e| inputs.loaded.runtime_error(e))?;
    let rows = RowMaker {
        model_id: model.id.clone(),
        model_sha256: model.sha256.clone(),
        kernel_path: model.kernel_path(),
        switch_step: sampler.switch_step() as i32,
        latent_shape: sampler.latent_shape().iter().map(|&d| d as i32).collect(),
        manifest,
        thresholds: manifest.thresholds(),
        judges: inputs.judges.iter().map(|j| j.judge.as_ref()).collect(),
        clip: inputs.clip.as_ref(),
        rank_by: manifest.keep_best().map(|(_, by)| by),
    };
    let todo: Vec<_> = prepared
        .plan
        .pairs
        .iter()
        .filter(|p| !resumed.rendered.contains(&p.pair_id))
        .cloned()
        .collect();
    let total = prepared.plan.pairs.len() as u64;
    let progress = Progress::start(options.progress, "rendered", "pairs", resumed.rows, total);
    let times = render::render_into(
        &todo,
        manifest.sampling.batch_pairs as usize,
        &sampler,
        &rows,
        sink,
        &progress,
        resumed.rows,
    )?;
    Ok((sampler, times))
}

/// Writes the last shards, names them, writes the card and the complete manifest.
fn finish(sink: ShardSink, inputs: &BuildInputs) -> Result<(DatasetManifest, u64), AcsError> {
    let mut valid_rows = 0;
    let dataset = sink
        .finish(|dataset, valid| {
            valid_rows = valid;
            dataset_card(dataset, &inputs.loaded.manifest, valid)
        })
        .map_err(|e| e.with_note(RESUME_NOTE))?;
    Ok((dataset, valid_rows))
}
