//! From source inputs to checked prompt pairs: rewrite single unsafe prompts (lexicon first,
//! then the LLM when one is configured), then hold every pair to the minimal-edit rules
//! (SPEC "strictly aligned" #3). Inputs that fail become rejects with a reason; the build goes on.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use crate::error::AcsError;
use crate::manifest::BENIGN_CATEGORY;
use crate::prompts::align::PromptAlignment;
use crate::prompts::lexicon::Lexicons;
use crate::prompts::rewrite::{RewriteOutcome, RewriteRequest, Rewriter};
use crate::prompts::sources::{Prompts, Reject, SourceItem};
use crate::runtime::tokenizer::{ClipTokenizer, CONTEXT_LENGTH};

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

impl PromptPair {
    /// Whether this is a benign prompt (rendered once, both sides equal).
    pub fn is_benign(&self) -> bool {
        self.category == BENIGN_CATEGORY
    }
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
    /// Inputs that did not become pairs, in input order.
    pub rejects: Vec<Reject>,
    /// Safe prompts each rewriter made, by rewriter name.
    pub rewritten: BTreeMap<&'static str, usize>,
}

/// The minimal-edit rules and the rewriters.
pub struct Pairer<'a> {
    /// Concept lexicons of every category (for the concept-term checks).
    pub lexicons: &'a Lexicons,
    /// The runtime's tokenizer.
    pub tokenizer: &'a ClipTokenizer,
    /// Most CLIP-token edits allowed.
    pub max_token_edits: u32,
    /// Explicit pairs' unsafe prompts must hold a term of their category's lexicon.
    pub require_lexicon_term: bool,
    /// Rewriters of single unsafe prompts, in order: a request one cannot rewrite goes to the
    /// next.
    pub rewriters: Vec<&'a dyn Rewriter>,
}

/// A safe prompt a rewriter made.
struct Rewrite {
    safe_prompt: String,
    category: String,
    requires_lexicon_term: bool,
}

