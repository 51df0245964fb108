//! Attention mode's part of planning: which pairs attention control can serve (the others go
//! to rejects.jsonl with the reason), the words the settings name (a word in no pair is a bad
//! setting), and each planned pair's control.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use crate::error::AcsError;
use crate::prompts::pairing::AlignedPair;
use crate::prompts::plan::Plan;
use crate::prompts::sources::Reject;
use crate::runtime::attention::pair_control::AttentionSettings;
use crate::runtime::ClipTokenizer;

/// The reason code of a pair whose prompts the token map cannot align.
pub const UNMAPPED: &str = "attention-unmapped";

/// Splits `pairs` into those attention control can serve and rejects for the others; refuses
/// (exit 2, naming the key of `manifest`) a word the settings name that no pair's prompts
/// hold.
pub fn controllable(
    pairs: Vec<AlignedPair>,
    settings: &AttentionSettings,
    tokenizer: &ClipTokenizer,
    steps: usize,
    manifest: &Path,
) -> Result<(Vec<AlignedPair>, Vec<Reject>), AcsError> {
    let named = settings.named_words();
    // Every word of the build's pairs, once (words are compared case-insensitively).
    let held: HashSet<String> = if named.is_empty() {
        HashSet::new()
    } else {
        pairs
            .iter()
            .filter(|p| !p.pair.is_benign())
            .flat_map(|p| [&p.pair.unsafe_prompt, &p.pair.safe_prompt])
            .flat_map(|prompt| prompt.split_whitespace().map(str::to_lowercase))
            .collect()
    };
    for (key, word) in named {
        if !held.contains(&word.to_lowercase()) {
            let key = match key {
                "local_blend.words" => key.to_owned(),
                _ => format!("{key}.{word}"),
            };
            return Err(AcsError::input(format!(
                "{}: [alignment].{key}: \"{word}\" is in no prompt pair of this build",
                manifest.display()
            )));
        }
    }
    let mut kept = Vec::with_capacity(pairs.len());
    let mut rejects = Vec::new();
    for aligned in pairs {
        let p = &aligned.pair;
        if !p.is_benign() {
            if let Err(reason) =
                settings.pair_control(tokenizer, &p.unsafe_prompt, &p.safe_prompt, 0, steps)
            {
                rejects.push(Reject {
                    source: p.file.clone(),
                    line: p.line,
                    id: None,
                    reason: UNMAPPED.into(),
                    detail: reason,
                    unsafe_prompt: Some(p.unsafe_prompt.clone()),
                    safe_prompt: Some(p.safe_prompt.clone()),
                });
                continue;
            }
        }
        kept.push(aligned);
    }
    Ok((kept, rejects))
}

/// Gives every planned pair (benign prompts excepted) its control for its seed.
pub fn attach(
    plan: &mut Plan,
    settings: &AttentionSettings,
    tokenizer: &ClipTokenizer,
    steps: usize,
) -> Result<(), AcsError> {
    for pair in plan.pairs.iter_mut().filter(|p| !p.prompts.is_benign()) {
        let control = settings
            .pair_control(
                tokenizer,
                &pair.prompts.unsafe_prompt,
                &pair.prompts.safe_prompt,
                pair.seed,
                steps,
            )
            .map_err(|reason| AcsError::internal(format!("attention control: {reason}")))?;
        pair.attention = Some(Arc::new(control));
    }
    Ok(())
}
