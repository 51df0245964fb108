//! What a build did: counts, rejects by reason, and wall time per stage, printed as text or
//! JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

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
    /// Wall time of the render loop (rendering overlapped with rows and shard writing), in
    /// seconds: pairs / this is the build's rendering rate.
    pub render_seconds: f64,
    /// The share of the render loop's time spent waiting for the row stage.
    pub render_idle_share: Option<f64>,
    /// (stage, seconds) in pipeline order.
    pub stage_seconds: Vec<(String, f64)>,
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
            writeln!(
                f,
                "dry run: {} pairs would be rendered ({} duplicates dropped)",
                self.rows, self.duplicates
            )?;
        } else {
            writeln!(
                f,
                "wrote {} pairs ({} valid) in {} shards to {out} ({} duplicates dropped)",
                self.rows, self.valid_rows, self.shards, self.duplicates
            )?;
            if self.resumed_rows > 0 {
                writeln!(
                    f,
                    "  resumed an unfinished run: {} pairs were rendered before, {} now",
                    self.resumed_rows,
                    self.rows - self.resumed_rows
                )?;
            }
        }
        let rejected: usize = self.rejects.values().sum();
        writeln!(
            f,
            "  inputs: {} safe prompts rewritten by the lexicons, {} by the LLM; {} rows \
             filtered out; {rejected} rejected{}",
            self.rewritten_by("lexicon"),
            self.rewritten_by("llm"),
            self.filtered,
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
