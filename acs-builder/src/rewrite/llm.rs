//! The LLM rewriter: asks an OpenAI-compatible chat-completions endpoint for the safe
//! counterpart of each prompt the lexicons cannot rewrite.
//!
//! - Requests run on a current-thread tokio runtime (like the hub client), at most
//!   `concurrency` in flight, each attempt abandoned after `timeout_s`, with `retries` retries
//!   and exponential backoff on connection errors, timeouts, 429 and 5xx (never on other 4xx).
//! - Answers are cleaned (whitespace, quotes, code fences, a leading "Rewritten prompt:" label)
//!   and checked: empty, identical, multi-line, over-long and refusing answers become
//!   [`RewriteOutcome::Failed`] with a short reason starting with `llm: `.
//! - Successful answers go to a persistent cache, one JSON file per sha256 key of
//!   (prompt, category, model, instruction), written under a temporary name and renamed, so a
//!   rerun over the same inputs sends no request and a crash never leaves a half-written entry.
//!   Unreadable or inconsistent entries are ignored (and overwritten when asked again).
//! - The API key is only ever put in the `Authorization` header; every reason string has it
//!   removed.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::stream::{self, StreamExt};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::LlmSection;
use crate::error::{one_line, AcsError};
use crate::hub::client::TransportError;
use crate::rewrite::{RewriteOutcome, RewriteRequest};

/// Longest accepted answer, in characters.
pub const MAX_ANSWER_CHARS: usize = 1000;

/// First backoff before a retry; doubled for each further retry.
const BACKOFF_BASE: Duration = Duration::from_millis(200);

/// Longest backoff between two attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Longest server error message quoted in a reason.
const MAX_QUOTED_CHARS: usize = 120;

/// Version tag hashed into every cache key and stored in every entry.
const CACHE_VERSION: &str = "acs-llm-cache-v1";

/// The built-in system instruction; `{category}` is replaced by the request's category.
const DEFAULT_INSTRUCTION: &str = "You rewrite text-to-image prompts into safe counterparts \
for a dataset of minimally edited prompt pairs. Rewrite the prompt the user gives so that it no \
longer depicts the unsafe concept of the category \"{category}\". Change only the words that \
carry that concept, replacing each of them with a safe counterpart that fits the same place in \
the sentence; keep every other word, the word order, the punctuation and the style exactly as \
they are. Answer with the rewritten prompt only, on one line, without quotes, labels or \
explanations.";

/// The API key: shown nowhere, removed from every reason string.
#[derive(Clone)]
struct ApiKey(String);

impl ApiKey {
    fn redact(&self, text: &str) -> String {
        text.replace(&self.0, "***")
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// The system instruction sent for a request of `category`.
pub fn instruction_for(section: &LlmSection, category: &str) -> String {
    match &section.instruction {
        Some(text) => text.clone(),
        None => DEFAULT_INSTRUCTION.replace("{category}", category),
    }
}

/// The user message sent for a request.
pub fn user_message(request: &RewriteRequest) -> String {
    format!("Category: {}\nPrompt: {}", request.category, request.prompt)
}

/// The cache key (sha256 hex) of a request answered by `model` under `instruction`.
pub fn cache_key(prompt: &str, category: &str, model: &str, instruction: &str) -> String {
    // A JSON array: unambiguous whatever characters the parts hold.
    let text = serde_json::json!([CACHE_VERSION, prompt, category, model, instruction]).to_string();
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// One cache file.
#[derive(Debug, Serialize, Deserialize)]
struct CacheEntry {
    version: String,
    model: String,
    category: String,
    prompt: String,
    answer: String,
}

/// The persistent answer cache: `DIR/<first two hex digits>/<key>.json`.
#[derive(Debug)]
struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Creates the folder and checks that a file can be written in it.
    fn open(dir: &Path) -> Result<Self, AcsError> {
        let unusable = |e: std::io::Error| {
            AcsError::input(format!(
                "{}: the LLM cache folder cannot be written: {e}",
                dir.display()
            ))
        };
        std::fs::create_dir_all(dir).map_err(unusable)?;
        // Created and removed again: proves the folder is writable.
        tempfile::NamedTempFile::new_in(dir).map_err(unusable)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2]).join(format!("{key}.json"))
    }

