//! One file from the hub into the cache: its metadata from a `HEAD` on the resolve URL (as
//! `huggingface_hub` reads it: `X-Linked-Etag` or `ETag`, `X-Linked-Size` or `Content-Length`,
//! `X-Repo-Commit`, and the storage `Location` of LFS files), then a resumable `GET` into
//! `blobs/<etag>.incomplete` (`Range: bytes=N-`; a server that answers 200 instead of 206 is
//! read from the start), then verification against the ETag, and only then the final name
//! `blobs/<etag>`.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use indicatif::ProgressBar;
use reqwest::header::{HeaderMap, CONTENT_LENGTH, CONTENT_RANGE, ETAG, LOCATION};
use reqwest::{Method, StatusCode, Url};

use crate::runtime::error::RuntimeError;
use crate::runtime::hub::api::{resolve_path_of, status_error};
use crate::runtime::hub::cache::RepoKind;
use crate::runtime::hub::cache_layout::RepoCache;
use crate::runtime::hub::client::{Follow, HubClient, Pace, TransportError};
use crate::runtime::hub::digest::{normalize_etag, Expected};

/// Transfers of one file before a download is given up (each resumes the previous one).
const MAX_ATTEMPTS: u32 = 5;

/// What the hub says about one file.
#[derive(Debug, Clone)]
pub struct FileMeta {
    /// Repository-relative path.
    pub file: String,
    /// The hash its bytes must have; its hex digits name the blob.
    pub expected: Expected,
    /// Its size in bytes, when the hub says.
    pub size: Option<u64>,
    /// Where its bytes are (the resolve URL, or the storage URL it redirects to).
    pub url: Url,
}

/// Asks the hub (`HEAD` on the resolve URL) for the metadata of `file` of model `repo` at
/// `commit`.
pub fn file_meta(
    client: &HubClient,
    repo: &str,
    commit: &str,
    file: &str,
) -> Result<FileMeta, RuntimeError> {
    file_meta_of(client, RepoKind::Model, repo, commit, file)
}

/// As [`file_meta`], for a repository of `kind`.
pub fn file_meta_of(
    client: &HubClient,
    kind: RepoKind,
    repo: &str,
    commit: &str,
    file: &str,
) -> Result<FileMeta, RuntimeError> {
    let what = format!("{repo}: {file}");
    let url = client.url(&resolve_path_of(kind, repo, commit, file))?;
    let (response, answered) = client.send(Method::HEAD, url, 0, Follow::Relative)?;
    let status = response.status();
    if !(status.is_success() || status.is_redirection()) {
        return Err(status_error(&response, &what, client.has_token()));
    }
    let headers = response.headers();
    let etag = header(headers, "x-linked-etag")
        .or_else(|| header(headers, ETAG.as_str()))
        .ok_or_else(|| {
            RuntimeError::input(format!(
                "{what}: the hub sent no ETag (is HF_ENDPOINT a Hugging Face hub?)"
            ))
        })?;
    let expected = Expected::from_etag(&etag).ok_or_else(|| {
        RuntimeError::input(format!(
            "{what}: ETag `{}` is neither a sha256 nor a git blob sha1; the file cannot be \
             verified",
            normalize_etag(&etag)
        ))
    })?;
    if let Some(other) = header(headers, "x-repo-commit") {
        if !other.eq_ignore_ascii_case(commit) {
            return Err(RuntimeError::input(format!(
                "{what}: the hub answered for commit {other} instead of {commit}"
            )));
        }
    }
    let size = header(headers, "x-linked-size")
        .or_else(|| {
            status
                .is_success()
                .then(|| header(headers, CONTENT_LENGTH.as_str()))
                .flatten()
        })
        .and_then(|s| s.trim().parse::<u64>().ok());
    let url = if status.is_redirection() {
        let location = header(headers, LOCATION.as_str()).ok_or_else(|| {
            RuntimeError::input(format!("{what}: HTTP {status} without a Location"))
        })?;
        answered
            .join(&location)
            .map_err(|e| RuntimeError::input(format!("{what}: bad redirect `{location}`: {e}")))?
    } else {
        answered
    };
    Ok(FileMeta {
        file: file.to_owned(),
        expected,
        size,
        url,
    })
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Why a transfer stopped early.
enum Failure {
    /// Worth another (resumed) attempt.
    Retry(String),
    /// Not: the answer will not change.
    Fatal(RuntimeError),
}

/// Downloads files of one repository into its cache folder, advancing a progress bar.
pub struct Downloader<'a> {
    client: &'a HubClient,
    cache: &'a RepoCache,
    repo: &'a str,
    progress: &'a ProgressBar,
}

impl<'a> Downloader<'a> {
    /// A downloader into `cache` for files of `repo`.
    pub fn new(
        client: &'a HubClient,
        cache: &'a RepoCache,
        repo: &'a str,
        progress: &'a ProgressBar,
    ) -> Self {
        Self {
            client,
            cache,
            repo,
            progress,
        }
    }

