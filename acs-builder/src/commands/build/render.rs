//! The render loop and the row stage, overlapped: a thread renders batch after batch while
//! this one turns finished batches into rows (metrics, judges, PNG encoding) and writes them.
//! A bounded queue sits between the two: the renderer runs at most [`QUEUE_BATCHES`] batches
//! ahead, so memory stays bounded, and rows reach the sink in plan order, so the shards are the
//! same whatever the timing.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::commands::progress::Progress;
use crate::error::AcsError;
use crate::prompts::plan::PlannedPair;
use crate::runtime::{PairSampler, RenderJob, RenderedPair, RuntimeError};
use crate::store::sink::ShardSink;

use acs_schema::PairRecord;

use super::record::{RankedRow, RowMaker};
use crate::judge::selection::{group_key, selection, Candidate};

/// Rendered batches that may wait for the row stage.
pub const QUEUE_BATCHES: usize = 2;

/// Where the time of the overlapped stages went.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    /// The render loop, rendering.
    pub render: Duration,
    /// The render loop, waiting for room in the queue (the row stage was behind).
    pub render_idle: Duration,
    /// The row stage: metrics, judges and PNG encoding.
    pub rows: Duration,
    /// The row stage: writing shards and the manifest.
    pub write: Duration,
    /// Wall time of the whole loop.
    pub wall: Duration,
}

impl StageTimes {
    /// The share of the render loop's time it spent waiting for the row stage.
    pub fn render_idle_share(&self) -> f64 {
        let total = self.render + self.render_idle;
        if total.is_zero() {
            0.0
        } else {
            self.render_idle.as_secs_f64() / total.as_secs_f64()
        }
    }
}

/// The sampler's jobs for a batch of planned pairs (benign prompts render once).
fn jobs(batch: &[PlannedPair]) -> Vec<RenderJob> {
    batch
        .iter()
        .map(|pair| RenderJob {
            seed: pair.seed,
            unsafe_ids: pair.alignment.unsafe_tokens.ids.clone(),
            safe_ids: (!pair.prompts.is_benign()).then(|| pair.alignment.safe_tokens.ids.clone()),
            guidance_scale: pair.guidance_scale,
            control: pair.attention.clone(),
        })
        .collect()
}

/// The plan cut into render batches, in order: runs of prompt pairs in batches of
/// `batch_pairs`, runs of benign prompts (one image each) in batches of twice that, so that
/// every UNet call sees about as many images.
pub fn batches(pairs: &[PlannedPair], batch_pairs: usize) -> Vec<&[PlannedPair]> {
    let batch_pairs = batch_pairs.max(1);
    pairs
        .chunk_by(|a, b| a.prompts.is_benign() == b.prompts.is_benign())
        .flat_map(|run| {
            let size = if run[0].prompts.is_benign() {
                2 * batch_pairs
            } else {
                batch_pairs
            };
            run.chunks(size)
        })
        .collect()
}

/// Renders `pairs` in batches of `batch_pairs` and pushes their rows into `sink`, in order.
/// A render failure stops the loop after the batches before it are written (so a rerun
/// resumes after them); a failure of the row stage stops the renderer at its next batch.
pub fn render_into(
    pairs: &[PlannedPair],
    batch_pairs: usize,
    sampler: &PairSampler,
    rows: &RowMaker,
    sink: &mut ShardSink,
    progress: &Progress,
    done_before: u64,
) -> Result<StageTimes, AcsError> {
    let started = Instant::now();
    let batches = batches(pairs, batch_pairs);
    let (sender, receiver) = mpsc::sync_channel::<Vec<RenderedPair>>(QUEUE_BATCHES);
    let mut times = StageTimes::default();
    let (rendered, stored) = std::thread::scope(|scope| {
        let batches = &batches;
        let renderer = scope.spawn(move || -> Result<(Duration, Duration), AcsError> {
            let (mut busy, mut idle) = (Duration::ZERO, Duration::ZERO);
            let count = batches.len();
            for (number, batch) in batches.iter().enumerate() {
                let started = Instant::now();
                let on_step = |step: usize, steps: usize| {
                    progress.step(format!("batch {}/{count}, step {step}/{steps}", number + 1))
                };
                let rendered =
                    sampler
                        .render_observed(&jobs(batch), &on_step)
                        .map_err(|e| match e {
                            RuntimeError::OutOfMemory(message) => AcsError::input(format!(
                        "{message}; lower [sampling].batch_pairs (now {}) or the image size",
                        batch.len()
                    )),
                            other => other.into(),
                        })?;
                let waiting = Instant::now();
                busy += waiting - started;
                if sender.send(rendered).is_err() {
                    break; // the row stage stopped
                }
                idle += waiting.elapsed();
            }
            Ok((busy, idle))
        });
        let stored = store_batches(
            batches,
            &receiver,
            rows,
            sink,
            progress,
            done_before,
            &mut times,
        );
        // Unblocks a renderer waiting on a full queue after a row-stage failure.
        drop(receiver);
        let rendered = renderer
            .join()
            .unwrap_or_else(|_| Err(AcsError::internal("the render thread panicked")));
        (rendered, stored)
    });
    stored?;
    let (render, render_idle) = rendered?;
    times.render = render;
    times.render_idle = render_idle;
    times.wall = started.elapsed();
    Ok(times)
}