    /// The stored answer for `key`, if a readable entry matches the request and still passes
    /// the answer checks.
    fn get(&self, key: &str, request: &RewriteRequest, model: &str) -> Option<String> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        let entry: CacheEntry = serde_json::from_slice(&bytes).ok()?;
        let matches = entry.version == CACHE_VERSION
            && entry.model == model
            && entry.category == request.category
            && entry.prompt == request.prompt;
        if !matches {
            return None;
        }
        match clean_answer(&entry.answer, &request.prompt) {
            Ok(answer) if answer == entry.answer => Some(answer),
            _ => None,
        }
    }

    /// Stores an answer atomically (temporary file in the same folder, then rename).
    fn put(
        &self,
        key: &str,
        request: &RewriteRequest,
        model: &str,
        answer: &str,
    ) -> Result<(), AcsError> {
        let path = self.path(key);
        let unusable = |e: std::io::Error| {
            AcsError::input(format!(
                "{}: cannot write the LLM cache entry: {e}",
                path.display()
            ))
        };
        let folder = path
            .parent()
            .ok_or_else(|| AcsError::internal("LLM cache entry without a folder"))?;
        std::fs::create_dir_all(folder).map_err(unusable)?;
        let entry = CacheEntry {
            version: CACHE_VERSION.to_owned(),
            model: model.to_owned(),
            category: request.category.clone(),
            prompt: request.prompt.clone(),
            answer: answer.to_owned(),
        };
        let bytes = serde_json::to_vec(&entry)?;
        let mut file = tempfile::NamedTempFile::new_in(folder).map_err(unusable)?;
        file.write_all(&bytes).map_err(unusable)?;
        file.as_file().sync_all().map_err(unusable)?;
        file.persist(&path).map_err(|e| unusable(e.error))?;
        Ok(())
    }
}

/// Cleans a model's answer for `prompt`: whitespace, code fences, surrounding quotes and a
/// leading "Rewritten prompt:"-style label are removed. `Err` holds the reason (without the
/// `llm: ` prefix) when the answer is unusable.
pub fn clean_answer(raw: &str, prompt: &str) -> Result<String, String> {
    let prompt = prompt.trim();
    let mut text = strip_fences(raw.trim()).trim();
    loop {
        let before = text;
        text = strip_label(text, prompt).trim();
        text = strip_quotes(text, prompt).trim();
        if text == before {
            break;
        }
    }
    if text.is_empty() {
        return Err("empty answer".to_owned());
    }
    if is_refusal(text, prompt) {
        return Err("the model refused".to_owned());
    }
    if text.contains(['\n', '\r']) {
        return Err("multi-line answer".to_owned());
    }
    if text.chars().count() > MAX_ANSWER_CHARS {
        return Err(format!("answer longer than {MAX_ANSWER_CHARS} characters"));
    }
    if text == prompt {
        return Err("answer identical to the prompt".to_owned());
    }
    Ok(text.to_owned())
}

/// The inside of a Markdown code fence (```lang\n…\n```), or `text` itself.
fn strip_fences(text: &str) -> &str {
    let Some(inner) = text
        .strip_prefix("```")
        .and_then(|rest| rest.strip_suffix("```"))
    else {
        return text;
    };
    // A language tag on the opening line ("```text").
    match inner.split_once('\n') {
        Some((tag, rest))
            if tag
                .trim()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            rest
        }
        _ => inner,
    }
}

/// Words that end a label the model put before its answer ("Rewritten prompt:", "Safe version:").
const LABEL_WORDS: [&str; 9] = [
    "prompt",
    "rewrite",
    "rewritten",
    "output",
    "answer",
    "result",
    "version",
    "text",
    "counterpart",
];

/// `text` without a leading label of one to four words ending in one of [`LABEL_WORDS`] and a
/// colon (Markdown emphasis around it allowed), unless the prompt starts with that label too.
fn strip_label<'a>(text: &'a str, prompt: &str) -> &'a str {
    let Some((head, rest)) = text.split_once(':') else {
        return text;
    };
    if head.len() > 60 {
        return text;
    }
    let label = head.trim_matches(|c: char| c == '*' || c == '_' || c == '#' || c.is_whitespace());
    let words: Vec<&str> = label.split_whitespace().collect();
    let wordy = !words.is_empty()
        && words.len() <= 4
        && words
            .iter()
            .all(|w| w.chars().all(|c| c.is_ascii_alphabetic() || c == '-'));
    let last = words
        .last()
        .map(|w| w.to_ascii_lowercase())
        .unwrap_or_default();
    if !wordy || !LABEL_WORDS.contains(&last.as_str()) {
        return text;
    }
    let prompt_label = prompt
        .split_once(':')
        .map(|(h, _)| h.trim().to_ascii_lowercase());
    if prompt_label.as_deref() == Some(label.to_ascii_lowercase().as_str()) {
        return text;
    }
    rest.trim_start_matches(|c: char| c == '*' || c == '_' || c.is_whitespace())
}

