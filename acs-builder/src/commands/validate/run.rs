//! The whole of `acs validate DIR`: check the dataset, then either replay a sample of it or
//! write a repaired copy; the outcome prints itself and decides the exit code.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{inspect, validate, ValidateOptions, ValidationReport};
use crate::commands::progress::ProgressMode;
use crate::commands::repair::{drop_invalid, RepairReport};
use crate::commands::replay::{replay_dataset, ReplayReport};
use crate::error::AcsError;

/// What `acs validate` was asked to do.
#[derive(Debug, Clone)]
pub struct ValidateRun {
    /// The dataset folder.
    pub dir: PathBuf,
    /// What to check.
    pub options: ValidateOptions,
    /// Re-render this fraction of the rows and require bit-identical latents.
    pub replay: Option<f64>,
    /// The model folder for the replay of a dataset built from a local folder.
    pub model: Option<PathBuf>,
    /// Write the valid, intact rows into a new dataset here.
    pub drop_invalid_to: Option<PathBuf>,
    /// How progress is shown.
    pub progress: ProgressMode,
}

/// What `acs validate` found (and wrote).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ValidateOutcome {
    /// The dataset was checked (and a sample replayed).
    Checked {
        /// The validation report (also in DIR/validation.json).
        #[serde(flatten)]
        report: ValidationReport,
        /// The replay of a sample, when asked for and the checks passed.
        #[serde(skip_serializing_if = "Option::is_none")]
        replay: Option<Box<ReplayReport>>,
    },
    /// A repaired copy was written and validated.
    Repaired(Box<Repaired>),
}

/// What `--drop-invalid --out` found and wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Repaired {
    /// The input's report.
    pub input: ValidationReport,
    /// What was copied and left out.
    pub repair: RepairReport,
    /// The new dataset's report.
    pub output: ValidationReport,
}

/// Runs `acs validate` as asked.
pub fn run(request: &ValidateRun) -> Result<ValidateOutcome, AcsError> {
    let fraction = request.options.max_invalid_fraction;
    if !(0.0..=1.0).contains(&fraction) {
        return Err(AcsError::input(format!(
            "--max-invalid-fraction: must be in [0, 1] (got {fraction})"
        )));
    }
    if let Some(fraction) = request
        .replay
        .filter(|f| !(0.0..=1.0).contains(f) || f.is_nan())
    {
        return Err(AcsError::input(format!(
            "--replay: must be in [0, 1] (got {fraction})"
        )));
    }
    if let Some(out) = &request.drop_invalid_to {
        return repair(request, out);
    }
    let report = validate(&request.dir, &request.options, request.progress)?;
    let replay = match request.replay {
        Some(fraction) if report.failure().is_none() => Some(Box::new(replay_dataset(
            &request.dir,
            fraction,
            request.model.as_deref(),
        )?)),
        _ => None,
    };
    Ok(ValidateOutcome::Checked { report, replay })
}

/// `--drop-invalid --out OUT`: copies the valid, intact pairs into a new dataset, then
/// validates that one (its validation.json is written there, not in DIR).
fn repair(request: &ValidateRun, out: &Path) -> Result<ValidateOutcome, AcsError> {
    let inspection = inspect(&request.dir, &request.options, request.progress)?;
    let repair = drop_invalid(&request.dir, out, &inspection)?;
    let check = ValidateOptions {
        max_invalid_fraction: 0.0,
        ..request.options.clone()
    };
    let output = validate(out, &check, request.progress)?;
    Ok(ValidateOutcome::Repaired(Box::new(Repaired {
        input: inspection.report,
        repair,
        output,
    })))
}

impl ValidateOutcome {
    /// The error that decides the exit code, if any.
    pub fn status(&self) -> Result<(), AcsError> {
        match self {
            Self::Checked { report, replay } => {
                if let Some(err) = report.failure() {
                    return Err(err);
                }
                match replay {
                    Some(r) if !r.mismatches.is_empty() => Err(AcsError::Invalid(format!(
                        "replay: {} of {} re-rendered rows differ from the dataset (first: {})",
                        r.mismatches.len(),
                        r.rows,
                        r.mismatches[0]
                    ))),
                    _ => Ok(()),
                }
            }
            Self::Repaired(repaired) => repaired.output.failure().map_or(Ok(()), Err),
        }
    }
}

impl fmt::Display for ValidateOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Checked { report, replay } => {
                write!(f, "{report}")?;
                if let Some(replay) = replay {
                    writeln!(
                        f,
                        "replay: {} of {} re-rendered rows identical",
                        replay.identical, replay.rows
                    )?;
                    if replay.cross_path > 0 {
                        writeln!(
                            f,
                            "replay: {} rows re-rendered on another kernel path agree within \
                             {:.0e} of their latents' range (largest {:.2e}); bits are only \
                             promised on one path",
                            replay.cross_path,
                            crate::commands::replay::CROSS_PATH_TOLERANCE,
                            replay.cross_path_max_difference
                        )?;
                    }
                    for note in &replay.cross_path_notes {
                        writeln!(f, "  kernel paths differ: {note}")?;
                    }
                    for line in &replay.mismatches {
                        writeln!(f, "  {line}")?;
                    }
                }
                Ok(())
            }
            Self::Repaired(repaired) => {
                let Repaired {
                    input,
                    repair,
                    output,
                } = repaired.as_ref();
                write!(f, "{input}")?;
                let skipped = if repair.skipped_shards.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; unreadable shards skipped: {}",
                        repair.skipped_shards.join(", ")
                    )
                };
                writeln!(
                    f,
                    "wrote {} of {} pairs to {} in {} shards ({} invalid and {} with integrity \
                     errors left out{skipped})",
                    repair.kept,
                    input.rows,
                    repair.out,
                    repair.shards,
                    repair.dropped_invalid,
                    repair.dropped_faulty,
                )?;
                write!(f, "{output}")
            }
        }
    }
}
