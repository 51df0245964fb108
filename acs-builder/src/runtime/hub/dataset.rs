//! Dataset repositories (prompt sets) from the hub: the files a source asks for, fetched into
//! the cache as `huggingface_hub` lays it out (`datasets--org--name/`), or found there when
//! HF_HUB_OFFLINE is set. Gated repositories work with HF_TOKEN, which never appears in a
//! message.

use std::path::{Path, PathBuf};

use crate::runtime::error::RuntimeError;
use crate::runtime::hub::api::repo_info;
use crate::runtime::hub::cache::{check_repo_and_revision, resolve_snapshot_of, RepoKind};
use crate::runtime::hub::cache_layout::RepoCache;
use crate::runtime::hub::client::HubClient;
use crate::runtime::hub::download::{file_meta_of, Downloader};
use crate::runtime::hub::fetch::progress_bar;
use crate::runtime::hub::settings::HubSettings;

/// Picks the files to read from a repository's file list; `Err` says why none fits.
pub type FileSelector<'a> = &'a dyn Fn(&[String]) -> Result<Vec<String>, String>;

/// The files of a dataset repository that a source reads, present in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSnapshot {
    /// The commit the revision named.
    pub commit: String,
    /// The snapshot folder.
    pub dir: PathBuf,
    /// The selected files, repository-relative, in the selector's order.
    pub files: Vec<String>,
}

impl DatasetSnapshot {
    /// The local path of a selected file.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

/// The files `select` picks of dataset `repo` at `revision`: from the hub (downloading those
/// the cache lacks), or from the cache alone when HF_HUB_OFFLINE is set.
pub fn dataset_files(
    settings: &HubSettings,
    repo: &str,
    revision: &str,
    select: FileSelector,
) -> Result<DatasetSnapshot, RuntimeError> {
    check_repo_and_revision(repo, revision)?;
    let result = if settings.offline {
        cached(settings, repo, revision, select)
    } else {
        fetched(settings, repo, revision, select)
    };
    match &settings.token {
        Some(token) => result.map_err(|e| token.redact_error(e)),
        None => result,
    }
}

fn selection_error(repo: &str, revision: &str, reason: String) -> RuntimeError {
    RuntimeError::input(format!("dataset {repo}@{revision}: {reason}"))
}

/// From the cache only.
fn cached(
    settings: &HubSettings,
    repo: &str,
    revision: &str,
    select: FileSelector,
) -> Result<DatasetSnapshot, RuntimeError> {
    let dir = resolve_snapshot_of(&settings.cache, RepoKind::Dataset, repo, revision)?;
    let mut all = Vec::new();
    list_files(&dir, &dir, &mut all);
    all.sort();
    let files = select(&all).map_err(|r| selection_error(repo, revision, r))?;
    let commit = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(DatasetSnapshot { commit, dir, files })
}

/// Every file under `dir`, relative to `root` with `/` separators.
fn list_files(root: &Path, dir: &Path, into: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            list_files(root, &path, into);
        } else if let Ok(relative) = path.strip_prefix(root) {
            let parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            into.push(parts.join("/"));
        }
    }
}

/// From the hub, into the cache.
fn fetched(
    settings: &HubSettings,
    repo: &str,
    revision: &str,
    select: FileSelector,
) -> Result<DatasetSnapshot, RuntimeError> {
    let client = HubClient::new(settings)?;
    let info = repo_info(&client, RepoKind::Dataset, repo, revision)?;
    let files = select(&info.files).map_err(|r| selection_error(repo, revision, r))?;
    let cache = RepoCache::of(&settings.cache, RepoKind::Dataset, repo);
    let metas = files
        .iter()
        .filter(|file| !cache.has_file(&info.commit, file))
        .map(|file| file_meta_of(&client, RepoKind::Dataset, repo, &info.commit, file))
        .collect::<Result<Vec<_>, _>>()?;
    let progress = progress_bar(metas.iter().map(|m| m.size.unwrap_or(0)).sum());
    let downloader = Downloader::new(&client, &cache, repo, &progress);
    for meta in &metas {
        progress.set_message(meta.file.clone());
        let done = downloader
            .download(meta)
            .and_then(|_| cache.link(&info.commit, &meta.file, meta.expected.hex()));
        if let Err(err) = done {
            progress.abandon();
            return Err(err);
        }
    }
    progress.finish_and_clear();
    cache.write_ref(revision, &info.commit)?;
    Ok(DatasetSnapshot {
        dir: cache.snapshot_dir(&info.commit),
        commit: info.commit,
        files,
    })
}
