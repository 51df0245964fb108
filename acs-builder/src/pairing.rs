//! From source inputs to checked prompt pairs: rewrite single unsafe prompts (lexicon first,
//! then the LLM when one is configured), then hold every pair to the minimal-edit rules
//! (SPEC "strictly aligned" #3). Inputs that fail become rejects with a reason; the build goes on.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::align::PromptAlignment;
use crate::error::AcsError;
use crate::lexicon::Lexicons;
use crate::rewrite::llm::LlmRewriter;
use crate::rewrite::{RewriteOutcome, RewriteRequest};
use crate::sources::{Prompts, Reject, SourceItem};
use crate::tokenizer::{ClipTokenizer, CONTEXT_LENGTH};

/// A checked prompt pair, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptPair {
    /// The prompt holding the unsafe concept.
    pub unsafe_prompt: String,
    /// The minimally edited safe counterpart.
    pub safe_prompt: String,
    /// Its category.
    pub category: String,
    /// A seed fixed by the source, else derived later.
    pub seed: Option<u64>,
    /// A guidance scale fixed by the source, else the manifest's.
    pub guidance_scale: Option<f32>,
    /// Source file.
    pub file: PathBuf,
    /// 1-based line or row in the source.
    pub line: usize,
}

/// A pair with its measured alignment.
#[derive(Debug, Clone)]
pub struct AlignedPair {
    /// The prompts.
    pub pair: PromptPair,
    /// CLIP-token alignment.
    pub alignment: PromptAlignment,
}

/// What pairing made of the inputs.
#[derive(Debug, Default)]
pub struct Pairing {
    /// Pairs that passed every check, in input order.
    pub pairs: Vec<AlignedPair>,
    /// Inputs that did not become pairs.
    pub rejects: Vec<Reject>,
    /// How many safe prompts each rewriter made.
    pub rewritten_by_lexicon: usize,
    /// Safe prompts made by the LLM.
    pub rewritten_by_llm: usize,
}

/// The minimal-edit rules and the rewriters.
pub struct Pairer<'a> {
    /// Concept lexicons of every category.
    pub lexicons: &'a Lexicons,
    /// The runtime's tokenizer.
    pub tokenizer: &'a ClipTokenizer,
    /// Most CLIP-token edits allowed.
    pub max_token_edits: u32,
    /// The LLM rewriter, when `[rewrite.llm]` is set.
    pub llm: Option<&'a LlmRewriter>,
}

