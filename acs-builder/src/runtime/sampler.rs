//! The aligned pair sampler: both prompts of a pair start from one initial latent x_T drawn on
//! the host from the pair's seed, and are denoised together in one batch with classifier-free
//! guidance, several pairs per UNet call.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::{DType, Tensor};

use crate::runtime::attention::controller::BatchController;
use crate::runtime::attention::pair_control::PairControl;
use crate::runtime::error::RuntimeError;
use crate::runtime::fingerprint::sha256_hex;
use crate::runtime::model::StableDiffusion;
use crate::runtime::rng::Mt19937;
use crate::runtime::scheduler::{Scheduler, SchedulerKind, SchedulerState};
use crate::runtime::trajectory::{RecordedTrajectory, Recorder, StepTensors};

/// One pair to render.
#[derive(Debug, Clone)]
pub struct RenderJob {
    /// Seed of x_T (torch.Generator("cpu").manual_seed(seed) semantics).
    pub seed: u64,
    /// Padded CLIP ids of the unsafe prompt.
    pub unsafe_ids: Vec<u32>,
    /// Padded CLIP ids of the safe prompt; `None` for a benign prompt, rendered once (both
    /// sides of its row are that one rendering). A batch holds only one of the two kinds.
    pub safe_ids: Option<Vec<u32>>,
    /// Classifier-free guidance scale of this pair.
    pub guidance_scale: f32,
    /// Attention control of this pair (`[alignment] mode = "attention"`); a batch's pairs all
    /// have it or none does.
    pub control: Option<Arc<PairControl>>,
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
    /// The counterfactual trajectory targets, when steps are recorded.
    pub trajectory: Option<RecordedTrajectory>,
    /// The last local-blend mask (one 0/1 byte per latent pixel, row-major), when the pair
    /// was blended.
    pub blend_mask: Option<Vec<u8>>,
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

/// What a batch's denoising carries from step to step.
struct Walk<'o> {
    /// Each pair's generator, positioned after its x_T.
    rngs: Vec<Mt19937>,
    /// The scheduler's multistep history.
    scheduler: SchedulerState,
    /// Time and calls so far.
    timings: SamplerTimings,
    /// The trajectory recorder, when steps are recorded.
    recorder: Option<Recorder>,
    /// Told (step done, steps) after every denoising step.
    on_step: &'o (dyn Fn(usize, usize) + Sync),
    /// The attention controller, in attention mode.
    controller: Option<BatchController>,
}

