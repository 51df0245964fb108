//! The aligned pair sampler: both prompts of a pair start from one initial latent x_T drawn on
//! the host from the pair's seed, and are denoised together in one batch with classifier-free
//! guidance, several pairs per UNet call.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use candle_core::{DType, Tensor};

use crate::runtime::error::RuntimeError;
use crate::runtime::fingerprint::sha256_hex;
use crate::runtime::model::StableDiffusion;
use crate::runtime::rng::Mt19937;
use crate::runtime::scheduler::{Scheduler, SchedulerKind, SchedulerState};

/// One pair to render.
#[derive(Debug, Clone)]
pub struct RenderJob {
    /// Seed of x_T (torch.Generator("cpu").manual_seed(seed) semantics).
    pub seed: u64,
    /// Padded CLIP ids of the unsafe prompt.
    pub unsafe_ids: Vec<u32>,
    /// Padded CLIP ids of the safe prompt.
    pub safe_ids: Vec<u32>,
    /// Classifier-free guidance scale of this pair.
    pub guidance_scale: f32,
}

/// The two renderings of a pair.
#[derive(Debug, Clone)]
pub struct RenderedPair {
    /// sha256 of x_T's float32 little-endian bytes, shared by both images.
    pub x_t_sha256: String,
    /// Final latent of the unsafe branch, [c, h, w] flattened.
    pub unsafe_latent: Vec<f32>,
    /// Final latent of the safe branch.
    pub safe_latent: Vec<f32>,
    /// Unsafe image, RGB8 row-major.
    pub unsafe_rgb: Vec<u8>,
    /// Safe image, RGB8 row-major.
    pub safe_rgb: Vec<u8>,
}

/// Wall time spent in each network so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SamplerTimings {
    /// CLIP text encoder.
    pub text_encoder: Duration,
    /// UNet evaluations and scheduler steps.
    pub unet: Duration,
    /// VAE decoding.
    pub vae: Duration,
    /// UNet evaluations made.
    pub unet_calls: u64,
    /// Image evaluations (latent rows through the UNet) that prompt-switch's shared prefix saved.
    pub unet_evaluations_saved: u64,
}

/// Renders pairs with one model, scheduler configuration and negative prompt.
pub struct PairSampler<'m> {
    model: &'m StableDiffusion,
    scheduler: Scheduler,
    negative_context: Tensor,
    latent_shape: [usize; 3],
    switch_step: usize,
    timings: Mutex<SamplerTimings>,
}

impl<'m> PairSampler<'m> {
    /// A sampler for `steps` steps of `scheduler` at `height` x `width` with a negative prompt;
    /// the first `switch_step` steps are shared by both branches (prompt-switch), 0 for none.
    pub fn new(
        model: &'m StableDiffusion,
        scheduler: SchedulerKind,
        steps: usize,
        height: usize,
        width: usize,
        negative_prompt: &str,
        switch_step: usize,
    ) -> Result<Self, RuntimeError> {
        let scheduler = Scheduler::new(scheduler, &model.schedule, steps)?;
        let negative = model.tokenizer.encode(negative_prompt)?;
        let negative_context = model.encode_text(&[negative.ids])?;
        Ok(Self {
            latent_shape: model.latent_shape(height, width)?,
            model,
            scheduler,
            negative_context,
            switch_step,
            timings: Mutex::new(SamplerTimings::default()),
        })
    }

