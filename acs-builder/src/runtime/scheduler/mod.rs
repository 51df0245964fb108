//! Noise schedulers, written to follow diffusers' arithmetic (float32 betas from torch's
//! linspace, float32 cumulative products, scalar-tensor updates) so latents match it.

mod ddim;
mod dpm_solver;
mod euler;
mod schedule;

use std::fmt;
use std::str::FromStr;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

pub use ddim::DdimScheduler;
pub use dpm_solver::DpmSolverPlusPlus2M;
pub use euler::EulerScheduler;
pub use schedule::{alphas_cumprod, Prediction};

use crate::runtime::error::RuntimeError;
use crate::runtime::model::config::NoiseSchedule;
use schedule::scalar;

/// The schedulers acs runs, by name (the one list of names: parsed, written and dispatched on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SchedulerKind {
    /// Deterministic DDIM (diffusers' `DDIMScheduler`).
    #[serde(rename = "ddim")]
    Ddim,
    /// Deterministic Euler (`EulerDiscreteScheduler`, SD-Turbo's scheduler).
    #[serde(rename = "euler")]
    Euler,
    /// Euler ancestral (`EulerAncestralDiscreteScheduler`), noise drawn from the pair's seed.
    #[serde(rename = "euler-ancestral")]
    EulerAncestral,
    /// DPM-Solver++ 2M (`DPMSolverMultistepScheduler`).
    #[serde(rename = "dpmpp-2m")]
    DpmPlusPlus2M,
    /// DPM-Solver++ 2M on Karras sigmas.
    #[serde(rename = "dpmpp-2m-karras")]
    DpmPlusPlus2MKarras,
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.serialize(f)
    }
}

impl FromStr for SchedulerKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        crate::runtime::parse_name(name)
    }
}

/// A scheduler ready to step, one variant per arithmetic.
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
    /// A `kind` scheduler for `steps` inference steps of `schedule`.
    pub fn new(
        kind: SchedulerKind,
        schedule: &NoiseSchedule,
        steps: usize,
    ) -> Result<Self, RuntimeError> {
        Ok(match kind {
            SchedulerKind::Ddim => Self::Ddim(DdimScheduler::new(schedule, steps)?),
            SchedulerKind::Euler => Self::Euler(EulerScheduler::new(schedule, steps, false)?),
            SchedulerKind::EulerAncestral => {
                Self::Euler(EulerScheduler::new(schedule, steps, true)?)
            }
            SchedulerKind::DpmPlusPlus2M => {
                Self::DpmPlusPlus2M(DpmSolverPlusPlus2M::new(schedule, steps, false)?)
            }
            SchedulerKind::DpmPlusPlus2MKarras => {
                Self::DpmPlusPlus2M(DpmSolverPlusPlus2M::new(schedule, steps, true)?)
            }
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_names_round_trip() {
        for (kind, name) in [
            (SchedulerKind::Ddim, "ddim"),
            (SchedulerKind::Euler, "euler"),
            (SchedulerKind::EulerAncestral, "euler-ancestral"),
            (SchedulerKind::DpmPlusPlus2M, "dpmpp-2m"),
            (SchedulerKind::DpmPlusPlus2MKarras, "dpmpp-2m-karras"),
        ] {
            assert_eq!(kind.to_string(), name);
            assert_eq!(serde_json::to_value(kind).unwrap(), name);
            let parsed: SchedulerKind = serde_json::from_value(name.into()).unwrap();
            assert_eq!(parsed, kind);
        }
    }
}
