//! A build's attention-control settings, and what they mean for one pair: its token map, the
//! per-step cross-attention edit, the steps of self-attention injection, the local blend's
//! words and the InstructPix2Pix generator's shared-self-attention fraction. Everything a pair
//! needs is computed here, before any UNet call, so that a pair that cannot be controlled is
//! rejected with its reason and the rest of the build goes on.

use std::ops::Range;

use sha2::{Digest, Sha256};

use super::schedule::{reweight_factors, word_positions, CrossReplace, StepRange};
use super::token_map::{pair_map, word_spans, ColumnSource, MapKind, TokenMap};
use crate::runtime::tokenizer::{ClipTokenizer, CONTEXT_LENGTH};

/// The local blend's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalBlend {
    /// Mask threshold over the map's maximum, in (0, 1).
    pub threshold: f32,
    /// Fraction of the steps after which blending starts, in [0, 1].
    pub start: f64,
    /// The words whose attention makes the mask; empty: the words the edit changed.
    pub words: Vec<String>,
    /// The resolution level whose down and up cross-attention layers give the maps (0: the
    /// latent's size, k: latent/2^k); `None`: the UNet's blend level (see
    /// `runtime::model::attention_hook::AttentionSite::blend_level`).
    pub level: Option<usize>,
}

/// The InstructPix2Pix generator's fraction of the steps with shared self-attention.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ShareFraction {
    /// The same fraction for every pair.
    Fixed(f64),
    /// Drawn per pair, uniformly in [low, high), from the pair's seed ([`drawn_fraction`]).
    Drawn {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
    },
}

/// A build's attention-control settings (`[alignment] mode = "attention"`), checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AttentionSettings {
    /// Prompt-to-Prompt cross-attention replacement; `None`: no cross-attention edit.
    pub cross_replace: Option<CrossReplace>,
    /// Prompt-to-Prompt self-attention injection at the coarse levels.
    pub self_replace: Option<StepRange>,
    /// Reweighting of the safe prompt's words (acts where cross-attention is replaced).
    pub reweight: Vec<(String, f32)>,
    /// The local blend.
    pub local_blend: Option<LocalBlend>,
    /// The InstructPix2Pix generator's variant, instead of the Prompt-to-Prompt controls.
    pub share_self_attention: Option<ShareFraction>,
}

/// The cross-attention edit of one pair at one step: the safe branch's probabilities become
/// `P_u · source + P_s ⊙ own` (one weight matrix and one vector over the 77 key columns).
#[derive(Debug, Clone, PartialEq)]
pub struct CrossEdit {
    /// [77 x 77], row-major: source column k's weight in target column j at `k * 77 + j`.
    pub source: Vec<f32>,
    /// [77]: the weight of the safe branch's own column j.
    pub own: Vec<f32>,
}

/// A pair's cross-attention replacement: its token map, each step's per-position replacement
/// weights, and the reweighting factors.
#[derive(Debug, Clone, PartialEq)]
pub struct CrossPlan {
    /// The token map.
    pub map: TokenMap,
    /// `steps` rows of 77 weights (1 replaced, 0 own).
    pub alphas: Vec<Vec<f32>>,
    /// The reweighting factor of each position.
    pub factors: Vec<f32>,
}

/// The local blend of one pair: the context positions of the edited words in each prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct PairBlend {
    /// Positions in the unsafe (source) prompt.
    pub source_positions: Vec<usize>,
    /// Positions in the safe (target) prompt.
    pub target_positions: Vec<usize>,
    /// Mask threshold.
    pub threshold: f32,
    /// Start fraction.
    pub start: f64,
    /// The level of the maps (`None`: the blend level).
    pub level: Option<usize>,
}

/// What attention control does to one pair.
#[derive(Debug, Clone, PartialEq)]
pub struct PairControl {
    /// How the token map was made.
    pub map_kind: MapKind,
    /// Steps of the run the control was made for.
    pub steps: usize,
    /// Cross-attention replacement (`None`: no cross-attention edit); each step's
    /// [`CrossEdit`] is made from it when the step runs ([`PairControl::cross_edit`]), so a
    /// planned build holds 77 weights per step and pair, not a 77 x 77 matrix.
    pub cross: Option<CrossPlan>,
    /// Self-attention injection at the coarse levels.
    pub self_replace: Option<StepRange>,
    /// The local blend.
    pub blend: Option<PairBlend>,
    /// The shared-self-attention fraction of this pair (the InstructPix2Pix variant).
    pub share_self_attention: Option<f64>,
    /// The settings as recorded in the row's `alignment_settings`.
    pub settings: String,
}