    /// Time spent so far in each network.
    pub fn timings(&self) -> SamplerTimings {
        *self.timings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Latent shape (c, h, w) of every rendered image.
    pub fn latent_shape(&self) -> [usize; 3] {
        self.latent_shape
    }

    /// UNet conditioning for `cond` rows (each pair's scale repeated `per_pair` times): the
    /// context with the negative prompt's rows first when guidance is on, and the scales.
    fn guidance_inputs(
        &self,
        cond: &Tensor,
        scales: &[f32],
        use_cfg: bool,
        per_pair: usize,
    ) -> Result<(Tensor, Option<Tensor>), RuntimeError> {
        let runtime = |e: candle_core::Error| RuntimeError::candle("pair sampler", e);
        if !use_cfg {
            return Ok((cond.clone(), None));
        }
        let rows = cond.dim(0).map_err(runtime)?;
        let seq = self.negative_context.dim(1).map_err(runtime)?;
        let hidden = self.negative_context.dim(2).map_err(runtime)?;
        let uncond = self
            .negative_context
            .broadcast_as((rows, seq, hidden))
            .and_then(|t| t.contiguous())
            .map_err(runtime)?;
        let context = Tensor::cat(&[&uncond, cond], 0).map_err(runtime)?;
        // diffusers skips guidance when the scale is <= 1, i.e. uses the conditional output.
        let per_row: Vec<f32> = scales
            .iter()
            .flat_map(|g| std::iter::repeat_n(g.max(1.0), per_pair))
            .collect();
        let guidance =
            Tensor::from_vec(per_row, (rows, 1, 1, 1), &self.model.device).map_err(runtime)?;
        Ok((context, Some(guidance)))
    }

    /// Runs the scheduler's steps `steps` on `latents` with classifier-free guidance. Ancestral
    /// noise is drawn per pair from `rngs` (continuing each pair's x_T generator, as diffusers
    /// continues its generator) and shared by the pair's rows.
    fn denoise(
        &self,
        mut latents: Tensor,
        steps: std::ops::Range<usize>,
        (context, guidance): &(Tensor, Option<Tensor>),
        rngs: &mut [Mt19937],
        state: &mut SchedulerState,
        timings: &mut SamplerTimings,
    ) -> Result<Tensor, RuntimeError> {
        let runtime = |e: candle_core::Error| RuntimeError::candle("pair sampler", e);
        let rows = latents.dim(0).map_err(runtime)?;
        let [c, h, w] = self.latent_shape;
        for index in steps {
            timings.unet_calls += 1;
            let t = self.scheduler.model_timestep(index);
            let input = self
                .scheduler
                .scale_model_input(&latents, index)
                .map_err(runtime)?;
            let noise_pred = match guidance {
                Some(guidance) => {
                    let input = Tensor::cat(&[&input, &input], 0).map_err(runtime)?;
                    let out = self.model.unet_forward(&input, t, context)?;
                    let uncond = out.narrow(0, 0, rows).map_err(runtime)?;
                    let cond = out.narrow(0, rows, rows).map_err(runtime)?;
                    let delta = (cond - &uncond).map_err(runtime)?;
                    (uncond + delta.broadcast_mul(guidance).map_err(runtime)?).map_err(runtime)?
                }
                None => self.model.unet_forward(&input, t, context)?,
            };
            let noise = if self.scheduler.needs_noise() {
                let pairs = rngs.len();
                let values: Vec<f32> = rngs
                    .iter_mut()
                    .flat_map(|rng| rng.randn_f32(c * h * w))
                    .collect();
                let noise = Tensor::from_vec(values, (pairs, c, h, w), &self.model.device)
                    .map_err(runtime)?;
                Some(if rows == pairs {
                    noise
                } else {
                    noise
                        .unsqueeze(1)
                        .and_then(|t| t.broadcast_as((pairs, rows / pairs, c, h, w)))
                        .and_then(|t| t.reshape((rows, c, h, w)))
                        .map_err(runtime)?
                })
            } else {
                None
            };
            latents = self
                .scheduler
                .step(&noise_pred, index, &latents, noise.as_ref(), state)
                .map_err(runtime)?;
        }
        Ok(latents)
    }

    /// Denoising steps shared by both branches (0 in shared-latent mode).
    pub fn switch_step(&self) -> usize {
        self.switch_step
    }

    /// Renders a batch of pairs; the output order follows `jobs`.
    pub fn render(&self, jobs: &[RenderJob]) -> Result<Vec<RenderedPair>, RuntimeError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let (x_t, x_t_hashes, mut rngs) = self.initial_latents(jobs)?;
        let token_rows: Vec<Vec<u32>> = jobs
            .iter()
            .flat_map(|job| [job.unsafe_ids.clone(), job.safe_ids.clone()])
            .collect();
        let mut timings = self.timings();
        let started = Instant::now();
        // Rows alternate unsafe, safe: image 2i is pair i's unsafe branch, 2i + 1 its safe one.
        let cond = self.model.encode_text(&token_rows)?;
        timings.text_encoder += started.elapsed();
        let started = Instant::now();
        let latents = self.trajectories(x_t, &cond, jobs, &mut rngs, &mut timings)?;
        timings.unet += started.elapsed();
        let started = Instant::now();
        let rgb = self.model.decode_images(&latents)?;
        timings.vae += started.elapsed();
        *self.timings.lock().unwrap_or_else(|e| e.into_inner()) = timings;
        self.pairs_of(&latents, rgb, x_t_hashes)
    }

