//! `acs build`: manifest -> sources -> prompt alignment -> aligned rendering -> metrics and
//! verdict -> shard sink. Everything that can be checked is checked before the output folder
//! is touched.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use acs_schema::{
    write_atomic, DatasetManifest, ImageBlob, ModelInfo, PairRecord, WorkerSlice, MANIFEST_FILE,
    SCHEMA_VERSION,
};
use candle_core::{DType, Device};
use serde_json::json;

use crate::card::dataset_card;
use crate::config::{parse_byte_size, BuildManifest, LoadedManifest, ModelSection};
use crate::device::DeviceSpec;
use crate::error::AcsError;
use crate::hub::{fetch_model, FetchOptions, HubSettings, Variant};
use crate::hub_cache::{hub_cache_dir, resolve_snapshot};
use crate::imaging::{encode_png, f16_le_bytes, f32_from_f16_le};
use crate::lexicon::Lexicons;
use crate::metrics::{pair_metrics, ChangedBox, PairMetrics};
use crate::model::tiny::acs_home;
use crate::model::tiny::{ensure_tiny_model, TINY_MODEL_ID};
use crate::model::{model_fingerprint, StableDiffusion};
use crate::nudenet::SafetyScorer;
use crate::pairing::{Pairer, Pairing};
use crate::plan::Plan;
use crate::plan::{plan, PlannedPair};
use crate::rewrite::llm::LlmRewriter;
use crate::sampler::{PairSampler, RenderJob, RenderedPair};
use crate::sink::{Resumed, ShardSink};
use crate::sources::{read_all, Reject};
use crate::tokenizer::ClipTokenizer;
use crate::verdict::{verdict, SafetyScores, Thresholds};
use rayon::prelude::*;

/// The acs version recorded in manifests and rows.
pub const ACS_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Appended to errors after which the output folder holds resumable work.
const RESUME_NOTE: &str = " (the finished work is kept: run the same `acs build` again to resume)";

/// The detector named in the build config when `[validation].nudenet_model` is set.
pub const DETECTOR_NAME: &str = "nudenet-320n";

/// Options of one `acs build` run.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The build manifest file.
    pub manifest: PathBuf,
    /// The output dataset folder.
    pub out: PathBuf,
    /// Plan only: list the pairs, load no model weights beyond the tokenizer, write nothing.
    pub dry_run: bool,
    /// Render only this worker's slice of the pairs (`--worker i/n`).
    pub worker: Option<WorkerSlice>,
}

/// What a build did, with wall time per stage.
#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    /// Rows written.
    pub rows: u64,
    /// Rows that pass the thresholds.
    pub valid_rows: u64,
    /// Duplicate input pairs dropped.
    pub duplicates: usize,
    /// Inputs that did not become pairs, by reason (also in rejects.jsonl).
    pub rejects: std::collections::BTreeMap<String, usize>,
    /// Rows a source's filters left out.
    pub filtered: usize,
    /// Safe prompts the lexicons made.
    pub rewritten_by_lexicon: usize,
    /// Safe prompts the LLM made.
    pub rewritten_by_llm: usize,
    /// Shards written.
    pub shards: usize,
    /// Latent rows the prompt-switch prefix did not send through the UNet.
    pub unet_evaluations_saved: u64,
    /// True when the folder already held this exact build.
    pub up_to_date: bool,
    /// Rows an interrupted run of this build had already rendered (0 for a fresh build).
    pub resumed_rows: u64,
    /// (stage, seconds) in pipeline order.
    pub stage_seconds: Vec<(String, f64)>,
}

/// The build configuration recorded in the dataset manifest: the normalised manifest plus the
/// sha256 of every source file, so a changed prompt file is a changed build.
fn build_config(
    loaded: &LoadedManifest,
    lexicons: &Lexicons,
    scorer: Option<&SafetyScorer>,
) -> Result<serde_json::Value, AcsError> {
    let mut sources = Vec::new();
    for source in &loaded.manifest.sources {
        let path = loaded.resolve(&source.path);
        let sha256 = acs_schema::sha256_file(&path)
            .map_err(|_| AcsError::input(format!("{}: cannot read source file", path.display())))?;
        sources.push(json!({"path": source.path, "sha256": sha256}));
    }
    let mut config = json!({
        "manifest": serde_json::to_value(&loaded.manifest)?,
        "source_files": sources,
        "lexicons_sha256": lexicons.sha256(),
    });
    if let Some(scorer) = scorer {
        config["detector"] = json!({
            "name": DETECTOR_NAME,
            "sha256": scorer.detector().sha256(),
        });
    }
    Ok(config)
}

