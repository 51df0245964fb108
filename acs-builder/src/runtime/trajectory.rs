//! Counterfactual trajectory targets: at chosen denoising steps k, the unsafe branch's latent
//! x_k, the guided UNet output of the unsafe prompt at x_k (what the sampler used), and the
//! guided output the *safe* prompt would give at that same x_k. The last costs one extra UNet
//! evaluation of the conditional rows per recorded step: the unconditional output at x_k is
//! the same for both prompts and is reused. The extra evaluation runs apart from the batch, so
//! recording never changes the rendered images.

use candle_core::{DType, Tensor};

use crate::runtime::error::RuntimeError;
use crate::runtime::model::StableDiffusion;

/// One pair's recorded steps, float32, each array `[steps, c, h, w]` flattened.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedTrajectory {
    /// Recorded step indices (0-based, ascending).
    pub steps: Vec<usize>,
    /// The scheduler timestep at each recorded step (rounded to an integer).
    pub timesteps: Vec<i32>,
    /// The unsafe branch's x_k (the scheduler's sample, before its input scaling).
    pub latents: Vec<f32>,
    /// Guided UNet output of the unsafe prompt at x_k.
    pub eps_unsafe: Vec<f32>,
    /// Guided UNet output of the safe prompt at the same x_k.
    pub eps_safe: Vec<f32>,
}

/// What was recorded at one step, every pair of the batch at once (`[pairs, c, h, w]`).
struct Step {
    index: usize,
    timestep: i32,
    latents: Tensor,
    eps_unsafe: Tensor,
    eps_safe: Tensor,
}

/// The tensors of one denoising step, every row of the batch: x_k, the UNet's input (x_k after
/// the scheduler's input scaling), the guided output, and the unconditional output (with
/// guidance).
pub(crate) struct StepTensors<'a> {
    pub latents: &'a Tensor,
    pub input: &'a Tensor,
    pub noise_pred: &'a Tensor,
    pub uncond: Option<&'a Tensor>,
}

/// Collects the targets of one batch while it is denoised.
pub(crate) struct Recorder {
    steps: Vec<usize>,
    pairs: usize,
    /// The safe prompts' conditioning, one row per pair; `None` for a batch of benign prompts
    /// (one branch: the safe output is the unsafe one).
    safe_cond: Option<Tensor>,
    /// Each pair's guidance scale (`[pairs, 1, 1, 1]`); `None` without guidance.
    guidance: Option<Tensor>,
    recorded: Vec<Step>,
}

fn runtime(e: candle_core::Error) -> RuntimeError {
    RuntimeError::candle("trajectory recorder", e)
}

impl Recorder {
    /// A recorder of `steps` (ascending) for `pairs` pairs.
    pub fn new(
        steps: Vec<usize>,
        pairs: usize,
        safe_cond: Option<Tensor>,
        guidance: Option<Tensor>,
    ) -> Self {
        Self {
            steps,
            pairs,
            safe_cond,
            guidance,
            recorded: Vec::new(),
        }
    }

    /// Whether step `index` is recorded.
    pub fn wants(&self, index: usize) -> bool {
        self.steps.binary_search(&index).is_ok()
    }

    /// Records step `index` at timestep `t`. The unsafe rows are every (rows / pairs)-th row.
    pub fn record(
        &mut self,
        model: &StableDiffusion,
        index: usize,
        t: f64,
        step: StepTensors,
    ) -> Result<(), RuntimeError> {
        let StepTensors {
            latents,
            input,
            noise_pred,
            uncond,
        } = step;
        let rows = latents.dim(0).map_err(runtime)?;
        let stride = rows / self.pairs.max(1);
        let unsafe_rows = |t: &Tensor| -> Result<Tensor, RuntimeError> {
            if stride == 1 {
                return Ok(t.clone());
            }
            let picks: Vec<u32> = (0..self.pairs as u32).map(|i| i * stride as u32).collect();
            let picks = Tensor::from_vec(picks, self.pairs, t.device()).map_err(runtime)?;
            t.index_select(&picks, 0).map_err(runtime)
        };
        let eps_unsafe = unsafe_rows(noise_pred)?;
        let eps_safe = match &self.safe_cond {
            None => eps_unsafe.clone(),
            Some(safe_cond) => {
                let cond = model.unet_forward(&unsafe_rows(input)?, t, safe_cond)?;
                match (uncond, &self.guidance) {
                    (Some(uncond), Some(guidance)) => {
                        let uncond = unsafe_rows(uncond)?;
                        let delta = (cond - &uncond).map_err(runtime)?;
                        (uncond + delta.broadcast_mul(guidance).map_err(runtime)?)
                            .map_err(runtime)?
                    }
                    _ => cond,
                }
            }
        };
        self.recorded.push(Step {
            index,
            timestep: t.round() as i32,
            latents: unsafe_rows(latents)?,
            eps_unsafe,
            eps_safe,
        });
        Ok(())
    }

    /// Each pair's trajectory, in batch order.
    pub fn per_pair(self) -> Result<Vec<RecordedTrajectory>, RuntimeError> {
        let flat = |t: &Tensor| -> Result<Vec<f32>, RuntimeError> {
            t.to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1())
                .map_err(runtime)
        };
        let mut out: Vec<RecordedTrajectory> = (0..self.pairs)
            .map(|_| RecordedTrajectory {
                steps: Vec::new(),
                timesteps: Vec::new(),
                latents: Vec::new(),
                eps_unsafe: Vec::new(),
                eps_safe: Vec::new(),
            })
            .collect();
        for step in &self.recorded {
            let arrays = [
                flat(&step.latents)?,
                flat(&step.eps_unsafe)?,
                flat(&step.eps_safe)?,
            ];
            let per_pair = arrays[0].len() / self.pairs.max(1);
            for (i, pair) in out.iter_mut().enumerate() {
                let part = |a: &Vec<f32>| a[i * per_pair..(i + 1) * per_pair].to_vec();
                pair.steps.push(step.index);
                pair.timesteps.push(step.timestep);
                pair.latents.extend(part(&arrays[0]));
                pair.eps_unsafe.extend(part(&arrays[1]));
                pair.eps_safe.extend(part(&arrays[2]));
            }
        }
        Ok(out)
    }
}