impl AttentionSettings {
    /// Prompt-to-Prompt's example settings: cross-attention replaced for the first 80 % of
    /// the steps, self-attention injected for the first 40 %.
    pub fn prompt_to_prompt_defaults() -> Self {
        Self {
            cross_replace: Some(CrossReplace {
                default: StepRange {
                    start: 0.0,
                    end: 0.8,
                },
                words: Vec::new(),
            }),
            self_replace: Some(StepRange {
                start: 0.0,
                end: 0.4,
            }),
            ..Self::default()
        }
    }

    /// Every word the settings name, with the key that names it.
    pub fn named_words(&self) -> Vec<(&'static str, &str)> {
        let mut words = Vec::new();
        if let Some(cross) = &self.cross_replace {
            words.extend(
                cross
                    .words
                    .iter()
                    .map(|(w, _)| ("cross_replace", w.as_str())),
            );
        }
        words.extend(self.reweight.iter().map(|(w, _)| ("reweight", w.as_str())));
        if let Some(blend) = &self.local_blend {
            words.extend(
                blend
                    .words
                    .iter()
                    .map(|w| ("local_blend.words", w.as_str())),
            );
        }
        words
    }

    /// The control of the pair (`unsafe_prompt`, `safe_prompt`) rendered from `seed` in
    /// `steps` steps; `Err` with the reason when its prompts cannot be mapped.
    pub fn pair_control(
        &self,
        tokenizer: &ClipTokenizer,
        unsafe_prompt: &str,
        safe_prompt: &str,
        seed: u64,
        steps: usize,
    ) -> Result<PairControl, String> {
        let (map_kind, map) = pair_map(tokenizer, unsafe_prompt, safe_prompt)?;
        let safe_words: Vec<&str> = safe_prompt.split_whitespace().collect();
        let needs_safe_spans = self.cross_replace.is_some() || self.local_blend.is_some();
        let safe_spans = if needs_safe_spans {
            word_spans(tokenizer, safe_prompt)?
        } else {
            Vec::new()
        };
        let cross = self.cross_replace.as_ref().map(|schedule| CrossPlan {
            alphas: schedule.alphas(steps, &safe_words, &safe_spans).rows,
            factors: reweight_factors(&self.reweight, &safe_words, &safe_spans),
            map,
        });
        let blend = match &self.local_blend {
            Some(settings) => Some(pair_blend(
                tokenizer,
                settings,
                (unsafe_prompt, safe_prompt),
                map_kind,
                &safe_spans,
            )?),
            None => None,
        };
        let share_self_attention = self.share_self_attention.map(|share| match share {
            ShareFraction::Fixed(p) => p,
            ShareFraction::Drawn { low, high } => low + (high - low) * drawn_fraction(seed),
        });
        Ok(PairControl {
            settings: self.describe(map_kind, share_self_attention),
            map_kind,
            steps,
            cross,
            self_replace: self.self_replace,
            blend,
            share_self_attention,
        })
    }

    /// The settings in words, for the dataset card.
    pub fn summary(&self) -> String {
        match self.share_self_attention {
            Some(ShareFraction::Fixed(p)) => {
                format!("InstructPix2Pix's shared self-attention for the first {p} of the steps")
            }
            Some(ShareFraction::Drawn { low, high }) => format!(
                "InstructPix2Pix's shared self-attention for the first p of the steps, p drawn \
                 per pair in [{low}, {high})"
            ),
            None => format!(
                "Prompt-to-Prompt: {}",
                self.describe_keys().join("; ").replace('=', " ")
            ),
        }
    }

    /// The compact settings string of a row, e.g.
    /// `map=swap;cross=0-0.8,clean:0-0.4;self=0-0.4;reweight=clean:2;blend=0.3@0.2`.
    fn describe(&self, map_kind: MapKind, share: Option<f64>) -> String {
        let mut parts = vec![format!("map={}", map_kind.name())];
        parts.extend(self.describe_keys());
        if let Some(p) = share {
            parts.push(format!("share={p}"));
        }
        parts.join(";")
    }

    /// The Prompt-to-Prompt keys of [`Self::describe`].
    fn describe_keys(&self) -> Vec<String> {
        let range = |r: &StepRange| format!("{}-{}", r.start, r.end);
        let mut parts = Vec::new();
        if let Some(cross) = &self.cross_replace {
            let mut text = range(&cross.default);
            for (word, r) in &cross.words {
                text.push_str(&format!(",{word}:{}", range(r)));
            }
            parts.push(format!("cross={text}"));
        }
        if let Some(r) = &self.self_replace {
            parts.push(format!("self={}", range(r)));
        }
        if !self.reweight.is_empty() {
            let list: Vec<String> = self
                .reweight
                .iter()
                .map(|(w, f)| format!("{w}:{f}"))
                .collect();
            parts.push(format!("reweight={}", list.join(",")));
        }
        if let Some(blend) = &self.local_blend {
            let mut text = format!("{}@{}", blend.threshold, blend.start);
            if let Some(level) = blend.level {
                text.push_str(&format!(",latent/{}", 1usize << level));
            }
            if !blend.words.is_empty() {
                text.push_str(&format!(",words:{}", blend.words.join("+")));
            }
            parts.push(format!("blend={text}"));
        }
        parts
    }
}

