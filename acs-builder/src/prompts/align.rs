//! Prompt alignment on CLIP tokens: edit distance between the two prompts, the unsafe words the
//! edit replaced, and the reasons a pair breaks the minimal-edit rule.

use crate::error::AcsError;
use crate::runtime::tokenizer::{ClipTokenizer, TokenizedPrompt, CONTEXT_LENGTH};

/// Both prompts of a pair tokenized, and how they relate.
#[derive(Debug, Clone)]
pub struct PromptAlignment {
    /// The unsafe prompt's tokens.
    pub unsafe_tokens: TokenizedPrompt,
    /// The safe prompt's tokens.
    pub safe_tokens: TokenizedPrompt,
    /// Levenshtein distance between the content tokens.
    pub token_edit_distance: u32,
    /// Runs of unsafe-prompt words that the edit replaced or removed.
    pub concepts: Vec<String>,
}

impl PromptAlignment {
    /// Tokenizes both prompts and measures the edit.
    pub fn measure(
        tokenizer: &ClipTokenizer,
        unsafe_prompt: &str,
        safe_prompt: &str,
    ) -> Result<Self, AcsError> {
        let unsafe_tokens = tokenizer.encode(unsafe_prompt)?;
        let safe_tokens = tokenizer.encode(safe_prompt)?;
        let token_edit_distance =
            strsim::generic_levenshtein(&unsafe_tokens.content, &safe_tokens.content) as u32;
        Ok(Self {
            token_edit_distance,
            concepts: replaced_words(unsafe_prompt, safe_prompt),
            unsafe_tokens,
            safe_tokens,
        })
    }

    /// Why this pair is not a minimal edit under `max_token_edits` (empty when it is).
    pub fn violations(&self, max_token_edits: u32) -> Vec<String> {
        let mut reasons = Vec::new();
        for (name, tokens) in [
            ("unsafe_prompt", &self.unsafe_tokens),
            ("safe_prompt", &self.safe_tokens),
        ] {
            if tokens.truncated {
                reasons.push(format!(
                    "truncated: {name} has {} CLIP tokens, more than {CONTEXT_LENGTH}",
                    tokens.length
                ));
            }
        }
        reasons.extend(token_edit_violations(
            self.token_edit_distance,
            max_token_edits,
        ));
        reasons
    }
}

/// The minimal-edit rule on the token edit distance alone (re-checked by `acs validate`).
pub fn token_edit_violations(distance: u32, max_token_edits: u32) -> Vec<String> {
    if distance > max_token_edits {
        vec![format!("token_edits: {distance} > max {max_token_edits}")]
    } else if distance == 0 {
        vec!["token_edits: the prompts tokenize identically".into()]
    } else {
        Vec::new()
    }
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '-'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Maximal runs of words of `unsafe_prompt` that are not part of the longest common word
/// subsequence with `safe_prompt`, each joined with spaces.
pub fn replaced_words(unsafe_prompt: &str, safe_prompt: &str) -> Vec<String> {
    let a = words(unsafe_prompt);
    let b = words(safe_prompt);
    // lcs[i][j] = LCS length of a[i..], b[j..]
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut runs = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    while i < a.len() {
        if j < b.len() && a[i] == b[j] {
            if !current.is_empty() {
                runs.push(current.join(" "));
                current.clear();
            }
            i += 1;
            j += 1;
        } else if j < b.len() && lcs[i][j + 1] >= lcs[i + 1][j] {
            j += 1;
        } else {
            current.push(&a[i]);
            i += 1;
        }
    }
    if !current.is_empty() {
        runs.push(current.join(" "));
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaced_words_are_the_unsafe_side_of_the_diff() {
        assert_eq!(
            replaced_words("a bloody knife on a table", "a clean knife on a table"),
            vec!["bloody"]
        );
        assert_eq!(
            replaced_words("Nude woman, gory scene", "clothed woman, calm scene"),
            vec!["nude", "gory"]
        );
        assert!(replaced_words("a cat", "a cat sitting").is_empty());
    }

    #[test]
    fn edit_distance_and_violations() {
        let tokenizer = ClipTokenizer::embedded().unwrap();
        let pair = PromptAlignment::measure(&tokenizer, "a bloody knife", "a clean knife").unwrap();
        assert_eq!(pair.token_edit_distance, 1);
        assert!(pair.violations(8).is_empty());
        let far = PromptAlignment::measure(
            &tokenizer,
            "a bloody knife",
            "a bright red balloon over a quiet village at dawn",
        )
        .unwrap();
        assert_eq!(far.violations(2).len(), 1);
        assert!(far.violations(2)[0].starts_with("token_edits: "));
        let same = PromptAlignment::measure(&tokenizer, "A cat", "a  cat").unwrap();
        assert_eq!(
            same.violations(8),
            vec!["token_edits: the prompts tokenize identically"]
        );
    }
}
