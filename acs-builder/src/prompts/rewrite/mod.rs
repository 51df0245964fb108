//! Rewriting: an unsafe prompt -> its minimally edited safe counterpart. Rewriters are tried in
//! order (the lexicons, then an LLM when one is configured); a request that one cannot
//! rewrite goes to the next. Every output goes through the same minimal-edit checks
//! afterwards ([`crate::prompts::pairing`]).

pub mod lexicon;
pub mod llm;

use crate::error::AcsError;

/// One prompt to rewrite.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RewriteRequest {
    /// The unsafe prompt, after text hygiene.
    pub prompt: String,
    /// Its category (one of `manifest::CATEGORIES`), the one the rewrite is asked for.
    pub category: String,
    /// Further categories its source labels it with (I2P rows are multi-label), for rewriters
    /// that can tell which concept the prompt holds.
    pub other_categories: Vec<String>,
}

impl RewriteRequest {
    /// A request to rewrite `prompt` away from `category`.
    pub fn new(prompt: &str, category: &str) -> Self {
        Self {
            prompt: prompt.to_owned(),
            category: category.to_owned(),
            other_categories: Vec::new(),
        }
    }
}

/// What a rewriter made of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewriteOutcome {
    /// The safe counterpart.
    Rewritten {
        /// The rewritten, safe prompt.
        safe_prompt: String,
        /// The category of the concept the rewrite removed.
        category: String,
    },
    /// No rewrite, with a short reason (recorded in rejects.jsonl).
    Failed(String),
}

impl RewriteOutcome {
    /// A rewrite of a `category` concept into `safe_prompt`.
    pub fn rewritten(safe_prompt: impl Into<String>, category: &str) -> Self {
        Self::Rewritten {
            safe_prompt: safe_prompt.into(),
            category: category.to_owned(),
        }
    }
}

/// One way of rewriting unsafe prompts.
pub trait Rewriter {
    /// Short name, for counts in reports (`lexicon`, `llm`).
    fn name(&self) -> &'static str;

    /// The reject reason of a request that no later rewriter rewrites either.
    fn failure_reason(&self) -> &'static str;

    /// One outcome per request, in order; `Err` only when the rewriter itself cannot work.
    fn rewrite(&self, requests: &[RewriteRequest]) -> Result<Vec<RewriteOutcome>, AcsError>;

    /// Whether its pairs are held to the lexicon-term check (not for rewriters that exist for
    /// the prompts the lexicons cannot read).
    fn requires_lexicon_term(&self) -> bool {
        true
    }
}
