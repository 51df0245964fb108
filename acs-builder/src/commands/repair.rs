//! `acs validate DIR --drop-invalid --out DIR2`: a new dataset holding only the pairs that
//! pass, with its own manifest and card. The input is never changed; the output appears
//! under its name only once it is complete.

use std::path::Path;

use acs_schema::{DatasetLocation, MANIFEST_FILE};

use crate::commands::validate::Inspection;
use crate::error::AcsError;
use crate::manifest::parse_byte_size;
use crate::store::card::dataset_card;
use crate::store::sink::ShardSink;
use crate::store::REJECTS_FILE;

/// What the repair wrote and left out.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairReport {
    /// The new dataset folder.
    pub out: String,
    /// Rows copied.
    pub kept: u64,
    /// Rows left out because they fail the build's thresholds.
    pub dropped_invalid: u64,
    /// Valid rows left out because of an integrity error in the row.
    pub dropped_faulty: u64,
    /// Listed shards left out whole because their file failed its checks.
    pub skipped_shards: Vec<String>,
    /// Shards written.
    pub shards: usize,
}

/// The output folder must be new (or an empty folder) and not the input.
fn check_target(input: &Path, out: &Path) -> Result<(), AcsError> {
    if DatasetLocation::is_url(out) {
        return Err(AcsError::input(format!(
            "{}: --drop-invalid writes a local folder (copy it to object storage afterwards)",
            out.display()
        )));
    }
    let same = match (input.canonicalize(), out.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(AcsError::input(format!(
            "{}: --out must be a new folder, not the dataset being repaired",
            out.display()
        )));
    }
    crate::store::staging::check_new_folder(out)
}

/// Writes the rows that `inspection` marked as fit to keep into a new dataset at `out`.
pub fn drop_invalid(
    input: &Path,
    out: &Path,
    inspection: &Inspection,
) -> Result<RepairReport, AcsError> {
    check_target(input, out)?;
    let mut report = crate::store::staging::write_new_folder(out, |staging| {
        write_kept(input, staging, inspection)
    })?;
    report.out = out.display().to_string();
    Ok(report)
}

fn write_kept(
    input: &Path,
    staging: &Path,
    inspection: &Inspection,
) -> Result<RepairReport, AcsError> {
    let build = &inspection.build;
    let location = DatasetLocation::from_path(input)?;
    let mut report = RepairReport::default();
    let mut sink = ShardSink::create(
        staging,
        inspection.manifest.clone(),
        build.output.shard_rows as usize,
        parse_byte_size(&build.output.shard_bytes).unwrap_or(u64::MAX),
    )?;
    for shard in &inspection.shards {
        if shard.keep.is_empty() {
            if shard.entry.rows > 0 {
                report.skipped_shards.push(shard.entry.path.clone());
            }
            continue;
        }
        // One row group at a time: memory follows the row-group size.
        let mut reader = location.open_shard(&shard.entry.path)?;
        let mut keep = shard.keep.iter();
        while let Some(records) = reader.next_row_group()? {
            for record in records {
                if keep.next().copied().unwrap_or(false) {
                    report.kept += 1;
                    sink.push(record)?;
                } else if record.valid {
                    report.dropped_faulty += 1;
                } else {
                    report.dropped_invalid += 1;
                }
            }
        }
    }
    if report.kept == 0 {
        return Err(AcsError::Invalid(format!(
            "{}: no pair passes; nothing to write",
            input.display()
        )));
    }
    if let Some(bytes) = location.read(REJECTS_FILE)? {
        acs_schema::write_atomic(&staging.join(REJECTS_FILE), &bytes)?;
    }
    let kept = report.kept;
    let total = inspection.report.rows;
    let source = input.display().to_string();
    let finished = sink.finish(|dataset, valid_rows| {
        let mut card = dataset_card(dataset, build, valid_rows);
        card.push_str(&format!(
            "\n## Provenance\n\nThis dataset holds the {kept} pairs of `{source}` ({total} rows) \
             that passed `acs validate --drop-invalid`; the others were left out.\n"
        ));
        card
    })?;
    report.shards = finished.shards.len();
    debug_assert!(staging.join(MANIFEST_FILE).is_file());
    Ok(report)
}
