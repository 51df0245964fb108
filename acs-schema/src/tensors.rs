//! Typed views of a record's tensor columns (latents, trajectory targets, the latent change
//! mask): shapes plus float16 values, without an array library. [`F16Tensor::to_f32`] widens.

use half::f16;

use crate::error::SchemaError;
use crate::record::PairRecord;

/// The category of benign preservation rows (rendered once; safe side = unsafe side).
pub const BENIGN_CATEGORY: &str = "benign";

/// The category of the shapes demonstrator's pairs (a colour or shape swapped in a scene of
/// flat shapes): a demonstration of alignment, not one of the seven safety categories.
pub const SHAPES_CATEGORY: &str = "shapes";

/// A float16 tensor read from a little-endian binary column.
#[derive(Debug, Clone, PartialEq)]
pub struct F16Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub values: Vec<f16>,
}

impl F16Tensor {
    /// Decodes `bytes` (float16 little-endian) as a tensor of `shape`; `Err` names the
    /// mismatch.
    pub fn from_le_bytes(bytes: &[u8], shape: Vec<usize>) -> Result<Self, String> {
        let expected = shape.iter().product::<usize>() * 2;
        if bytes.len() != expected {
            return Err(format!(
                "{} bytes, expected {expected} (float16 of shape {shape:?})",
                bytes.len()
            ));
        }
        let values = bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]))
            .collect();
        Ok(Self { shape, values })
    }

    /// The values as float32.
    pub fn to_f32(&self) -> Vec<f32> {
        self.values.iter().map(|v| v.to_f32()).collect()
    }

    /// The `index`-th sub-tensor along the first dimension (e.g. one recorded step).
    pub fn slice(&self, index: usize) -> Option<&[f16]> {
        let (&outer, inner) = self.shape.split_first()?;
        let size = inner.iter().product::<usize>();
        (index < outer).then(|| &self.values[index * size..(index + 1) * size])
    }
}

/// The counterfactual trajectory targets of a row: at each recorded step k, the unsafe
/// branch's latent x_k and the guided UNet outputs of both prompts at that same x_k.
#[derive(Debug, Clone, PartialEq)]
pub struct Trajectory {
    /// Recorded step indices (0-based, ascending).
    pub steps: Vec<i32>,
    /// The scheduler timestep at each recorded step.
    pub timesteps: Vec<i32>,
    /// x_k of the unsafe branch, `[steps, c, h, w]`.
    pub latents: F16Tensor,
    /// Guided output of the unsafe prompt at x_k, `[steps, c, h, w]`.
    pub eps_unsafe: F16Tensor,
    /// Guided output of the safe prompt at x_k (the counterfactual target), `[steps, c, h, w]`.
    pub eps_safe: F16Tensor,
}

/// The change mask at latent resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatentMask {
    /// Latent rows.
    pub height: usize,
    /// Latent columns.
    pub width: usize,
    /// One value (0 or 1) per latent pixel, row-major.
    pub values: Vec<u8>,
}

impl PairRecord {
    /// Whether this is a benign preservation row (category `benign`).
    pub fn is_benign(&self) -> bool {
        self.category == BENIGN_CATEGORY
    }

    /// `latent_shape` as dimensions; `Err` when a dimension is negative.
    pub fn latent_dims(&self) -> Result<Vec<usize>, SchemaError> {
        self.latent_shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<_, _>>()
            .map_err(|_| {
                self.value_error(
                    "latent_shape",
                    format!("{:?} has a negative dimension", self.latent_shape),
                )
            })
    }

    /// The final unsafe latent, `latent_shape`; `None` when latents are not stored.
    pub fn unsafe_latent_tensor(&self) -> Result<Option<F16Tensor>, SchemaError> {
        self.tensor("unsafe_latent", self.unsafe_latent.as_deref(), 1)
    }

    /// The final safe latent, `latent_shape`; `None` when latents are not stored.
    pub fn safe_latent_tensor(&self) -> Result<Option<F16Tensor>, SchemaError> {
        self.tensor("safe_latent", self.safe_latent.as_deref(), 1)
    }

    /// The change mask at latent resolution; `None` when masks were not stored.
    pub fn latent_mask(&self) -> Result<Option<LatentMask>, SchemaError> {
        let Some(values) = &self.change_mask_latent else {
            return Ok(None);
        };
        let dims = self.latent_dims()?;
        let (height, width) = match dims[..] {
            [_, h, w] => (h, w),
            _ => {
                return Err(self.value_error(
                    "latent_shape",
                    format!("{:?} is not [c, h, w]", self.latent_shape),
                ))
            }
        };
        if values.len() != height * width {
            return Err(self.value_error(
                "change_mask_latent",
                format!("{} bytes, expected {height} x {width}", values.len()),
            ));
        }
        Ok(Some(LatentMask {
            height,
            width,
            values: values.clone(),
        }))
    }