impl PairControl {
    /// The cross-attention edit of `step`; `None` where the step keeps the safe branch's own
    /// attention (or there is no cross-attention replacement).
    pub fn cross_edit(&self, step: usize) -> Option<CrossEdit> {
        let plan = self.cross.as_ref()?;
        cross_edit(&plan.map, plan.alphas.get(step)?, &plan.factors)
    }
}

/// The pair's shared-self-attention draw: a uniform number in [0, 1) from the first 53 bits
/// (little-endian u64 of sha256(`acs-share-self-attention:{seed}`), shifted right by 11),
/// independent of the generator that draws x_T and the ancestral noise.
pub fn drawn_fraction(seed: u64) -> f64 {
    let digest = Sha256::digest(format!("acs-share-self-attention:{seed}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// One step's cross edit from the token map, the step's replacement weights and the
/// reweighting factors: target column j takes alpha_j · (mapped source columns · factor_j)
/// + (1 - alpha_j) · its own column (own columns of inserted tokens stay own). `None` when no
///   column is replaced.
fn cross_edit(map: &TokenMap, alphas: &[f32], factors: &[f32]) -> Option<CrossEdit> {
    if alphas.iter().all(|&a| a == 0.0) {
        return None;
    }
    let n = CONTEXT_LENGTH;
    let mut source = vec![0f32; n * n];
    let mut own = vec![0f32; n];
    for (j, column) in map.columns.iter().enumerate().take(n) {
        let (alpha, factor) = (alphas[j], factors[j]);
        own[j] = 1.0 - alpha;
        match column {
            ColumnSource::Own => own[j] += alpha * factor,
            ColumnSource::Mix(terms) => {
                for &(k, weight) in terms {
                    source[k * n + j] += alpha * weight * factor;
                }
            }
        }
    }
    Some(CrossEdit { source, own })
}

/// The local blend of a pair: the listed words' positions in each prompt, or the words the
/// edit changed (a swap: the words that differ at the same place; a refinement: the words
/// outside the longest common subsequence of the two word lists).
fn pair_blend(
    tokenizer: &ClipTokenizer,
    settings: &LocalBlend,
    (source, target): (&str, &str),
    map_kind: MapKind,
    target_spans: &[Range<usize>],
) -> Result<PairBlend, String> {
    let source_words: Vec<&str> = source.split_whitespace().collect();
    let target_words: Vec<&str> = target.split_whitespace().collect();
    let source_spans = word_spans(tokenizer, source)?;
    let (source_positions, target_positions) = if settings.words.is_empty() {
        let (source_edited, target_edited) = match map_kind {
            MapKind::Swap => {
                let differ: Vec<usize> = (0..source_words.len())
                    .filter(|&w| source_words[w] != target_words[w])
                    .collect();
                (differ.clone(), differ)
            }
            MapKind::Refine => outside_common_words(&source_words, &target_words),
        };
        let positions = |spans: &[Range<usize>], words: Vec<usize>| -> Vec<usize> {
            words
                .into_iter()
                .flat_map(|w| spans[w].clone())
                .filter(|&p| p < CONTEXT_LENGTH)
                .collect()
        };
        (
            positions(&source_spans, source_edited),
            positions(target_spans, target_edited),
        )
    } else {
        let listed = |words: &[&str], spans: &[Range<usize>]| -> Vec<usize> {
            let mut out: Vec<usize> = settings
                .words
                .iter()
                .flat_map(|w| word_positions(w, words, spans))
                .collect();
            out.sort_unstable();
            out.dedup();
            out
        };
        (
            listed(&source_words, &source_spans),
            listed(&target_words, target_spans),
        )
    };
    if source_positions.is_empty() && target_positions.is_empty() {
        return Err("the local blend has no edited word in either prompt".into());
    }
    Ok(PairBlend {
        source_positions,
        target_positions,
        threshold: settings.threshold,
        start: settings.start,
        level: settings.level,
    })
}

/// The indices of the words of `a` and of `b` outside one longest common subsequence of the
/// two lists (compared exactly).
fn outside_common_words(a: &[&str], b: &[&str]) -> (Vec<usize>, Vec<usize>) {
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut in_a, mut in_b) = (vec![false; n], vec![false; m]);
    let (mut i, mut j) = (0, 0);
    while i < n && j < m {
        if a[i] == b[j] {
            in_a[i] = true;
            in_b[j] = true;
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    let outside = |kept: Vec<bool>| -> Vec<usize> {
        kept.iter()
            .enumerate()
            .filter(|(_, &k)| !k)
            .map(|(i, _)| i)
            .collect()
    };
    (outside(in_a), outside(in_b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> ClipTokenizer {
        ClipTokenizer::embedded().unwrap()
    }

    #[test]
    fn a_replaced_step_takes_the_source_columns_and_a_kept_step_is_no_edit() {
        let settings = AttentionSettings {
            reweight: vec![("clean".into(), 2.0)],
            ..AttentionSettings::prompt_to_prompt_defaults()
        };
        let control = settings
            .pair_control(&tokenizer(), "a bloody knife", "a clean knife", 1, 10)
            .unwrap();
        assert_eq!(control.map_kind, MapKind::Swap);
        // 10 steps, 0.8: steps 0..⌊0.8·11⌋ = 0..8 are replaced.
        assert!(control.cross_edit(7).is_some() && control.cross_edit(8).is_none());
        let edit = &control.cross_edit(0).unwrap();
        let n = CONTEXT_LENGTH;
        // "clean" (position 2) takes "bloody"'s column (2), doubled; nothing of its own.
        assert_eq!(edit.source[2 * n + 2], 2.0);
        assert_eq!(edit.own[2], 0.0);
        assert_eq!(edit.source[3 * n + 3], 1.0);
        assert_eq!(
            control.settings,
            "map=swap;cross=0-0.8;self=0-0.4;reweight=clean:2"
        );
    }

    #[test]
    fn inserted_tokens_keep_their_own_column() {
        let control = AttentionSettings::prompt_to_prompt_defaults()
            .pair_control(&tokenizer(), "a knife", "a clean knife", 1, 4)
            .unwrap();
        assert_eq!(control.map_kind, MapKind::Refine);
        let edit = &control.cross_edit(0).unwrap();
        let n = CONTEXT_LENGTH;
        assert_eq!(
            edit.own[2], 1.0,
            "the inserted 'clean' keeps its own attention"
        );
        assert!((0..n).all(|k| edit.source[k * n + 2] == 0.0));
        assert_eq!(edit.source[2 * n + 3], 1.0, "'knife' moved from 2 to 3");
    }

    #[test]
    fn the_blend_reads_the_edited_words_unless_words_are_listed() {
        let mut settings = AttentionSettings {
            local_blend: Some(LocalBlend {
                threshold: 0.3,
                start: 0.2,
                words: Vec::new(),
                level: None,
            }),
            ..AttentionSettings::default()
        };
        let t = tokenizer();
        let swap = settings
            .pair_control(
                &t,
                "a bloody knife on a table",
                "a clean knife on a table",
                0,
                5,
            )
            .unwrap();
        let blend = swap.blend.unwrap();
        assert_eq!(
            (blend.source_positions, blend.target_positions),
            (vec![2], vec![2])
        );
        let refine = settings
            .pair_control(
                &t,
                "a knife on a table",
                "a clean shiny knife on a table",
                0,
                5,
            )
            .unwrap();
        let blend = refine.blend.unwrap();
        assert!(blend.source_positions.is_empty());
        assert_eq!(blend.target_positions, vec![2, 3]);
        settings.local_blend.as_mut().unwrap().words = vec!["Knife".into()];
        let listed = settings
            .pair_control(
                &t,
                "a knife on a table",
                "a clean shiny knife on a table",
                0,
                5,
            )
            .unwrap();
        let blend = listed.blend.unwrap();
        assert_eq!(
            (blend.source_positions, blend.target_positions),
            (vec![2], vec![4])
        );
        settings.local_blend.as_mut().unwrap().words = vec!["spoon".into()];
        let none = settings.pair_control(&t, "a knife", "a clean knife", 0, 5);
        assert!(none.unwrap_err().contains("no edited word"));
    }

    #[test]
    fn a_drawn_fraction_is_fixed_by_the_seed_and_within_its_range() {
        let settings = AttentionSettings {
            share_self_attention: Some(ShareFraction::Drawn {
                low: 0.1,
                high: 0.9,
            }),
            ..AttentionSettings::default()
        };
        let t = tokenizer();
        let p = |seed| {
            settings
                .pair_control(&t, "a red cat", "a blue cat", seed, 10)
                .unwrap()
                .share_self_attention
                .unwrap()
        };
        assert_eq!(p(7), p(7));
        assert_ne!(p(7), p(8));
        for seed in 0..200 {
            assert!((0.1..0.9).contains(&p(seed)));
        }
        assert!(drawn_fraction(0) < 1.0);
    }

    #[test]
    fn common_words_are_a_longest_common_subsequence() {
        let (a, b) = outside_common_words(
            &["a", "violent", "riot", "in", "the", "street"],
            &["a", "street"],
        );
        assert_eq!(a, vec![1, 2, 3, 4]);
        assert!(b.is_empty());
    }
}
