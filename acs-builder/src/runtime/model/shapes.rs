//! The shapes demonstrator: a small Stable-Diffusion-topology model trained by
//! `scripts/demonstrator/train.py` on procedurally drawn scenes of flat shapes (SPEC.md, "The
//! shapes demonstrator"), shipped inside the binary. Its weights and configs are the files the
//! script wrote (float16 safetensors), embedded byte for byte; its tokenizer is CLIP's, written
//! from the vocabulary acs embeds anyway.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::runtime::error::RuntimeError;
use crate::runtime::tokenizer::write_tokenizer_folder;

/// Name and version of the demonstrator; bump the version when the weights change.
pub const SHAPES_MODEL_ID: &str = "acs/shapes-sd-v1";

macro_rules! embedded_files {
    ($($path:literal),* $(,)?) => {
        [$(($path, include_bytes!(concat!("../../../assets/shapes-sd-v1/", $path)) as &[u8])),*]
    };
}

/// The demonstrator's files (path in the diffusers folder, bytes), as the training script
/// wrote them.
pub static SHAPES_FILES: [(&str, &[u8]); 8] = embedded_files![
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
];

/// The training report the script wrote: configs, steps, wall time, and the sha256 of every
/// file above (checked by this module's tests).
pub const TRAINING_REPORT: &str = include_str!("../../../assets/shapes-sd-v1/training-report.json");

/// Every embedded file.
pub fn files() -> impl Iterator<Item = (&'static str, &'static [u8])> {
    SHAPES_FILES.iter().copied()
}

/// A short digest of the embedded files (their paths and sizes and the report's hashes), to
/// tell whether a materialised folder is this version's without hashing 20 MB of weights.
pub fn stamp() -> String {
    let mut hasher = Sha256::new();
    for (path, bytes) in files() {
        hasher.update(path.as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
    }
    hasher.update(TRAINING_REPORT.as_bytes());
    format!("{SHAPES_MODEL_ID} {}\n", hex::encode(hasher.finalize()))
}

/// Writes the demonstrator's files and tokenizer under `root` (an empty staging folder).
pub fn write_files(root: &Path) -> Result<(), RuntimeError> {
    for (relative, bytes) in files() {
        let path = root.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| RuntimeError::io(parent, e))?;
        }
        std::fs::write(&path, bytes).map_err(|e| RuntimeError::io(&path, e))?;
    }
    let tokenizer = root.join("tokenizer");
    std::fs::create_dir_all(&tokenizer).map_err(|e| RuntimeError::io(&tokenizer, e))?;
    write_tokenizer_folder(&tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn report() -> Value {
        serde_json::from_str(TRAINING_REPORT).unwrap()
    }

    #[test]
    fn embedded_files_are_the_ones_the_training_script_recorded() {
        let recorded = report()["files"].as_object().unwrap().clone();
        let mut seen = 0;
        for (path, bytes) in files() {
            let expected = recorded
                .get(path)
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{path} is not in the training report"));
            assert_eq!(hex::encode(Sha256::digest(bytes)), expected, "{path}");
            seen += 1;
        }
        let weights: Vec<&String> = recorded
            .keys()
            .filter(|k| k.ends_with(".safetensors") || k.ends_with(".json"))
            .filter(|k| !k.starts_with("tokenizer/"))
            .collect();
        assert_eq!(seen, weights.len(), "recorded files: {weights:?}");
        let total: usize = files().map(|(_, b)| b.len()).sum();
        assert!(total <= 25 * 1024 * 1024, "{total} bytes");
    }

    #[test]
    fn embedded_configs_are_the_recorded_configs() {
        let report = report();
        let configs = &report["configs"];
        let read = |path: &str| -> Value {
            let bytes = files().find(|(p, _)| *p == path).unwrap().1;
            serde_json::from_slice(bytes).unwrap()
        };
        let unet = read("unet/config.json");
        for (key, value) in configs["unet"].as_object().unwrap() {
            assert_eq!(&unet[key], value, "unet {key}");
        }
        let vae = read("vae/config.json");
        for (key, value) in configs["vae"].as_object().unwrap() {
            assert_eq!(&vae[key], value, "vae {key}");
        }
        let text = read("text_encoder/config.json");
        for (key, value) in configs["text_encoder"].as_object().unwrap() {
            assert_eq!(&text[key], value, "text encoder {key}");
        }
        let scheduler = read("scheduler/scheduler_config.json");
        for (key, value) in configs["scheduler"].as_object().unwrap() {
            assert_eq!(&scheduler[key], value, "scheduler {key}");
        }
        assert_eq!(
            read("model_index.json")["_name_or_path"],
            Value::from(SHAPES_MODEL_ID)
        );
        assert_eq!(
            vae["scaling_factor"].as_f64().unwrap(),
            report["latents"]["scaling_factor"].as_f64().unwrap()
        );
    }
}
