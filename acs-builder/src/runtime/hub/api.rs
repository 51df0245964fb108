//! The hub's HTTP API as acs uses it: the model-info endpoint
//! `GET {endpoint}/api/models/{repo}/revision/{revision}` (its `sha` is the commit a revision
//! names, its `siblings[].rfilename` the repository's files), the resolve URL of one file, and
//! the hub's error answers (`X-Error-Code`: RepoNotFound, RevisionNotFound, EntryNotFound,
//! GatedRepo) as one line each.

use reqwest::{Method, Response, StatusCode};
use serde::Deserialize;

use crate::runtime::error::{one_line, RuntimeError};
use crate::runtime::hub::cache::{is_commit_hash, RepoKind};
use crate::runtime::hub::client::{Follow, HubClient};

/// What the hub says about a repository at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoInfo {
    /// The commit the revision names (40 lowercase hex digits).
    pub commit: String,
    /// Every file of the repository at that commit, relative to its root.
    pub files: Vec<String>,
}

#[derive(Deserialize)]
struct ModelInfoJson {
    sha: Option<String>,
    siblings: Option<Vec<Sibling>>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
}

/// Asks the hub which commit `revision` of model `repo` is and which files it holds.
pub fn model_info(
    client: &HubClient,
    repo: &str,
    revision: &str,
) -> Result<RepoInfo, RuntimeError> {
    repo_info(client, RepoKind::Model, repo, revision)
}

/// As [`model_info`], for a repository of `kind` (`api/{models|datasets}/...`).
pub fn repo_info(
    client: &HubClient,
    kind: RepoKind,
    repo: &str,
    revision: &str,
) -> Result<RepoInfo, RuntimeError> {
    let url = client.url(&format!(
        "api/{}/{}/revision/{}",
        kind.plural(),
        encode_path(repo),
        encode_segment(revision)
    ))?;
    let what = format!("{repo}@{revision} at {}", client.endpoint_text());
    let (response, answered) = client.send(Method::GET, url, 0, Follow::All)?;
    if !response.status().is_success() {
        return Err(status_error(&response, &what, client.has_token()));
    }
    let body = client.body(response, &answered).map_err(|e| {
        RuntimeError::input(format!("{what}: reading the answer failed: {}", e.message))
    })?;
    parse_model_info(&body).map_err(|reason| RuntimeError::input(format!("{what}: {reason}")))
}

/// Parses a model-info answer.
fn parse_model_info(body: &[u8]) -> Result<RepoInfo, String> {
    let info: ModelInfoJson = serde_json::from_slice(body)
        .map_err(|e| format!("the hub's answer is not model information ({e})"))?;
    let commit = info
        .sha
        .filter(|sha| is_commit_hash(sha))
        .ok_or("the hub's answer has no commit hash (`sha`)")?
        .to_ascii_lowercase();
    let files = info
        .siblings
        .ok_or("the hub's answer has no file list (`siblings`)")?
        .into_iter()
        .map(|s| s.rfilename)
        .collect();
    Ok(RepoInfo { commit, files })
}

/// The resolve URL path of `file` of model `repo` at `commit`, as `huggingface_hub` builds it.
pub fn resolve_path(repo: &str, commit: &str, file: &str) -> String {
    resolve_path_of(RepoKind::Model, repo, commit, file)
}

/// As [`resolve_path`], for a repository of `kind` (datasets under `datasets/`).
pub fn resolve_path_of(kind: RepoKind, repo: &str, commit: &str, file: &str) -> String {
    let prefix = match kind {
        RepoKind::Model => "",
        RepoKind::Dataset => "datasets/",
    };
    format!(
        "{prefix}{}/resolve/{}/{}",
        encode_path(repo),
        encode_segment(commit),
        encode_path(file)
    )
}

/// One line for an HTTP error answer about `what`. `token_sent` tells whether the request
/// carried HF_TOKEN (the token itself is never part of the message).
pub fn status_error(response: &Response, what: &str, token_sent: bool) -> RuntimeError {
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let token = if token_sent {
        "HF_TOKEN is set but was refused: check that it can read this repository"
    } else {
        "HF_TOKEN is not set"
    };
    let reason = match (status, header("x-error-code").as_deref()) {
        (_, Some("GatedRepo")) => format!(
            "the repository is gated: accept its conditions on its hub page, then set HF_TOKEN \
             ({token})"
        ),
        (_, Some("RepoNotFound")) => {
            format!("repository not found (if it is private or gated, set HF_TOKEN; {token})")
        }
        (_, Some("RevisionNotFound")) => "revision not found".to_owned(),
        (_, Some("EntryNotFound")) => "file not found in this revision".to_owned(),
        (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => {
            format!("access denied: the repository may be gated or private ({token})")
        }
        (StatusCode::NOT_FOUND, _) => {
            "repository or revision not found: check the id and the revision".to_owned()
        }
        (StatusCode::TOO_MANY_REQUESTS, _) => "rate limited by the hub: retry later".to_owned(),
        (s, _) if s.is_server_error() => "the hub failed: retry later".to_owned(),
        _ => "unexpected answer".to_owned(),
    };
    let server = header("x-error-message")
        .map(|m| one_line(&m).chars().take(300).collect::<String>())
        .filter(|m| !m.is_empty())
        .map(|m| format!(" [hub: {m}]"))
        .unwrap_or_default();
    RuntimeError::input(format!("{what}: HTTP {status}: {reason}{server}"))
}

/// A path with each `/`-separated segment percent-encoded.
fn encode_path(path: &str) -> String {
    path.split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

/// Percent-encodes everything but RFC 3986's unreserved characters (so `refs/pr/1` becomes
/// `refs%2Fpr%2F1`, as `huggingface_hub` quotes revisions).
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_model_info() {
        let body = br#"{"id":"o/n","sha":"0123456789ABCDEF0123456789abcdef01234567",
            "siblings":[{"rfilename":"model_index.json"},{"rfilename":"unet/config.json"}]}"#;
        let info = parse_model_info(body).unwrap();
        assert_eq!(info.commit, "0123456789abcdef0123456789abcdef01234567");
        assert_eq!(info.files, ["model_index.json", "unet/config.json"]);
        assert!(parse_model_info(br#"{"sha":"main","siblings":[]}"#)
            .unwrap_err()
            .contains("commit"));
        assert!(
            parse_model_info(br#"{"sha":"0123456789abcdef0123456789abcdef01234567"}"#)
                .unwrap_err()
                .contains("siblings")
        );
        assert!(parse_model_info(b"<html>")
            .unwrap_err()
            .contains("not model"));
    }

    #[test]
    fn encodes_like_huggingface_hub() {
        assert_eq!(encode_segment("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(encode_segment("v1.0 beta"), "v1.0%20beta");
        assert_eq!(
            resolve_path("org/na.me", "abc", "unet/diffusion pytorch.json"),
            "org/na.me/resolve/abc/unet/diffusion%20pytorch.json"
        );
    }
}
