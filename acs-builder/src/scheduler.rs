//! Noise schedulers, written to follow diffusers' arithmetic (float32 betas from torch's
//! linspace, float32 cumulative products, scalar-tensor updates) so latents match it.

use candle_core::{Device, Tensor};

use crate::error::AcsError;
use crate::model::config::NoiseSchedule;

/// `torch.linspace(start, end, steps, dtype=torch.float32)`, including its two-sided formula.
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                start + step * i as f32
            } else {
                end - step * (steps - i - 1) as f32
            }
        })
        .collect()
}

/// `alphas_cumprod` of a diffusers noise schedule.
pub fn alphas_cumprod(schedule: &NoiseSchedule) -> Vec<f32> {
    let t = schedule.num_train_timesteps;
    let betas: Vec<f32> = match schedule.beta_schedule.as_str() {
        "linear" => linspace_f32(schedule.beta_start as f32, schedule.beta_end as f32, t),
        _ => linspace_f32(
            schedule.beta_start.sqrt() as f32,
            schedule.beta_end.sqrt() as f32,
            t,
        )
        .into_iter()
        .map(|b| b * b)
        .collect(),
    };
    let mut product = 1.0f32;
    betas
        .iter()
        .map(|beta| {
            product *= 1.0 - beta;
            product
        })
        .collect()
}

/// Rejects step counts the schedule cannot space; returns the training timestep count.
fn check_steps(schedule: &NoiseSchedule, steps: usize) -> Result<usize, AcsError> {
    let t = schedule.num_train_timesteps;
    if steps == 0 || steps > t {
        return Err(AcsError::input(format!(
            "[sampling].steps: must be 1..={t} for this model (got {steps})"
        )));
    }
    Ok(t)
}

/// sigma(t) = sqrt((1 - alpha_bar) / alpha_bar) for every training timestep, in float32.
fn train_sigmas(schedule: &NoiseSchedule) -> Vec<f32> {
    alphas_cumprod(schedule)
        .iter()
        .map(|a| ((1.0 - a) / a).sqrt())
        .collect()
}

/// The inference timesteps of diffusers' `timestep_spacing` (leading, trailing, linspace),
/// noisiest first; linspace values are left unrounded for the schedulers that keep fractions.
fn spaced_timesteps(schedule: &NoiseSchedule, steps: usize) -> Vec<f64> {
    let t = schedule.num_train_timesteps;
    match schedule.timestep_spacing.as_str() {
        "linspace" => (0..steps)
            .rev()
            .map(|i| {
                if steps == 1 {
                    0.0
                } else {
                    i as f64 * (t - 1) as f64 / (steps - 1) as f64
                }
            })
            .collect(),
        "trailing" => {
            let stride = t as f64 / steps as f64;
            (0..steps)
                .map(|i| (t as f64 - i as f64 * stride).round() - 1.0)
                .collect()
        }
        _ => {
            let ratio = t / steps;
            (0..steps)
                .rev()
                .map(|i| (i * ratio + schedule.steps_offset) as f64)
                .collect()
        }
    }
}

/// What the UNet predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    /// The added noise.
    Epsilon,
    /// The velocity v = sqrt(a) * eps - sqrt(1 - a) * x0.
    VPrediction,
}

impl Prediction {
    /// The prediction type a scheduler config names.
    fn of(schedule: &NoiseSchedule) -> Self {
        if schedule.prediction_type == "v_prediction" {
            Self::VPrediction
        } else {
            Self::Epsilon
        }
    }
}

/// Deterministic DDIM (eta = 0), as diffusers' `DDIMScheduler`.
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    timesteps: Vec<usize>,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    step_ratio: usize,
    prediction: Prediction,
    clip_x0: Option<f32>,
}

