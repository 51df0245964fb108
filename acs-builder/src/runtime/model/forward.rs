//! Runs the runtime's components one at a time on tensors read from a safetensors file and
//! writes their outputs to another: how the parity tests hold each component against its
//! diffusers / transformers counterpart (`acs model forward`).
//!
//! Input tensors (any subset):
//! - `input_ids` [n, 77] (integers) -> `text_hidden_states` [n, 77, d]
//! - `unet_sample` [b, c, h, w], `unet_timestep` [1], `unet_context` [b, 77, d] -> `unet_output`
//! - `vae_latents` [n, c, h, w] (unscaled, as the sampler produces them) -> `vae_images`
//!   [n, 3, H, W] in [-1, 1], unclamped
//! - `scheduler_sample` [b, c, h, w], `scheduler_model_outputs` [steps, b, c, h, w] and, for
//!   ancestral schedulers, `scheduler_seed` [1] (noise is drawn from a torch-compatible
//!   generator with that seed, one draw per step) -> `scheduler_final` (the sample after every
//!   step, each step fed the next model output) and `scheduler_timesteps` [steps]
//! - `blend_source_map`, `blend_target_map` [h, w] (the edited words' attention at the blend
//!   level), `blend_threshold` [1], `blend_unsafe_latent`, `blend_safe_latent` [c, H, W] ->
//!   `blend_mask` [H, W] (u8, 1 inside) and `blend_safe_latent_out` (attention control's local
//!   blend, [`crate::runtime::attention::blend`])

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, IndexOp, Tensor};

use super::StableDiffusion;
use crate::runtime::error::RuntimeError;
use crate::runtime::rng::Mt19937;
use crate::runtime::scheduler::{Scheduler, SchedulerKind, SchedulerState};

/// Which scheduler to run for the `scheduler_*` inputs.
pub struct SchedulerChoice {
    /// The scheduler.
    pub kind: SchedulerKind,
    /// Number of inference steps.
    pub steps: usize,
}

/// Runs every component whose inputs are present; returns the names of the outputs written.
pub fn run_components(
    model: &StableDiffusion,
    inputs: &Path,
    out: &Path,
    scheduler: Option<SchedulerChoice>,
) -> Result<Vec<String>, RuntimeError> {
    let tensors = candle_core::safetensors::load(inputs, &model.device).map_err(|e| {
        RuntimeError::input(format!(
            "{}: not a readable safetensors file ({})",
            inputs.display(),
            crate::runtime::error::candle_message(&e)
        ))
    })?;
    let get = |name: &str| tensors.get(name);
    let mut outputs: HashMap<String, Tensor> = HashMap::new();
    fn runtime(what: &'static str) -> impl Fn(candle_core::Error) -> RuntimeError {
        move |e| RuntimeError::candle(what, e)
    }

    if let Some(ids) = get("input_ids") {
        let rows: Vec<Vec<u32>> = ids
            .to_dtype(DType::I64)
            .and_then(|t| t.to_vec2::<i64>())
            .map_err(runtime("input_ids"))?
            .into_iter()
            .map(|row| row.into_iter().map(|v| v as u32).collect())
            .collect();
        outputs.insert("text_hidden_states".into(), model.encode_text(&rows)?);
    }

    if let (Some(sample), Some(t), Some(context)) = (
        get("unet_sample"),
        get("unet_timestep"),
        get("unet_context"),
    ) {
        let t = first_value::<f64>(t).map_err(runtime("unet_timestep"))?;
        let sample = sample
            .to_dtype(DType::F32)
            .map_err(runtime("unet_sample"))?;
        let context = context
            .to_dtype(DType::F32)
            .map_err(runtime("unet_context"))?;
        outputs.insert(
            "unet_output".into(),
            model.unet_forward(&sample, t, &context)?,
        );
    }

    if let Some(latents) = get("vae_latents") {
        let latents = latents
            .to_dtype(DType::F32)
            .map_err(runtime("vae_latents"))?;
        outputs.insert("vae_images".into(), model.decode_latents(&latents)?);
    }

    if let (Some(sample), Some(model_outputs)) =
        (get("scheduler_sample"), get("scheduler_model_outputs"))
    {
        let choice = scheduler.ok_or_else(|| {
            RuntimeError::input("scheduler inputs given without a scheduler to run them")
        })?;
        let scheduler = Scheduler::new(choice.kind, &model.schedule, choice.steps)?;
        let (final_sample, timesteps) =
            run_scheduler(&scheduler, sample, model_outputs, get("scheduler_seed"))?;
        outputs.insert("scheduler_final".into(), final_sample);
        outputs.insert("scheduler_timesteps".into(), timesteps);
    }

    if let (Some(source), Some(target), Some(threshold), Some(unsafe_latent), Some(safe_latent)) = (
        get("blend_source_map"),
        get("blend_target_map"),
        get("blend_threshold"),
        get("blend_unsafe_latent"),
        get("blend_safe_latent"),
    ) {
        let (mask, blended) = run_blend(source, target, threshold, unsafe_latent, safe_latent)?;
        outputs.insert("blend_mask".into(), mask);
        outputs.insert("blend_safe_latent_out".into(), blended);
    }

    if outputs.is_empty() {
        return Err(RuntimeError::input(format!(
            "{}: no component inputs found (expected input_ids, unet_sample + unet_timestep + \
             unet_context, vae_latents, scheduler_sample + scheduler_model_outputs, or the \
             blend_* inputs)",
            inputs.display()
        )));
    }
    let mut names: Vec<String> = outputs.keys().cloned().collect();
    names.sort();
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staged =
        tempfile::NamedTempFile::new_in(parent).map_err(|e| RuntimeError::io(parent, e))?;
    candle_core::safetensors::save(&outputs, staged.path())
        .map_err(|e| RuntimeError::candle(&format!("writing {}", out.display()), e))?;
    staged
        .persist(out)
        .map_err(|e| RuntimeError::io(out, e.error))?;
    Ok(names)
}

