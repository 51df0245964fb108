//! The noise schedule arithmetic the schedulers share: betas and cumulative alphas, timestep
//! spacing, training sigmas, prediction types.

use candle_core::{Device, Tensor};

use crate::runtime::error::{RuntimeError, Setting};
use crate::runtime::model::config::NoiseSchedule;

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
pub(super) fn check_steps(schedule: &NoiseSchedule, steps: usize) -> Result<usize, RuntimeError> {
    let t = schedule.num_train_timesteps;
    if steps == 0 || steps > t {
        return Err(RuntimeError::setting(
            Setting::Steps,
            format!("must be 1..={t} for this model (got {steps})"),
        ));
    }
    Ok(t)
}

/// sigma(t) = sqrt((1 - alpha_bar) / alpha_bar) for every training timestep, in float32.
pub(super) fn train_sigmas(schedule: &NoiseSchedule) -> Vec<f32> {
    alphas_cumprod(schedule)
        .iter()
        .map(|a| ((1.0 - a) / a).sqrt())
        .collect()
}

/// The inference timesteps of diffusers' `timestep_spacing` (leading, trailing, linspace),
/// noisiest first; linspace values are left unrounded for the schedulers that keep fractions.
pub(super) fn spaced_timesteps(schedule: &NoiseSchedule, steps: usize) -> Vec<f64> {
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
    pub(super) fn of(schedule: &NoiseSchedule) -> Self {
        if schedule.prediction_type == "v_prediction" {
            Self::VPrediction
        } else {
            Self::Epsilon
        }
    }
}

/// diffusers' `_sigma_to_t`: the (fractional) training timestep of a sigma, by linear
/// interpolation in log-sigma.
pub(super) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
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

pub(super) fn scalar(value: f32, device: &Device) -> candle_core::Result<Tensor> {
    Tensor::new(value, device)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn sd_schedule() -> NoiseSchedule {
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
    fn alphas_cumprod_matches_diffusers_endpoints() {
        let ac = alphas_cumprod(&sd_schedule());
        // diffusers: scheduler.alphas_cumprod[0] = 0.99915, [-1] = 0.0046600
        assert!((ac[0] - 0.99915).abs() < 1e-6);
        assert!((ac[999] - 0.004_660_0).abs() < 2e-5, "{}", ac[999]);
    }
}