impl DdimScheduler {
    /// A scheduler for `steps` inference steps.
    pub fn new(schedule: &NoiseSchedule, steps: usize) -> Result<Self, AcsError> {
        let t = check_steps(schedule, steps)?;
        let step_ratio = t / steps;
        let timesteps: Vec<usize> = spaced_timesteps(schedule, steps)
            .into_iter()
            .map(|x| x.round_ties_even() as usize)
            .collect();
        if let Some(bad) = timesteps.iter().find(|&&ts| ts >= t) {
            return Err(AcsError::input(format!(
                "scheduler: timestep {bad} is out of range for {t} training steps (steps_offset {})",
                schedule.steps_offset
            )));
        }
        let alphas_cumprod = alphas_cumprod(schedule);
        // Keys absent from the config (one written for another scheduler class) take
        // DDIMScheduler's defaults, as `DDIMScheduler.from_config` does.
        let final_alpha_cumprod = if schedule.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            alphas_cumprod[0]
        };
        let clip_x0 = schedule
            .clip_sample
            .unwrap_or(true)
            .then_some(schedule.clip_sample_range as f32);
        let prediction = Prediction::of(schedule);
        Ok(Self {
            timesteps,
            alphas_cumprod,
            final_alpha_cumprod,
            step_ratio,
            prediction,
            clip_x0,
        })
    }

    /// The timesteps to visit, from noisiest to cleanest.
    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// One denoising step from `sample` at `timestep` given the model output.
    pub fn step(
        &self,
        model_output: &Tensor,
        timestep: usize,
        sample: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let alpha_t = self.alphas_cumprod[timestep];
        let alpha_prev = timestep
            .checked_sub(self.step_ratio)
            .map(|prev| self.alphas_cumprod[prev])
            .unwrap_or(self.final_alpha_cumprod);
        let beta_t = 1.0 - alpha_t;
        let device = sample.device();
        let s = |v: f32| scalar(v, device);
        let (pred_x0, pred_eps) = match self.prediction {
            Prediction::Epsilon => {
                let x0 = sample
                    .broadcast_sub(&model_output.broadcast_mul(&s(beta_t.sqrt())?)?)?
                    .broadcast_div(&s(alpha_t.sqrt())?)?;
                (x0, model_output.clone())
            }
            Prediction::VPrediction => {
                let x0 = sample
                    .broadcast_mul(&s(alpha_t.sqrt())?)?
                    .broadcast_sub(&model_output.broadcast_mul(&s(beta_t.sqrt())?)?)?;
                let eps = model_output
                    .broadcast_mul(&s(alpha_t.sqrt())?)?
                    .broadcast_add(&sample.broadcast_mul(&s(beta_t.sqrt())?)?)?;
                (x0, eps)
            }
        };
        let pred_x0 = match self.clip_x0 {
            Some(range) => pred_x0.clamp(-range, range)?,
            None => pred_x0,
        };
        let direction = pred_eps.broadcast_mul(&s((1.0 - alpha_prev).sqrt())?)?;
        pred_x0
            .broadcast_mul(&s(alpha_prev.sqrt())?)?
            .broadcast_add(&direction)
    }
}

/// Euler, as diffusers' `EulerDiscreteScheduler` (deterministic) and
/// `EulerAncestralDiscreteScheduler` (ancestral). The ancestral noise of each step is supplied
/// by the caller, so both branches of a pair can share it.
#[derive(Debug, Clone)]
pub struct EulerScheduler {
    timesteps: Vec<f32>,
    sigmas: Vec<f32>,
    init_noise_sigma: f32,
    prediction: Prediction,
    ancestral: bool,
}

impl EulerScheduler {
    /// A scheduler for `steps` inference steps.
    pub fn new(schedule: &NoiseSchedule, steps: usize, ancestral: bool) -> Result<Self, AcsError> {
        let t = check_steps(schedule, steps)?;
        let timesteps: Vec<f32> = spaced_timesteps(schedule, steps)
            .into_iter()
            .map(|x| x as f32)
            .collect();
        // sigma(t) = sqrt((1 - alpha_bar) / alpha_bar) in float32, interpolated at the
        // (possibly fractional) timesteps in float64 as numpy's interp does.
        let train_sigmas = train_sigmas(schedule);
        let interp = |x: f32| -> Result<f32, AcsError> {
            let x = x as f64;
            if !(0.0..=(t - 1) as f64).contains(&x) {
                return Err(AcsError::input(format!(
                    "scheduler: timestep {x} is out of range for {t} training steps"
                )));
            }
            let lo = x.floor() as usize;
            let hi = (lo + 1).min(t - 1);
            let frac = x - lo as f64;
            let (a, b) = (train_sigmas[lo] as f64, train_sigmas[hi] as f64);
            Ok((a + (b - a) * frac) as f32)
        };
        let mut sigmas = timesteps
            .iter()
            .map(|&ts| interp(ts))
            .collect::<Result<Vec<_>, _>>()?;
        sigmas.push(0.0);
        let max_sigma = sigmas.iter().copied().fold(0.0f32, f32::max);
        let init_noise_sigma = match schedule.timestep_spacing.as_str() {
            "linspace" | "trailing" => max_sigma,
            _ => (max_sigma * max_sigma + 1.0).sqrt(),
        };
        let prediction = Prediction::of(schedule);
        Ok(Self {
            timesteps,
            sigmas,
            init_noise_sigma,
            prediction,
            ancestral,
        })
    }

