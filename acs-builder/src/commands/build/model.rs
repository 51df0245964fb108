//! The model a manifest names: a local folder, a hub id (fetched into the Hugging Face cache
//! unless offline), or an embedded model (the shapes demonstrator unless it says `tiny`).

use std::path::{Path, PathBuf};

use crate::error::AcsError;
use crate::manifest::{LoadedManifest, ModelSection};
use crate::runtime::hub::cache::{hub_cache_dir, resolve_snapshot};
use crate::runtime::hub::{fetch_model, FetchOptions, HubSettings, Variant};
use crate::runtime::model::embedded::EmbeddedModel;
use crate::runtime::{kernel_path, Dtype, RuntimeError, StableDiffusion};

/// The embedded model a `[model]` section (or its absence) names: none when it names a
/// folder or a hub id.
pub fn embedded_model(section: Option<&ModelSection>) -> Option<EmbeddedModel> {
    match section {
        None => Some(EmbeddedModel::default()),
        Some(s) if s.path.is_none() && s.repo.is_none() => Some(s.embedded.unwrap_or_default()),
        Some(_) => None,
    }
}

/// The model folder a manifest names, or the embedded model's (written on first use).
pub fn model_dir(loaded: &LoadedManifest) -> Result<PathBuf, AcsError> {
    match &loaded.manifest.model {
        Some(ModelSection {
            path: Some(path), ..
        }) => Ok(loaded.resolve(path)),
        Some(ModelSection {
            repo: Some(repo),
            revision,
            dtype,
            ..
        }) => {
            let options = FetchOptions {
                repo: repo.clone(),
                revision: revision.clone(),
                variant: (*dtype == Dtype::F16).then_some(Variant::Fp16),
                safety_checker: loaded.manifest.validation.uses_model_safety_checker(),
            };
            resolve_or_fetch(&options).map_err(|e| loaded.runtime_error(e))
        }
        section => {
            let embedded = embedded_model(section.as_ref()).unwrap_or_default();
            embedded.ensure().map_err(|e| loaded.runtime_error(e))
        }
    }
}

/// The model folder a manifest names without touching the network: a hub id only when its
/// snapshot is already in the Hugging Face cache (`None` when it is not).
pub fn cached_model_dir(loaded: &LoadedManifest) -> Result<Option<PathBuf>, AcsError> {
    match &loaded.manifest.model {
        Some(ModelSection {
            repo: Some(repo),
            revision,
            ..
        }) => Ok(resolve_snapshot(&hub_cache_dir(), repo, revision).ok()),
        _ => model_dir(loaded).map(Some),
    }
}

/// A hub repository's snapshot in the HF cache; when it is not there (or lacks the safety
/// checker asked for) and the hub may be used (HF_HUB_OFFLINE unset), it is fetched first.
pub fn resolve_or_fetch(options: &FetchOptions) -> Result<PathBuf, RuntimeError> {
    let cache = hub_cache_dir();
    let missing = match resolve_snapshot(&cache, &options.repo, &options.revision) {
        Ok(dir) if !options.safety_checker || dir.join("safety_checker/config.json").is_file() => {
            return Ok(dir)
        }
        Ok(dir) => RuntimeError::input(format!(
            "{}: the cached snapshot {} has no safety_checker/",
            options.repo,
            dir.display()
        )),
        Err(missing) => missing,
    };
    let settings = HubSettings::from_env()?;
    if settings.offline {
        return Err(missing);
    }
    let fetched = fetch_model(&settings, options, &mut |note| {
        tracing::info!("note: {note}")
    });
    if let Err(err) = fetched {
        return Err(missing.map_message(|m| format!("{m}; fetching it failed: {err}")));
    }
    resolve_snapshot(&cache, &options.repo, &options.revision)
}

/// Loads the manifest's model, or the embedded tiny model when it names none.
pub fn load_model(loaded: &LoadedManifest) -> Result<StableDiffusion, AcsError> {
    load_model_from(&model_dir(loaded)?, loaded.manifest.model.as_ref())
        .map_err(|e| loaded.runtime_error(e))
}

/// Loads the model folder `dir` with the dtype and device of `section` (`None`: the embedded
/// tiny model, f32 on the CPU), after activating the CPU kernel path that `section` and
/// `ACS_KERNEL_PATH` choose.
pub fn load_model_from(
    dir: &Path,
    section: Option<&ModelSection>,
) -> Result<StableDiffusion, RuntimeError> {
    kernel_path::choose(section.map(|s| s.kernel_path).unwrap_or_default())?;
    open_model(dir, section)
}

/// Loads the model folder `dir` with the dtype and device of `section`, on whatever kernel
/// path is active.
pub fn open_model(
    dir: &Path,
    section: Option<&ModelSection>,
) -> Result<StableDiffusion, RuntimeError> {
    let id = match (
        section.and_then(|s| s.repo.as_ref()),
        embedded_model(section),
    ) {
        (Some(repo), _) => Some(repo.clone()),
        (None, Some(embedded)) => Some(embedded.id().to_owned()),
        (None, None) => None,
    };
    match section {
        Some(model) => StableDiffusion::load(dir, model.dtype.candle(), model.device.open()?, id),
        None => StableDiffusion::load(dir, candle_core::DType::F32, candle_core::Device::Cpu, id),
    }
}
