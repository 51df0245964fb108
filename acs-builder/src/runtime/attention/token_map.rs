//! Token maps between the two prompts of a pair, for attention-controlled alignment
//! (Prompt-to-Prompt, Hertz et al., ICLR 2023; ../shared/notes/attention-control.md): for every
//! token position of the safe prompt's 77-token context, which columns of the unsafe prompt's
//! cross-attention it takes. Two kinds, as in the paper:
//!
//! - **word swap** ([`swap_map`]): both prompts have the same number of words; a swapped word
//!   whose token count is unchanged takes the source word's columns token for token, one with a
//!   different count takes in each of its tokens the source word's columns weighted by
//!   1/len(target) (each source token spreads 1/len(target) over the target's tokens); every
//!   other position takes the column of the same token in the source;
//! - **refinement** ([`refine_map`]): words inserted or deleted; a global alignment of the two
//!   token id sequences (start and end tokens included; Needleman-Wunsch with gap 0, match +1,
//!   mismatch -1, ties broken towards a target insertion, then a source deletion, then the
//!   diagonal) maps each aligned target token to its source token, and inserted tokens keep
//!   their own attention.
//!
//! Words are the prompt's whitespace-separated words; for a word swap each word's tokens are
//! found by encoding the words one by one, which must give the prompt's own tokens (CLIP's
//! pre-tokenizer never joins two words), or the pair cannot be mapped.

use std::ops::Range;

use crate::runtime::tokenizer::{ClipTokenizer, TokenizedPrompt, CONTEXT_LENGTH};

/// Where one target position's attention column comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnSource {
    /// The target branch keeps its own column (a token that refinement inserted).
    Own,
    /// The weighted sum of these source columns (empty: a zero column).
    Mix(Vec<(usize, f32)>),
}

/// A map from the source (unsafe) prompt's token positions to the target (safe) prompt's, one
/// entry per target position of the context.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenMap {
    /// The source of each target position's column, [`CONTEXT_LENGTH`] entries.
    pub columns: Vec<ColumnSource>,
}

impl TokenMap {
    /// The target row of attention probabilities (one value per key token) that this map makes
    /// from the source row and the target's own row, before any step blending.
    pub fn apply(&self, source: &[f32], own: &[f32]) -> Vec<f32> {
        self.columns
            .iter()
            .enumerate()
            .map(|(j, column)| match column {
                ColumnSource::Own => own[j],
                ColumnSource::Mix(terms) => terms.iter().map(|&(i, w)| source[i] * w).sum(),
            })
            .collect()
    }
}

/// The context positions of each whitespace-separated word of `prompt` (the start token is
/// position 0, so the first word starts at 1); `Err` with the reason when the words' tokens are
/// not the prompt's tokens, or do not fit the context.
pub fn word_spans(tokenizer: &ClipTokenizer, prompt: &str) -> Result<Vec<Range<usize>>, String> {
    let whole = encode_whole(tokenizer, prompt)?;
    let mut spans = Vec::new();
    let mut joined = Vec::new();
    for word in prompt.split_whitespace() {
        let tokens = tokenizer.encode(word).map_err(|e| e.to_string())?.content;
        let start = 1 + joined.len();
        joined.extend_from_slice(&tokens);
        spans.push(start..1 + joined.len());
    }
    if joined != whole.content {
        return Err(format!(
            "the tokens of {prompt:?} word by word differ from the prompt's tokens"
        ));
    }
    Ok(spans)
}

/// `prompt`'s tokens; `Err` when they do not fit the context (a cut prompt cannot be mapped).
fn encode_whole(tokenizer: &ClipTokenizer, prompt: &str) -> Result<TokenizedPrompt, String> {
    let tokens = tokenizer.encode(prompt).map_err(|e| e.to_string())?;
    if tokens.truncated {
        return Err("the prompt is longer than the 75 tokens of CLIP's context".into());
    }
    Ok(tokens)
}