    /// `noise` is used (and required) only by the ancestral variant.
    fn step(
        &self,
        model_output: &Tensor,
        index: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let device = sample.device();
        let s = |v: f32| scalar(v, device);
        let sigma = self.sigmas[index];
        let pred_x0 = match self.prediction {
            Prediction::Epsilon => {
                sample.broadcast_sub(&model_output.broadcast_mul(&s(sigma)?)?)?
            }
            Prediction::VPrediction => {
                let c_out = -sigma / (sigma * sigma + 1.0).sqrt();
                model_output
                    .broadcast_mul(&s(c_out)?)?
                    .broadcast_add(&sample.broadcast_div(&s(sigma * sigma + 1.0)?)?)?
            }
        };
        let sigma_from = sigma;
        let sigma_to = self.sigmas[index + 1];
        let derivative = sample.broadcast_sub(&pred_x0)?.broadcast_div(&s(sigma)?)?;
        if !self.ancestral {
            return sample.broadcast_add(&derivative.broadcast_mul(&s(sigma_to - sigma)?)?);
        }
        let noise = noise
            .ok_or_else(|| candle_core::Error::Msg("euler-ancestral step without noise".into()))?;
        let sigma_up = (sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to)
            / (sigma_from * sigma_from))
            .sqrt();
        let sigma_down = (sigma_to * sigma_to - sigma_up * sigma_up).sqrt();
        let dt = sigma_down - sigma;
        let prev = sample.broadcast_add(&derivative.broadcast_mul(&s(dt)?)?)?;
        prev.broadcast_add(&noise.broadcast_mul(&s(sigma_up)?)?)
    }
}

/// DPM-Solver++ 2M (multistep, midpoint, first order on the final step), as diffusers'
/// `DPMSolverMultistepScheduler` with its defaults, optionally on Karras sigmas.
#[derive(Debug, Clone)]
pub struct DpmSolverPlusPlus2M {
    timesteps: Vec<f32>,
    sigmas: Vec<f32>,
    prediction: Prediction,
}

/// (alpha_t, sigma_t, lambda_t) of a sigma, in float32 as diffusers computes them.
fn alpha_sigma_lambda(sigma: f32) -> (f32, f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    let sigma_t = sigma * alpha;
    (alpha, sigma_t, alpha.ln() - sigma_t.ln())
}