    /// The trajectory targets; `None` when no step was recorded.
    pub fn trajectory(&self) -> Result<Option<Trajectory>, SchemaError> {
        let Some(steps) = &self.trajectory_steps else {
            return Ok(None);
        };
        let timesteps = self.trajectory_timesteps.clone().ok_or_else(|| {
            self.value_error("trajectory_timesteps", "null while trajectory_steps is set")
        })?;
        if timesteps.len() != steps.len() {
            return Err(self.value_error(
                "trajectory_timesteps",
                format!("{} values for {} steps", timesteps.len(), steps.len()),
            ));
        }
        let n = steps.len();
        let tensor = |name: &str, bytes: &Option<Vec<u8>>| {
            self.tensor(name, bytes.as_deref(), n)?
                .ok_or_else(|| self.value_error(name, "null while trajectory_steps is set"))
        };
        Ok(Some(Trajectory {
            steps: steps.clone(),
            timesteps,
            latents: tensor("trajectory_latents", &self.trajectory_latents)?,
            eps_unsafe: tensor("trajectory_eps_unsafe", &self.trajectory_eps_unsafe)?,
            eps_safe: tensor("trajectory_eps_safe", &self.trajectory_eps_safe)?,
        }))
    }

    /// `bytes` as float16 of shape `[count, *latent_shape]` (`count` 1: `latent_shape`).
    fn tensor(
        &self,
        name: &str,
        bytes: Option<&[u8]>,
        count: usize,
    ) -> Result<Option<F16Tensor>, SchemaError> {
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        let mut shape = self.latent_dims()?;
        if count != 1 || name.starts_with("trajectory_") {
            shape.insert(0, count);
        }
        F16Tensor::from_le_bytes(bytes, shape)
            .map(Some)
            .map_err(|detail| self.value_error(name, detail))
    }

    fn value_error(&self, field: &str, detail: impl Into<String>) -> SchemaError {
        SchemaError::Value {
            pair_id: self.pair_id.clone(),
            field: field.to_owned(),
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::fixtures;

    fn f16_bytes(values: &[f32]) -> Vec<u8> {
        values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect()
    }

    #[test]
    fn trajectories_decode_with_their_shapes() {
        let mut r = fixtures::full(1);
        r.latent_shape = vec![1, 2, 2];
        let values: Vec<f32> = (0..8).map(|v| v as f32 * 0.5).collect();
        r.trajectory_steps = Some(vec![3, 7]);
        r.trajectory_timesteps = Some(vec![801, 401]);
        r.trajectory_latents = Some(f16_bytes(&values));
        r.trajectory_eps_unsafe = Some(f16_bytes(&values));
        r.trajectory_eps_safe = Some(f16_bytes(&[1.0; 8]));
        let t = r.trajectory().unwrap().unwrap();
        assert_eq!(t.latents.shape, vec![2, 1, 2, 2]);
        assert_eq!(t.latents.to_f32(), values);
        assert_eq!(t.latents.slice(1).unwrap()[0].to_f32(), 2.0);
        assert!(t.latents.slice(2).is_none());
        assert_eq!(t.eps_safe.to_f32(), vec![1.0; 8]);

        r.trajectory_eps_safe = Some(vec![0; 6]);
        let err = r.trajectory().unwrap_err().to_string();
        assert!(
            err.contains("trajectory_eps_safe") && err.contains("expected 16"),
            "{err}"
        );
        r.trajectory_eps_safe = None;
        assert!(r.trajectory().unwrap_err().to_string().contains("null"));
        r.trajectory_steps = None;
        assert_eq!(r.trajectory().unwrap(), None);
    }

    #[test]
    fn latents_and_the_latent_mask() {
        let mut r = fixtures::full(2);
        r.latent_shape = vec![4, 2, 3];
        r.unsafe_latent = Some(f16_bytes(&[0.25; 24]));
        let latent = r.unsafe_latent_tensor().unwrap().unwrap();
        assert_eq!(latent.shape, vec![4, 2, 3]);
        assert_eq!(latent.to_f32(), vec![0.25; 24]);
        r.change_mask_latent = Some(vec![0, 1, 0, 1, 1, 0]);
        let mask = r.latent_mask().unwrap().unwrap();
        assert_eq!((mask.height, mask.width), (2, 3));
        r.change_mask_latent = Some(vec![0; 5]);
        assert!(r.latent_mask().is_err());
        assert!(!r.is_benign());
        r.category = BENIGN_CATEGORY.into();
        assert!(r.is_benign());
        assert_eq!(fixtures::sparse(3).latent_mask().unwrap(), None);
    }
}