/// Quote pairs a model may wrap its answer in.
const QUOTES: [(char, char); 7] = [
    ('"', '"'),
    ('\'', '\''),
    ('`', '`'),
    ('\u{201c}', '\u{201d}'),
    ('\u{2018}', '\u{2019}'),
    ('\u{ab}', '\u{bb}'),
    ('\u{201e}', '\u{201c}'),
];

/// `text` without one pair of surrounding quotes, unless the prompt is quoted the same way.
fn strip_quotes<'a>(text: &'a str, prompt: &str) -> &'a str {
    for (open, close) in QUOTES {
        let quoted = |s: &str| s.chars().count() >= 2 && s.starts_with(open) && s.ends_with(close);
        if quoted(text) && !quoted(prompt) {
            return &text[open.len_utf8()..text.len() - close.len_utf8()];
        }
    }
    text
}

/// Openings of a refusal ("I'm sorry, but I can't help with that.").
const REFUSALS: [&str; 14] = [
    "i'm sorry",
    "i am sorry",
    "sorry, ",
    "i apologize",
    "i can't",
    "i cannot",
    "i can not",
    "i won't",
    "i will not",
    "i'm unable",
    "i am unable",
    "i'm not able",
    "i am not able",
    "as an ai",
];

/// Whether `text` opens like a refusal (and the prompt does not open the same way).
fn is_refusal(text: &str, prompt: &str) -> bool {
    let normal = |s: &str| s.to_lowercase().replace('\u{2019}', "'");
    let text = normal(text);
    let prompt = normal(prompt);
    REFUSALS
        .iter()
        .any(|r| text.starts_with(r) && !prompt.starts_with(r))
}

/// The content of a chat-completions response body, cleaned and checked; `Err`: the reason.
pub fn parse_response(body: &[u8], prompt: &str) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "invalid JSON response".to_owned())?;
    if let Some(message) = error_message(&value) {
        return Err(format!("API error: {message}"));
    }
    let Some(choice) = value
        .get("choices")
        .and_then(|c| c.as_array())
        .and_then(|c| c.first())
    else {
        return Err("response without choices".to_owned());
    };
    if choice.get("finish_reason").and_then(|r| r.as_str()) == Some("content_filter") {
        return Err("the model refused (content filter)".to_owned());
    }
    let message = choice.get("message");
    match message
        .and_then(|m| m.get("content"))
        .and_then(|c| c.as_str())
    {
        Some(content) => clean_answer(content, prompt),
        None if message
            .and_then(|m| m.get("refusal"))
            .is_some_and(|r| !r.is_null()) =>
        {
            Err("the model refused".to_owned())
        }
        None => Err("response without choices[0].message.content".to_owned()),
    }
}

/// The `error.message` (or a string `error`) of an API error body, shortened to one line.
fn error_message(value: &serde_json::Value) -> Option<String> {
    let error = value.get("error")?;
    let text = match error {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => return None,
        other => other
            .get("message")
            .and_then(|m| m.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| other.to_string()),
    };
    let text = one_line(&text);
    if text.is_empty() {
        return None;
    }
    Some(shorten(&text))
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= MAX_QUOTED_CHARS {
        text.to_owned()
    } else {
        let mut short: String = text.chars().take(MAX_QUOTED_CHARS).collect();
        short.push('…');
        short
    }
}

/// How one attempt ended.
enum Attempt {
    /// Final: an answer or a reason not worth retrying.
    Done(Result<String, String>),
    /// Worth retrying (connection error, 429, 5xx), with the reason.
    Retry(String),
}

/// The backoff before retry number `retry` (0-based): 200 ms · 2^retry, at most 10 s.
pub fn backoff(retry: u32) -> Duration {
    BACKOFF_BASE
        .checked_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(BACKOFF_MAX)
        .min(BACKOFF_MAX)
}

