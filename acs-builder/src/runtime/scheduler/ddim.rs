//! Deterministic DDIM.

use candle_core::Tensor;

use super::schedule::{alphas_cumprod, check_steps, scalar, spaced_timesteps, Prediction};
use crate::runtime::error::RuntimeError;
use crate::runtime::model::config::NoiseSchedule;

/// Deterministic DDIM (eta = 0), as diffusers' `DDIMScheduler`.
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    pub(super) timesteps: Vec<usize>,
    pub(super) alphas_cumprod: Vec<f32>,
    pub(super) final_alpha_cumprod: f32,
    pub(super) step_ratio: usize,
    pub(super) prediction: Prediction,
    pub(super) clip_x0: Option<f32>,
}

impl DdimScheduler {
    /// A scheduler for `steps` inference steps.
    pub fn new(schedule: &NoiseSchedule, steps: usize) -> Result<Self, RuntimeError> {
        let t = check_steps(schedule, steps)?;
        let step_ratio = t / steps;
        let timesteps: Vec<usize> = spaced_timesteps(schedule, steps)
            .into_iter()
            .map(|x| x.round_ties_even() as usize)
            .collect();
        if let Some(bad) = timesteps.iter().find(|&&ts| ts >= t) {
            return Err(RuntimeError::input(format!(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::scheduler::schedule::tests::sd_schedule;
    use candle_core::Device;

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
