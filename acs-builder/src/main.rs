//! The `acs` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use acs_builder::build::{run_build, BuildOptions};
use acs_builder::hub::list::format_models;
use acs_builder::hub::{fetch_model, list_models, FetchOptions, HubSettings, Variant};
use acs_builder::imaging::npy_f32;
use acs_builder::model::forward::{run_components, SchedulerChoice};
use acs_builder::model::tiny::{default_tiny_model_dir, write_tiny_model};
use acs_builder::model::StableDiffusion;
use acs_builder::rng::Mt19937;
use acs_builder::stats::dataset_stats;
use acs_builder::tokenizer::ClipTokenizer;
use acs_builder::validate::{inspect, validate, ValidateOptions};
use acs_builder::worker::choose_worker;
use acs_builder::AcsError;
use acs_schema::write_atomic;
use clap::{Parser, Subcommand};
use indicatif::HumanBytes;

// The runtime allocates and frees tensors of tens of megabytes at every layer; the system
// allocator returns them to the kernel each time and pays page faults to get them back
// (docs/performance.md). mimalloc, told to keep freed memory and to use large pages, reuses it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its enum position in mimalloc 2 and 3; the bindings
/// do not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn tune_allocator() {
    // SAFETY: plain option setters of the global allocator, called before any other thread.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        libmimalloc_sys::mi_option_set(libmimalloc_sys::mi_option_large_os_pages, 1);
    }
}