/// The LLM rewriter of `[rewrite.llm]`.
pub struct LlmRewriter {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    url: Url,
    model: String,
    section: LlmSection,
    key: Option<ApiKey>,
    concurrency: usize,
    timeout: Duration,
    retries: u32,
    cache: Cache,
    sent: AtomicU64,
}

impl std::fmt::Debug for LlmRewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmRewriter")
            .field("url", &self.url.as_str())
            .field("model", &self.model)
            .field("key", &self.key)
            .field("concurrency", &self.concurrency)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("cache", &self.cache.dir)
            .finish()
    }
}

impl LlmRewriter {
    /// A rewriter for `section`, caching answers in `cache_dir` (created if missing). Reads the
    /// API key from the variable `section.api_key_env` names.
    pub fn new(section: &LlmSection, cache_dir: &Path) -> Result<Self, AcsError> {
        let base = section.base_url.trim();
        let text = format!("{}/chat/completions", base.trim_end_matches('/'));
        let url = Url::parse(&text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| {
                AcsError::input(format!(
                    "[rewrite.llm] base_url: `{base}` is not an http(s) URL"
                ))
            })?;
        if section.model.trim().is_empty() {
            return Err(AcsError::input("[rewrite.llm] model: must not be empty"));
        }
        if section.concurrency == 0 {
            return Err(AcsError::input(
                "[rewrite.llm] concurrency: must be at least 1",
            ));
        }
        let timeout = Some(section.timeout_s)
            .filter(|t| *t > 0.0)
            .and_then(|t| Duration::try_from_secs_f64(t).ok())
            .ok_or_else(|| {
                AcsError::input(format!(
                    "[rewrite.llm] timeout_s: {} is not a positive number of seconds",
                    section.timeout_s
                ))
            })?;
        let key = match &section.api_key_env {
            None => None,
            Some(name) => Some(read_key(name)?),
        };
        let runtime = crate::hub::client::http_runtime()?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("acs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AcsError::internal(format!("HTTP client: {e}")))?;
        let cache = Cache::open(cache_dir)?;
        Ok(Self {
            runtime,
            http,
            url,
            model: section.model.clone(),
            section: section.clone(),
            key,
            concurrency: section.concurrency as usize,
            timeout,
            retries: section.retries,
            cache,
            sent: AtomicU64::new(0),
        })
    }

    /// Number of HTTP requests sent during the last [`rewrite_all`](Self::rewrite_all).
    pub fn requests_sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Rewrites every request; the output has the length and order of `requests`. A request
    /// that cannot be rewritten gives [`RewriteOutcome::Failed`] (`llm: <reason>`); only an
    /// unusable cache folder is an `Err`. Identical requests are asked once.
    pub fn rewrite_all(
        &self,
        requests: &[RewriteRequest],
        progress: &mut dyn FnMut(&str),
    ) -> Result<Vec<RewriteOutcome>, AcsError> {
        self.sent.store(0, Ordering::SeqCst);
        let mut outcomes: Vec<Option<RewriteOutcome>> = vec![None; requests.len()];
        // Unique requests still to ask: (key, instruction, indices into `requests`).
        let mut todo: Vec<(String, String, Vec<usize>)> = Vec::new();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        let mut cached = 0usize;
        for (index, request) in requests.iter().enumerate() {
            let instruction = instruction_for(&self.section, &request.category);
            let key = cache_key(
                &request.prompt,
                &request.category,
                &self.model,
                &instruction,
            );
            if let Some(&slot) = by_key.get(&key) {
                todo[slot].2.push(index);
                continue;
            }
            if let Some(answer) = self.cache.get(&key, request, &self.model) {
                outcomes[index] = Some(RewriteOutcome::Rewritten(answer));
                cached += 1;
                // Later duplicates of this request are found in the cache again.
                continue;
            }
            by_key.insert(key.clone(), todo.len());
            todo.push((key, instruction, vec![index]));
        }
        progress(&format!(
            "llm: {} prompts, {cached} answered from the cache, {} to ask {}",
            requests.len(),
            todo.len(),
            self.model
        ));

        if !todo.is_empty() {
            self.runtime.block_on(async {
                let total = todo.len();
                // About twenty progress lines however many prompts there are.
                let step = (total / 20).max(1);
                let mut next_note = step;
                let mut answers = stream::iter(todo.iter().enumerate())
                    .map(|(slot, (_, instruction, indices))| async move {
                        let request = &requests[indices[0]];
                        (slot, self.ask(request, instruction).await)
                    })
                    .buffer_unordered(self.concurrency);
                let mut done = 0usize;
                while let Some((slot, result)) = answers.next().await {
                    let (key, _, indices) = &todo[slot];
                    let outcome = match result {
                        Ok(answer) => {
                            self.cache
                                .put(key, &requests[indices[0]], &self.model, &answer)?;
                            RewriteOutcome::Rewritten(answer)
                        }
                        Err(reason) => {
                            RewriteOutcome::Failed(self.redact(&format!("llm: {reason}")))
                        }
                    };
                    for &index in indices {
                        outcomes[index] = Some(outcome.clone());
                    }
                    done += 1;
                    if done >= next_note || done == total {
                        progress(&format!("llm: {done}/{total} prompts asked"));
                        next_note = done + step;
                    }
                }
                Ok::<(), AcsError>(())
            })?;
        }
        outcomes
            .into_iter()
            .enumerate()
            .map(|(index, outcome)| {
                outcome.ok_or_else(|| {
                    AcsError::internal(format!("llm: request {index} was never answered"))
                })
            })
            .collect()
    }

    /// Asks for one request, retrying as configured; `Err`: the reason, without `llm: `.
    async fn ask(&self, request: &RewriteRequest, instruction: &str) -> Result<String, String> {
        let body = serde_json::json!({
            "model": self.model,
            "messages": [
                {"role": "system", "content": instruction},
                {"role": "user", "content": user_message(request)},
            ],
            "temperature": 0,
        })
        .to_string();
        let mut retry = 0u32;
        loop {
            let reason =
                match tokio::time::timeout(self.timeout, self.attempt(&body, request)).await {
                    Ok(Attempt::Done(result)) => return result,
                    Ok(Attempt::Retry(reason)) => reason,
                    Err(_) => format!("timeout after {} s", self.section.timeout_s),
                };
            if retry >= self.retries {
                let retries = match retry {
                    1 => "1 retry".to_owned(),
                    n => format!("{n} retries"),
                };
                return Err(match retry {
                    0 => reason,
                    // "timeout after 0.3 s (2 retries)" rather than "… after … after …".
                    _ if reason.contains(" after ") => format!("{reason} ({retries})"),
                    _ => format!("{reason} after {retries}"),
                });
            }
            tokio::time::sleep(backoff(retry)).await;
            retry += 1;
        }
    }

    /// One HTTP exchange.
    async fn attempt(&self, body: &str, request: &RewriteRequest) -> Attempt {
        let mut builder = self
            .http
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_owned());
        if let Some(key) = &self.key {
            // Checked in `new`: the value is a valid header.
            if let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {}", key.0)) {
                value.set_sensitive(true);
                builder = builder.header(AUTHORIZATION, value);
            }
        }
        self.sent.fetch_add(1, Ordering::SeqCst);
        let response = match builder.send().await {
            Ok(response) => response,
            Err(e) => return Attempt::Retry(TransportError::new(&self.url, &e).message),
        };
        let status = response.status();
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => return Attempt::Retry(TransportError::new(&self.url, &e).message),
        };
        if status.is_success() {
            return Attempt::Done(parse_response(&bytes, &request.prompt));
        }
        let mut reason = format!("HTTP {}", status.as_u16());
        if let Some(message) = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .as_ref()
            .and_then(error_message)
        {
            reason.push_str(&format!(" ({message})"));
        }
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Attempt::Retry(reason)
        } else {
            Attempt::Done(Err(reason))
        }
    }

    /// `text` without the API key.
    fn redact(&self, text: &str) -> String {
        match &self.key {
            Some(key) => key.redact(text),
            None => text.to_owned(),
        }
    }
}