impl DpmSolverPlusPlus2M {
    /// A scheduler for `steps` inference steps; `karras` spaces the sigmas as Karras et al.
    pub fn new(schedule: &NoiseSchedule, steps: usize, karras: bool) -> Result<Self, AcsError> {
        let t = schedule.num_train_timesteps;
        if steps == 0 || steps >= t {
            return Err(AcsError::input(format!(
                "[sampling].steps: must be 1..{t} for this model (got {steps})"
            )));
        }
        let train_sigmas = train_sigmas(schedule);
        let (timesteps, mut sigmas): (Vec<f32>, Vec<f32>) = if karras {
            let log_sigmas: Vec<f32> = train_sigmas.iter().map(|s| s.ln()).collect();
            let sigma_min = train_sigmas[0] as f64;
            let sigma_max = train_sigmas[t - 1] as f64;
            let rho = 7.0;
            let (min_inv, max_inv) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
            let sigmas: Vec<f64> = (0..steps)
                .map(|i| {
                    let ramp = if steps == 1 {
                        0.0
                    } else {
                        i as f64 / (steps - 1) as f64
                    };
                    (max_inv + ramp * (min_inv - max_inv)).powf(rho)
                })
                .collect();
            let timesteps = sigmas
                .iter()
                .map(|&sigma| sigma_to_t(sigma, &log_sigmas).round_ties_even() as f32)
                .collect();
            (timesteps, sigmas.iter().map(|&s| s as f32).collect())
        } else {
            let timesteps: Vec<usize> = match schedule.timestep_spacing.as_str() {
                "linspace" => {
                    let stride = (t - 1) as f64 / steps as f64;
                    (1..=steps)
                        .rev()
                        .map(|i| (i as f64 * stride).round_ties_even() as usize)
                        .collect()
                }
                "trailing" => {
                    let stride = t as f64 / steps as f64;
                    (0..steps)
                        .map(|i| {
                            ((t as f64 - i as f64 * stride).round() as usize).saturating_sub(1)
                        })
                        .collect()
                }
                _ => {
                    let ratio = t / (steps + 1);
                    (1..=steps)
                        .rev()
                        .map(|i| i * ratio + schedule.steps_offset)
                        .collect()
                }
            };
            if let Some(bad) = timesteps.iter().find(|&&ts| ts >= t) {
                return Err(AcsError::input(format!(
                    "scheduler: timestep {bad} is out of range for {t} training steps"
                )));
            }
            let sigmas = timesteps.iter().map(|&ts| train_sigmas[ts]).collect();
            (timesteps.iter().map(|&ts| ts as f32).collect(), sigmas)
        };
        sigmas.push(0.0);
        let prediction = Prediction::of(schedule);
        Ok(Self {
            timesteps,
            sigmas,
            prediction,
        })
    }

    /// The model output converted to an x0 prediction (diffusers' `convert_model_output`).
    fn x0_prediction(
        &self,
        model_output: &Tensor,
        index: usize,
        sample: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let device = sample.device();
        let (alpha, sigma, _) = alpha_sigma_lambda(self.sigmas[index]);
        match self.prediction {
            Prediction::Epsilon => sample
                .broadcast_sub(&model_output.broadcast_mul(&scalar(sigma, device)?)?)?
                .broadcast_div(&scalar(alpha, device)?),
            Prediction::VPrediction => sample
                .broadcast_mul(&scalar(alpha, device)?)?
                .broadcast_sub(&model_output.broadcast_mul(&scalar(sigma, device)?)?),
        }
    }

    fn step(
        &self,
        model_output: &Tensor,
        index: usize,
        sample: &Tensor,
        previous_x0: Option<&Tensor>,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let device = sample.device();
        let s = |v: f32| scalar(v, device);
        let x0 = self.x0_prediction(model_output, index, sample)?;
        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[index + 1]);
        let (_, sigma_s0, lambda_s0) = alpha_sigma_lambda(self.sigmas[index]);
        let h = lambda_t - lambda_s0;
        let coefficient = alpha_t * ((-h).exp() - 1.0);
        let carried = sample.broadcast_mul(&s(sigma_t / sigma_s0)?)?;
        // First order on the first step and (final sigma 0) on the last one.
        let last = index + 1 == self.timesteps.len();
        let next = match previous_x0 {
            Some(m1) if !last && index > 0 => {
                let (_, _, lambda_s1) = alpha_sigma_lambda(self.sigmas[index - 1]);
                let r0 = (lambda_s0 - lambda_s1) / h;
                let d1 = x0.broadcast_sub(m1)?.broadcast_mul(&s(1.0 / r0)?)?;
                carried
                    .broadcast_sub(&x0.broadcast_mul(&s(coefficient)?)?)?
                    .broadcast_sub(&d1.broadcast_mul(&s(0.5 * coefficient)?)?)?
            }
            _ => carried.broadcast_sub(&x0.broadcast_mul(&s(coefficient)?)?)?,
        };
        Ok((next, x0))
    }
}

/// diffusers' `_sigma_to_t`: the (fractional) training timestep of a sigma, by linear
/// interpolation in log-sigma.
fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let n = log_sigmas.len();
    let count = log_sigmas
        .iter()
        .filter(|&&l| log_sigma - l as f64 >= 0.0)
        .count();
    let low = count.saturating_sub(1).min(n - 2);
    let high = low + 1;
    let (l, h) = (log_sigmas[low] as f64, log_sigmas[high] as f64);
    let w = ((l - log_sigma) / (l - h)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * high as f64
}

