//! When each attention control acts during a run of `steps` denoising steps (step 0 is the
//! first, the noisiest), with the step arithmetic of the reference implementations so that a
//! setting means what it means there (../shared/notes/attention-control.md):
//!
//! - cross-attention replacement: a range [start, end) of fractions of the run, for every
//!   token or, overriding it, for the tokens of chosen words; on `steps + 1` rows as
//!   Prompt-to-Prompt counts them, so step i is replaced when
//!   ⌊start·(steps+1)⌋ <= i < ⌊end·(steps+1)⌋;
//! - self-attention injection: ⌊start·steps⌋ <= i < ⌊end·steps⌋;
//! - local blend: from step ⌊start·steps⌋ on;
//! - the InstructPix2Pix generator's shared self-attention: while i / (steps - 1) < p.

use std::ops::Range;

use crate::runtime::tokenizer::CONTEXT_LENGTH;

/// A range of a run's steps as fractions of the run, `0 <= start <= end <= 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepRange {
    /// Where the range starts.
    pub start: f64,
    /// Where it ends (excluded).
    pub end: f64,
}

impl StepRange {
    /// The range [start, end); `Err` with the reason when it is not within [0, 1] in order.
    pub fn new(start: f64, end: f64) -> Result<Self, String> {
        let inside = |v: f64| (0.0..=1.0).contains(&v);
        if !(inside(start) && inside(end)) {
            return Err(format!("[{start}, {end}] is not within [0, 1]"));
        }
        if start > end {
            return Err(format!("[{start}, {end}] starts after it ends"));
        }
        Ok(Self { start, end })
    }

    /// The first `fraction` of the run.
    pub fn first(fraction: f64) -> Result<Self, String> {
        Self::new(0.0, fraction)
    }

    /// Whether step `step` lies in the range when the run is counted in `rows` rows.
    fn holds(&self, step: usize, rows: usize) -> bool {
        let bound = |v: f64| (v * rows as f64).floor() as usize;
        bound(self.start) <= step && step < bound(self.end)
    }
}

/// Cross-attention replacement: the steps at which each of the safe prompt's token positions
/// takes the unsafe branch's attention (through the pair's token map).
#[derive(Debug, Clone, PartialEq)]
pub struct CrossReplace {
    /// The range for every token without a word override.
    pub default: StepRange,
    /// Ranges for the tokens of chosen words (compared case-insensitively with the safe
    /// prompt's whitespace-separated words), later entries winning.
    pub words: Vec<(String, StepRange)>,
}

/// The per-step, per-position replacement weights of one pair (1 replaced, 0 own).
#[derive(Debug, Clone, PartialEq)]
pub struct CrossReplaceAlphas {
    /// `steps` rows of [`CONTEXT_LENGTH`] weights.
    pub rows: Vec<Vec<f32>>,
    /// The override words found in the safe prompt (an override whose word the prompt lacks
    /// changes nothing).
    pub matched_words: Vec<String>,
}

impl CrossReplace {
    /// The weights for a run of `steps` steps on a safe prompt of `words` at context positions
    /// `spans` (see [`super::token_map::word_spans`]).
    pub fn alphas(
        &self,
        steps: usize,
        words: &[&str],
        spans: &[Range<usize>],
    ) -> CrossReplaceAlphas {
        // Prompt-to-Prompt counts the run in steps + 1 rows.
        let counted_rows = steps + 1;
        let mut ranges = vec![self.default; CONTEXT_LENGTH];
        let mut matched_words = Vec::new();
        for (word, range) in &self.words {
            let positions = word_positions(word, words, spans);
            if !positions.is_empty() && !matched_words.contains(word) {
                matched_words.push(word.clone());
            }
            for position in positions {
                ranges[position] = *range;
            }
        }
        let rows = (0..steps)
            .map(|step| {
                ranges
                    .iter()
                    .map(|range| {
                        if range.holds(step, counted_rows) {
                            1.0
                        } else {
                            0.0
                        }
                    })
                    .collect()
            })
            .collect();
        CrossReplaceAlphas {
            rows,
            matched_words,
        }
    }
}

/// Whether self-attention is injected at `step` of `steps` under `range`.
pub fn self_replace_active(range: StepRange, step: usize, steps: usize) -> bool {
    range.holds(step, steps)
}

/// Whether the local blend acts after `step` of `steps` when it starts at fraction `start`.
pub fn blend_active(start: f64, step: usize, steps: usize) -> bool {
    step >= (start * steps as f64).floor() as usize
}

/// Whether the InstructPix2Pix generator's shared self-attention acts at `step` of `steps`
/// for the fraction `p` (its `p > i / (len(sigmas) - 2)`, with `steps + 1` sigmas).
pub fn shared_self_attention_active(p: f64, step: usize, steps: usize) -> bool {
    if steps <= 1 {
        return step == 0 && p > 0.0;
    }
    p > step as f64 / (steps - 1) as f64
}