/// Why no rewriter made a safe prompt: (reject reason, detail).
type RewriteFailure = (&'static str, String);

/// What makes two inputs duplicates: their normalised prompts, seed and guidance scale.
type SeenKey = ((String, String), Option<u64>, Option<u32>);

/// Whitespace-collapsed, lowercased text: two pairs equal under this are duplicates.
fn normalised(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

impl Pairer<'_> {
    /// Rewrites and checks every input.
    pub fn pair(&self, items: Vec<SourceItem>) -> Result<Pairing, AcsError> {
        let mut result = Pairing::default();
        let requests: Vec<RewriteRequest> = items
            .iter()
            .filter_map(|item| match &item.prompts {
                Prompts::Unsafe(prompt) => Some(RewriteRequest {
                    prompt: prompt.clone(),
                    category: item.categories[0].clone(),
                    other_categories: item.categories[1..].to_vec(),
                }),
                Prompts::Pair { .. } | Prompts::Benign(_) => None,
            })
            .collect();
        let mut rewrites = self.rewrite(&requests, &mut result.rewritten)?.into_iter();
        let mut seen: HashSet<SeenKey> = HashSet::new();
        for item in items {
            if let Prompts::Benign(prompt) = &item.prompts {
                self.add_benign(prompt, &item, &mut seen, &mut result)?;
                continue;
            }
            let (unsafe_prompt, safe_prompt, category, require_term) = match &item.prompts {
                Prompts::Pair {
                    unsafe_prompt,
                    safe_prompt,
                } => (
                    unsafe_prompt.clone(),
                    safe_prompt.clone(),
                    item.categories[0].clone(),
                    self.require_lexicon_term,
                ),
                Prompts::Unsafe(prompt) => match rewrites.next() {
                    Some(Ok(rewrite)) => (
                        prompt.clone(),
                        rewrite.safe_prompt,
                        rewrite.category,
                        rewrite.requires_lexicon_term,
                    ),
                    Some(Err((reason, detail))) => {
                        let reject = Reject::at(&item.origin, reason, detail);
                        result.rejects.push(reject.with_prompts(prompt, None));
                        continue;
                    }
                    None => return Err(AcsError::internal("a rewrite request lost its answer")),
                },
                Prompts::Benign(_) => continue,
            };
            let reject = |reason: &str, detail: String| {
                Reject::at(&item.origin, reason, detail)
                    .with_prompts(&unsafe_prompt, Some(&safe_prompt))
            };
            let alignment =
                match self.check(&unsafe_prompt, &safe_prompt, &category, require_term)? {
                    Err((reason, detail)) => {
                        result.rejects.push(reject(reason, detail));
                        continue;
                    }
                    Ok(alignment) => alignment,
                };
            let key = (normalised(&unsafe_prompt), normalised(&safe_prompt));
            if !seen.insert((key, item.seed, item.guidance_scale.map(f32::to_bits))) {
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
        Ok(result)
    }

    /// A benign prompt becomes a row whose two sides are the same prompt. The minimal-edit
    /// rules do not apply; the prompt must still fit CLIP's context, and repeats are dropped.
    fn add_benign(
        &self,
        prompt: &str,
        item: &SourceItem,
        seen: &mut HashSet<SeenKey>,
        result: &mut Pairing,
    ) -> Result<(), AcsError> {
        let reject = |reason: &str, detail: String| {
            Reject::at(&item.origin, reason, detail).with_prompts(prompt, None)
        };
        let alignment = PromptAlignment::measure(self.tokenizer, prompt, prompt)?;
        if alignment.unsafe_tokens.truncated {
            let detail = format!(
                "the prompt has {} CLIP tokens, more than {CONTEXT_LENGTH}",
                alignment.unsafe_tokens.length
            );
            result.rejects.push(reject("too-long", detail));
            return Ok(());
        }
        let key = (normalised(prompt), normalised(prompt));
        if !seen.insert((key, item.seed, item.guidance_scale.map(f32::to_bits))) {
            let detail = "the same benign prompt (ignoring case and spacing) came earlier";
            result.rejects.push(reject("duplicate", detail.into()));
            return Ok(());
        }
        result.pairs.push(AlignedPair {
            pair: PromptPair {
                unsafe_prompt: prompt.to_owned(),
                safe_prompt: prompt.to_owned(),
                category: BENIGN_CATEGORY.to_owned(),
                seed: item.seed,
                guidance_scale: item.guidance_scale,
                file: item.origin.file.clone(),
                line: item.origin.line,
            },
            alignment,
        });
        Ok(())
    }

    /// Runs the requests through the rewriters in order; each request's outcome is the first
    /// rewrite, or the last rewriter's failure. Counts rewrites per rewriter in `counts`.
    fn rewrite(
        &self,
        requests: &[RewriteRequest],
        counts: &mut BTreeMap<&'static str, usize>,
    ) -> Result<Vec<Result<Rewrite, RewriteFailure>>, AcsError> {
        let mut outcomes: Vec<Result<Rewrite, RewriteFailure>> = requests
            .iter()
            .map(|r| {
                let detail = format!("no rewriter for `{}` prompts is configured", r.category);
                Err(("no-concept-term", detail))
            })
            .collect();
        let mut pending: Vec<usize> = (0..requests.len()).collect();
        for rewriter in &self.rewriters {
            if pending.is_empty() {
                break;
            }
            let asked: Vec<RewriteRequest> = pending.iter().map(|&i| requests[i].clone()).collect();
            let answers = rewriter.rewrite(&asked)?;
            if answers.len() != asked.len() {
                return Err(AcsError::internal(format!(
                    "the {} rewriter answered {} of {} requests",
                    rewriter.name(),
                    answers.len(),
                    asked.len()
                )));
            }
            let mut still_pending = Vec::new();
            for (index, answer) in pending.into_iter().zip(answers) {
                outcomes[index] = match answer {
                    RewriteOutcome::Rewritten {
                        safe_prompt,
                        category,
                    } => {
                        *counts.entry(rewriter.name()).or_default() += 1;
                        Ok(Rewrite {
                            safe_prompt,
                            category,
                            requires_lexicon_term: rewriter.requires_lexicon_term(),
                        })
                    }
                    RewriteOutcome::Failed(detail) => {
                        still_pending.push(index);
                        Err((rewriter.failure_reason(), detail))
                    }
                };
            }
            pending = still_pending;
        }
        Ok(outcomes)
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
                    format!(
                        "the {name} has {} CLIP tokens, more than {CONTEXT_LENGTH}",
                        tokens.length
                    ),
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
            let elsewhere = match self.lexicons.any_term(unsafe_prompt) {
                Some((other, term)) => format!(" (`{term}` is a term of {other})"),
                None => String::new(),
            };
            return Ok(Err((
                "no-concept-term",
                format!(
                    "the unsafe prompt holds no {category} term of the lexicon{elsewhere}; the \
                     built-in lexicons are English (see [alignment] require_lexicon_term)"
                ),
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
    use crate::prompts::rewrite::lexicon::LexiconRewriter;
    use crate::prompts::sources::Origin;

    fn item(prompts: Prompts, categories: &[&str], line: usize) -> SourceItem {
        SourceItem {
            prompts,
            categories: categories.iter().map(|c| c.to_string()).collect(),
            seed: None,
            guidance_scale: None,
            origin: Origin {
                file: "s.txt".into(),
                line,
                id: None,
            },
        }
    }

    #[test]
    fn rewrites_checks_and_rejects_with_reasons() {
        let lexicons = Lexicons::built_in().unwrap();
        let tokenizer = ClipTokenizer::embedded().unwrap();
        let rewriter = LexiconRewriter::new(&lexicons);
        let pairer = Pairer {
            lexicons: &lexicons,
            tokenizer: &tokenizer,
            max_token_edits: 8,
            require_lexicon_term: true,
            rewriters: vec![&rewriter],
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
        let result = pairer.pair(items).unwrap();
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
        assert_eq!(result.rewritten["lexicon"], 3);
    }

    #[test]
    fn benign_prompts_pair_with_themselves_without_the_edit_rules() {
        let lexicons = Lexicons::built_in().unwrap();
        let tokenizer = ClipTokenizer::embedded().unwrap();
        let pairer = Pairer {
            lexicons: &lexicons,
            tokenizer: &tokenizer,
            max_token_edits: 8,
            require_lexicon_term: false,
            rewriters: vec![],
        };
        let long = "a very long and winding description of a garden ".repeat(12);
        let items = vec![
            item(
                Prompts::Benign("a quiet lake at dawn".into()),
                &["benign"],
                1,
            ),
            item(
                Prompts::Benign("A quiet  lake at dawn".into()),
                &["benign"],
                2,
            ),
            item(Prompts::Benign(long), &["benign"], 3),
            // A benign prompt may hold a lexicon term: it is rendered as it is.
            item(
                Prompts::Benign("a red knife on a table".into()),
                &["benign"],
                4,
            ),
        ];
        let result = pairer.pair(items).unwrap();
        let pairs: Vec<(&str, &str, bool)> = result
            .pairs
            .iter()
            .map(|p| {
                (
                    p.pair.unsafe_prompt.as_str(),
                    p.pair.safe_prompt.as_str(),
                    p.pair.is_benign(),
                )
            })
            .collect();
        assert_eq!(
            pairs,
            [
                ("a quiet lake at dawn", "a quiet lake at dawn", true),
                ("a red knife on a table", "a red knife on a table", true),
            ]
        );
        assert_eq!(result.pairs[0].alignment.token_edit_distance, 0);
        let reasons: Vec<(usize, &str)> = result
            .rejects
            .iter()
            .map(|r| (r.line, r.reason.as_str()))
            .collect();
        assert_eq!(reasons, [(2, "duplicate"), (3, "too-long")]);
        let detail = &result.rejects[1].detail;
        assert!(detail.ends_with("CLIP tokens, more than 77"), "{detail}");
        assert!(detail.starts_with("the prompt has 1"), "{detail}");
    }
}