/// The schedulers acs runs, by manifest name.
#[derive(Debug, Clone)]
pub enum Scheduler {
    /// `ddim`: deterministic DDIM.
    Ddim(DdimScheduler),
    /// `euler`: deterministic Euler (SD-Turbo's scheduler).
    /// `euler-ancestral`: Euler ancestral with caller-supplied noise.
    Euler(EulerScheduler),
    /// `dpmpp-2m` / `dpmpp-2m-karras`: DPM-Solver++ 2M.
    DpmPlusPlus2M(DpmSolverPlusPlus2M),
}

/// What a multistep scheduler carries from one step to the next: the previous x0 prediction,
/// one row per latent row (so prompt-switch forks it together with the latents).
#[derive(Debug, Clone, Default)]
pub struct SchedulerState {
    /// The previous step's x0 prediction, if the scheduler keeps one.
    pub previous_x0: Option<Tensor>,
}

impl Scheduler {
    /// The scheduler named in `[sampling].scheduler`.
    pub fn new(name: &str, schedule: &NoiseSchedule, steps: usize) -> Result<Self, AcsError> {
        match name {
            "ddim" => Ok(Self::Ddim(DdimScheduler::new(schedule, steps)?)),
            "euler" => Ok(Self::Euler(EulerScheduler::new(schedule, steps, false)?)),
            "euler-ancestral" => Ok(Self::Euler(EulerScheduler::new(schedule, steps, true)?)),
            "dpmpp-2m" => Ok(Self::DpmPlusPlus2M(DpmSolverPlusPlus2M::new(
                schedule, steps, false,
            )?)),
            "dpmpp-2m-karras" => Ok(Self::DpmPlusPlus2M(DpmSolverPlusPlus2M::new(
                schedule, steps, true,
            )?)),
            other => Err(AcsError::input(format!(
                "[sampling].scheduler: `{other}` is not supported"
            ))),
        }
    }

    /// Number of denoising steps.
    pub fn len(&self) -> usize {
        match self {
            Self::Ddim(s) => s.timesteps.len(),
            Self::Euler(s) => s.timesteps.len(),
            Self::DpmPlusPlus2M(s) => s.timesteps.len(),
        }
    }

    /// True when there are no steps (never, for a valid configuration).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The timestep the UNet is conditioned on at step `index`.
    pub fn model_timestep(&self, index: usize) -> f64 {
        match self {
            Self::Ddim(s) => s.timesteps[index] as f64,
            Self::Euler(s) => s.timesteps[index] as f64,
            Self::DpmPlusPlus2M(s) => s.timesteps[index] as f64,
        }
    }

    /// The factor x_T is multiplied by.
    pub fn init_noise_sigma(&self) -> f32 {
        match self {
            Self::Ddim(_) | Self::DpmPlusPlus2M(_) => 1.0,
            Self::Euler(s) => s.init_noise_sigma,
        }
    }

    /// Whether `step` needs fresh noise at every step.
    pub fn needs_noise(&self) -> bool {
        matches!(self, Self::Euler(s) if s.ancestral)
    }

    /// The UNet input for `sample` at step `index`.
    pub fn scale_model_input(&self, sample: &Tensor, index: usize) -> candle_core::Result<Tensor> {
        match self {
            Self::Ddim(_) | Self::DpmPlusPlus2M(_) => Ok(sample.clone()),
            Self::Euler(s) => {
                let sigma = s.sigmas[index];
                sample.broadcast_div(&scalar((sigma * sigma + 1.0).sqrt(), sample.device())?)
            }
        }
    }

    /// One step from `sample` at step `index`; `noise` is required when [`Self::needs_noise`];
    /// `state` carries multistep history between calls.
    pub fn step(
        &self,
        model_output: &Tensor,
        index: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
        state: &mut SchedulerState,
    ) -> candle_core::Result<Tensor> {
        match self {
            Self::DpmPlusPlus2M(s) => {
                let (next, x0) = s.step(model_output, index, sample, state.previous_x0.as_ref())?;
                state.previous_x0 = Some(x0);
                Ok(next)
            }
            Self::Ddim(s) => s.step(model_output, s.timesteps[index], sample),
            Self::Euler(s) => s.step(model_output, index, sample, noise),
        }
    }
}

