//! The validation report: what `acs validate` found, as a table or JSON, and the exit code it
//! decides.

use acs_schema::DatasetLocation;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

use crate::error::AcsError;

/// Name of the report written beside the manifest.
pub const VALIDATION_FILE: &str = "validation.json";

/// The outcome of validating a dataset.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ValidationReport {
    /// The dataset folder.
    pub dataset: String,
    /// No integrity error and the invalid fraction is within bounds.
    pub passed: bool,
    /// Shards listed in the manifest.
    pub shards: usize,
    /// Rows read.
    pub rows: u64,
    /// Rows that pass the build's thresholds.
    pub valid_rows: u64,
    /// Rows that do not.
    pub invalid_rows: u64,
    /// Of the invalid rows, those that pass every threshold and were only not kept by
    /// `keep_best` (a choice, not a failure: they do not count against
    /// `max_invalid_fraction`).
    pub not_kept_rows: u64,
    /// For each reject reason kind (its prefix before ':'), how many rows it rejects.
    pub reject_reasons: BTreeMap<String, u64>,
    /// Largest |stored - recomputed| over all rows for each metric.
    pub metric_max_abs_diff: BTreeMap<String, f64>,
    /// Integrity errors, each naming the file (and row) and the reason.
    pub errors: Vec<String>,
    /// The largest invalid fraction allowed.
    pub max_invalid_fraction: f64,
    /// How the NudeNet scores were checked: "none" (the build had no detector), "re-run", or
    /// "stored scores only: <why>".
    pub detector: String,
}

impl ValidationReport {
    /// The error that decides the exit code, if any: integrity first (2), then thresholds (1).
    pub fn failure(&self) -> Option<AcsError> {
        if let Some(first) = self.errors.first() {
            let more = match self.errors.len() {
                1 => String::new(),
                n => format!(" (and {} more errors, see {VALIDATION_FILE})", n - 1),
            };
            // Errors name paths inside the dataset; an absolute one stands alone.
            let prefix = if first.starts_with('/') {
                String::new()
            } else {
                format!("{}/", self.dataset)
            };
            return Some(AcsError::integrity(format!("{prefix}{first}{more}")));
        }
        if !self.passed {
            let not_kept = match self.not_kept_rows {
                0 => String::new(),
                n => format!(", besides {n} valid renders that keep_best did not keep"),
            };
            return Some(AcsError::Invalid(format!(
                "{}: {} of {} rows fail the build's thresholds (allowed fraction {}){not_kept}",
                self.dataset,
                self.invalid_rows - self.not_kept_rows,
                self.rows - self.not_kept_rows,
                self.max_invalid_fraction
            )));
        }
        None
    }

    /// Sets `passed` from the errors and the invalid fraction.
    pub(super) fn decide(&mut self) {
        let judged = self.rows - self.not_kept_rows;
        let invalid_fraction = if judged == 0 {
            0.0
        } else {
            (self.invalid_rows - self.not_kept_rows) as f64 / judged as f64
        };
        self.passed = self.errors.is_empty() && invalid_fraction <= self.max_invalid_fraction;
    }

    /// Writes the report as `validation.json` into `dir` (a local folder: atomically; an
    /// object-store folder: in one request).
    pub fn write(&self, dir: &DatasetLocation) -> Result<(), AcsError> {
        let mut json = serde_json::to_vec_pretty(self)?;
        json.push(b'\n');
        dir.write(VALIDATION_FILE, &json)?;
        Ok(())
    }
}

impl fmt::Display for ValidationReport {
    /// A human-readable summary table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "dataset      {}", self.dataset)?;
        writeln!(f, "shards       {}", self.shards)?;
        writeln!(
            f,
            "rows         {} ({} valid, {} invalid)",
            self.rows, self.valid_rows, self.invalid_rows
        )?;
        if self.not_kept_rows > 0 {
            writeln!(
                f,
                "  not kept   {} valid renders (keep_best; not counted as failures)",
                self.not_kept_rows
            )?;
        }
        for (reason, count) in &self.reject_reasons {
            writeln!(f, "  rejected   {reason}: {count}")?;
        }
        writeln!(f, "detector     {}", self.detector)?;
        for (metric, diff) in &self.metric_max_abs_diff {
            writeln!(
                f,
                "recomputed   {metric:<14} max |stored - recomputed| = {diff:.2e}"
            )?;
        }
        for error in &self.errors {
            writeln!(f, "ERROR        {error}")?;
        }
        writeln!(
            f,
            "result       {}",
            if self.passed { "PASS" } else { "FAIL" }
        )
    }
}
