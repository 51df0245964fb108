//! Rewriting: an unsafe prompt -> its minimally edited safe counterpart. The lexicon rewriter
//! replaces only the concept spans; the LLM rewriter asks an OpenAI-compatible endpoint for the
//! prompts the lexicons cannot rewrite. Either output goes through the same minimal-edit checks
//! afterwards (`align`).

pub mod llm;

/// One prompt to rewrite.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RewriteRequest {
    /// The unsafe prompt, after text hygiene.
    pub prompt: String,
    /// Its category (one of `config::CATEGORIES`).
    pub category: String,
}

/// What a rewriter made of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewriteOutcome {
    /// The safe counterpart.
    Rewritten(String),
    /// No rewrite, with a short reason (recorded in rejects.jsonl).
    Failed(String),
}