/// Keeps the pairs of one worker's slice.
fn keep_worker_slice(plan: &mut Plan, worker: Option<WorkerSlice>) {
    if let Some(worker) = worker {
        plan.pairs.retain(|p| worker.owns(&p.pair_id));
    }
}

/// What the output folder holds.
enum OutputState {
    /// Nothing (new, empty, or only the traces of a build killed before its manifest).
    Empty,
    /// This build, finished.
    Finished,
    /// This build, unfinished: resume it.
    Unfinished(DatasetManifest),
}

/// Whether a folder holds only what a build killed before its first manifest leaves.
fn only_early_traces(out: &Path) -> Result<bool, AcsError> {
    for entry in std::fs::read_dir(out).map_err(|e| AcsError::io(out, e))? {
        let entry = entry.map_err(|e| AcsError::io(out, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let allowed = match name.as_str() {
            crate::journal::JOURNAL_DIR => true,
            "data" => std::fs::read_dir(entry.path())
                .map_err(|e| AcsError::io(&entry.path(), e))?
                .flatten()
                .all(|e| e.file_name().to_string_lossy().ends_with(".tmp")),
            _ => name.starts_with('.') && name.ends_with(".tmp"),
        };
        if !allowed {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Refuses output folders that cannot be written or hold something else; touches nothing.
fn check_output_folder(
    out: &Path,
    config_sha256: &str,
    worker: Option<WorkerSlice>,
) -> Result<OutputState, AcsError> {
    if out.exists() {
        if !out.is_dir() {
            return Err(AcsError::input(format!(
                "{}: output exists and is not a folder",
                out.display()
            )));
        }
        if out.join(MANIFEST_FILE).is_file() {
            let existing = DatasetManifest::load(out)?;
            if existing.build_config_sha256 != config_sha256 {
                return Err(AcsError::input(format!(
                    "{}: holds a build of a different manifest (build_config_sha256 {}, this \
                     manifest {config_sha256}); choose another folder",
                    out.display(),
                    existing.build_config_sha256
                )));
            }
            if existing.worker != worker {
                let describe = |w: Option<WorkerSlice>| {
                    w.map_or("the whole build".to_string(), |w| format!("worker {w}"))
                };
                return Err(AcsError::input(format!(
                    "{}: holds {} of this manifest, not {}; choose another folder",
                    out.display(),
                    describe(existing.worker),
                    describe(worker)
                )));
            }
            probe_writable(out)?;
            return Ok(if existing.complete {
                OutputState::Finished
            } else {
                OutputState::Unfinished(existing)
            });
        }
        if !only_early_traces(out)? {
            return Err(AcsError::input(format!(
                "{}: output folder is not empty",
                out.display()
            )));
        }
        probe_writable(out)?;
    } else {
        let mut ancestor = out.parent();
        while let Some(dir) = ancestor {
            if dir.as_os_str().is_empty() {
                probe_writable(Path::new("."))?;
                break;
            }
            if dir.exists() {
                probe_writable(dir)?;
                break;
            }
            ancestor = dir.parent();
        }
    }
    Ok(OutputState::Empty)
}

fn probe_writable(dir: &Path) -> Result<(), AcsError> {
    tempfile::Builder::new()
        .prefix(".acs-probe-")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| {
            AcsError::input(format!(
                "{}: output folder is not writable: {e}",
                dir.display()
            ))
        })
}

fn dtype_of(name: &str) -> DType {
    match name {
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        _ => DType::F32,
    }
}

/// The model folder a manifest names, or the embedded tiny model's (written on first use).
fn model_dir(loaded: &LoadedManifest) -> Result<PathBuf, AcsError> {
    match &loaded.manifest.model {
        Some(ModelSection {
            path: Some(path), ..
        }) => Ok(loaded.resolve(path)),
        Some(ModelSection {
            repo: Some(repo),
            revision,
            dtype,
            ..
        }) => resolve_or_fetch(repo, revision, dtype == "f16"),
        Some(_) => Err(AcsError::input(format!(
            "{}: [model]: set exactly one of `path` and `repo`",
            loaded.file.display()
        ))),
        None => ensure_tiny_model(),
    }
}

/// A hub model's snapshot in the HF cache; when it is not there and the hub may be used
/// (HF_HUB_OFFLINE unset), it is fetched first (the fp16 variant for f16 builds).
fn resolve_or_fetch(repo: &str, revision: &str, fp16: bool) -> Result<PathBuf, AcsError> {
    let cache = hub_cache_dir();
    let missing = match resolve_snapshot(&cache, repo, revision) {
        Ok(dir) => return Ok(dir),
        Err(missing) => missing,
    };
    let settings = HubSettings::from_env()?;
    if settings.offline {
        return Err(missing);
    }
    let options = FetchOptions {
        repo: repo.to_owned(),
        revision: revision.to_owned(),
        variant: fp16.then_some(Variant::Fp16),
    };
    fetch_model(&settings, &options, &mut |note| eprintln!("note: {note}"))
        .map_err(|err| AcsError::input(format!("{missing}; fetching it failed: {err}")))?;
    resolve_snapshot(&cache, repo, revision)
}

/// Loads the manifest's model, or the embedded tiny model when it names none.
pub fn load_model(loaded: &LoadedManifest) -> Result<StableDiffusion, AcsError> {
    load_model_from(&model_dir(loaded)?, loaded.manifest.model.as_ref())
}

/// Loads the model folder `dir` with the dtype and device of `section` (`None`: the embedded
/// tiny model, f32 on the CPU).
pub fn load_model_from(
    dir: &Path,
    section: Option<&ModelSection>,
) -> Result<StableDiffusion, AcsError> {
    match section {
        Some(model) => StableDiffusion::load(
            dir,
            dtype_of(&model.dtype),
            DeviceSpec::parse(&model.device)
                .map_err(|reason| AcsError::input(format!("[model].device: {reason}")))?
                .open()?,
            model.repo.clone(),
        ),
        None => StableDiffusion::load(dir, DType::F32, Device::Cpu, Some(TINY_MODEL_ID.to_owned())),
    }
}

struct Stopwatch(Vec<(String, f64)>, Instant);

impl Stopwatch {
    fn lap(&mut self, stage: &str) {
        let now = Instant::now();
        self.0
            .push((stage.to_owned(), (now - self.1).as_secs_f64()));
        self.1 = now;
    }

    fn add(&mut self, stage: &str, spent: Duration) {
        self.0.push((stage.to_owned(), spent.as_secs_f64()));
    }
}

/// Inputs that did not become pairs, one JSON object per line, in the output folder.
pub const REJECTS_FILE: &str = "rejects.jsonl";

/// Runs a build.
pub fn run_build(
    options: &BuildOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<BuildReport, AcsError> {
    let mut watch = Stopwatch(Vec::new(), Instant::now());
    let loaded = LoadedManifest::load(&options.manifest)?;
    let manifest = &loaded.manifest;
    let sources = read_all(&loaded)?;
    let lexicons = match &manifest.rewrite.lexicons {
        Some(dir) => Lexicons::from_dir(&loaded.resolve(dir))?,
        None => Lexicons::built_in()?,
    };
    let llm = match &manifest.rewrite.llm {
        Some(section) => {
            let cache = match &section.cache {
                Some(dir) => loaded.resolve(dir),
                None => acs_home().join("llm-cache"),
            };
            Some(LlmRewriter::new(section, &cache)?)
        }
        None => None,
    };
    let scorer = SafetyScorer::from_section(&manifest.validation, &loaded.base_dir)?;
    let config = build_config(&loaded, &lexicons, scorer.as_ref())?;
    let config_sha256 = acs_schema::sha256_bytes(serde_json::to_string(&config)?.as_bytes());
    watch.lap("read manifest and sources");
    let state = if options.dry_run {
        OutputState::Empty
    } else {
        check_output_folder(&options.out, &config_sha256, options.worker)?
    };
    if let OutputState::Finished = state {
        let existing = DatasetManifest::load(&options.out)?;
        // A kill after the final manifest write can leave the journal behind.
        crate::journal::Journal::remove(&options.out)?;
        return Ok(BuildReport {
            rows: existing.total_rows(),
            shards: existing.shards.len(),
            up_to_date: true,
            ..BuildReport::default()
        });
    }

    let pair_inputs = |tokenizer: &ClipTokenizer,
                       progress: &mut dyn FnMut(&str)|
     -> Result<(Pairing, Vec<Reject>), AcsError> {
        let pairer = Pairer {
            lexicons: &lexicons,
            tokenizer,
            max_token_edits: manifest.alignment.max_token_edits,
            llm: llm.as_ref(),
        };
        let mut pairing = pairer.pair(sources.items.clone(), progress)?;
        let mut rejects = sources.rejects.clone();
        rejects.append(&mut pairing.rejects);
        Ok((pairing, rejects))
    };
    let summarise = |pairing: &Pairing, rejects: &[Reject], plan: &Plan| {
        let mut report = BuildReport {
            duplicates: plan.duplicates,
            filtered: sources.filtered,
            rewritten_by_lexicon: pairing.rewritten_by_lexicon,
            rewritten_by_llm: pairing.rewritten_by_llm,
            ..BuildReport::default()
        };
        for reject in rejects {
            *report.rejects.entry(reject.reason.clone()).or_default() += 1;
        }
        report
    };

    if options.dry_run {
        // Plan with the model's tokenizer and fingerprint only; no weights are loaded.
        let dir = model_dir(&loaded)?;
        let tokenizer = ClipTokenizer::from_folder(&dir.join("tokenizer"))?;
        let (pairing, rejects) = pair_inputs(&tokenizer, progress)?;
        let mut plan = plan(pairing.pairs.clone(), manifest, &model_fingerprint(&dir)?);
        keep_worker_slice(&mut plan, options.worker);
        watch.lap("plan and align prompts");
        for pair in &plan.pairs {
            progress(&format!(
                "{} {} seed={} edits={} {:?} -> {:?}",
                pair.pair_id,
                pair.split,
                pair.seed,
                pair.alignment.token_edit_distance,
                pair.prompts.unsafe_prompt,
                pair.prompts.safe_prompt
            ));
        }
        return Ok(BuildReport {
            rows: plan.pairs.len() as u64,
            stage_seconds: watch.0,
            ..summarise(&pairing, &rejects, &plan)
        });
    }
    let model = load_model(&loaded)?;
    watch.lap("load model");
    let (pairing, rejects) = pair_inputs(&model.tokenizer, progress)?;
    let mut plan = plan(pairing.pairs.clone(), manifest, &model.sha256);
    keep_worker_slice(&mut plan, options.worker);
    watch.lap("plan and align prompts");
    if plan.pairs.is_empty() {
        let counts = summarise(&pairing, &rejects, &plan).rejects;
        let reasons: Vec<String> = counts.iter().map(|(r, n)| format!("{r}: {n}")).collect();
        return Err(AcsError::input(format!(
            "{}: no pair to render: all {} inputs were rejected ({}); `acs build --dry-run` \
             lists them",
            loaded.file.display(),
            rejects.len(),
            reasons.join(", ")
        )));
    }

    let s = &manifest.sampling;
    let sampler = PairSampler::new(
        &model,
        &s.scheduler,
        s.steps as usize,
        s.height as usize,
        s.width as usize,
        &s.negative_prompt,
        manifest.switch_step(),
    )?;
    let base = DatasetManifest {
        schema_version: SCHEMA_VERSION,
        acs_version: ACS_VERSION.to_owned(),
        build_config: config,
        build_config_sha256: config_sha256,
        model: ModelInfo {
            id: model.id.clone(),
            sha256: model.sha256.clone(),
        },
        complete: false,
        shards: Vec::new(),
        worker: options.worker,
    };
    let shard_bytes = parse_byte_size(&manifest.output.shard_bytes).unwrap_or(u64::MAX);
    let shard_rows = manifest.output.shard_rows as usize;
    let (mut sink, resumed) = match state {
        OutputState::Unfinished(existing) => {
            if existing.model.sha256 != model.sha256 {
                return Err(AcsError::input(format!(
                    "{}: the unfinished build used model weights {}, these are {}; the model \
                     changed, choose another folder",
                    options.out.display(),
                    existing.model.sha256,
                    model.sha256
                )));
            }
            let (sink, resumed) =
                ShardSink::resume(&options.out, existing, shard_rows, shard_bytes)?;
            progress(&format!(
                "resuming: {} of {} pairs were already rendered",
                resumed.rows,
                plan.pairs.len()
            ));
            (sink, resumed)
        }
        _ => {
            crate::journal::Journal::remove(&options.out)?;
            let sink = ShardSink::create(&options.out, base, shard_rows, shard_bytes)?;
            (sink, Resumed::default())
        }
    };
    let mut rejects_jsonl = Vec::new();
    for reject in &rejects {
        serde_json::to_writer(&mut rejects_jsonl, reject)?;
        rejects_jsonl.push(b'\n');
    }
    if let Err(err) = write_atomic(&options.out.join(REJECTS_FILE), &rejects_jsonl) {
        sink.discard_if_empty();
        return Err(err.into());
    }
    let thresholds = Thresholds::from_manifest(manifest);
    let mut report = summarise(&pairing, &rejects, &plan);
    let mut times = [Duration::ZERO; 3];
    let todo: Vec<PlannedPair> = plan
        .pairs
        .iter()
        .filter(|p| !resumed.rendered.contains(&p.pair_id))
        .cloned()
        .collect();
    report.resumed_rows = resumed.rows;
    let rendered = render_all(
        &todo,
        &sampler,
        &model,
        manifest,
        &thresholds,
        scorer.as_ref(),
        &mut sink,
        &mut report,
        &mut times,
        progress,
    );
    if let Err(err) = rendered {
        if sink.holds_work() {
            return Err(err.with_note(RESUME_NOTE));
        }
        // Before anything durable there is nothing to resume: leave no trace.
        let _ = std::fs::remove_file(options.out.join(REJECTS_FILE));
        sink.discard_if_empty();
        return Err(err);
    }
    let [render_time, metrics_time, mut write_time] = times;
    let started = Instant::now();
    let mut valid_rows = 0;
    let finished = sink
        .finish(|dataset, valid| {
            valid_rows = valid;
            dataset_card(dataset, manifest, valid)
        })
        .map_err(|e| e.with_note(RESUME_NOTE))?;
    report.rows = finished.total_rows();
    report.valid_rows = valid_rows;
    write_time += started.elapsed();
    report.shards = finished.shards.len();
    let networks = sampler.timings();
    watch.add("render: text encoder", networks.text_encoder);
    report.unet_evaluations_saved = networks.unet_evaluations_saved;
    watch.add(
        &format!("render: UNet ({} calls)", networks.unet_calls),
        networks.unet,
    );
    watch.add("render: VAE decode", networks.vae);
    watch.add(
        "render: other (x_T, batching)",
        render_time.saturating_sub(networks.text_encoder + networks.unet + networks.vae),
    );
    watch.add("metrics, detector and PNG encoding", metrics_time);
    watch.add("write shards, manifest, card", write_time);
    report.stage_seconds = watch.0;
    Ok(report)
}

/// Renders every planned pair in batches and pushes the rows into the sink; `times` collects
/// (render, metrics, write) wall time.
#[allow(clippy::too_many_arguments)]
fn render_all(
    pairs: &[PlannedPair],
    sampler: &PairSampler,
    model: &StableDiffusion,
    manifest: &BuildManifest,
    thresholds: &Thresholds,
    scorer: Option<&SafetyScorer>,
    sink: &mut ShardSink,
    report: &mut BuildReport,
    times: &mut [Duration; 3],
    progress: &mut dyn FnMut(&str),
) -> Result<(), AcsError> {
    let total = pairs.len();
    for batch in pairs.chunks(manifest.sampling.batch_pairs as usize) {
        let started = Instant::now();
        let jobs: Vec<RenderJob> = batch
            .iter()
            .map(|pair| RenderJob {
                seed: pair.seed,
                unsafe_ids: pair.alignment.unsafe_tokens.ids.clone(),
                safe_ids: pair.alignment.safe_tokens.ids.clone(),
                guidance_scale: pair.guidance_scale,
            })
            .collect();
        let rendered = sampler.render(&jobs)?;
        times[0] += started.elapsed();
        let started = Instant::now();
        let context = RowContext {
            model_id: &model.id,
            model_sha256: &model.sha256,
            switch_step: sampler.switch_step() as i32,
            latent_shape: sampler.latent_shape().iter().map(|&d| d as i32).collect(),
            manifest,
            thresholds,
            scorer,
        };
        let records: Vec<PairRecord> = batch
            .par_iter()
            .zip(rendered)
            .map(|(pair, out)| to_record(pair, out, &context))
            .collect::<Result<_, _>>()?;
        times[1] += started.elapsed();
        let started = Instant::now();
        report.rows += records.len() as u64;
        sink.push_batch(records)?;
        times[2] += started.elapsed();
        progress(&format!("rendered {}/{total} pairs", report.rows));
    }
    Ok(())
}

/// What every row of a build shares.
struct RowContext<'a> {
    model_id: &'a str,
    model_sha256: &'a str,
    switch_step: i32,
    latent_shape: Vec<i32>,
    manifest: &'a BuildManifest,
    thresholds: &'a Thresholds,
    scorer: Option<&'a SafetyScorer>,
}

/// A pair's metrics on its latents as stored (float16, so `acs validate` recomputes the same
/// values), with the stored latent bytes (unsafe, safe).
pub fn metrics_as_stored(
    unsafe_rgb: &[u8],
    safe_rgb: &[u8],
    width: usize,
    height: usize,
    unsafe_latent: &[f32],
    safe_latent: &[f32],
) -> (PairMetrics, Vec<u8>, Vec<u8>) {
    let unsafe_f16 = f16_le_bytes(unsafe_latent);
    let safe_f16 = f16_le_bytes(safe_latent);
    let as_stored = |bytes: &[u8]| f32_from_f16_le(bytes).unwrap_or_default();
    let metrics = pair_metrics(
        unsafe_rgb,
        safe_rgb,
        width,
        height,
        &as_stored(&unsafe_f16),
        &as_stored(&safe_f16),
    );
    (metrics, unsafe_f16, safe_f16)
}

/// Builds the schema v1 row of a rendered pair.
fn to_record(
    pair: &PlannedPair,
    out: RenderedPair,
    context: &RowContext,
) -> Result<PairRecord, AcsError> {
    let (manifest, thresholds) = (context.manifest, context.thresholds);
    let s = &manifest.sampling;
    let (width, height) = (s.width as usize, s.height as usize);
    let (metrics, unsafe_f16, safe_f16) = metrics_as_stored(
        &out.unsafe_rgb,
        &out.safe_rgb,
        width,
        height,
        &out.unsafe_latent,
        &out.safe_latent,
    );
    let scores = match context.scorer {
        Some(scorer) => SafetyScores {
            unsafe_score: Some(scorer.score(&out.unsafe_rgb, width, height)?),
            safe_score: Some(scorer.score(&out.safe_rgb, width, height)?),
        },
        None => SafetyScores::default(),
    };
    let reasons = verdict(
        &pair.alignment.violations(thresholds.max_token_edits),
        &metrics,
        &scores,
        thresholds,
    );
    let image = |rgb: &[u8], side: &str| -> Result<ImageBlob, AcsError> {
        Ok(ImageBlob {
            bytes: encode_png(rgb, s.width, s.height)?,
            path: Some(format!("{}-{side}.png", pair.pair_id)),
        })
    };
    let store = manifest.output.store_latents;
    Ok(PairRecord {
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
        model_id: context.model_id.to_owned(),
        model_sha256: context.model_sha256.to_owned(),
        scheduler: s.scheduler.clone(),
        alignment_mode: manifest.alignment.mode.clone(),
        steps: s.steps as i32,
        switch_step: context.switch_step,
        height: s.height as i32,
        width: s.width as i32,
        guidance_scale: pair.guidance_scale,
        unsafe_image: image(&out.unsafe_rgb, "unsafe")?,
        safe_image: image(&out.safe_rgb, "safe")?,
        latent_shape: context.latent_shape.clone(),
        unsafe_latent: store.then_some(unsafe_f16),
        safe_latent: store.then_some(safe_f16),
        ssim: metrics.ssim,
        psnr: metrics.psnr,
        changed_area: metrics.changed_area,
        changed_box: metrics.changed_box.map(ChangedBox::to_vec),
        latent_cosine: metrics.latent_cosine,
        nudenet_unsafe: scores.unsafe_score,
        nudenet_safe: scores.safe_score,
        valid: reasons.is_empty(),
        reject_reasons: reasons,
        acs_version: ACS_VERSION.to_owned(),
    })
}