/// The API key from the environment variable `name`.
fn read_key(name: &str) -> Result<ApiKey, AcsError> {
    let value = match std::env::var(name) {
        Ok(value) => value,
        Err(std::env::VarError::NotPresent) => {
            return Err(AcsError::input(format!(
                "[rewrite.llm] api_key_env: the environment variable {name} is not set"
            )))
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(AcsError::input(format!(
                "[rewrite.llm] api_key_env: the environment variable {name} is not valid UTF-8"
            )))
        }
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(AcsError::input(format!(
            "[rewrite.llm] api_key_env: the environment variable {name} is empty"
        )));
    }
    if HeaderValue::from_str(&format!("Bearer {value}")).is_err() {
        return Err(AcsError::input(format!(
            "[rewrite.llm] api_key_env: the environment variable {name} holds characters that \
             cannot be sent in an HTTP header"
        )));
    }
    Ok(ApiKey(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(raw: &str, prompt: &str) -> Result<String, String> {
        clean_answer(raw, prompt)
    }

    const PROMPT: &str = "a bloody knife on a table, oil painting";

    #[test]
    fn answers_are_trimmed_unquoted_and_unlabelled() {
        let safe = "a clean knife on a table, oil painting";
        for raw in [
            safe.to_owned(),
            format!("  {safe}\n"),
            format!("\"{safe}\""),
            format!("'{safe}'"),
            format!("\u{201c}{safe}\u{201d}"),
            format!("`{safe}`"),
            format!("Rewritten prompt: {safe}"),
            format!("rewritten prompt:\n{safe}"),
            format!("**Rewritten prompt:** \"{safe}\""),
            format!("Safe prompt: '{safe}'"),
            format!("\"Rewritten prompt: {safe}\""),
            format!("```\n{safe}\n```"),
            format!("```text\n{safe}\n```"),
        ] {
            assert_eq!(clean(&raw, PROMPT).as_deref(), Ok(safe), "{raw:?}");
        }
    }

    #[test]
    fn prompt_text_that_looks_like_a_label_or_quotes_stays() {
        // A colon inside the prompt's own text is not a label.
        assert_eq!(
            clean("portrait: a calm man", "portrait: a bloody man").as_deref(),
            Ok("portrait: a calm man")
        );
        // The prompt itself starts with the same label: kept.
        assert_eq!(
            clean("Prompt: a calm man", "Prompt: a bloody man").as_deref(),
            Ok("Prompt: a calm man")
        );
        // The prompt itself is quoted: the answer keeps its quotes.
        assert_eq!(
            clean("\"a calm man\"", "\"a bloody man\"").as_deref(),
            Ok("\"a calm man\"")
        );
        // Quotes inside the answer stay.
        assert_eq!(
            clean("a sign saying \"hello\"", "a sign saying \"die\"").as_deref(),
            Ok("a sign saying \"hello\"")
        );
    }

    #[test]
    fn unusable_answers_have_reasons() {
        assert_eq!(clean("", PROMPT), Err("empty answer".to_owned()));
        assert_eq!(clean("  \"\"  ", PROMPT), Err("empty answer".to_owned()));
        assert_eq!(
            clean("Rewritten prompt:", PROMPT),
            Err("empty answer".to_owned())
        );
        assert_eq!(
            clean(PROMPT, PROMPT),
            Err("answer identical to the prompt".to_owned())
        );
        assert_eq!(
            clean(&format!("\"{PROMPT}\""), PROMPT),
            Err("answer identical to the prompt".to_owned())
        );
        assert_eq!(
            clean("a clean knife\nThis removes the blood.", PROMPT),
            Err("multi-line answer".to_owned())
        );
        assert_eq!(
            clean(&"word ".repeat(201), PROMPT),
            Err("answer longer than 1000 characters".to_owned())
        );
        // Exactly 1000 characters are accepted (multi-byte characters count once).
        let long = "é".repeat(1000);
        assert_eq!(clean(&long, PROMPT).as_deref(), Ok(long.as_str()));
        for refusal in [
            "I'm sorry, but I can't help with that.",
            "I\u{2019}m sorry, I cannot do this.",
            "I cannot assist with this request.",
            "Sorry, I can't rewrite violent content.",
            "As an AI, I won't produce this.",
        ] {
            assert_eq!(
                clean(refusal, PROMPT),
                Err("the model refused".to_owned()),
                "{refusal}"
            );
        }
        // A prompt that itself opens like a refusal is rewritten, not refused.
        assert_eq!(
            clean(
                "I'm sorry sign next to a flower",
                "I'm sorry sign next to a gun"
            )
            .as_deref(),
            Ok("I'm sorry sign next to a flower")
        );
    }

    #[test]
    fn responses_are_parsed() {
        let ok = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":" \"a clean knife\" "},"finish_reason":"stop"}]}"#;
        assert_eq!(parse_response(ok, PROMPT).as_deref(), Ok("a clean knife"));
        assert_eq!(
            parse_response(b"<html>oops</html>", PROMPT),
            Err("invalid JSON response".to_owned())
        );
        assert_eq!(
            parse_response(br#"{"id":"x"}"#, PROMPT),
            Err("response without choices".to_owned())
        );
        assert_eq!(
            parse_response(br#"{"choices":[]}"#, PROMPT),
            Err("response without choices".to_owned())
        );
        assert_eq!(
            parse_response(br#"{"choices":[{"message":{"content":null}}]}"#, PROMPT),
            Err("response without choices[0].message.content".to_owned())
        );
        assert_eq!(
            parse_response(br#"{"choices":[{"message":{"content":""}}]}"#, PROMPT),
            Err("empty answer".to_owned())
        );
        assert_eq!(
            parse_response(
                br#"{"choices":[{"message":{"content":null,"refusal":"no"}}]}"#,
                PROMPT
            ),
            Err("the model refused".to_owned())
        );
        assert_eq!(
            parse_response(
                br#"{"choices":[{"message":{"content":""},"finish_reason":"content_filter"}]}"#,
                PROMPT
            ),
            Err("the model refused (content filter)".to_owned())
        );
        assert_eq!(
            parse_response(br#"{"error":{"message":"model `x` not found"}}"#, PROMPT),
            Err("API error: model `x` not found".to_owned())
        );
    }

    #[test]
    fn cache_keys_depend_on_every_input() {
        let key = cache_key("p", "violence", "m", "i");
        assert_eq!(key.len(), 64);
        assert!(key.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(key, cache_key("p", "violence", "m", "i"));
        let others = [
            cache_key("q", "violence", "m", "i"),
            cache_key("p", "hate", "m", "i"),
            cache_key("p", "violence", "n", "i"),
            cache_key("p", "violence", "m", "j"),
            // No ambiguity from moving text between the parts.
            cache_key("pv", "iolence", "m", "i"),
        ];
        for other in &others {
            assert_ne!(&key, other);
        }
    }

    #[test]
    fn default_instruction_names_the_category() {
        let section = LlmSection {
            base_url: "http://127.0.0.1:1/v1".to_owned(),
            model: "m".to_owned(),
            api_key_env: None,
            instruction: None,
            concurrency: 1,
            timeout_s: 1.0,
            retries: 0,
            cache: None,
        };
        let text = instruction_for(&section, "violence");
        assert!(text.contains("\"violence\""), "{text}");
        assert!(!text.contains("{category}"));
        assert_ne!(text, instruction_for(&section, "hate"));
        let custom = LlmSection {
            instruction: Some("Make it safe.".to_owned()),
            ..section
        };
        assert_eq!(instruction_for(&custom, "violence"), "Make it safe.");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(200));
        assert_eq!(backoff(1), Duration::from_millis(400));
        assert_eq!(backoff(3), Duration::from_millis(1600));
        assert_eq!(backoff(6), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn cache_entries_round_trip_and_bad_ones_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("nested/cache")).unwrap();
        let request = RewriteRequest {
            prompt: PROMPT.to_owned(),
            category: "violence".to_owned(),
        };
        let key = cache_key(&request.prompt, &request.category, "m", "i");
        assert_eq!(cache.get(&key, &request, "m"), None);
        cache.put(&key, &request, "m", "a clean knife").unwrap();
        assert_eq!(
            cache.get(&key, &request, "m").as_deref(),
            Some("a clean knife")
        );
        // Another model's entry under the same key (impossible unless tampered with): ignored.
        assert_eq!(cache.get(&key, &request, "other"), None);
        // A truncated entry (a crash in a non-atomic writer) is ignored, then overwritten.
        std::fs::write(cache.path(&key), b"{\"version\":\"acs-llm").unwrap();
        assert_eq!(cache.get(&key, &request, "m"), None);
        cache.put(&key, &request, "m", "a clean knife").unwrap();
        assert_eq!(
            cache.get(&key, &request, "m").as_deref(),
            Some("a clean knife")
        );
        // An entry whose answer no longer passes the checks is ignored.
        cache.put(&key, &request, "m", PROMPT).unwrap();
        assert_eq!(cache.get(&key, &request, "m"), None);
    }

    #[test]
    fn unusable_cache_folders_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = Cache::open(&file.join("cache")).unwrap_err().to_string();
        assert!(err.contains("LLM cache folder cannot be written"), "{err}");
    }
}
