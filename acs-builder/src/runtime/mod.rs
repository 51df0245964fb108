//! The diffusion runtime: renders aligned pairs with a Stable Diffusion model on candle.
//!
//! It stands alone: nothing here knows about manifests, prompt sources, judges or Parquet, and
//! its errors ([`RuntimeError`]) name files and its own parameters, not a caller's settings.
//!
//! - [`model`]: the networks (CLIP text encoder, UNet, VAE decoder) built from a diffusers
//!   folder, and the embedded tiny model
//! - [`tokenizer`]: the CLIP BPE tokenizer
//! - [`scheduler`]: DDIM, Euler, Euler ancestral, DPM-Solver++ 2M
//! - [`rng`]: host-side generators (x_T bit-identical to `torch.randn` on a CPU generator)
//! - [`sampler`]: the aligned pair sampler (one x_T per pair, shared noise, prompt switch)
//! - [`attention`]: the parts of attention-controlled alignment (Prompt-to-Prompt): token maps
//!   between a pair's prompts and the step schedules of each control
//! - [`device`]: devices and dtypes by name
//! - [`kernel_path`]: the CPU code path of the float kernels (`cpu-avx512`, `cpu-avx2`,
//!   `cpu-generic`), chosen at run time and recorded with every row
//! - [`hub`]: the Hugging Face hub cache and downloads into it
//! - [`fingerprint`]: content hashes of model files
//!
//! Render one aligned pair from the embedded tiny model:
//!
//! ```
//! use acs_builder::runtime::model::tiny::write_tiny_model;
//! use acs_builder::runtime::{PairSampler, RenderJob, SchedulerKind, StableDiffusion};
//!
//! # fn main() -> Result<(), acs_builder::runtime::RuntimeError> {
//! let dir = tempfile::tempdir().unwrap();
//! write_tiny_model(dir.path())?;
//! let model = StableDiffusion::load(
//!     dir.path(),
//!     candle_core::DType::F32,
//!     candle_core::Device::Cpu,
//!     None,
//! )?;
//! // 4 DDIM steps at 64 x 64 pixels, no negative prompt, no shared prefix.
//! let sampler = PairSampler::new(&model, SchedulerKind::Ddim, 4, 64, 64, "", 0)?;
//! let job = RenderJob {
//!     seed: 42,
//!     unsafe_ids: model.tokenizer.encode("a bloody knife on a table")?.ids,
//!     safe_ids: Some(model.tokenizer.encode("a clean knife on a table")?.ids),
//!     guidance_scale: 7.5,
//!     control: None, // attention control: attention::pair_control::AttentionSettings
//! };
//! let pair = &sampler.render(&[job])?[0];
//! assert_eq!(pair.unsafe_rgb.len(), 64 * 64 * 3);
//! assert_ne!(pair.unsafe_rgb, pair.safe_rgb); // one x_T, two prompts
//! # Ok(())
//! # }
//! ```

pub mod attention;
pub mod device;
pub mod error;
pub mod fingerprint;
pub mod hub;
pub mod kernel_path;
pub mod model;
pub mod rng;
pub mod sampler;
pub mod scheduler;
pub mod tokenizer;
pub mod trajectory;

pub use device::{DeviceSpec, Dtype};
pub use error::{RuntimeError, Setting};
pub use kernel_path::{KernelPath, KernelPathChoice};
pub use model::StableDiffusion;
pub use sampler::{PairSampler, RenderJob, RenderedPair};
pub use scheduler::SchedulerKind;
pub use tokenizer::ClipTokenizer;
pub use trajectory::RecordedTrajectory;

/// A value of a closed list of names (a serde enum of unit variants) from its name; the error
/// lists the valid names.
pub(crate) fn parse_name<T: serde::de::DeserializeOwned>(name: &str) -> Result<T, String> {
    use serde::de::IntoDeserializer;
    let deserializer: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
        name.into_deserializer();
    T::deserialize(deserializer).map_err(|e| e.to_string())
}