fn scalar(value: f32, device: &Device) -> candle_core::Result<Tensor> {
    Tensor::new(value, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd_schedule() -> NoiseSchedule {
        NoiseSchedule {
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: "scaled_linear".into(),
            num_train_timesteps: 1000,
            steps_offset: 1,
            set_alpha_to_one: Some(false),
            clip_sample: Some(false),
            clip_sample_range: 1.0,
            prediction_type: "epsilon".into(),
            timestep_spacing: "leading".into(),
        }
    }

    #[test]
    fn leading_timesteps_match_diffusers() {
        let ddim = DdimScheduler::new(&sd_schedule(), 25).unwrap();
        assert_eq!(&ddim.timesteps()[..3], &[961, 921, 881]);
        assert_eq!(*ddim.timesteps().last().unwrap(), 1);
        let mut trailing = sd_schedule();
        trailing.timestep_spacing = "trailing".into();
        let ddim = DdimScheduler::new(&trailing, 4).unwrap();
        assert_eq!(ddim.timesteps(), &[999, 749, 499, 249]);
    }

    #[test]
    fn alphas_cumprod_matches_diffusers_endpoints() {
        let ac = alphas_cumprod(&sd_schedule());
        // diffusers: scheduler.alphas_cumprod[0] = 0.99915, [-1] = 0.0046600
        assert!((ac[0] - 0.99915).abs() < 1e-6);
        assert!((ac[999] - 0.004_660_0).abs() < 2e-5, "{}", ac[999]);
    }

    #[test]
    fn euler_ancestral_sigmas_match_diffusers() {
        let euler = EulerScheduler::new(&sd_schedule(), 25, true).unwrap();
        assert_eq!(&euler.timesteps[..2], &[961.0, 921.0]);
        assert_eq!(euler.sigmas.len(), 26);
        assert_eq!(*euler.sigmas.last().unwrap(), 0.0);
        // diffusers 0.42.1 (2026-11-28): sigmas[:2] = [11.676050186157227, 9.338079452514648],
        // init_noise_sigma = 11.718794822692871. The last bits differ: torch's vectorised
        // linspace rounds differently from its scalar formula, which acs follows.
        let close = |a: f32, b: f32| ((a - b) / b).abs() < 2e-6;
        assert!(close(euler.sigmas[0], 11.676_05), "{}", euler.sigmas[0]);
        assert!(close(euler.sigmas[1], 9.338_079), "{}", euler.sigmas[1]);
        assert!(
            close(euler.init_noise_sigma, 11.718_795),
            "{}",
            euler.init_noise_sigma
        );
    }

    #[test]
    fn dpm_solver_timesteps_match_diffusers() {
        // diffusers 0.42.1 DPMSolverMultistepScheduler, 10 steps, on the SD schedule.
        let plain = DpmSolverPlusPlus2M::new(&sd_schedule(), 10, false).unwrap();
        assert_eq!(&plain.timesteps[..4], &[901.0, 811.0, 721.0, 631.0]);
        assert_eq!(plain.sigmas.len(), 11);
        let karras = DpmSolverPlusPlus2M::new(&sd_schedule(), 10, true).unwrap();
        assert_eq!(&karras.timesteps[..4], &[999.0, 916.0, 815.0, 687.0]);
        assert_eq!(*karras.sigmas.last().unwrap(), 0.0);
    }

    #[test]
    fn a_perfect_noise_prediction_recovers_x0() {
        let ddim = DdimScheduler::new(&sd_schedule(), 10).unwrap();
        let device = Device::Cpu;
        let x0 = Tensor::new(&[0.5f32, -1.0, 2.0], &device).unwrap();
        let eps = Tensor::new(&[0.3f32, 0.1, -0.7], &device).unwrap();
        let t = ddim.timesteps()[0];
        let a = ddim.alphas_cumprod[t];
        let xt =
            ((&x0 * a.sqrt() as f64).unwrap() + (&eps * (1.0 - a).sqrt() as f64).unwrap()).unwrap();
        let prev = ddim.step(&eps, t, &xt).unwrap();
        let a_prev = ddim.alphas_cumprod[t - 100];
        let expected = ((&x0 * a_prev.sqrt() as f64).unwrap()
            + (&eps * (1.0 - a_prev).sqrt() as f64).unwrap())
        .unwrap();
        let diff = (prev - expected)
            .unwrap()
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "{diff}");
    }
}
