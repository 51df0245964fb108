//! The `acs` command line: parses it ([`cli`]) and dispatches to the library's commands, each
//! of which returns a report that prints itself as text or JSON.

mod cli;

use std::fmt::Display;
use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use serde::Serialize;

use acs_builder::commands::progress::{init_logging, ProgressMode};
use acs_builder::commands::{build, detect, merge, metrics, model, preview, stats, validate};
use acs_builder::runtime::kernel_path::{self, KernelPathChoice};
use acs_builder::runtime::model::embedded::EmbeddedModel;
use acs_builder::runtime::model::forward::SchedulerChoice;
use acs_builder::AcsError;
use cli::{Cli, Command, ModelCommand};

// The runtime allocates and frees tensors of tens of megabytes at every layer; the system
// allocator returns them to the kernel each time and pays page faults to get them back
// (docs/performance.md). mimalloc, told to keep freed memory and to use large pages, reuses it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Prints a report on stdout, as JSON or as text.
fn emit<T: Display + Serialize>(report: &T, json: bool) -> Result<(), AcsError> {
    if json {
        print_stdout(&format!("{}\n", serde_json::to_string_pretty(report)?))
    } else {
        print_stdout(&report.to_string())
    }
}

/// Writes to stdout; a reader that closed the pipe early (`acs ... | head`) is not an error.
fn print_stdout(text: &str) -> Result<(), AcsError> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(AcsError::io(std::path::Path::new("<stdout>"), e))
        }
        _ => Ok(()),
    }
}

fn run(cli: Cli) -> Result<(), AcsError> {
    // A bad ACS_KERNEL_PATH is refused before any command runs a kernel.
    kernel_path::choose(KernelPathChoice::Auto)?;
    let progress = ProgressMode::for_stderr(cli.quiet);
    match cli.command {
        Command::Build(args) => {
            let report = build::run_build(&args.options(progress)?)?;
            // -q: the dataset is the result; the summary and timing table are commentary.
            if cli.quiet && !args.json {
                return Ok(());
            }
            emit(&report, args.json)
        }
        Command::Validate(args) => {
            let outcome = validate::run(&args.request(progress))?;
            emit(&outcome, args.json)?;
            outcome.status()
        }
        Command::Stats(args) => emit(&stats::run(&args.dir, args.plot.as_deref())?, args.json),
        Command::Preview(args) => emit(&preview::preview(&args.dir, &args.options())?, false),
        Command::Merge(args) => emit(
            &merge::merge(&args.dirs, &args.out, args.allow_partial)?,
            false,
        ),
        Command::Detect(args) => emit(&detect::detect(&args.images, &args.options())?, args.json),
        Command::Metrics(args) => emit(
            &metrics::file_pair_metrics(
                &args.unsafe_image,
                &args.safe_image,
                args.prompts.as_deref(),
                args.clip_options().as_ref(),
            )?,
            args.json,
        ),
        Command::Model { command } => run_model(command),
        Command::Init { preset, file } => {
            print_stdout(&acs_builder::commands::init::init(preset, file.as_deref())?)
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "acs", &mut script);
            print_stdout(&String::from_utf8_lossy(&script))
        }
    }
}

fn run_model(command: ModelCommand) -> Result<(), AcsError> {
    let text = match command {
        ModelCommand::Fetch {
            repo,
            revision,
            variant,
            with_safety_checker,
        } => {
            let options =
                ModelCommand::fetch_options(repo, revision, variant, with_safety_checker)?;
            return emit(&model::fetch(&options)?, false);
        }
        ModelCommand::List => model::list()?,
        ModelCommand::InitTiny { dir } => model::init_embedded(EmbeddedModel::Tiny, &dir)?,
        ModelCommand::InitShapes { dir } => model::init_embedded(EmbeddedModel::Shapes, &dir)?,
        ModelCommand::Tokenize { input, model } => model::tokenize(&input, model.as_deref())?,
        ModelCommand::TokenMap { input, model } => model::token_map(&input, model.as_deref())?,
        ModelCommand::Forward {
            model,
            inputs,
            out,
            scheduler,
            steps,
            dtype,
        } => {
            let scheduler = scheduler.map(|kind| SchedulerChoice { kind, steps });
            let dtype = cli::forward_dtype(&dtype);
            model::forward(&model, &inputs, &out, scheduler, dtype)?
        }
        ModelCommand::InitialLatent { seed, shape, out } => {
            model::initial_latent(seed, &shape, &out)?;
            String::new()
        }
    };
    print_stdout(&text)
}

fn main() -> ExitCode {
    acs_builder::commands::process::tune();
    acs_builder::commands::interrupt::exit_on_signal();
    let cli = Cli::parse();
    init_logging(cli.quiet, cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