/// How a pair's token map was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKind {
    /// Same number of words: [`swap_map`].
    Swap,
    /// Words inserted or deleted: [`refine_map`].
    Refine,
}

impl MapKind {
    /// The name used in settings and reports.
    pub fn name(self) -> &'static str {
        match self {
            MapKind::Swap => "swap",
            MapKind::Refine => "refine",
        }
    }
}

/// The token map from the `source` prompt to the `target` prompt: a word swap when they have
/// the same number of words, else a refinement; `Err` with the reason when the prompts cannot
/// be mapped (see [`word_spans`]). Each prompt is encoded whole once (and, for a swap, word by
/// word).
pub fn pair_map(
    tokenizer: &ClipTokenizer,
    source: &str,
    target: &str,
) -> Result<(MapKind, TokenMap), String> {
    let source_words: Vec<&str> = source.split_whitespace().collect();
    let target_words: Vec<&str> = target.split_whitespace().collect();
    if source_words.len() == target_words.len() {
        let source_spans = word_spans(tokenizer, source)?;
        let target_spans = word_spans(tokenizer, target)?;
        let map = swap_map(&source_words, &target_words, &source_spans, &target_spans)?;
        return Ok((MapKind::Swap, map));
    }
    // The id sequences with their start and end tokens, no padding.
    let ids = |prompt: &str| -> Result<Vec<u32>, String> {
        let tokens = encode_whole(tokenizer, prompt)?;
        Ok(tokens.ids[..tokens.content.len() + 2].to_vec())
    };
    Ok((MapKind::Refine, refine_map(&ids(source)?, &ids(target)?)))
}

/// The word-swap map of two prompts with the same number of words: `source_words` /
/// `target_words` are the words and `source_spans` / `target_spans` their context positions
/// ([`word_spans`]). After a swapped word of another token count the rest of the target is
/// shifted against the source, and each position follows its word (google's notebook code maps
/// position j to j there, which reads the wrong source tokens after such a swap).
pub fn swap_map(
    source_words: &[&str],
    target_words: &[&str],
    source_spans: &[Range<usize>],
    target_spans: &[Range<usize>],
) -> Result<TokenMap, String> {
    if source_words.len() != target_words.len() {
        return Err(format!(
            "a word swap needs the same number of words ({} and {})",
            source_words.len(),
            target_words.len()
        ));
    }
    let swapped: Vec<usize> = (0..source_words.len())
        .filter(|&w| source_words[w] != target_words[w])
        .collect();
    let mut columns = vec![ColumnSource::Mix(Vec::new()); CONTEXT_LENGTH];
    // Walk both contexts together: a swapped word advances each side by its own token count,
    // everything else (start token, kept words, end token, padding) one position on each side.
    let (mut i, mut j) = (0, 0);
    let mut next = swapped.iter().peekable();
    while i < CONTEXT_LENGTH && j < CONTEXT_LENGTH {
        match next.peek() {
            Some(&&w) if source_spans[w].start == i => {
                let (source, target) = (source_spans[w].clone(), target_spans[w].clone());
                if source.len() == target.len() {
                    for (s, t) in source.clone().zip(target.clone()) {
                        columns[t] = ColumnSource::Mix(vec![(s, 1.0)]);
                    }
                } else {
                    let share = 1.0 / target.len() as f32;
                    for t in target.clone() {
                        columns[t] =
                            ColumnSource::Mix(source.clone().map(|s| (s, share)).collect());
                    }
                }
                i = source.end;
                j = target.end;
                next.next();
            }
            _ => {
                columns[j] = ColumnSource::Mix(vec![(i, 1.0)]);
                i += 1;
                j += 1;
            }
        }
    }
    Ok(TokenMap { columns })
}