/// Whitespace-collapsed, lowercased text: two pairs equal under this are duplicates.
fn normalised(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

impl Pairer<'_> {
    /// Rewrites and checks every input.
    pub fn pair(
        &self,
        items: Vec<SourceItem>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Pairing, AcsError> {
        let mut result = Pairing::default();
        // (index, candidate pair) in input order; LLM answers are filled in afterwards.
        let mut candidates: Vec<(SourceItem, Option<(String, String)>)> = Vec::new();
        let mut llm_requests = Vec::new();
        for item in items {
            match &item.prompts {
                Prompts::Pair { .. } => candidates.push((item, None)),
                Prompts::Unsafe(prompt) => {
                    // The row's own categories first; then, for rows whose label names none
                    // of the prompt's terms (I2P labels are multi-label and noisy), any other
                    // category whose lexicon finds one: the pair is recorded under the category
                    // of the concept it actually edits.
                    let others = crate::config::CATEGORIES
                        .iter()
                        .map(|c| c.to_string())
                        .filter(|c| !item.categories.contains(c));
                    let found =
                        item.categories
                            .iter()
                            .cloned()
                            .chain(others)
                            .find_map(|category| {
                                let safe = self.rewrite_with_lexicons(prompt, &category)?;
                                Some((category, safe))
                            });
                    match (found, self.llm) {
                        (Some(found), _) => {
                            result.rewritten_by_lexicon += 1;
                            candidates.push((item, Some(found)));
                        }
                        (None, Some(_)) => {
                            llm_requests.push((
                                candidates.len(),
                                RewriteRequest {
                                    prompt: prompt.clone(),
                                    category: item.categories[0].clone(),
                                },
                            ));
                            candidates.push((item, None));
                        }
                        (None, None) => {
                            let detail = format!(
                                "no concept term of {} in the prompt (lexicon rewrite found \
                                 nothing to replace; no [rewrite.llm] configured)",
                                item.categories.join(" / ")
                            );
                            result.rejects.push(
                                Reject::at(&item.origin, "no-concept-term", detail)
                                    .with_prompts(prompt, None),
                            );
                        }
                    }
                }
            }
        }
        let mut llm_answers = vec![None; candidates.len()];
        if let (Some(llm), false) = (self.llm, llm_requests.is_empty()) {
            progress(&format!(
                "rewriting {} prompts with the LLM",
                llm_requests.len()
            ));
            let requests: Vec<RewriteRequest> =
                llm_requests.iter().map(|(_, r)| r.clone()).collect();
            let outcomes = llm.rewrite_all(&requests, progress)?;
            for ((index, request), outcome) in llm_requests.into_iter().zip(outcomes) {
                llm_answers[index] = Some((request.category, outcome));
            }
        }

        let mut seen = HashSet::new();
        for ((item, lexicon_rewrite), llm_answer) in candidates.into_iter().zip(llm_answers) {
            let from_llm = matches!(
                (&item.prompts, &lexicon_rewrite),
                (Prompts::Unsafe(_), None)
            );
            let (unsafe_prompt, safe_prompt, category) = match (&item.prompts, lexicon_rewrite) {
                (
                    Prompts::Pair {
                        unsafe_prompt,
                        safe_prompt,
                    },
                    _,
                ) => (
                    unsafe_prompt.clone(),
                    safe_prompt.clone(),
                    item.categories[0].clone(),
                ),
                (Prompts::Unsafe(prompt), Some((category, safe))) => {
                    (prompt.clone(), safe, category)
                }
                (Prompts::Unsafe(prompt), None) => match llm_answer {
                    Some((category, RewriteOutcome::Rewritten(safe))) => {
                        result.rewritten_by_llm += 1;
                        (prompt.clone(), crate::text::clean(&safe), category)
                    }
                    Some((_, RewriteOutcome::Failed(reason))) => {
                        result.rejects.push(
                            Reject::at(&item.origin, "llm-rewrite-failed", reason)
                                .with_prompts(prompt, None),
                        );
                        continue;
                    }
                    None => {
                        return Err(AcsError::internal("an LLM request lost its answer"));
                    }
                },
            };
            let reject = |reason: &str, detail: String| {
                Reject::at(&item.origin, reason, detail)
                    .with_prompts(&unsafe_prompt, Some(&safe_prompt))
            };
            match self.check(&unsafe_prompt, &safe_prompt, &category, !from_llm)? {
                Err((reason, detail)) => result.rejects.push(reject(reason, detail)),
                Ok(alignment) => {
                    let key = (normalised(&unsafe_prompt), normalised(&safe_prompt));
                    let seed_key = (key, item.seed, item.guidance_scale.map(f32::to_bits));
                    if !seen.insert(seed_key) {
                        result.rejects.push(reject(
                            "duplicate",
                            "the same pair (ignoring case and spacing) came earlier".into(),
                        ));
                        continue;
                    }
                    result.pairs.push(AlignedPair {
                        pair: PromptPair {
                            unsafe_prompt,
                            safe_prompt,
                            category,
                            seed: item.seed,
                            guidance_scale: item.guidance_scale,
                            file: item.origin.file.clone(),
                            line: item.origin.line,
                        },
                        alignment,
                    });
                }
            }
        }
        Ok(result)
    }

    /// `prompt` rewritten by its category's lexicon (which must find a term), then by the
    /// other categories' lexicons for any term they still find, so that the safe prompt holds
    /// no concept term at all.
    pub fn rewrite_with_lexicons(&self, prompt: &str, category: &str) -> Option<String> {
        let (mut safe, _) = self.lexicons.get(category)?.rewrite(prompt)?;
        for lexicon in self.lexicons.iter().filter(|l| l.category != category) {
            if let Some((rewritten, _)) = lexicon.rewrite(&safe) {
                safe = rewritten;
            }
        }
        Some(safe)
    }

    /// The minimal-edit rules: `Ok(Err((reason, detail)))` for a pair that breaks one.
    /// `require_term`: the unsafe prompt must hold a term of its category's lexicon (not asked
    /// of LLM rewrites, which exist for prompts the lexicons cannot read; their edit is recorded
    /// as the words it replaced).
    #[allow(clippy::type_complexity)]
    pub fn check(
        &self,
        unsafe_prompt: &str,
        safe_prompt: &str,
        category: &str,
        require_term: bool,
    ) -> Result<Result<PromptAlignment, (&'static str, String)>, AcsError> {
        if unsafe_prompt == safe_prompt {
            return Ok(Err((
                "identical-prompts",
                "unsafe and safe prompt are identical".into(),
            )));
        }
        let alignment = PromptAlignment::measure(self.tokenizer, unsafe_prompt, safe_prompt)?;
        for (name, tokens) in [
            ("unsafe prompt", &alignment.unsafe_tokens),
            ("safe prompt", &alignment.safe_tokens),
        ] {
            if tokens.truncated {
                return Ok(Err((
                    "too-long",
                    format!("the {name} exceeds {CONTEXT_LENGTH} CLIP tokens"),
                )));
            }
        }
        if alignment.token_edit_distance == 0 {
            return Ok(Err((
                "same-tokens",
                "the prompts tokenize identically".into(),
            )));
        }
        if alignment.token_edit_distance > self.max_token_edits {
            return Ok(Err((
                "too-many-edits",
                format!(
                    "{} CLIP-token edits > max_token_edits {}",
                    alignment.token_edit_distance, self.max_token_edits
                ),
            )));
        }
        let has_concept = self
            .lexicons
            .get(category)
            .is_some_and(|lexicon| !lexicon.find(unsafe_prompt).is_empty());
        if require_term && !has_concept {
            return Ok(Err((
                "no-concept-term",
                format!("the unsafe prompt holds no {category} term of the lexicon"),
            )));
        }
        if let Some((other, term)) = self.lexicons.any_term(safe_prompt) {
            return Ok(Err((
                "safe-holds-concept",
                format!("the safe prompt still holds the {other} term `{term}`"),
            )));
        }
        Ok(Ok(alignment))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::Origin;

    fn item(prompts: Prompts, categories: &[&str], line: usize) -> SourceItem {
        SourceItem {
            prompts,
            categories: categories.iter().map(|c| c.to_string()).collect(),
            seed: None,
            guidance_scale: None,
            origin: Origin {
                file: "s.txt".into(),
                line,
            },
        }
    }

    #[test]
    fn rewrites_checks_and_rejects_with_reasons() {
        let lexicons = Lexicons::built_in().unwrap();
        let tokenizer = ClipTokenizer::embedded().unwrap();
        let pairer = Pairer {
            lexicons: &lexicons,
            tokenizer: &tokenizer,
            max_token_edits: 8,
            llm: None,
        };
        let items = vec![
            item(
                Prompts::Unsafe("A bloody knife, oil painting".into()),
                &["violence"],
                1,
            ),
            item(
                Prompts::Unsafe("a quiet lake at dawn".into()),
                &["violence"],
                2,
            ),
            item(
                Prompts::Pair {
                    unsafe_prompt: "a nude figure".into(),
                    safe_prompt: "a naked statue".into(),
                },
                &["sexual"],
                3,
            ),
            item(
                Prompts::Pair {
                    unsafe_prompt: "a cat".into(),
                    safe_prompt: "a dog".into(),
                },
                &["violence"],
                4,
            ),
            item(
                Prompts::Unsafe("a  BLOODY knife, oil painting".into()),
                &["violence"],
                5,
            ),
            item(
                Prompts::Unsafe("a gory scene and a bloody knife".into()),
                &["sexual", "violence"],
                6,
            ),
        ];
        let result = pairer.pair(items, &mut |_| {}).unwrap();
        let pairs: Vec<(&str, &str, usize)> = result
            .pairs
            .iter()
            .map(|p| {
                (
                    p.pair.safe_prompt.as_str(),
                    p.pair.category.as_str(),
                    p.pair.line,
                )
            })
            .collect();
        assert_eq!(
            pairs,
            [
                ("A clean knife, oil painting", "violence", 1),
                ("a colorful scene and a clean knife", "violence", 6),
            ]
        );
        let reasons: Vec<(usize, &str)> = result
            .rejects
            .iter()
            .map(|r| (r.line, r.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (2, "no-concept-term"),
                (3, "safe-holds-concept"),
                (4, "no-concept-term"),
                (5, "duplicate"),
            ]
        );
        assert_eq!(result.rewritten_by_lexicon, 3);
    }
}