#[derive(Parser)]
#[command(
    name = "acs",
    version,
    about = "Builds Aligned Counterfactual Safety datasets for text-to-image safety research"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render aligned (unsafe, safe) image pairs into Parquet shards.
    Build {
        /// Build manifest (TOML).
        #[arg(long)]
        manifest: PathBuf,
        /// Output dataset folder: new or empty, or an unfinished run of the same build, which
        /// is resumed.
        #[arg(long)]
        out: PathBuf,
        /// List the pairs that would be rendered; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Render only slice i of n (0-based; join the slices with `acs merge`). Default: from
        /// SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT, or JOB_COMPLETION_INDEX /
        /// ACS_WORKER_COUNT when set; `0/1` renders everything.
        #[arg(long, value_name = "i/n")]
        worker: Option<String>,
    },
    /// Check integrity and alignment of a dataset; writes DIR/validation.json.
    Validate {
        /// Dataset folder.
        dir: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Largest fraction of invalid rows that still passes (exit 1 above it).
        #[arg(long, default_value_t = 0.0)]
        max_invalid_fraction: f64,
        /// Re-render this fraction of the rows (a seeded sample) and check that x_T and the
        /// latents are bit-identical (exit 1 otherwise).
        #[arg(long)]
        replay: Option<f64>,
        /// The model folder for --replay when the dataset was built from a local folder.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Write a new dataset of only the valid, intact pairs to --out (the input is not
        /// changed).
        #[arg(long, requires = "out")]
        drop_invalid: bool,
        /// Output folder for --drop-invalid (new or empty).
        #[arg(long, requires = "drop_invalid")]
        out: Option<PathBuf>,
        /// The NudeNet 320n.onnx to re-run (default: the one the build used, if found).
        #[arg(long)]
        nudenet_model: Option<PathBuf>,
        /// Check the stored NudeNet scores without re-running the detector.
        #[arg(long)]
        skip_detector: bool,
    },
    /// Summarise a dataset with polars.
    Stats {
        /// Dataset folder.
        dir: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        /// Also draw histograms of the metrics (valid / invalid rows stacked) into this PNG.
        #[arg(long, value_name = "FILE.png")]
        plot: Option<PathBuf>,
    },
    /// Draw a contact sheet of pairs: unsafe | safe | difference heat map, with captions.
    Preview {
        /// Dataset folder.
        dir: PathBuf,
        /// The PNG file to write.
        #[arg(long, value_name = "FILE.png")]
        out: PathBuf,
        /// Pairs to show: the first ones in dataset order that match the filters.
        #[arg(long, default_value_t = acs_builder::preview::DEFAULT_COUNT)]
        count: usize,
        /// Only pairs of this category.
        #[arg(long)]
        category: Option<String>,
        /// Only valid (true) or invalid (false) pairs.
        #[arg(long, value_name = "true|false")]
        valid: Option<bool>,
        /// Only pairs of this split.
        #[arg(long)]
        split: Option<String>,
        /// Blur the unsafe images so that their content is not recognisable.
        #[arg(long)]
        blur_unsafe: bool,
        /// Panel side in pixels (64 to 1024); images are scaled to fit it.
        #[arg(long, default_value_t = acs_builder::preview::DEFAULT_PANEL)]
        panel: u32,
    },
    /// Join the outputs of `acs build --worker i/n` into one dataset.
    Merge {
        /// Worker output folders.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// The merged dataset folder (new or empty).
        #[arg(long)]
        out: PathBuf,
        /// Merge although some workers' outputs are missing (a partial dataset).
        #[arg(long)]
        allow_partial: bool,
    },
    /// Run the NudeNet detector on PNG images; prints one JSON object per image (its
    /// detections as the nudenet package reports them, and each class's highest raw score).
    Detect {
        /// PNG images.
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// NudeNet's 320n.onnx, or "installed" for the nudenet Python package's copy.
        #[arg(long, default_value = "installed")]
        nudenet_model: String,
    },
    /// Print the alignment metrics of two same-size PNG images exactly as the build computes
    /// them: ssim, psnr, changed_area and changed_box [x0, y0, x1, y1] (null if none changed).
    Metrics {
        /// The unsafe image (PNG).
        unsafe_image: PathBuf,
        /// The safe image (PNG).
        safe_image: PathBuf,
        /// Print the metrics as JSON (psnr is null for identical images).
        #[arg(long)]
        json: bool,
    },
    /// Model utilities.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Download a diffusers model from the Hugging Face hub (HF_ENDPOINT, HF_TOKEN) into its
    /// cache (HF_HUB_CACHE, else $HF_HOME/hub), where `[model] repo = "..."` finds it.
    Fetch {
        /// Hub id, e.g. stable-diffusion-v1-5/stable-diffusion-v1-5.
        repo: String,
        /// Branch, tag or commit hash.
        #[arg(long, default_value = "main")]
        revision: String,
        /// Prefer the `*.fp16.safetensors` weights (half the download).
        #[arg(long, value_parser = ["fp16"])]
        variant: Option<String>,
    },
    /// List the diffusers models in the Hugging Face cache and the embedded tiny model's folder.
    List,
    /// Write the embedded tiny model in diffusers layout into DIR.
    InitTiny {
        /// Target folder (new or empty).
        dir: PathBuf,
    },
    /// Tokenize prompts (one per line of FILE, or `-` for stdin) with the CLIP tokenizer of a
    /// model folder (default: the embedded vocabulary); prints one JSON object per prompt.
    Tokenize {
        /// File of prompts, one per line; `-` reads stdin.
        input: PathBuf,
        /// A diffusers model folder whose tokenizer/ to use.
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Run the text encoder, UNet, VAE decoder or a scheduler on tensors from a safetensors
    /// file and write their outputs (for parity checks against diffusers; see
    /// docs/user-guide.md).
    Forward {
        /// A diffusers model folder.
        #[arg(long)]
        model: PathBuf,
        /// Input tensors (safetensors).
        #[arg(long)]
        inputs: PathBuf,
        /// Output tensors (safetensors).
        #[arg(long)]
        out: PathBuf,
        /// Scheduler for the scheduler_* inputs.
        #[arg(long)]
        scheduler: Option<String>,
        /// Inference steps for the scheduler.
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Weight dtype (f32 or f16).
        #[arg(long, default_value = "f32", value_parser = ["f32", "f16"])]
        dtype: String,
    },
    /// Write the initial latent x_T acs draws for a seed as a float32 .npy file; it equals
    /// torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed)).
    InitialLatent {
        /// The seed.
        #[arg(long)]
        seed: u64,
        /// Comma-separated shape, e.g. 1,4,64,64.
        #[arg(long, value_delimiter = ',', required = true)]
        shape: Vec<usize>,
        /// Output .npy file.
        #[arg(long)]
        out: PathBuf,
    },
}

