//! `[model]`: which model renders, in what dtype, on which device and kernel path.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::runtime::model::embedded::EmbeddedModel;
use crate::runtime::{DeviceSpec, Dtype, KernelPathChoice};

/// `[model]`: a local diffusers-layout folder, a hub id found in the Hugging Face cache, or
/// neither (an embedded model: the shapes demonstrator unless `embedded` says `tiny`), with the dtype and device to run it in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Folder in diffusers layout (model_index.json, unet/, vae/, text_encoder/, tokenizer/).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Hub id (org/name), resolved in the local Hugging Face cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// An embedded model (`shapes`, the default, or `tiny`) when neither `path` nor `repo` is
    /// set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded: Option<EmbeddedModel>,
    /// Branch, tag or commit of `repo`.
    #[serde(default = "default_revision")]
    pub revision: String,
    /// Weight dtype.
    #[serde(default)]
    pub dtype: Dtype,
    /// The device (GPUs need the `cuda` / `metal` cargo feature).
    #[serde(default)]
    pub device: DeviceSpec,
    /// The CPU kernel path (`auto`: `ACS_KERNEL_PATH`'s, else the best this CPU runs).
    #[serde(default, skip_serializing_if = "KernelPathChoice::is_auto")]
    pub kernel_path: KernelPathChoice,
}

fn default_revision() -> String {
    "main".into()
}

impl Default for ModelSection {
    /// The embedded shapes demonstrator, float32 on the CPU.
    fn default() -> Self {
        Self {
            path: None,
            repo: None,
            embedded: None,
            revision: default_revision(),
            dtype: Dtype::default(),
            device: DeviceSpec::default(),
            kernel_path: KernelPathChoice::Auto,
        }
    }
}
