//! `acs model fetch`: a diffusers model from the hub into the cache — the commit of the
//! revision and its file list from the API, the files the pipeline needs ([`select_files`]),
//! each downloaded, verified and linked into `snapshots/<commit>/`, and `refs/<revision>`
//! written last. Files already in the snapshot are not requested again.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::runtime::error::RuntimeError;
use crate::runtime::hub::api::model_info;
use crate::runtime::hub::cache::check_repo_and_revision;
use crate::runtime::hub::cache_layout::RepoCache;
use crate::runtime::hub::client::HubClient;
use crate::runtime::hub::download::{file_meta, Downloader};
use crate::runtime::hub::select::{select_files, Variant};
use crate::runtime::hub::settings::HubSettings;

/// What to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Hub id `org/name`.
    pub repo: String,
    /// Branch, tag or commit hash.
    pub revision: String,
    /// Weights variant to prefer.
    pub variant: Option<Variant>,
    /// Also fetch a Stable Diffusion repository's `safety_checker/` and `feature_extractor/`.
    pub safety_checker: bool,
}

/// What a fetch did.
#[derive(Debug, Clone)]
pub struct FetchReport {
    /// The commit the revision named.
    pub commit: String,
    /// The snapshot folder, ready for `[model] repo = ...` or `[model] path = ...`.
    pub snapshot: PathBuf,
    /// Files in the snapshot that the pipeline uses.
    pub files: usize,
    /// Files that were downloaded this time.
    pub downloaded_files: usize,
    /// Bytes transferred this time.
    pub downloaded_bytes: u64,
}

/// Fetches a model; `note` receives one line per fallback choice. The access token never
/// appears in an error message, even one that quotes the server.
pub fn fetch_model(
    settings: &HubSettings,
    options: &FetchOptions,
    note: &mut dyn FnMut(&str),
) -> Result<FetchReport, RuntimeError> {
    let result = fetch(settings, options, note);
    match &settings.token {
        Some(token) => result.map_err(|e| token.redact_error(e)),
        None => result,
    }
}

fn fetch(
    settings: &HubSettings,
    options: &FetchOptions,
    note: &mut dyn FnMut(&str),
) -> Result<FetchReport, RuntimeError> {
    let repo = options.repo.as_str();
    check_repo_and_revision(repo, &options.revision)?;
    if settings.offline {
        return Err(RuntimeError::input(format!(
            "HF_HUB_OFFLINE is set: fetching {repo} needs the network (unset HF_HUB_OFFLINE; \
             builds read the cache {} without it)",
            settings.cache.display()
        )));
    }
    let client = HubClient::new(settings)?;
    let info = model_info(&client, repo, &options.revision)?;
    let selection = select_files(repo, &info.files, options.variant, options.safety_checker)?;
    for line in &selection.notes {
        note(line);
    }
    let cache = RepoCache::new(&settings.cache, repo);
    let missing: Vec<&String> = selection
        .files
        .iter()
        .filter(|file| !cache.has_file(&info.commit, file))
        .collect();
    let metas = missing
        .iter()
        .map(|file| file_meta(&client, repo, &info.commit, file))
        .collect::<Result<Vec<_>, _>>()?;
    let progress = progress_bar(metas.iter().map(|m| m.size.unwrap_or(0)).sum());
    let downloader = Downloader::new(&client, &cache, repo, &progress);
    let mut downloaded_bytes = 0;
    let mut downloaded_files = 0;
    for meta in &metas {
        progress.set_message(meta.file.clone());
        let result = downloader.download(meta).and_then(|bytes| {
            cache
                .link(&info.commit, &meta.file, meta.expected.hex())
                .map(|()| bytes)
        });
        match result {
            Ok(Some(bytes)) => {
                downloaded_files += 1;
                downloaded_bytes += bytes;
            }
            Ok(None) => {}
            Err(err) => {
                progress.abandon();
                return Err(err);
            }
        }
    }
    progress.finish_and_clear();
    cache.write_ref(&options.revision, &info.commit)?;
    Ok(FetchReport {
        snapshot: cache.snapshot_dir(&info.commit),
        commit: info.commit,
        files: selection.files.len(),
        downloaded_files,
        downloaded_bytes,
    })
}

/// A byte progress bar on stderr; indicatif draws nothing when stderr is not a terminal.
pub(crate) fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{wide_msg} {bytes:>10}/{total_bytes:<10} [{bar:20}] {bytes_per_sec:>11} {eta:>3}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