fn run(cli: Cli) -> Result<(), AcsError> {
    match cli.command {
        Command::Build {
            manifest,
            out,
            dry_run,
            worker,
        } => {
            let worker = choose_worker(worker.as_deref(), |name| std::env::var(name).ok())?;
            if let Some(choice) = &worker {
                eprintln!("worker {} (from {})", choice.slice, choice.source);
            }
            let options = BuildOptions {
                manifest,
                out: out.clone(),
                dry_run,
                worker: worker.map(|c| c.slice),
            };
            let report = run_build(&options, &mut |line| eprintln!("{line}"))?;
            if report.up_to_date {
                println!(
                    "{}: already holds this build ({} rows in {} shards); nothing to do",
                    out.display(),
                    report.rows,
                    report.shards
                );
                return Ok(());
            }
            if dry_run {
                println!(
                    "dry run: {} pairs would be rendered ({} duplicates dropped)",
                    report.rows, report.duplicates
                );
            } else {
                println!(
                    "wrote {} pairs ({} valid) in {} shards to {} ({} duplicates dropped)",
                    report.rows,
                    report.valid_rows,
                    report.shards,
                    out.display(),
                    report.duplicates
                );
                if report.resumed_rows > 0 {
                    println!(
                        "  resumed an unfinished run: {} pairs were rendered before, {} now",
                        report.resumed_rows,
                        report.rows - report.resumed_rows
                    );
                }
            }
            let rejected: usize = report.rejects.values().sum();
            println!(
                "  inputs: {} safe prompts rewritten by the lexicons, {} by the LLM; {} rows \
                 filtered out; {rejected} rejected{}",
                report.rewritten_by_lexicon,
                report.rewritten_by_llm,
                report.filtered,
                if dry_run { "" } else { " (see rejects.jsonl)" }
            );
            for (reason, count) in &report.rejects {
                println!("    rejected {reason:<28} {count:>8}");
            }
            if report.unet_evaluations_saved > 0 {
                println!(
                    "  the prompt-switch prefix saved {} latent evaluations of the UNet",
                    report.unet_evaluations_saved
                );
            }
            for (stage, seconds) in &report.stage_seconds {
                println!("  {stage:<36} {seconds:>8.2} s");
            }
            Ok(())
        }
        Command::Validate {
            dir,
            json,
            max_invalid_fraction,
            replay,
            model,
            drop_invalid,
            out,
            nudenet_model,
            skip_detector,
        } => {
            if !(0.0..=1.0).contains(&max_invalid_fraction) {
                return Err(AcsError::input(format!(
                    "--max-invalid-fraction: must be in [0, 1] (got {max_invalid_fraction})"
                )));
            }
            if let Some(fraction) = replay.filter(|f| !(0.0..=1.0).contains(f) || f.is_nan()) {
                return Err(AcsError::input(format!(
                    "--replay: must be in [0, 1] (got {fraction})"
                )));
            }
            let options = ValidateOptions {
                max_invalid_fraction,
                nudenet_model,
                skip_detector,
            };
            if let (true, Some(out)) = (drop_invalid, out) {
                return drop_invalid_pairs(&dir, &out, &options, json);
            }
            let report = validate(&dir, &options)?;
            let replayed = match replay {
                Some(fraction) if report.failure().is_none() => {
                    Some(replay_dataset(&dir, fraction, model.as_deref())?)
                }
                _ => None,
            };
            if json {
                let mut value = serde_json::to_value(&report)?;
                if let (Some(replayed), Some(object)) = (&replayed, value.as_object_mut()) {
                    object.insert("replay".into(), serde_json::to_value(replayed)?);
                }
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print!("{}", report.table());
                if let Some(replayed) = &replayed {
                    println!(
                        "replay: {} of {} re-rendered rows identical",
                        replayed.identical, replayed.rows
                    );
                    for line in &replayed.mismatches {
                        println!("  {line}");
                    }
                }
            }
            if let Some(err) = report.failure() {
                return Err(err);
            }
            match replayed {
                Some(r) if !r.mismatches.is_empty() => Err(AcsError::Invalid(format!(
                    "replay: {} of {} re-rendered rows differ from the dataset (first: {})",
                    r.mismatches.len(),
                    r.rows,
                    r.mismatches[0]
                ))),
                _ => Ok(()),
            }
        }
        Command::Metrics {
            unsafe_image,
            safe_image,
            json,
        } => {
            let metrics = acs_builder::metrics::file_pair_metrics(&unsafe_image, &safe_image)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&metrics)?);
            } else {
                print!("{}", metrics.table());
            }
            Ok(())
        }
        Command::Stats { dir, json, plot } => {
            let stats = dataset_stats(&dir)?;
            // The plot first: a failure prints one error line and no report.
            let plotted = match &plot {
                Some(png) => Some(acs_builder::plot::plot_metrics(&dir, png)?),
                None => None,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                print!("{}", stats.table());
            }
            if let (Some(png), Some(report)) = (plot, plotted) {
                // stdout stays pure JSON with --json.
                eprintln!(
                    "wrote histograms of {} to {} ({}x{} px)",
                    report.metrics.join(", "),
                    png.display(),
                    report.width,
                    report.height
                );
            }
            Ok(())
        }
        Command::Preview {
            dir,
            out,
            count,
            category,
            valid,
            split,
            blur_unsafe,
            panel,
        } => {
            let options = acs_builder::preview::PreviewOptions {
                out,
                count,
                category,
                valid,
                split,
                blur_unsafe,
                panel,
            };
            let report = acs_builder::preview::preview(&dir, &options)?;
            println!(
                "wrote {} ({}x{} px): {} of {} matching pairs ({} rows in the dataset)",
                report.out.display(),
                report.width,
                report.height,
                report.shown,
                report.matched,
                report.total
            );
            Ok(())
        }
        Command::Model {
            command:
                ModelCommand::Fetch {
                    repo,
                    revision,
                    variant,
                },
        } => {
            let options = FetchOptions {
                variant: variant.as_deref().map(Variant::parse).transpose()?,
                repo,
                revision,
            };
            let settings = HubSettings::from_env()?;
            let report = fetch_model(&settings, &options, &mut |line| eprintln!("note: {line}"))?;
            println!(
                "{}@{} (commit {}) is in {}",
                options.repo,
                options.revision,
                report.commit,
                report.snapshot.display()
            );
            if report.downloaded_files == 0 {
                println!("  all {} files were already in the cache", report.files);
            } else {
                println!(
                    "  downloaded {} of {} files ({})",
                    report.downloaded_files,
                    report.files,
                    HumanBytes(report.downloaded_bytes)
                );
            }
            Ok(())
        }
        Command::Detect {
            images,
            nudenet_model,
        } => detect_images(&images, &nudenet_model),
        Command::Merge {
            dirs,
            out,
            allow_partial,
        } => {
            let report = acs_builder::merge::merge(&dirs, &out, allow_partial)?;
            println!(
                "merged {} worker outputs into {}: {} rows in {} shards{}",
                report.workers,
                report.out,
                report.rows,
                report.shards,
                if report.missing_workers.is_empty() {
                    String::new()
                } else {
                    format!(" (partial: workers {:?} missing)", report.missing_workers)
                }
            );
            Ok(())
        }
        Command::Model {
            command: ModelCommand::List,
        } => {
            let cache = acs_builder::hub_cache::hub_cache_dir();
            let models = list_models(&cache)?;
            let tiny = default_tiny_model_dir();
            let tiny = tiny.join("model_index.json").is_file().then_some(tiny);
            print!("{}", format_models(&cache, &models, tiny.as_deref()));
            Ok(())
        }
        Command::Model {
            command: ModelCommand::InitTiny { dir },
        } => {
            write_tiny_model(&dir)?;
            println!("wrote the tiny model to {}", dir.display());
            Ok(())
        }
        Command::Model {
            command: ModelCommand::Tokenize { input, model },
        } => {
            let tokenizer = match model {
                Some(dir) => ClipTokenizer::from_folder(&dir.join("tokenizer"))?,
                None => ClipTokenizer::embedded()?,
            };
            let text = if input.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| AcsError::input(format!("stdin: {e}")))?
            } else {
                std::fs::read_to_string(&input).map_err(|e| AcsError::io(&input, e))?
            };
            for prompt in text.lines() {
                let tokens = tokenizer.encode(prompt)?;
                let line = serde_json::json!({
                    "ids": tokens.ids,
                    "content": tokens.content,
                    "truncated": tokens.truncated,
                });
                println!("{line}");
            }
            Ok(())
        }
        Command::Model {
            command:
                ModelCommand::Forward {
                    model,
                    inputs,
                    out,
                    scheduler,
                    steps,
                    dtype,
                },
        } => {
            let dtype = if dtype == "f16" {
                candle_core::DType::F16
            } else {
                candle_core::DType::F32
            };
            let model = StableDiffusion::load(&model, dtype, candle_core::Device::Cpu, None)?;
            let choice = scheduler
                .as_deref()
                .map(|name| SchedulerChoice { name, steps });
            for name in run_components(&model, &inputs, &out, choice)? {
                println!("{name}");
            }
            Ok(())
        }
        Command::Model {
            command: ModelCommand::InitialLatent { seed, shape, out },
        } => {
            let count: usize = shape.iter().product();
            if count == 0 || count > 1 << 28 {
                return Err(AcsError::input(format!(
                    "--shape: {shape:?} must have between 1 and 2^28 elements"
                )));
            }
            let values = Mt19937::new(seed).randn_f32(count);
            write_atomic(&out, &npy_f32(&values, &shape))?;
            Ok(())
        }
    }
}