    /// Makes `blobs/<etag>` of `meta` exist with verified contents, resuming a partial
    /// download. Returns the bytes transferred, `None` when the blob was there already (another
    /// snapshot has the same file).
    pub fn download(&self, meta: &FileMeta) -> Result<Option<u64>, RuntimeError> {
        let hex = meta.expected.hex();
        let blob = self.cache.blob_path(hex);
        if let Ok(existing) = std::fs::metadata(&blob) {
            if existing.is_file() && meta.size.is_none_or(|s| s == existing.len()) {
                self.progress.inc(existing.len());
                return Ok(None);
            }
        }
        let part = self.cache.incomplete_path(hex);
        if let Some(parent) = part.parent() {
            std::fs::create_dir_all(parent).map_err(|e| RuntimeError::io(parent, e))?;
        }
        self.progress.inc(file_len(&part));
        let mut transferred = 0;
        let mut attempt = 1;
        loop {
            let mut have = file_len(&part);
            if let Some(size) = meta.size {
                if have > size {
                    self.restart(&part, have)?;
                    have = 0;
                }
                if have == size {
                    break;
                }
            }
            let reason = match self.transfer(meta, &part, have, &mut transferred) {
                Ok(()) => match meta.size {
                    Some(size) if file_len(&part) < size => format!(
                        "the connection closed after {} of {size} bytes",
                        file_len(&part)
                    ),
                    _ => break,
                },
                Err(Failure::Fatal(err)) => return Err(err),
                Err(Failure::Retry(reason)) => reason,
            };
            if attempt >= MAX_ATTEMPTS {
                return Err(RuntimeError::input(format!(
                    "{}: {}: download interrupted {attempt} times ({reason}); the {} bytes received \
                     are kept in {} and the same command resumes from there",
                    self.repo,
                    meta.file,
                    file_len(&part),
                    part.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
            attempt += 1;
        }
        self.verify(meta, &part)?;
        std::fs::rename(&part, &blob).map_err(|e| RuntimeError::io(&blob, e))?;
        Ok(Some(transferred))
    }

    /// One GET of `meta.url` from byte `have` on, appended to `part`.
    fn transfer(
        &self,
        meta: &FileMeta,
        part: &Path,
        have: u64,
        transferred: &mut u64,
    ) -> Result<(), Failure> {
        let retry = |e: TransportError| {
            if e.connect {
                Failure::Fatal(e.into())
            } else {
                Failure::Retry(e.message)
            }
        };
        let (mut response, url) = self
            .client
            .send(Method::GET, meta.url.clone(), have, Follow::All)
            .map_err(retry)?;
        let status = response.status();
        let append = match status {
            StatusCode::PARTIAL_CONTENT => {
                let start = header(response.headers(), CONTENT_RANGE.as_str())
                    .and_then(|r| range_start(&r));
                if start != Some(have) {
                    self.restart(part, have).map_err(Failure::Fatal)?;
                    return Err(Failure::Retry(format!(
                        "asked for bytes {have}- but the server sent another range"
                    )));
                }
                true
            }
            StatusCode::OK => false,
            StatusCode::RANGE_NOT_SATISFIABLE if have > 0 => {
                self.restart(part, have).map_err(Failure::Fatal)?;
                return Err(Failure::Retry(
                    "the server could not resume the partial download".to_owned(),
                ));
            }
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                return Err(Failure::Retry(format!("HTTP {s}")));
            }
            _ => {
                let what = format!("{}: {}", self.repo, meta.file);
                return Err(Failure::Fatal(status_error(
                    &response,
                    &what,
                    self.client.has_token(),
                )));
            }
        };
        let io_error = |e: std::io::Error| Failure::Fatal(RuntimeError::io(part, e));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(part)
            .map_err(io_error)?;
        if !append && have > 0 {
            // The server ignored the range and sends the whole file: start over.
            file.set_len(0).map_err(io_error)?;
            self.progress
                .set_position(self.progress.position().saturating_sub(have));
        }
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        let mut pace = Pace::start();
        loop {
            match self.client.chunk(&mut response, &url, &mut pace) {
                Ok(Some(bytes)) => {
                    writer.write_all(&bytes).map_err(io_error)?;
                    *transferred += bytes.len() as u64;
                    self.progress.inc(bytes.len() as u64);
                }
                Ok(None) => break,
                Err(err) => {
                    // Keep what arrived: the next attempt resumes after it.
                    writer.flush().map_err(io_error)?;
                    return Err(Failure::Retry(err.message));
                }
            }
        }
        let file = writer.into_inner().map_err(|e| io_error(e.into_error()))?;
        file.sync_all().map_err(io_error)
    }

    /// Empties `part` (which held `have` bytes) and moves the progress bar back.
    fn restart(&self, part: &Path, have: u64) -> Result<(), RuntimeError> {
        File::create(part).map_err(|e| RuntimeError::io(part, e))?;
        self.progress
            .set_position(self.progress.position().saturating_sub(have));
        Ok(())
    }

    /// Checks the size and hash of the finished `part`; removes it when they are wrong.
    fn verify(&self, meta: &FileMeta, part: &Path) -> Result<(), RuntimeError> {
        let discard = |message: String| {
            let _ = std::fs::remove_file(part);
            RuntimeError::integrity(format!(
                "{}: {}: {message}; the download was discarded",
                self.repo, meta.file
            ))
        };
        let len = file_len(part);
        if let Some(size) = meta.size {
            if len != size {
                return Err(discard(format!(
                    "size mismatch: the hub announced {size} bytes, {len} arrived"
                )));
            }
        }
        let actual = meta
            .expected
            .hash_file(part)
            .map_err(|e| RuntimeError::io(part, e))?;
        if actual != meta.expected.hex() {
            return Err(discard(format!(
                "{} mismatch: expected {}, got {actual}",
                meta.expected.kind(),
                meta.expected.hex()
            )));
        }
        Ok(())
    }
}

/// The length of a file, 0 when it does not exist.
fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL` header.
fn range_start(value: &str) -> Option<u64> {
    let range = value.trim().strip_prefix("bytes")?.trim_start();
    range.split('-').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(range_start("bytes 100-999/1000"), Some(100));
        assert_eq!(range_start("bytes 0-0/*"), Some(0));
        assert_eq!(range_start("bytes */1000"), None);
        assert_eq!(range_start("items 1-2/3"), None);
    }
}
