//! The `acs` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use acs_builder::build::{run_build, BuildOptions};
use acs_builder::imaging::npy_f32;
use acs_builder::model::tiny::write_tiny_model;
use acs_builder::rng::Mt19937;
use acs_builder::stats::dataset_stats;
use acs_builder::tokenizer::ClipTokenizer;
use acs_builder::validate::validate;
use acs_builder::AcsError;
use acs_schema::write_atomic;
use clap::{Parser, Subcommand};

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
        /// Output dataset folder (new or empty).
        #[arg(long)]
        out: PathBuf,
        /// List the pairs that would be rendered; write nothing.
        #[arg(long)]
        dry_run: bool,
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
    },
    /// Summarise a dataset with polars.
    Stats {
        /// Dataset folder.
        dir: PathBuf,
        /// Print the summary as JSON.
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
        } => {
            let options = BuildOptions {
                manifest,
                out: out.clone(),
                dry_run,
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
        } => {
            if !(0.0..=1.0).contains(&max_invalid_fraction) {
                return Err(AcsError::input(format!(
                    "--max-invalid-fraction: must be in [0, 1] (got {max_invalid_fraction})"
                )));
            }
            let report = validate(&dir, max_invalid_fraction)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            report.failure().map_or(Ok(()), Err)
        }
        Command::Stats { dir, json } => {
            let stats = dataset_stats(&dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                print!("{}", stats.table());
            }
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
    pin_thread_count();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