/// Renders pairs with one model, scheduler configuration and negative prompt.
pub struct PairSampler<'m> {
    model: &'m StableDiffusion,
    scheduler: Scheduler,
    negative_context: Tensor,
    latent_shape: [usize; 3],
    switch_step: usize,
    record_steps: Vec<usize>,
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
            record_steps: Vec::new(),
            timings: Mutex::new(SamplerTimings::default()),
        })
    }

    /// The same sampler, recording the counterfactual trajectory targets at `steps` (0-based
    /// step indices) of every pair it renders.
    pub fn recording(mut self, steps: &[usize]) -> Result<Self, RuntimeError> {
        let mut steps = steps.to_vec();
        steps.sort_unstable();
        steps.dedup();
        if let Some(&last) = steps.last().filter(|&&s| s >= self.scheduler.len()) {
            return Err(RuntimeError::Input(format!(
                "trajectory step {last} is outside the schedule of {} steps",
                self.scheduler.len()
            )));
        }
        self.record_steps = steps;
        Ok(self)
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
        walk: &mut Walk<'_>,
    ) -> Result<Tensor, RuntimeError> {
        let runtime = |e: candle_core::Error| RuntimeError::candle("pair sampler", e);
        let rows = latents.dim(0).map_err(runtime)?;
        let [c, h, w] = self.latent_shape;
        for index in steps {
            walk.timings.unet_calls += 1;
            if let Some(controller) = &walk.controller {
                controller.set_step(index).map_err(runtime)?;
            }
            let hook = walk
                .controller
                .as_ref()
                .map(|c| c as &dyn crate::runtime::model::attention_hook::AttentionHook);
            let t = self.scheduler.model_timestep(index);
            let input = self
                .scheduler
                .scale_model_input(&latents, index)
                .map_err(runtime)?;
            let (noise_pred, uncond) = match guidance {
                Some(guidance) => {
                    let doubled = Tensor::cat(&[&input, &input], 0).map_err(runtime)?;
                    let out = self
                        .model
                        .unet_forward_controlled(&doubled, t, context, hook)?;
                    let uncond = out.narrow(0, 0, rows).map_err(runtime)?;
                    let cond = out.narrow(0, rows, rows).map_err(runtime)?;
                    let delta = (cond - &uncond).map_err(runtime)?;
                    let guided = (&uncond + delta.broadcast_mul(guidance).map_err(runtime)?)
                        .map_err(runtime)?;
                    (guided, Some(uncond))
                }
                None => (
                    self.model
                        .unet_forward_controlled(&input, t, context, hook)?,
                    None,
                ),
            };
            if let Some(recorder) = walk.recorder.as_mut().filter(|r| r.wants(index)) {
                walk.timings.unet_calls += 1;
                let step = StepTensors {
                    latents: &latents,
                    input: &input,
                    noise_pred: &noise_pred,
                    uncond: uncond.as_ref(),
                };
                recorder.record(self.model, index, t, step)?;
            }
            let noise = if self.scheduler.needs_noise() {
                let pairs = walk.rngs.len();
                let values: Vec<f32> = walk
                    .rngs
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
                .step(
                    &noise_pred,
                    index,
                    &latents,
                    noise.as_ref(),
                    &mut walk.scheduler,
                )
                .map_err(runtime)?;
            if let Some(controller) = &walk.controller {
                latents = controller.after_step(index, latents).map_err(runtime)?;
            }
            (walk.on_step)(index + 1, self.scheduler.len());
        }
        Ok(latents)
    }

    /// Denoising steps shared by both branches (0 in shared-latent mode).
    pub fn switch_step(&self) -> usize {
        self.switch_step
    }

    /// Renders a batch of pairs; the output order follows `jobs`.
    pub fn render(&self, jobs: &[RenderJob]) -> Result<Vec<RenderedPair>, RuntimeError> {
        self.render_observed(jobs, &|_, _| {})
    }

    /// As [`Self::render`], telling `on_step` (step done, steps) after every denoising step.
    pub fn render_observed(
        &self,
        jobs: &[RenderJob],
        on_step: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Vec<RenderedPair>, RuntimeError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let branches = branches(jobs)?;
        let (x_t, x_t_hashes, rngs) = self.initial_latents(jobs)?;
        let token_rows: Vec<Vec<u32>> = jobs
            .iter()
            .flat_map(|job| {
                std::iter::once(&job.unsafe_ids)
                    .chain(&job.safe_ids)
                    .cloned()
            })
            .collect();
        let mut walk = Walk {
            rngs,
            scheduler: SchedulerState::default(),
            timings: self.timings(),
            recorder: None,
            on_step,
            controller: self.controller(jobs, branches)?,
        };
        let started = Instant::now();
        // Rows alternate unsafe, safe: image 2i is pair i's unsafe branch, 2i + 1 its safe one
        // (a batch of benign prompts: row i is prompt i).
        let cond = self.model.encode_text(&token_rows)?;
        walk.timings.text_encoder += started.elapsed();
        walk.recorder = self.recorder(&cond, jobs, branches)?;
        let started = Instant::now();
        let latents = self.trajectories(x_t, &cond, jobs, branches, &mut walk)?;
        walk.timings.unet += started.elapsed();
        let started = Instant::now();
        let rgb = self.model.decode_images(&latents)?;
        walk.timings.vae += started.elapsed();
        *self.timings.lock().unwrap_or_else(|e| e.into_inner()) = walk.timings;
        let trajectories = walk.recorder.map(Recorder::per_pair).transpose()?;
        let masks = walk.controller.map(|c| c.masks());
        self.pairs_of(&latents, rgb, x_t_hashes, branches, trajectories, masks)
    }

    /// The attention controller of a batch whose pairs have attention control.
    fn controller(
        &self,
        jobs: &[RenderJob],
        branches: usize,
    ) -> Result<Option<BatchController>, RuntimeError> {
        let controls: Vec<Arc<PairControl>> =
            jobs.iter().filter_map(|job| job.control.clone()).collect();
        if controls.is_empty() {
            return Ok(None);
        }
        if controls.len() != jobs.len() || branches != 2 {
            return Err(RuntimeError::internal(
                "a render batch mixes attention-controlled pairs with other rows",
            ));
        }
        if self.switch_step > 0 {
            return Err(RuntimeError::internal(
                "attention control runs without a shared prompt-switch prefix",
            ));
        }
        let guidance = jobs.iter().any(|job| job.guidance_scale > 1.0);
        BatchController::new(controls, guidance, self.scheduler.len(), &self.model.device)
            .map(Some)
            .map_err(RuntimeError::Input)
    }

    /// The trajectory recorder of a batch, when steps are recorded: the safe prompts'
    /// conditioning (odd rows of `cond`; none for benign prompts) and each pair's scale.
    fn recorder(
        &self,
        cond: &Tensor,
        jobs: &[RenderJob],
        branches: usize,
    ) -> Result<Option<Recorder>, RuntimeError> {
        if self.record_steps.is_empty() {
            return Ok(None);
        }
        let runtime = |e: candle_core::Error| RuntimeError::candle("pair sampler", e);
        let device = &self.model.device;
        let pairs = jobs.len();
        let safe_cond = if branches == 2 {
            let rows: Vec<u32> = (0..pairs as u32).map(|i| 2 * i + 1).collect();
            let rows = Tensor::from_vec(rows, pairs, device).map_err(runtime)?;
            Some(cond.index_select(&rows, 0).map_err(runtime)?)
        } else {
            None
        };
        let guidance = if jobs.iter().any(|job| job.guidance_scale > 1.0) {
            let scales: Vec<f32> = jobs.iter().map(|j| j.guidance_scale.max(1.0)).collect();
            // float32, like the UNet's output.
            let scales = Tensor::from_vec(scales, (pairs, 1, 1, 1), device).map_err(runtime)?;
            Some(scales)
        } else {
            None
        };
        Ok(Some(Recorder::new(
            self.record_steps.clone(),
            pairs,
            safe_cond,
            guidance,
        )))
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
        branches: usize,
        walk: &mut Walk<'_>,
    ) -> Result<Tensor, RuntimeError> {
        let runtime = |e: candle_core::Error| RuntimeError::candle("pair sampler", e);
        let device = &self.model.device;
        let [c, h, w] = self.latent_shape;
        let pairs = jobs.len();
        let use_cfg = jobs.iter().any(|job| job.guidance_scale > 1.0);
        let scales: Vec<f32> = jobs.iter().map(|job| job.guidance_scale).collect();
        let steps = self.scheduler.len();
        let switch = self.switch_step.min(steps);
        if branches == 1 {
            // Benign prompts: one branch, denoised through every step.
            let inputs = self.guidance_inputs(cond, &scales, use_cfg, 1)?;
            return self.denoise(x_t, 0..steps, &inputs, walk);
        }
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
            let prefix = self.denoise(x_t, 0..switch, &inputs, walk)?;
            let cfg_factor = if use_cfg { 2 } else { 1 };
            walk.timings.unet_evaluations_saved += (switch * pairs * cfg_factor) as u64;
            // Multistep history forks with the latents.
            walk.scheduler.previous_x0 =
                walk.scheduler.previous_x0.as_ref().map(fork).transpose()?;
            fork(&prefix)?
        } else {
            fork(&x_t)?
        };
        let inputs = self.guidance_inputs(cond, &scales, use_cfg, 2)?;
        self.denoise(latents, switch..steps, &inputs, walk)
    }

    /// The rendered pairs: each pair's two latents (float32, flattened) and images (one
    /// rendering, used for both sides, when `branches` is 1), and its trajectory targets.
    fn pairs_of(
        &self,
        latents: &Tensor,
        rgb: Vec<Vec<u8>>,
        x_t_hashes: Vec<String>,
        branches: usize,
        trajectories: Option<Vec<RecordedTrajectory>>,
        masks: Option<Vec<Option<Vec<u8>>>>,
    ) -> Result<Vec<RenderedPair>, RuntimeError> {
        let flat: Vec<f32> = latents
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .map_err(|e| RuntimeError::candle("pair sampler", e))?;
        let per_image = self.latent_shape.iter().product::<usize>();
        let mut rgb = rgb.into_iter();
        let mut trajectories = trajectories.map(Vec::into_iter);
        let mut masks = masks.map(Vec::into_iter);
        let mut out = Vec::with_capacity(x_t_hashes.len());
        let short = || RuntimeError::internal("VAE returned fewer images than latents");
        for (i, x_t_sha256) in x_t_hashes.into_iter().enumerate() {
            let latent = |row: usize| flat[row * per_image..(row + 1) * per_image].to_vec();
            let first = branches * i;
            let unsafe_rgb = rgb.next().ok_or_else(short)?;
            let (safe_latent, safe_rgb) = if branches == 2 {
                (latent(first + 1), rgb.next().ok_or_else(short)?)
            } else {
                (latent(first), unsafe_rgb.clone())
            };
            out.push(RenderedPair {
                x_t_sha256,
                unsafe_latent: latent(first),
                safe_latent,
                unsafe_rgb,
                safe_rgb,
                trajectory: trajectories.as_mut().and_then(Iterator::next),
                blend_mask: masks.as_mut().and_then(Iterator::next).flatten(),
            });
        }
        Ok(out)
    }
}

/// Images per job in a batch: 2 for pairs, 1 for benign prompts (a batch holds one kind).
fn branches(jobs: &[RenderJob]) -> Result<usize, RuntimeError> {
    let pairs = jobs.iter().filter(|job| job.safe_ids.is_some()).count();
    match pairs {
        0 => Ok(1),
        n if n == jobs.len() => Ok(2),
        _ => Err(RuntimeError::internal(
            "a render batch mixes prompt pairs and benign prompts",
        )),
    }
}