/// `acs validate DIR --drop-invalid --out OUT`: copies the valid, intact pairs into a new
/// dataset, then validates that one (its validation.json is written there, not in DIR).
fn drop_invalid_pairs(
    dir: &std::path::Path,
    out: &std::path::Path,
    options: &ValidateOptions,
    json: bool,
) -> Result<(), AcsError> {
    let inspection = inspect(dir, options)?;
    let repaired = acs_builder::repair::drop_invalid(dir, out, &inspection)?;
    let check = ValidateOptions {
        max_invalid_fraction: 0.0,
        ..options.clone()
    };
    let report = validate(out, &check)?;
    if json {
        let value = serde_json::json!({
            "input": inspection.report,
            "repair": repaired,
            "output": report,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", inspection.report.table());
        println!(
            "wrote {} of {} pairs to {} in {} shards ({} invalid and {} with integrity errors left out{})",
            repaired.kept,
            inspection.report.rows,
            out.display(),
            repaired.shards,
            repaired.dropped_invalid,
            repaired.dropped_faulty,
            if repaired.skipped_shards.is_empty() {
                String::new()
            } else {
                format!("; unreadable shards skipped: {}", repaired.skipped_shards.join(", "))
            }
        );
        print!("{}", report.table());
    }
    report.failure().map_or(Ok(()), Err)
}

/// `acs detect`: NudeNet detections of PNG files, one JSON line each.
fn detect_images(images: &[PathBuf], model: &str) -> Result<(), AcsError> {
    use acs_builder::nudenet::{locate_model, NudeDetector, LABELS};
    let path = locate_model(model, std::path::Path::new("."))
        .map_err(|e| e.with_note(" (--nudenet-model)"))?;
    let detector = NudeDetector::load(&path)?;
    for path in images {
        let bytes = std::fs::read(path).map_err(|e| AcsError::io(path, e))?;
        let (rgb, width, height) = acs_builder::imaging::decode_png(&bytes)
            .map_err(|e| AcsError::input(format!("{}: {e}", path.display())))?;
        let (width, height) = (width as usize, height as usize);
        let raw = detector.raw_output(&rgb, width, height)?;
        let anchors = raw.len() / (4 + LABELS.len());
        let class_max: Vec<f32> = (0..LABELS.len())
            .map(|c| {
                raw[(4 + c) * anchors..(5 + c) * anchors]
                    .iter()
                    .copied()
                    .fold(f32::NEG_INFINITY, f32::max)
            })
            .collect();
        let detections: Vec<serde_json::Value> =
            acs_builder::nudenet::postprocess(&raw, width, height)
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "class": d.label(),
                        "score": d.score,
                        "box": d.int_box(),
                    })
                })
                .collect();
        let line = serde_json::json!({
            "image": path.display().to_string(),
            "detections": detections,
            "class_max": class_max,
        });
        println!("{line}");
    }
    Ok(())
}