/// The first value of a tensor of any shape, as `T` (a scalar input such as a timestep).
fn first_value<T: candle_core::WithDType>(t: &Tensor) -> candle_core::Result<T> {
    t.to_dtype(T::DTYPE)?.flatten_all()?.i(0)?.to_scalar::<T>()
}

/// The local blend's mask of two attention maps and the safe latent blended with it.
fn run_blend(
    source: &Tensor,
    target: &Tensor,
    threshold: &Tensor,
    unsafe_latent: &Tensor,
    safe_latent: &Tensor,
) -> Result<(Tensor, Tensor), RuntimeError> {
    use crate::runtime::attention::blend::{apply_blend, blend_mask, Map};

    let map = |t: &Tensor, name: &'static str| -> Result<Map, RuntimeError> {
        let values = t
            .to_dtype(DType::F32)
            .and_then(|t| t.to_vec2::<f32>())
            .map_err(|e| RuntimeError::candle(name, e))?;
        let (h, w) = (values.len(), values.first().map_or(0, Vec::len));
        Map::new(h, w, values.concat()).map_err(|e| RuntimeError::input(format!("{name}: {e}")))
    };
    let (source, target) = (
        map(source, "blend_source_map")?,
        map(target, "blend_target_map")?,
    );
    let threshold =
        first_value::<f32>(threshold).map_err(|e| RuntimeError::candle("blend_threshold", e))?;
    let dims = unsafe_latent.dims().to_vec();
    if dims.len() != 3 || safe_latent.dims() != dims.as_slice() {
        return Err(RuntimeError::input(format!(
            "blend latents: shapes {dims:?} and {:?}, expected two equal [c, H, W]",
            safe_latent.dims()
        )));
    }
    let flat = |t: &Tensor, name: &'static str| {
        t.to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| RuntimeError::candle(name, e))
    };
    let unsafe_values = flat(unsafe_latent, "blend_unsafe_latent")?;
    let mut safe_values = flat(safe_latent, "blend_safe_latent")?;
    let mask = blend_mask(&source, &target, dims[1], dims[2], threshold);
    apply_blend(&unsafe_values, &mut safe_values, &mask);
    let device = unsafe_latent.device();
    let mask_bytes: Vec<u8> = mask.iter().map(|&m| u8::from(m)).collect();
    let mask = Tensor::from_vec(mask_bytes, (dims[1], dims[2]), device)
        .map_err(|e| RuntimeError::candle("blend_mask", e))?;
    let blended = Tensor::from_vec(safe_values, dims.as_slice(), device)
        .map_err(|e| RuntimeError::candle("blend_safe_latent_out", e))?;
    Ok((mask, blended))
}

fn run_scheduler(
    scheduler: &Scheduler,
    sample: &Tensor,
    model_outputs: &Tensor,
    seed: Option<&Tensor>,
) -> Result<(Tensor, Tensor), RuntimeError> {
    let runtime = |e: candle_core::Error| RuntimeError::candle("scheduler", e);
    let steps = scheduler.len();
    if model_outputs.dim(0).map_err(runtime)? != steps {
        return Err(RuntimeError::input(format!(
            "scheduler_model_outputs: {} model outputs for {steps} steps",
            model_outputs.dim(0).map_err(runtime)?
        )));
    }
    let mut rng = match (scheduler.needs_noise(), seed) {
        (false, _) => None,
        (true, Some(seed)) => {
            let seed = first_value::<i64>(seed).map_err(runtime)?;
            Some(Mt19937::new(seed as u64))
        }
        (true, None) => {
            return Err(RuntimeError::input(
                "scheduler_seed: required by an ancestral scheduler",
            ))
        }
    };
    let mut x = sample.to_dtype(DType::F32).map_err(runtime)?;
    let mut state = SchedulerState::default();
    let mut timesteps = Vec::with_capacity(steps);
    for index in 0..steps {
        timesteps.push(scheduler.model_timestep(index) as f32);
        let output = model_outputs
            .i(index)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(runtime)?;
        let noise = match rng.as_mut() {
            Some(rng) => {
                let values = rng.randn_f32(x.elem_count());
                Some(Tensor::from_vec(values, x.shape(), x.device()).map_err(runtime)?)
            }
            None => None,
        };
        x = scheduler
            .step(&output, index, &x, noise.as_ref(), &mut state)
            .map_err(runtime)?;
    }
    let timesteps = Tensor::from_vec(timesteps, steps, x.device()).map_err(runtime)?;
    Ok((x, timesteps))
}