/// The refinement map of two token id sequences, each with its start and end tokens and no
/// padding: aligned target positions take their source position's column, inserted ones keep
/// their own; positions past the target's end token take the same position of the source.
pub fn refine_map(source: &[u32], target: &[u32]) -> TokenMap {
    let alignment = global_alignment(source, target);
    let mut columns: Vec<ColumnSource> = (0..CONTEXT_LENGTH)
        .map(|j| ColumnSource::Mix(vec![(j, 1.0)]))
        .collect();
    for (j, aligned) in alignment.into_iter().enumerate().take(CONTEXT_LENGTH) {
        columns[j] = match aligned {
            Some(i) => ColumnSource::Mix(vec![(i, 1.0)]),
            None => ColumnSource::Own,
        };
    }
    TokenMap { columns }
}

/// For each position of `target`, the position of `source` it is aligned with, or `None` when
/// it was inserted: Needleman-Wunsch with gap 0, match +1, mismatch -1; among equal scores the
/// trace prefers a target insertion, then a source deletion, then the diagonal.
pub fn global_alignment(source: &[u32], target: &[u32]) -> Vec<Option<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Step {
        Insert,
        Delete,
        Diagonal,
    }
    let (n, m) = (source.len(), target.len());
    let mut score = vec![vec![0i32; m + 1]; n + 1];
    let mut trace = vec![vec![Step::Diagonal; m + 1]; n + 1];
    for row in trace.iter_mut().skip(1) {
        row[0] = Step::Delete;
    }
    for cell in trace[0].iter_mut().skip(1) {
        *cell = Step::Insert;
    }
    for i in 1..=n {
        for j in 1..=m {
            let insert = score[i][j - 1];
            let delete = score[i - 1][j];
            let diagonal = score[i - 1][j - 1]
                + if source[i - 1] == target[j - 1] {
                    1
                } else {
                    -1
                };
            let best = insert.max(delete).max(diagonal);
            score[i][j] = best;
            trace[i][j] = if best == insert {
                Step::Insert
            } else if best == delete {
                Step::Delete
            } else {
                Step::Diagonal
            };
        }
    }
    let mut aligned = vec![None; m];
    let (mut i, mut j) = (n, m);
    while i > 0 || j > 0 {
        match trace[i][j] {
            Step::Diagonal if i > 0 && j > 0 => {
                i -= 1;
                j -= 1;
                aligned[j] = Some(i);
            }
            Step::Insert if j > 0 => j -= 1,
            Step::Delete if i > 0 => i -= 1,
            // The first row and column only step towards the corner.
            _ if i > 0 => i -= 1,
            _ => j -= 1,
        }
    }
    aligned
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> ClipTokenizer {
        ClipTokenizer::embedded().unwrap()
    }

    fn mix(column: &ColumnSource) -> Vec<(usize, f32)> {
        match column {
            ColumnSource::Mix(terms) => terms.clone(),
            ColumnSource::Own => panic!("own column"),
        }
    }

    #[test]
    fn words_map_to_their_context_positions() {
        let t = tokenizer();
        let spans = word_spans(&t, "a red circle").unwrap();
        assert_eq!(spans, vec![1..2, 2..3, 3..4]);
        // A word of several tokens spans them all.
        let long = word_spans(&t, "a xylophonist").unwrap();
        assert_eq!(long[0], 1..2);
        assert!(long[1].len() > 1, "{long:?}");
        let whole = t.encode("a xylophonist").unwrap().content;
        assert_eq!(long[1].end, 1 + whole.len());
    }

    #[test]
    fn a_swap_of_equal_token_counts_is_the_identity() {
        let map = swap_map(
            &["a", "red", "circle"],
            &["a", "blue", "circle"],
            &[1..2, 2..3, 3..4],
            &[1..2, 2..3, 3..4],
        )
        .unwrap();
        for (j, column) in map.columns.iter().enumerate() {
            assert_eq!(mix(column), vec![(j, 1.0)], "position {j}");
        }
    }

    #[test]
    fn a_swapped_word_of_another_length_spreads_its_columns() {
        // "a cat on grass" -> "a xylo phone on grass": word 1 has one token in the source and
        // two in the target.
        let map = swap_map(
            &["a", "cat", "on", "grass"],
            &["a", "xylophone", "on", "grass"],
            &[1..2, 2..3, 3..4, 4..5],
            &[1..2, 2..4, 4..5, 5..6],
        )
        .unwrap();
        assert_eq!(mix(&map.columns[0]), vec![(0, 1.0)]);
        assert_eq!(mix(&map.columns[1]), vec![(1, 1.0)]);
        assert_eq!(mix(&map.columns[2]), vec![(2, 0.5)]);
        assert_eq!(mix(&map.columns[3]), vec![(2, 0.5)]);
        // After the swap the target is one position behind: "on" (4) reads "on" (3), the end
        // token (6) reads the source's end token (5).
        assert_eq!(mix(&map.columns[4]), vec![(3, 1.0)]);
        assert_eq!(mix(&map.columns[6]), vec![(5, 1.0)]);
        assert_eq!(mix(&map.columns[76]), vec![(75, 1.0)]);
        // Two source tokens into one target token: each gives it 1/len(target) = 1 (a sum).
        let merge = swap_map(&["x", "y"], &["x", "z"], &[1..2, 2..4], &[1..2, 2..3]).unwrap();
        assert_eq!(mix(&merge.columns[2]), vec![(2, 1.0), (3, 1.0)]);
        assert_eq!(mix(&merge.columns[3]), vec![(4, 1.0)]);
        let one_word = vec![Range { start: 1, end: 2 }];
        assert!(swap_map(&["a"], &["a", "b"], &one_word, &[1..2, 2..3]).is_err());
    }

    #[test]
    fn refinement_aligns_kept_tokens_and_keeps_inserted_ones() {
        // [bos, a, cat, eos] -> [bos, a, red, cat, eos]
        let source = [100, 1, 2, 101];
        let target = [100, 1, 7, 2, 101];
        assert_eq!(
            global_alignment(&source, &target),
            vec![Some(0), Some(1), None, Some(2), Some(3)]
        );
        let map = refine_map(&source, &target);
        assert_eq!(mix(&map.columns[1]), vec![(1, 1.0)]);
        assert_eq!(map.columns[2], ColumnSource::Own);
        assert_eq!(mix(&map.columns[3]), vec![(2, 1.0)]);
        assert_eq!(mix(&map.columns[4]), vec![(3, 1.0)]);
        // Past the target's end: the same position.
        assert_eq!(mix(&map.columns[40]), vec![(40, 1.0)]);
    }

    #[test]
    fn a_substitution_is_an_insertion_with_gap_zero() {
        // A mismatch scores -1 and two gaps 0: the changed token is never aligned.
        let alignment = global_alignment(&[100, 1, 2, 101], &[100, 1, 3, 101]);
        assert_eq!(alignment, vec![Some(0), Some(1), None, Some(3)]);
        // A deletion: the target has a token fewer.
        let deleted = global_alignment(&[100, 1, 5, 2, 101], &[100, 1, 2, 101]);
        assert_eq!(deleted, vec![Some(0), Some(1), Some(3), Some(4)]);
        assert_eq!(global_alignment(&[], &[4, 5]), vec![None, None]);
        assert_eq!(global_alignment(&[4, 5], &[]), Vec::<Option<usize>>::new());
    }

    #[test]
    fn apply_mixes_source_columns_and_keeps_own_ones() {
        let source: Vec<f32> = (0..CONTEXT_LENGTH).map(|k| k as f32).collect();
        let own = vec![-1.0; CONTEXT_LENGTH];
        let map = refine_map(&[100, 1, 101], &[100, 9, 1, 101]);
        let row = map.apply(&source, &own);
        assert_eq!(&row[..4], &[0.0, -1.0, 1.0, 2.0]);
        let swap = swap_map(&["x", "y"], &["x", "z"], &[1..2, 2..3], &[1..2, 2..4]).unwrap();
        let row = swap.apply(&source, &own);
        assert_eq!(&row[..5], &[0.0, 1.0, 1.0, 1.0, 3.0]);
    }
}
