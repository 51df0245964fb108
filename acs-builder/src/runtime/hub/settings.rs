//! The environment `huggingface_hub` reads, read the same way: `HF_ENDPOINT` (default
//! `https://huggingface.co`), `HF_TOKEN` (else the file `HF_TOKEN_PATH`, else `$HF_HOME/token`,
//! which `huggingface-cli login` writes), `HF_HUB_OFFLINE` and the cache folder
//! ([`crate::runtime::hub::cache::hub_cache_dir`]).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

use crate::runtime::error::RuntimeError;
use crate::runtime::hub::cache::{hf_home, hub_cache_dir};

/// The hub used when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// An access token. It is never displayed: `Debug` and `Display` print `***`, and
/// [`Token::redact`] removes it from any text before that text is shown.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// A token from its text (surrounding whitespace removed); `None` when empty.
    pub fn new(text: &str) -> Option<Self> {
        let text = text.trim();
        (!text.is_empty()).then(|| Self(text.to_owned()))
    }

    /// The secret itself, for the `Authorization` header only.
    pub(crate) fn secret(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the token replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        text.replace(&self.0, "***")
    }

    /// `err` with the token removed from its message.
    pub fn redact_error(&self, err: RuntimeError) -> RuntimeError {
        err.map_message(|m| self.redact(m))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where and how to reach the hub, and where its cache is.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// The hub's base URL, without a trailing slash.
    pub endpoint: Url,
    /// The access token, if any.
    pub token: Option<Token>,
    /// `HF_HUB_OFFLINE` is set: no request may be made.
    pub offline: bool,
    /// The hub cache folder.
    pub cache: PathBuf,
    /// How long a request may wait: for the connection and the answer, and for each
    /// [`MIN_BYTES_PER_WINDOW`] of a body (`HF_HUB_DOWNLOAD_TIMEOUT`, default 60 s).
    pub timeout: Duration,
}

/// The default of `HF_HUB_DOWNLOAD_TIMEOUT` in acs (huggingface_hub's is 10 s per read; acs
/// also bounds slow bodies, so it allows more per window).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A body must bring at least this much in every timeout window (or end): a server that
/// trickles (a byte a second) is given up on like one that does not answer.
pub const MIN_BYTES_PER_WINDOW: u64 = 64 * 1024;

/// `HF_HUB_DOWNLOAD_TIMEOUT` (seconds), else [`DEFAULT_TIMEOUT`].
pub fn timeout_from_env() -> Result<Duration, RuntimeError> {
    let Some(text) = std::env::var("HF_HUB_DOWNLOAD_TIMEOUT")
        .ok()
        .filter(|v| !v.trim().is_empty())
    else {
        return Ok(DEFAULT_TIMEOUT);
    };
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            RuntimeError::input(format!(
                "HF_HUB_DOWNLOAD_TIMEOUT: `{text}` is not a positive number of seconds"
            ))
        })
}

impl HubSettings {
    /// Reads the settings from the environment.
    pub fn from_env() -> Result<Self, RuntimeError> {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let token = match std::env::var("HF_TOKEN").ok().and_then(|t| Token::new(&t)) {
            Some(token) => Some(token),
            None => token_from_file()?,
        };
        Ok(Self {
            endpoint: parse_endpoint(&endpoint)?,
            token,
            offline: std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| is_truthy(&v)),
            cache: hub_cache_dir(),
            timeout: timeout_from_env()?,
        })
    }

    /// The endpoint as text, without a trailing slash.
    pub fn endpoint_text(&self) -> String {
        self.endpoint.as_str().trim_end_matches('/').to_owned()
    }
}

/// The token stored by `huggingface-cli login`, if any.
fn token_from_file() -> Result<Option<Token>, RuntimeError> {
    let path = std::env::var_os("HF_TOKEN_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| hf_home().join("token"));
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Token::new(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RuntimeError::io(&path, e)),
    }
}

/// `HF_ENDPOINT` as an http(s) URL with a host.
fn parse_endpoint(text: &str) -> Result<Url, RuntimeError> {
    let trimmed = text.trim().trim_end_matches('/');
    let url = Url::parse(trimmed)
        .map_err(|e| RuntimeError::input(format!("HF_ENDPOINT: `{trimmed}` is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(RuntimeError::input(format!(
            "HF_ENDPOINT: `{trimmed}` is not an http(s) URL"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(RuntimeError::input(format!(
            "HF_ENDPOINT: `{trimmed}` must not have a query or a fragment"
        )));
    }
    Ok(url)
}

/// `huggingface_hub`'s reading of boolean variables: 1, ON, YES, TRUE in any case.
fn is_truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_urls() {
        assert_eq!(
            parse_endpoint("http://127.0.0.1:8080/").unwrap().as_str(),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(
            parse_endpoint("https://hf-mirror.example/sub/")
                .unwrap()
                .as_str(),
            "https://hf-mirror.example/sub"
        );
        for bad in ["huggingface.co", "ftp://x", "http://h/?a=1", "file:///tmp"] {
            let err = parse_endpoint(bad).unwrap_err().to_string();
            assert!(err.starts_with("HF_ENDPOINT:"), "{bad}: {err}");
        }
    }

    #[test]
    fn tokens_never_show() {
        let token = Token::new("  hf_abcdef123  \n").unwrap();
        assert_eq!(token.secret(), "hf_abcdef123");
        assert_eq!(format!("{token} {token:?}"), "*** Token(***)");
        assert_eq!(
            token.redact("Bearer hf_abcdef123 and hf_abcdef123"),
            "Bearer *** and ***"
        );
        let err = token.redact_error(RuntimeError::input("x hf_abcdef123 y"));
        assert_eq!(err.to_string(), "x *** y");
        assert!(Token::new(" \n").is_none());
    }

    #[test]
    fn offline_values() {
        for yes in ["1", "on", "YES", "true"] {
            assert!(is_truthy(yes), "{yes}");
        }
        for no in ["0", "", "no", "false"] {
            assert!(!is_truthy(no), "{no}");
        }
    }
}
