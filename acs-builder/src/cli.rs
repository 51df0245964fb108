//! The `acs` command line (clap): commands, their arguments, and the global verbosity flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use acs_builder::commands::build::worker::choose_worker;
use acs_builder::commands::build::BuildOptions;
use acs_builder::commands::detect::DetectOptions;
use acs_builder::commands::preview::{PreviewOptions, DEFAULT_COUNT, DEFAULT_PANEL};
use acs_builder::commands::progress::ProgressMode;
use acs_builder::commands::validate::{ValidateOptions, ValidateRun};
use acs_builder::judge::JudgeKind;
use acs_builder::runtime::hub::{FetchOptions, Variant};
use acs_builder::runtime::{Dtype, SchedulerKind};
use acs_builder::AcsError;

/// The command line.
#[derive(Parser)]
#[command(
    name = "acs",
    version,
    about = "Builds Aligned Counterfactual Safety datasets for text-to-image safety research"
)]
pub struct Cli {
    /// Print only errors and warnings (no progress, no notes, no build summary); results a
    /// command exists to print (stats, detect, metrics, --json) are still printed.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print more detail (-v: debug, -vv: trace); RUST_LOG overrides both flags.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand)]
pub enum Command {
    /// Render aligned (unsafe, safe) image pairs into Parquet shards.
    Build(BuildArgs),
    /// Check integrity and alignment of a dataset; writes DIR/validation.json.
    Validate(ValidateArgs),
    /// Summarise a dataset with polars.
    Stats(StatsArgs),
    /// Draw a contact sheet of pairs: unsafe | safe | difference heat map, with captions.
    Preview(PreviewArgs),
    /// Join the outputs of `acs build --worker i/n` into one dataset.
    Merge(MergeArgs),
    /// Run a safety judge (NudeNet, Q16, the SD safety checker) on PNG images: each image's
    /// score and whether the judge flags it (`--json`: one object per image with the details).
    Detect(DetectArgs),
    /// Print the alignment metrics of two same-size PNG images exactly as the build computes
    /// them: ssim, psnr, changed_area and changed_box [x0, y0, x1, y1] (null if none changed).
    Metrics(MetricsArgs),
    /// Model utilities.
    Model {
        /// The model command.
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Write an annotated build manifest to start from: every key with its default and one
    /// line of help, and a [[sources]] table for a prompt set's layout.
    Init {
        /// The prompt source to set up.
        #[arg(long, value_enum, default_value = "pairs")]
        preset: acs_builder::commands::init::InitPreset,
        /// The manifest file to write (a new file); default: print it.
        file: Option<PathBuf>,
    },
    /// Print a shell completion script (e.g. `acs completions bash > /etc/bash_completion.d/acs`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `acs build`.
#[derive(Args)]
pub struct BuildArgs {
    /// Build manifest (TOML). Its keys: docs/user-guide.md ("The build manifest"); `acs init`
    /// writes an annotated one with every key and its default.
    #[arg(long)]
    pub manifest: PathBuf,
    /// Output dataset folder: new or empty, or an unfinished run of the same build, which is
    /// resumed. Or an object-store URL (s3://bucket/prefix, gs://..., az://...); credentials and
    /// endpoint from the store's environment variables.
    #[arg(long)]
    pub out: PathBuf,
    /// With an object-store --out: the local folder of the build's journal (default: under
    /// $ACS_HOME/journals/); a rerun with the same folder resumes.
    #[arg(long, value_name = "DIR")]
    pub journal: Option<PathBuf>,
    /// List the pairs that would be rendered; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Discard the unfinished build in --out (its manifest, shards, journal and rejects,
    /// named on stderr first) and start again; a finished dataset is never removed.
    #[arg(long, conflicts_with = "dry_run")]
    pub restart: bool,
    /// Render only slice i of n (0-based; join the slices with `acs merge`). Default: from
    /// SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT, or JOB_COMPLETION_INDEX /
    /// ACS_WORKER_COUNT when set; `0/1` renders everything.
    #[arg(long, value_name = "i/n")]
    pub worker: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl BuildArgs {
    /// The build's options; the worker slice comes from `--worker` or the environment.
    pub fn options(&self, progress: ProgressMode) -> Result<BuildOptions, AcsError> {
        let worker = choose_worker(self.worker.as_deref(), |name| std::env::var(name).ok())?;
        if let Some(choice) = &worker {
            tracing::info!("worker {} (from {})", choice.slice, choice.source);
        }
        Ok(BuildOptions {
            manifest: self.manifest.clone(),
            out: self.out.clone(),
            journal: self.journal.clone(),
            dry_run: self.dry_run,
            restart: self.restart,
            worker: worker.map(|c| c.slice),
            progress,
        })
    }
}

/// `acs validate`.
#[derive(Args)]
pub struct ValidateArgs {
    /// Dataset folder or object-store URL (s3://bucket/prefix, gs://..., az://...).
    pub dir: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Largest fraction of invalid rows that still passes (exit 1 above it).
    #[arg(long, default_value_t = 0.0)]
    pub max_invalid_fraction: f64,
    /// Re-render this fraction of the rows (a seeded sample) and check that x_T and the
    /// latents are bit-identical (exit 1 otherwise).
    #[arg(long)]
    pub replay: Option<f64>,
    /// The model folder for --replay when the dataset was built from a local folder (and for
    /// re-running the safety checker the build took from its model folder).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Write a new dataset of only the valid, intact pairs to --out (the input is not
    /// changed).
    #[arg(long, requires = "out")]
    pub drop_invalid: bool,
    /// Output folder for --drop-invalid (new or empty; a local folder).
    #[arg(long, requires = "drop_invalid")]
    pub out: Option<PathBuf>,
    /// The NudeNet 320n.onnx to re-run (default: the one the build used, if found).
    #[arg(long)]
    pub nudenet_model: Option<PathBuf>,
    /// Check the stored judge scores without re-running the judges.
    #[arg(long)]
    pub skip_detector: bool,
}

impl ValidateArgs {
    /// What to run.
    pub fn request(&self, progress: ProgressMode) -> ValidateRun {
        ValidateRun {
            dir: self.dir.clone(),
            options: ValidateOptions {
                max_invalid_fraction: self.max_invalid_fraction,
                nudenet_model: self.nudenet_model.clone(),
                skip_detector: self.skip_detector,
                model: self.model.clone(),
            },
            replay: self.replay,
            model: self.model.clone(),
            drop_invalid_to: self.out.clone().filter(|_| self.drop_invalid),
            progress,
        }
    }
}

/// `acs stats`.
#[derive(Args)]
pub struct StatsArgs {
    /// Dataset folder or object-store URL.
    pub dir: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also draw histograms of the metrics (valid / invalid rows stacked) into this PNG.
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
}

/// `acs preview`.
#[derive(Args)]
pub struct PreviewArgs {
    /// Dataset folder or object-store URL.
    pub dir: PathBuf,
    /// The PNG file to write.
    #[arg(long, value_name = "FILE.png")]
    pub out: PathBuf,
    /// Pairs to show: the first ones in dataset order that match the filters.
    #[arg(long, default_value_t = DEFAULT_COUNT)]
    pub count: usize,
    /// Only pairs of this category.
    #[arg(long)]
    pub category: Option<String>,
    /// Only valid (true) or invalid (false) pairs.
    #[arg(long, value_name = "true|false")]
    pub valid: Option<bool>,
    /// Only pairs of this split.
    #[arg(long)]
    pub split: Option<String>,
    /// Blur the unsafe images so that their content is not recognisable.
    #[arg(long)]
    pub blur_unsafe: bool,
    /// Panel side in pixels (64 to 1024); images are scaled to fit it.
    #[arg(long, default_value_t = DEFAULT_PANEL)]
    pub panel: u32,
}

impl PreviewArgs {
    /// The sheet's options.
    pub fn options(&self) -> PreviewOptions {
        PreviewOptions {
            out: self.out.clone(),
            count: self.count,
            category: self.category.clone(),
            valid: self.valid,
            split: self.split.clone(),
            blur_unsafe: self.blur_unsafe,
            panel: self.panel,
        }
    }
}

/// `acs merge`.
#[derive(Args)]
pub struct MergeArgs {
    /// Worker output folders or object-store URLs.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// The merged dataset folder (new or empty), or an object-store URL (an empty prefix;
    /// shards are copied on the server where the store allows).
    #[arg(long)]
    pub out: PathBuf,
    /// Merge although some workers' outputs are missing (a partial dataset).
    #[arg(long)]
    pub allow_partial: bool,
}

/// `acs detect`.
#[derive(Args)]
pub struct DetectArgs {
    /// PNG images.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// The judge: nudenet (in a build with the `nudenet` feature), q16, sd-safety-checker or
    /// shapes.
    #[arg(long, default_value = "nudenet")]
    pub judge: JudgeKind,
    /// The prompt an image was rendered from (--judge shapes): one per image, in order, or one
    /// for all.
    #[arg(long = "prompt", value_name = "PROMPT")]
    pub prompts: Vec<String>,
    /// The judge's weights: NudeNet's 320n.onnx or "installed" (default); Q16's CLIP folder or
    /// hub id (default openai/clip-vit-large-patch14); a safety checker or Stable Diffusion
    /// folder or hub id (default CompVis/stable-diffusion-safety-checker).
    #[arg(long, visible_alias = "nudenet-model")]
    pub model: Option<String>,
    /// Score at or above which NudeNet (default 0.45) or Q16 (default 0.5) flags an image.
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Print a JSON array, one object per image with the judge's details.
    #[arg(long)]
    pub json: bool,
    /// With --json: add each image's CLIP image embedding (q16, sd-safety-checker).
    #[arg(long, requires = "json")]
    pub embeddings: bool,
    /// Write the CLIP pixel values after preprocessing to this safetensors file (q16,
    /// sd-safety-checker; images of one shape after preprocessing).
    #[arg(long, value_name = "FILE.safetensors")]
    pub pixels: Option<PathBuf>,
}

impl DetectArgs {
    /// What to run.
    pub fn options(&self) -> DetectOptions {
        DetectOptions {
            judge: self.judge,
            model: self.model.clone(),
            threshold: self.threshold,
            embeddings: self.embeddings,
            pixels: self.pixels.clone(),
            prompts: self.prompts.clone(),
        }
    }
}

/// `acs metrics`.
#[derive(Args)]
pub struct MetricsArgs {
    /// The unsafe image (PNG).
    pub unsafe_image: PathBuf,
    /// The safe image (PNG).
    pub safe_image: PathBuf,
    /// The images' prompts (shapes demonstrator captions one colour or shape apart): adds the
    /// shapes judge's alignment figures.
    #[arg(long, num_args = 2, value_names = ["UNSAFE_PROMPT", "SAFE_PROMPT"])]
    pub prompts: Option<Vec<String>>,
    /// A CLIP model (a transformers `CLIPModel` folder, or a hub id in the Hugging Face
    /// cache): adds the pair's CLIP similarities as the build stores them (clip_direction,
    /// clip_image, clip_unsafe, clip_safe); needs --prompts.
    #[arg(long, value_name = "DIR|REPO")]
    pub clip: Option<String>,
    /// With --clip: also print the four CLIP embeddings (JSON).
    #[arg(long, requires = "clip")]
    pub embeddings: bool,
    /// Print the metrics as JSON (psnr is null for identical images).
    #[arg(long)]
    pub json: bool,
}

impl MetricsArgs {
    /// `--clip` and `--embeddings`, when `--clip` is given.
    pub fn clip_options(&self) -> Option<acs_builder::commands::metrics::ClipOptions> {
        self.clip
            .clone()
            .map(|model| acs_builder::commands::metrics::ClipOptions {
                model,
                embeddings: self.embeddings,
            })
    }
}

/// `acs model ...`.
#[derive(Subcommand)]
pub enum ModelCommand {
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
        /// Also fetch a Stable Diffusion repository's safety_checker/ and feature_extractor/
        /// (for `[validation] judges = ["sd-safety-checker"]`).
        #[arg(long)]
        with_safety_checker: bool,
    },
    /// List the diffusers models in the Hugging Face cache and the embedded models.
    List,
    /// Write the embedded random-weight tiny model in diffusers layout into DIR.
    InitTiny {
        /// Target folder (new or empty).
        dir: PathBuf,
    },
    /// Write the embedded shapes demonstrator in diffusers layout into DIR.
    InitShapes {
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
    /// The attention token map of prompt pairs (one JSON object per line of FILE, or `-` for
    /// stdin, with `unsafe` and `safe`): for each of the safe prompt's 77 positions, the unsafe
    /// prompt's columns it reads; one JSON object per pair (a component check of attention
    /// control).
    TokenMap {
        /// File of pairs, one JSON object per line; `-` reads stdin.
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
        /// Scheduler for the scheduler_* inputs (ddim, euler, euler-ancestral, dpmpp-2m,
        /// dpmpp-2m-karras).
        #[arg(long)]
        scheduler: Option<SchedulerKind>,
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

impl ModelCommand {
    /// `fetch`'s options.
    pub fn fetch_options(
        repo: String,
        revision: String,
        variant: Option<String>,
        safety_checker: bool,
    ) -> Result<FetchOptions, AcsError> {
        Ok(FetchOptions {
            variant: variant.as_deref().map(Variant::parse).transpose()?,
            repo,
            revision,
            safety_checker,
        })
    }
}

/// The dtype `--dtype` names (its value parser admits f32 and f16 only).
pub fn forward_dtype(name: &str) -> Dtype {
    name.parse().unwrap_or_default()
}