/// The row stage: every batch the renderer sends, in order, into rows and then into the sink.
fn store_batches(
    batches: &[&[PlannedPair]],
    receiver: &mpsc::Receiver<Vec<RenderedPair>>,
    rows: &RowMaker,
    sink: &mut ShardSink,
    progress: &Progress,
    done_before: u64,
    times: &mut StageTimes,
) -> Result<(), AcsError> {
    let mut done = 0u64;
    let total = done_before + batches.iter().map(|b| b.len() as u64).sum::<u64>();
    crate::commands::interrupt::record_progress(done_before, total);
    let mut selector = rows
        .manifest
        .keep_best()
        .map(|(keep, _)| Selector::new(keep));
    for (batch, rendered) in batches.iter().zip(receiver.iter()) {
        let started = Instant::now();
        let made_rows = rows.rows(batch, rendered)?;
        let made = Instant::now();
        times.rows += made - started;
        done += made_rows.len() as u64;
        let ready = match selector.as_mut() {
            Some(selector) => selector.add(made_rows),
            None => made_rows.into_iter().map(|(record, _)| record).collect(),
        };
        sink.push_batch(ready)?;
        times.write += made.elapsed();
        progress.update(done_before + done, done);
        crate::commands::interrupt::record_progress(done_before + done, total);
    }
    if let Some(selector) = selector {
        sink.push_batch(selector.finish())?;
    }
    Ok(())
}

/// `keep_best` in the row stage: rows wait until every render of their prompt pair is made
/// (the plan keeps a pair's seeds together), then the group is selected and written in one
/// spooled batch, so that a resumed build never holds half a group.
struct Selector {
    keep: usize,
    pending: Vec<RankedRow>,
}

impl Selector {
    fn new(keep: usize) -> Self {
        Self {
            keep,
            pending: Vec::new(),
        }
    }

    /// Takes a batch's rows; returns the rows of the groups now complete, selected.
    fn add(&mut self, rows: Vec<RankedRow>) -> Vec<PairRecord> {
        self.pending.extend(rows);
        let Some((last, _)) = self.pending.last() else {
            return Vec::new();
        };
        let last = group_key(last);
        let open = self
            .pending
            .iter()
            .rev()
            .take_while(|(record, _)| group_key(record) == last)
            .count();
        let complete: Vec<RankedRow> = self.pending.drain(..self.pending.len() - open).collect();
        self.select(complete)
    }

    /// The rows still waiting, selected (the end of the plan completes their group).
    fn finish(mut self) -> Vec<PairRecord> {
        let rest = std::mem::take(&mut self.pending);
        self.select(rest)
    }

    fn select(&self, rows: Vec<RankedRow>) -> Vec<PairRecord> {
        let mut reasons = Vec::with_capacity(rows.len());
        for group in rows.chunk_by(|(a, _), (b, _)| group_key(a) == group_key(b)) {
            let candidates: Vec<Candidate> = group
                .iter()
                .map(|(record, score)| Candidate::of(record, *score))
                .collect();
            reasons.extend(selection(&candidates, self.keep));
        }
        rows.into_iter()
            .zip(reasons)
            .map(|((mut record, _), reason)| {
                if let Some(reason) = reason {
                    record.reject_reasons.push(reason);
                    record.valid = false;
                }
                record
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompts::align::PromptAlignment;
    use crate::prompts::pairing::PromptPair;
    use crate::runtime::ClipTokenizer;

    fn planned(category: &str) -> PlannedPair {
        let tokenizer = ClipTokenizer::embedded().unwrap();
        PlannedPair {
            pair_id: category.into(),
            split: "train".into(),
            prompts: PromptPair {
                unsafe_prompt: "a".into(),
                safe_prompt: "b".into(),
                category: category.into(),
                seed: None,
                guidance_scale: None,
                file: "f".into(),
                line: 1,
            },
            seed: 0,
            guidance_scale: 7.5,
            alignment: PromptAlignment::measure(&tokenizer, "a", "b").unwrap(),
            attention: None,
            position: 0,
        }
    }

    #[test]
    fn batches_keep_plan_order_and_hold_one_kind() {
        let kinds = [
            "sexual", "violence", "benign", "benign", "benign", "hate", "benign",
        ];
        let plan: Vec<PlannedPair> = kinds.iter().map(|k| planned(k)).collect();
        let sizes: Vec<Vec<&str>> = batches(&plan, 1)
            .iter()
            .map(|b| b.iter().map(|p| p.prompts.category.as_str()).collect())
            .collect();
        assert_eq!(
            sizes,
            [
                vec!["sexual"],
                vec!["violence"],
                vec!["benign", "benign"],
                vec!["benign"],
                vec!["hate"],
                vec!["benign"],
            ]
        );
        let jobs = jobs(&plan[1..3]);
        assert!(jobs[0].safe_ids.is_some() && jobs[1].safe_ids.is_none());
    }
}
