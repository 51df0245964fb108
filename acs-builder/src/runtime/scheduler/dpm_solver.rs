//! DPM-Solver++ 2M.

use candle_core::Tensor;

use super::schedule::{scalar, sigma_to_t, train_sigmas, Prediction};
use crate::runtime::error::{RuntimeError, Setting};
use crate::runtime::model::config::NoiseSchedule;

/// DPM-Solver++ 2M (multistep, midpoint, first order on the final step), as diffusers'
/// `DPMSolverMultistepScheduler` with its defaults, optionally on Karras sigmas.
#[derive(Debug, Clone)]
pub struct DpmSolverPlusPlus2M {
    pub(super) timesteps: Vec<f32>,
    pub(super) sigmas: Vec<f32>,
    pub(super) prediction: Prediction,
}

/// (alpha_t, sigma_t, lambda_t) of a sigma, in float32 as diffusers computes them.
fn alpha_sigma_lambda(sigma: f32) -> (f32, f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    let sigma_t = sigma * alpha;
    (alpha, sigma_t, alpha.ln() - sigma_t.ln())
}

impl DpmSolverPlusPlus2M {
    /// A scheduler for `steps` inference steps; `karras` spaces the sigmas as Karras et al.
    pub fn new(schedule: &NoiseSchedule, steps: usize, karras: bool) -> Result<Self, RuntimeError> {
        let t = schedule.num_train_timesteps;
        if steps == 0 || steps >= t {
            return Err(RuntimeError::setting(
                Setting::Steps,
                format!("must be 1..{t} for this model (got {steps})"),
            ));
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
                return Err(RuntimeError::input(format!(
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

    pub(super) fn step(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::scheduler::schedule::tests::sd_schedule;

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
}
