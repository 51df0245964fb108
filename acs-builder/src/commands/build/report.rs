//! What a build did: counts, rejects by reason, and wall time per stage, printed as text or
//! JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::plural;
use crate::prompts::plan::PlannedPair;
use crate::prompts::sources::Reject;

/// A pair a dry run would render.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedRow {
    /// Its pair_id.
    pub pair_id: String,
    /// Its split.
    pub split: String,
    /// Its category.
    pub category: String,
    /// Its x_T seed.
    pub seed: u64,
    /// CLIP-token edits between the prompts.
    pub token_edit_distance: u32,
    /// The unsafe prompt.
    pub unsafe_prompt: String,
    /// The safe prompt.
    pub safe_prompt: String,
}

impl PlannedRow {
    /// The row of a planned pair.
    pub fn of(pair: &PlannedPair) -> Self {
        Self {
            pair_id: pair.pair_id.clone(),
            split: pair.split.clone(),
            category: pair.prompts.category.clone(),
            seed: pair.seed,
            token_edit_distance: pair.alignment.token_edit_distance,
            unsafe_prompt: pair.prompts.unsafe_prompt.clone(),
            safe_prompt: pair.prompts.safe_prompt.clone(),
        }
    }
}

/// What a build did, with wall time per stage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BuildReport {
    /// The output folder.
    pub out: PathBuf,
    /// Planned only; nothing was written.
    pub dry_run: bool,
    /// True when the folder already held this exact build.
    pub up_to_date: bool,
    /// Rows written (dry run: pairs that would be rendered).
    pub rows: u64,
    /// Rows that pass the thresholds.
    pub valid_rows: u64,
    /// Shards written.
    pub shards: usize,
    /// Rows an interrupted run of this build had already rendered (0 for a fresh build).
    pub resumed_rows: u64,
    /// Duplicate input pairs dropped.
    pub duplicates: usize,
    /// Inputs that did not become pairs, by reason (also in rejects.jsonl).
    pub rejects: BTreeMap<String, usize>,
    /// Rows a source's filters left out.
    pub filtered: usize,
    /// Safe prompts each rewriter made, by rewriter (`lexicon`, `llm`).
    pub rewritten: BTreeMap<String, usize>,
    /// Latent rows the prompt-switch prefix did not send through the UNet.
    pub unet_evaluations_saved: u64,
    /// The code path that rendered (`cpu-avx512`, ...); empty for a dry run.
    pub kernel_path: String,
    /// Wall time of the render loop (rendering overlapped with rows and shard writing), in
    /// seconds: pairs / this is the build's rendering rate.
    pub render_seconds: f64,
    /// The share of the render loop's time spent waiting for the row stage.
    pub render_idle_share: Option<f64>,
    /// (stage, seconds) in pipeline order.
    pub stage_seconds: Vec<(String, f64)>,
    /// Dry run: every pair that would be rendered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<PlannedRow>,
    /// Dry run: every input that would be rejected.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<Reject>,
}

impl BuildReport {
    fn rewritten_by(&self, rewriter: &str) -> usize {
        self.rewritten.get(rewriter).copied().unwrap_or(0)
    }
}

impl fmt::Display for BuildReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let out = self.out.display();
        if self.up_to_date {
            return writeln!(
                f,
                "{out}: already holds this build ({} rows in {} shards); nothing to do",
                self.rows, self.shards
            );
        }
        if self.dry_run {
            for row in &self.planned {
                writeln!(
                    f,
                    "pair {} {} seed {} {} edits {}: {:?} -> {:?}",
                    row.pair_id,
                    row.split,
                    row.seed,
                    row.category,
                    row.token_edit_distance,
                    row.unsafe_prompt,
                    row.safe_prompt
                )?;
            }
            for reject in &self.rejected {
                let id = reject
                    .id
                    .as_ref()
                    .map_or(String::new(), |id| format!(" (id {id})"));
                writeln!(
                    f,
                    "reject {}:{}{id} {}: {}",
                    reject.source.display(),
                    reject.line,
                    reject.reason,
                    reject.detail
                )?;
            }
            writeln!(
                f,
                "dry run: {} would be rendered ({} dropped)",
                plural(self.rows as usize, "pair", "pairs"),
                plural(self.duplicates, "duplicate", "duplicates")
            )?;
        } else {
            writeln!(
                f,
                "wrote {} ({} valid) in {} to {out} ({} dropped)",
                plural(self.rows as usize, "pair", "pairs"),
                self.valid_rows,
                plural(self.shards, "shard", "shards"),
                plural(self.duplicates, "duplicate", "duplicates")
            )?;
            if self.resumed_rows > 0 {
                writeln!(
                    f,
                    "  resumed an unfinished run: {} pairs were rendered before, {} now",
                    self.resumed_rows,
                    self.rows - self.resumed_rows
                )?;
            }
            if !self.kernel_path.is_empty() {
                writeln!(f, "  kernel path: {}", self.kernel_path)?;
            }
        }
        let rejected: usize = self.rejects.values().sum();
        writeln!(
            f,
            "  inputs: {} rewritten by the lexicons, {} by the LLM; {} filtered out; \
             {rejected} rejected{}",
            plural(self.rewritten_by("lexicon"), "safe prompt", "safe prompts"),
            self.rewritten_by("llm"),
            plural(self.filtered, "row", "rows"),
            if self.dry_run {
                ""
            } else {
                " (see rejects.jsonl)"
            }
        )?;
        for (reason, count) in &self.rejects {
            writeln!(f, "    rejected {reason:<28} {count:>8}")?;
        }
        if self.unet_evaluations_saved > 0 {
            writeln!(
                f,
                "  the prompt-switch prefix saved {} latent evaluations of the UNet",
                self.unet_evaluations_saved
            )?;
        }
        for (stage, seconds) in &self.stage_seconds {
            writeln!(f, "  {stage:<36} {seconds:>8.2} s")?;
        }
        if let Some(share) = self.render_idle_share {
            writeln!(
                f,
                "  render loop idle (waiting for the row stage): {:.1} % of its time",
                share * 100.0
            )?;
        }
        Ok(())
    }
}

/// Wall time per stage, in the order the stages ran.
pub struct Stopwatch {
    laps: Vec<(String, f64)>,
    since: Instant,
}

impl Stopwatch {
    /// A stopwatch running from now.
    pub fn start() -> Self {
        Self {
            laps: Vec::new(),
            since: Instant::now(),
        }
    }

    /// Records the time since the last lap as `stage`.
    pub fn lap(&mut self, stage: &str) {
        let now = Instant::now();
        self.laps
            .push((stage.to_owned(), (now - self.since).as_secs_f64()));
        self.since = now;
    }

    /// Records `spent` as `stage` (a part of a lap measured elsewhere).
    pub fn add(&mut self, stage: &str, spent: Duration) {
        self.laps.push((stage.to_owned(), spent.as_secs_f64()));
    }

    /// The recorded stages.
    pub fn laps(self) -> Vec<(String, f64)> {
        self.laps
    }
}
