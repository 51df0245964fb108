//! The lexicon rewriter: replaces only the concept spans the category lexicons find.

use crate::error::AcsError;
use crate::manifest::CATEGORIES;
use crate::prompts::lexicon::Lexicons;
use crate::prompts::rewrite::{RewriteOutcome, RewriteRequest, Rewriter};

/// Rewrites with the category lexicons.
pub struct LexiconRewriter<'a> {
    lexicons: &'a Lexicons,
    /// Appended to the reason of a prompt it cannot rewrite (what else the user could do).
    failure_hint: Option<&'static str>,
}

impl<'a> LexiconRewriter<'a> {
    /// A rewriter over `lexicons`.
    pub fn new(lexicons: &'a Lexicons) -> Self {
        Self {
            lexicons,
            failure_hint: None,
        }
    }

    /// The same rewriter, adding `hint` to the reason of every prompt it cannot rewrite.
    pub fn with_failure_hint(self, hint: &'static str) -> Self {
        Self {
            failure_hint: Some(hint),
            ..self
        }
    }

    /// `prompt` rewritten by `category`'s lexicon (which must find a term), then by the other
    /// categories' lexicons for any term they still find, so that the safe prompt holds no
    /// concept term at all.
    pub fn rewrite_one(&self, prompt: &str, category: &str) -> Option<String> {
        let (mut safe, _) = self.lexicons.get(category)?.rewrite(prompt)?;
        for lexicon in self.lexicons.iter().filter(|l| l.category != category) {
            if let Some((rewritten, _)) = lexicon.rewrite(&safe) {
                safe = rewritten;
            }
        }
        Some(safe)
    }

    /// The request's own categories first; then, for prompts whose label names none of their
    /// terms (I2P labels are multi-label and noisy), any other category whose lexicon finds
    /// one: the pair is recorded under the category of the concept it actually edits.
    fn outcome(&self, request: &RewriteRequest) -> RewriteOutcome {
        let own: Vec<&str> = std::iter::once(request.category.as_str())
            .chain(request.other_categories.iter().map(String::as_str))
            .collect();
        let others = CATEGORIES.iter().copied().filter(|c| !own.contains(c));
        let found = own.iter().copied().chain(others).find_map(|category| {
            let safe = self.rewrite_one(&request.prompt, category)?;
            Some(RewriteOutcome::rewritten(safe, category))
        });
        found.unwrap_or_else(|| {
            let hint = self
                .failure_hint
                .map(|h| format!("; {h}"))
                .unwrap_or_default();
            RewriteOutcome::Failed(format!(
                "no concept term of {} in the prompt (lexicon rewrite found nothing to \
                 replace; the built-in lexicons are English: [rewrite] lexicons = \"DIR\" adds \
                 one TOML per category for other words or languages{hint})",
                own.join(" / ")
            ))
        })
    }
}

impl Rewriter for LexiconRewriter<'_> {
    fn name(&self) -> &'static str {
        "lexicon"
    }

    fn failure_reason(&self) -> &'static str {
        "no-concept-term"
    }

    fn rewrite(&self, requests: &[RewriteRequest]) -> Result<Vec<RewriteOutcome>, AcsError> {
        Ok(requests.iter().map(|r| self.outcome(r)).collect())
    }
}
