//! The models that ship inside acs: the shapes demonstrator (the default: trained, it draws
//! what its prompt says) and the random-weight tiny model (for tests that need speed or
//! bit-exact hashes). Each is materialised once as a diffusers folder under
//! `acs_home()/models/` and then loads like any checkpoint.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::shapes::{self, SHAPES_MODEL_ID};
use super::tiny::{acs_home, write_tiny_model, TINY_MODEL_ID};
use crate::runtime::error::RuntimeError;

/// The name of the file that says which version of an embedded model a folder holds.
const STAMP_FILE: &str = ".acs-embedded";

/// An embedded model, by its `[model] embedded` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EmbeddedModel {
    /// The shapes demonstrator (`acs/shapes-sd-v1`), 64 x 64 scenes of flat shapes.
    #[default]
    Shapes,
    /// The random-weight tiny model (`acs/tiny-sd-v1`).
    Tiny,
}

impl EmbeddedModel {
    /// Every embedded model, the default first.
    pub const ALL: [EmbeddedModel; 2] = [Self::Shapes, Self::Tiny];

    /// The model id recorded in rows (`model_id`).
    pub fn id(self) -> &'static str {
        match self {
            Self::Shapes => SHAPES_MODEL_ID,
            Self::Tiny => TINY_MODEL_ID,
        }
    }

    /// One line saying what it is (for `acs model list`).
    pub fn description(self) -> &'static str {
        match self {
            Self::Shapes => "the shapes demonstrator, trained (the default)",
            Self::Tiny => "random weights, for tests",
        }
    }

    /// Where it is materialised: `acs_home()/models/<name>`.
    pub fn dir(self) -> PathBuf {
        let name = self.id().rsplit('/').next().unwrap_or(self.id());
        acs_home().join("models").join(name)
    }

    /// What the stamp file of a complete folder of this version holds.
    fn stamp(self) -> String {
        match self {
            Self::Shapes => shapes::stamp(),
            Self::Tiny => format!("{TINY_MODEL_ID}\n"),
        }
    }

    /// Writes the model in diffusers layout into `dir`, which must not exist yet or be
    /// empty; the folder is assembled under a temporary sibling name and renamed when
    /// complete.
    pub fn write(self, dir: &Path) -> Result<(), RuntimeError> {
        match self {
            Self::Tiny => write_tiny_model(dir),
            Self::Shapes => write_staged(dir, shapes::write_files),
        }
    }

    /// Its folder, written first if it is not there (or holds another version).
    pub fn ensure(self) -> Result<PathBuf, RuntimeError> {
        let dir = self.dir();
        let current =
            std::fs::read_to_string(dir.join(STAMP_FILE)).is_ok_and(|stamp| stamp == self.stamp());
        if current {
            return Ok(dir);
        }
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| RuntimeError::io(parent, e))?;
        // Written beside the old folder and swapped in, so that a concurrent reader sees a
        // complete folder (the old or the new one).
        let staging = tempfile::Builder::new()
            .prefix(".acs-embedded-")
            .tempdir_in(parent)
            .map_err(|e| RuntimeError::io(parent, e))?;
        let fresh = staging.path().join("model");
        self.write(&fresh)?;
        let stamp = fresh.join(STAMP_FILE);
        std::fs::write(&stamp, self.stamp()).map_err(|e| RuntimeError::io(&stamp, e))?;
        if dir.exists() {
            let old = staging.path().join("old");
            std::fs::rename(&dir, &old).map_err(|e| RuntimeError::io(&dir, e))?;
        }
        if let Err(err) = std::fs::rename(&fresh, &dir) {
            // Another process may have put the same version there first.
            let done = std::fs::read_to_string(dir.join(STAMP_FILE))
                .is_ok_and(|stamp| stamp == self.stamp());
            if !done {
                return Err(RuntimeError::io(&dir, err));
            }
        }
        Ok(dir)
    }

    /// The embedded model whose id is `id`.
    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.id() == id)
    }
}

impl std::fmt::Display for EmbeddedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.serialize(f)
    }
}

impl std::str::FromStr for EmbeddedModel {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        crate::runtime::parse_name(name)
    }
}

/// Writes a folder through `fill` under a temporary sibling of `dir`, then renames it to `dir`
/// (which must not exist or be empty).
pub(super) fn write_staged(
    dir: &Path,
    fill: impl FnOnce(&Path) -> Result<(), RuntimeError>,
) -> Result<(), RuntimeError> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .map_err(|e| RuntimeError::io(dir, e))?
            .next()
            .is_some()
    {
        return Err(RuntimeError::input(format!(
            "{}: folder exists and is not empty",
            dir.display()
        )));
    }
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| RuntimeError::io(parent, e))?;
    let staging = tempfile::Builder::new()
        .prefix(".acs-model-")
        .tempdir_in(parent)
        .map_err(|e| RuntimeError::io(parent, e))?;
    fill(staging.path())?;
    let staged = staging.keep();
    if dir.exists() {
        std::fs::remove_dir(dir).map_err(|e| RuntimeError::io(dir, e))?;
    }
    std::fs::rename(&staged, dir).map_err(|e| RuntimeError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids() {
        assert_eq!(EmbeddedModel::default(), EmbeddedModel::Shapes);
        assert_eq!("tiny".parse::<EmbeddedModel>(), Ok(EmbeddedModel::Tiny));
        assert!("huge".parse::<EmbeddedModel>().is_err());
        for model in EmbeddedModel::ALL {
            assert_eq!(EmbeddedModel::from_id(model.id()), Some(model));
            assert_eq!(model.to_string().parse::<EmbeddedModel>(), Ok(model));
        }
        assert!(EmbeddedModel::Shapes.dir().ends_with("models/shapes-sd-v1"));
    }

    #[test]
    fn writes_the_demonstrator_in_diffusers_layout() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("shapes");
        EmbeddedModel::Shapes.write(&out).unwrap();
        for file in [
            "model_index.json",
            "unet/diffusion_pytorch_model.safetensors",
            "vae/config.json",
            "tokenizer/vocab.json",
            "text_encoder/model.safetensors",
        ] {
            assert!(out.join(file).is_file(), "{file}");
        }
        assert!(EmbeddedModel::Shapes.write(&out).is_err(), "not empty");
    }
}