/// Replays a fraction of a validated dataset's rows with the model it was built with.
fn replay_dataset(
    dir: &std::path::Path,
    fraction: f64,
    model_dir: Option<&std::path::Path>,
) -> Result<acs_builder::replay::ReplayReport, AcsError> {
    use acs_builder::replay::{load_dataset_model, replay};
    let manifest = acs_schema::DatasetManifest::load(dir)?;
    let build: acs_builder::config::BuildManifest =
        serde_json::from_value(manifest.build_config["manifest"].clone())?;
    let mut records = Vec::new();
    for shard in &manifest.shards {
        for (row, record) in acs_schema::read_shard(&dir.join(&shard.path))?
            .into_iter()
            .enumerate()
        {
            records.push((format!("{}: row {row}", shard.path), record));
        }
    }
    let model = load_dataset_model(&build, model_dir)?;
    replay(&manifest, &build, &model, &records, fraction)
}

/// candle asks for its thread count on every matrix multiplication and, unless
/// RAYON_NUM_THREADS is set, answers by parsing /proc/cpuinfo each time; fixing the count once
/// removed about a quarter of the smoke build's UNet time (docs/performance.md).
fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Sound: called first thing in main, before any other thread exists.
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
}

fn main() -> ExitCode {
    tune_allocator();
    pin_thread_count();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
