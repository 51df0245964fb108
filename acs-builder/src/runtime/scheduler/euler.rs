//! Euler and Euler ancestral.

use candle_core::Tensor;

use super::schedule::{check_steps, scalar, spaced_timesteps, train_sigmas, Prediction};
use crate::runtime::error::RuntimeError;
use crate::runtime::model::config::NoiseSchedule;

/// Euler, as diffusers' `EulerDiscreteScheduler` (deterministic) and
/// `EulerAncestralDiscreteScheduler` (ancestral). The ancestral noise of each step is supplied
/// by the caller, so both branches of a pair can share it.
#[derive(Debug, Clone)]
pub struct EulerScheduler {
    pub(super) timesteps: Vec<f32>,
    pub(super) sigmas: Vec<f32>,
    pub(super) init_noise_sigma: f32,
    pub(super) prediction: Prediction,
    pub(super) ancestral: bool,
}

impl EulerScheduler {
    /// A scheduler for `steps` inference steps.
    pub fn new(
        schedule: &NoiseSchedule,
        steps: usize,
        ancestral: bool,
    ) -> Result<Self, RuntimeError> {
        let t = check_steps(schedule, steps)?;
        let timesteps: Vec<f32> = spaced_timesteps(schedule, steps)
            .into_iter()
            .map(|x| x as f32)
            .collect();
        // sigma(t) = sqrt((1 - alpha_bar) / alpha_bar) in float32, interpolated at the
        // (possibly fractional) timesteps in float64 as numpy's interp does.
        let train_sigmas = train_sigmas(schedule);
        let interp = |x: f32| -> Result<f32, RuntimeError> {
            let x = x as f64;
            if !(0.0..=(t - 1) as f64).contains(&x) {
                return Err(RuntimeError::input(format!(
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
    pub(super) fn step(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::scheduler::schedule::tests::sd_schedule;

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
}