    /// Each pair's x_T drawn from its seed (scaled by the scheduler's initial sigma), its
    /// sha256, and the pair's generator positioned after x_T (for the ancestral noise).
    fn initial_latents(
        &self,
        jobs: &[RenderJob],
    ) -> Result<(Tensor, Vec<String>, Vec<Mt19937>), RuntimeError> {
        let runtime = |e: candle_core::Error| RuntimeError::candle("pair sampler", e);
        let [c, h, w] = self.latent_shape;
        let mut hashes = Vec::with_capacity(jobs.len());
        let mut values = Vec::with_capacity(jobs.len() * c * h * w);
        let mut rngs = Vec::with_capacity(jobs.len());
        for job in jobs {
            let mut rng = Mt19937::new(job.seed);
            let x_t = rng.randn_f32(c * h * w);
            rngs.push(rng);
            let bytes: Vec<u8> = x_t.iter().flat_map(|v| v.to_le_bytes()).collect();
            hashes.push(sha256_hex(&bytes));
            values.extend_from_slice(&x_t);
        }
        let device = &self.model.device;
        let sigma = Tensor::new(self.scheduler.init_noise_sigma(), device).map_err(runtime)?;
        let x_t = Tensor::from_vec(values, (jobs.len(), c, h, w), device)
            .and_then(|t| t.broadcast_mul(&sigma))
            .map_err(runtime)?;
        Ok((x_t, hashes, rngs))
    }

    /// Both branches of every pair denoised from x_T: in shared-latent mode from the very
    /// same x_T; in prompt-switch mode after a prefix computed once per pair on the unsafe
    /// prompt. Rows alternate unsafe, safe.
    fn trajectories(
        &self,
        x_t: Tensor,
        cond: &Tensor,
        jobs: &[RenderJob],
        rngs: &mut [Mt19937],
        timings: &mut SamplerTimings,
    ) -> Result<Tensor, RuntimeError> {
        let runtime = |e: candle_core::Error| RuntimeError::candle("pair sampler", e);
        let device = &self.model.device;
        let [c, h, w] = self.latent_shape;
        let pairs = jobs.len();
        let use_cfg = jobs.iter().any(|job| job.guidance_scale > 1.0);
        let scales: Vec<f32> = jobs.iter().map(|job| job.guidance_scale).collect();
        let steps = self.scheduler.len();
        let switch = self.switch_step.min(steps);
        let mut state = SchedulerState::default();
        let fork = |t: &Tensor| {
            t.unsqueeze(1)
                .and_then(|t| t.broadcast_as((pairs, 2, c, h, w)))
                .and_then(|t| t.reshape((pairs * 2, c, h, w)))
                .map_err(runtime)
        };
        let latents = if switch > 0 {
            let unsafe_rows: Vec<u32> = (0..pairs as u32).map(|i| 2 * i).collect();
            let unsafe_rows = Tensor::from_vec(unsafe_rows, pairs, device).map_err(runtime)?;
            let unsafe_cond = cond.index_select(&unsafe_rows, 0).map_err(runtime)?;
            let inputs = self.guidance_inputs(&unsafe_cond, &scales, use_cfg, 1)?;
            let prefix = self.denoise(x_t, 0..switch, &inputs, rngs, &mut state, timings)?;
            let cfg_factor = if use_cfg { 2 } else { 1 };
            timings.unet_evaluations_saved += (switch * pairs * cfg_factor) as u64;
            // Multistep history forks with the latents.
            state.previous_x0 = state.previous_x0.as_ref().map(fork).transpose()?;
            fork(&prefix)?
        } else {
            fork(&x_t)?
        };
        let inputs = self.guidance_inputs(cond, &scales, use_cfg, 2)?;
        self.denoise(latents, switch..steps, &inputs, rngs, &mut state, timings)
    }

    /// The rendered pairs: each pair's two latents (float32, flattened) and images.
    fn pairs_of(
        &self,
        latents: &Tensor,
        rgb: Vec<Vec<u8>>,
        x_t_hashes: Vec<String>,
    ) -> Result<Vec<RenderedPair>, RuntimeError> {
        let flat: Vec<f32> = latents
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .map_err(|e| RuntimeError::candle("pair sampler", e))?;
        let per_image = self.latent_shape.iter().product::<usize>();
        let mut rgb = rgb.into_iter();
        let mut out = Vec::with_capacity(x_t_hashes.len());
        for (i, x_t_sha256) in x_t_hashes.into_iter().enumerate() {
            let (unsafe_rgb, safe_rgb) = match (rgb.next(), rgb.next()) {
                (Some(u), Some(s)) => (u, s),
                _ => {
                    return Err(RuntimeError::internal(
                        "VAE returned fewer images than latents",
                    ))
                }
            };
            out.push(RenderedPair {
                x_t_sha256,
                unsafe_latent: flat[(2 * i) * per_image..(2 * i + 1) * per_image].to_vec(),
                safe_latent: flat[(2 * i + 1) * per_image..(2 * i + 2) * per_image].to_vec(),
                unsafe_rgb,
                safe_rgb,
            });
        }
        Ok(out)
    }
}
