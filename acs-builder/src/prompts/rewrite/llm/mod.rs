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

mod answer;
mod cache;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::stream::{self, StreamExt};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{StatusCode, Url};

pub use answer::{clean_answer, instruction_for, parse_response, user_message, MAX_ANSWER_CHARS};
pub use cache::cache_key;

use crate::error::AcsError;
use crate::manifest::LlmSection;
use crate::prompts::rewrite::{RewriteOutcome, RewriteRequest, Rewriter};
use crate::prompts::text::clean;
use crate::runtime::hub::client::TransportError;
use answer::error_message;
use cache::Cache;

/// First backoff before a retry; doubled for each further retry.
const BACKOFF_BASE: Duration = Duration::from_millis(200);

/// Longest backoff between two attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

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
        let runtime = crate::runtime::hub::client::http_runtime()?;
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

    /// Number of HTTP requests sent during the last [`Rewriter::rewrite`] call.
    pub fn requests_sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Asks for every request not in the cache; see [`Rewriter::rewrite`].
    fn rewrite_all(&self, requests: &[RewriteRequest]) -> Result<Vec<RewriteOutcome>, AcsError> {
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
                outcomes[index] =
                    Some(RewriteOutcome::rewritten(clean(&answer), &request.category));
                cached += 1;
                // Later duplicates of this request are found in the cache again.
                continue;
            }
            by_key.insert(key.clone(), todo.len());
            todo.push((key, instruction, vec![index]));
        }
        tracing::info!(
            "llm: {} prompts, {cached} answered from the cache, {} to ask {}",
            requests.len(),
            todo.len(),
            self.model
        );

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
                            let request = &requests[indices[0]];
                            self.cache.put(key, request, &self.model, &answer)?;
                            RewriteOutcome::rewritten(clean(&answer), &request.category)
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
                        tracing::info!("llm: {done}/{total} prompts asked");
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
                    Err(_) => format!(
                        "timeout after {} s waiting for {}",
                        self.section.timeout_s, self.url
                    ),
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

impl Rewriter for LlmRewriter {
    fn name(&self) -> &'static str {
        "llm"
    }

    fn failure_reason(&self) -> &'static str {
        "llm-rewrite-failed"
    }

    /// A request that cannot be rewritten gives [`RewriteOutcome::Failed`] (`llm: <reason>`);
    /// only an unusable cache folder is an `Err`. Identical requests are asked once.
    fn rewrite(&self, requests: &[RewriteRequest]) -> Result<Vec<RewriteOutcome>, AcsError> {
        self.rewrite_all(requests)
    }

    fn requires_lexicon_term(&self) -> bool {
        false
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

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(200));
        assert_eq!(backoff(1), Duration::from_millis(400));
        assert_eq!(backoff(3), Duration::from_millis(1600));
        assert_eq!(backoff(6), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