/// The reweighting factor of each of the safe prompt's context positions: `factors` of the
/// chosen words' tokens (words compared case-insensitively), 1 elsewhere.
pub fn reweight_factors(
    factors: &[(String, f32)],
    words: &[&str],
    spans: &[Range<usize>],
) -> Vec<f32> {
    let mut out = vec![1.0; CONTEXT_LENGTH];
    for (word, factor) in factors {
        for position in word_positions(word, words, spans) {
            out[position] = *factor;
        }
    }
    out
}

/// The context positions of every occurrence of `word` among `words` (compared
/// case-insensitively), each word at its span of `spans`.
pub(crate) fn word_positions(word: &str, words: &[&str], spans: &[Range<usize>]) -> Vec<usize> {
    let word = word.to_lowercase();
    words
        .iter()
        .zip(spans)
        .filter(|(w, _)| w.to_lowercase() == word)
        .flat_map(|(_, span)| span.clone().filter(|&p| p < CONTEXT_LENGTH))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_outside_the_unit_interval_or_reversed_are_refused() {
        assert!(StepRange::new(0.0, 1.0).is_ok());
        assert!(StepRange::new(-0.1, 0.5).is_err());
        assert!(StepRange::new(0.2, 1.5).is_err());
        assert!(StepRange::new(0.6, 0.4)
            .unwrap_err()
            .contains("starts after"));
        assert!(StepRange::new(f64::NAN, 0.4).is_err());
    }

    #[test]
    fn cross_replacement_counts_steps_plus_one_rows() {
        // 50 steps, 0.8: rows 0..⌊0.8·51⌋ = 0..40, so steps 0-39 are replaced.
        let schedule = CrossReplace {
            default: StepRange::first(0.8).unwrap(),
            words: Vec::new(),
        };
        let alphas = schedule.alphas(50, &["a", "cat"], &[1..2, 2..3]);
        assert_eq!(alphas.rows.len(), 50);
        assert!(alphas.rows[39].iter().all(|&a| a == 1.0));
        assert!(alphas.rows[40].iter().all(|&a| a == 0.0));
    }

    #[test]
    fn a_word_override_covers_its_tokens_only() {
        let schedule = CrossReplace {
            default: StepRange::first(1.0).unwrap(),
            words: vec![
                ("Clothed".into(), StepRange::first(0.4).unwrap()),
                ("absent".into(), StepRange::first(0.0).unwrap()),
            ],
        };
        // "a clothed person": "clothed" at positions 2..4 (say two tokens).
        let alphas = schedule.alphas(10, &["a", "clothed", "person"], &[1..2, 2..4, 4..5]);
        assert_eq!(alphas.matched_words, vec!["Clothed".to_owned()]);
        // ⌊0.4·11⌋ = 4: the word's tokens are replaced at steps 0-3, the rest at every step.
        assert_eq!(alphas.rows[3][2..5], [1.0, 1.0, 1.0]);
        assert_eq!(alphas.rows[4][2..5], [0.0, 0.0, 1.0]);
        assert_eq!(alphas.rows[9][1], 1.0);
        assert_eq!(alphas.rows[9][0], 1.0);
    }

    #[test]
    fn self_injection_blend_and_shared_attention_steps() {
        let range = StepRange::first(0.4).unwrap();
        let active: Vec<bool> = (0..10).map(|i| self_replace_active(range, i, 10)).collect();
        assert_eq!(active.iter().filter(|a| **a).count(), 4);
        assert!(active[3] && !active[4]);
        let middle = StepRange::new(0.2, 0.5).unwrap();
        let active: Vec<usize> = (0..10)
            .filter(|&i| self_replace_active(middle, i, 10))
            .collect();
        assert_eq!(active, vec![2, 3, 4]);

        assert!(!blend_active(0.2, 1, 10));
        assert!(blend_active(0.2, 2, 10));
        assert!(blend_active(0.0, 0, 10));

        // 11 steps, p = 0.5: i / 10 < 0.5 for i = 0..4.
        let shared: Vec<usize> = (0..11)
            .filter(|&i| shared_self_attention_active(0.5, i, 11))
            .collect();
        assert_eq!(shared, vec![0, 1, 2, 3, 4]);
        assert!(shared_self_attention_active(0.1, 0, 1));
        assert!(!shared_self_attention_active(0.0, 0, 1));
    }

    #[test]
    fn reweighting_scales_the_chosen_words_tokens() {
        let factors = reweight_factors(
            &[("red".into(), 2.0)],
            &["a", "red", "star"],
            &[1..2, 2..3, 3..4],
        );
        assert_eq!(factors[..5], [1.0, 1.0, 2.0, 1.0, 1.0]);
        assert_eq!(factors.len(), CONTEXT_LENGTH);
    }
}
