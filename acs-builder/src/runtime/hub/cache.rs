//! Finding a model that Python tools already downloaded: the Hugging Face hub cache layout
//! `$HF_HUB_CACHE` (default `$HF_HOME/hub`, default `~/.cache/huggingface/hub`) /
//! `models--{org}--{name}/refs/{revision}` -> `snapshots/{commit}/`.
//!
//! This is the reading side; the rest of [`crate::runtime::hub`] downloads into the same layout.

use std::path::{Path, PathBuf};

use crate::runtime::error::{RuntimeError, Setting};

/// The Hugging Face home folder: `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else
/// `~/.cache/huggingface` (as the Python `huggingface_hub` library resolves it).
pub fn hf_home() -> PathBuf {
    std::env::var_os("HF_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("huggingface"))
        })
        .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache/huggingface")))
        .unwrap_or_else(|| PathBuf::from(".cache/huggingface"))
}

/// The hub cache folder the Python `huggingface_hub` library uses.
pub fn hub_cache_dir() -> PathBuf {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => hf_home().join("hub"),
    }
}

/// Whether `repo` is a hub model id of the form `org/name` (no path tricks).
pub fn valid_repo_id(repo: &str) -> bool {
    let mut parts = repo.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && p != "."
                && p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// Whether `revision` is a full 40-digit commit hash.
pub fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit())
}

/// A setting error unless `repo` is an `org/name` hub id and `revision` a valid revision.
pub fn check_repo_and_revision(repo: &str, revision: &str) -> Result<(), RuntimeError> {
    if !valid_repo_id(repo) {
        return Err(RuntimeError::setting(
            Setting::Repo,
            format!("`{repo}` is not a hub id of the form org/name"),
        ));
    }
    if !valid_revision(revision) {
        return Err(RuntimeError::setting(
            Setting::Revision,
            format!("`{revision}` is not a revision"),
        ));
    }
    Ok(())
}

/// Whether `revision` can name a file under `refs/` (a branch, tag or `refs/pr/N`).
pub fn valid_revision(revision: &str) -> bool {
    !revision.is_empty()
        && !revision.starts_with('/')
        && !revision.ends_with('/')
        && revision
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && !revision.contains(['\\', '\0'])
}

/// The two kinds of hub repository acs reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    /// A model (`models--org--name`, `api/models/...`).
    Model,
    /// A dataset (`datasets--org--name`, `api/datasets/...`, `datasets/org/name/resolve/...`).
    Dataset,
}

impl RepoKind {
    /// `models` or `datasets`: the cache folder prefix and the API path segment.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Model => "models",
            Self::Dataset => "datasets",
        }
    }
}

/// The cache folder of a model repository: `models--{org}--{name}`.
pub fn repo_folder(cache: &Path, repo: &str) -> PathBuf {
    repo_folder_of(cache, RepoKind::Model, repo)
}

/// The cache folder of a repository of `kind`: `{models|datasets}--{org}--{name}`.
pub fn repo_folder_of(cache: &Path, kind: RepoKind, repo: &str) -> PathBuf {
    cache.join(format!("{}--{}", kind.plural(), repo.replace('/', "--")))
}

/// The snapshot folder of model `repo` at `revision` (a branch or tag name under refs/, or a
/// commit hash) inside `cache`.
pub fn resolve_snapshot(cache: &Path, repo: &str, revision: &str) -> Result<PathBuf, RuntimeError> {
    resolve_snapshot_of(cache, RepoKind::Model, repo, revision)
}

/// As [`resolve_snapshot`], for a repository of `kind`.
pub fn resolve_snapshot_of(
    cache: &Path,
    kind: RepoKind,
    repo: &str,
    revision: &str,
) -> Result<PathBuf, RuntimeError> {
    check_repo_and_revision(repo, revision)?;
    let repo_dir = repo_folder_of(cache, kind, repo);
    if !repo_dir.is_dir() {
        let how = match kind {
            RepoKind::Model => format!("download it first with `acs model fetch {repo}`"),
            RepoKind::Dataset => "unset HF_HUB_OFFLINE so that acs fetches it".to_owned(),
        };
        return Err(RuntimeError::setting(
            Setting::Repo,
            format!(
                "{repo} is not in the Hugging Face cache {} ({how}, or set HF_HOME / \
                 HF_HUB_CACHE)",
                cache.display()
            ),
        ));
    }
    let commit = if is_commit_hash(revision) {
        revision.to_owned()
    } else {
        let reference = repo_dir.join("refs").join(revision);
        std::fs::read_to_string(&reference)
            .map_err(|_| {
                RuntimeError::setting(
                    Setting::Revision,
                    format!(
                        "{repo} has no cached revision `{revision}` ({} missing)",
                        reference.display()
                    ),
                )
            })?
            .trim()
            .to_owned()
    };
    let snapshot = repo_dir.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        return Err(RuntimeError::input(format!(
            "{repo}@{revision}: snapshot {} is missing",
            snapshot.display()
        )));
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_refs_and_commits() {
        let cache = tempfile::tempdir().unwrap();
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let repo_dir = cache.path().join("models--org--tiny-sd");
        std::fs::create_dir_all(repo_dir.join("snapshots").join(commit)).unwrap();
        std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
        std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
        let expected = repo_dir.join("snapshots").join(commit);
        assert_eq!(
            resolve_snapshot(cache.path(), "org/tiny-sd", "main").unwrap(),
            expected
        );
        assert_eq!(
            resolve_snapshot(cache.path(), "org/tiny-sd", commit).unwrap(),
            expected
        );
        let err = resolve_snapshot(cache.path(), "org/tiny-sd", "v2")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no cached revision `v2`"), "{err}");
        let err = resolve_snapshot(cache.path(), "org/other", "main")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not in the Hugging Face cache"), "{err}");
        for bad in ["../x", "org", "org/name/extra", "org/.."] {
            assert!(
                resolve_snapshot(cache.path(), bad, "main").is_err(),
                "{bad}"
            );
        }
        for bad in ["", "/main", "refs/../../x", "a//b", "main/"] {
            assert!(!valid_revision(bad), "{bad:?}");
        }
        assert!(valid_revision("refs/pr/1") && valid_revision("v1.0"));
    }
}
