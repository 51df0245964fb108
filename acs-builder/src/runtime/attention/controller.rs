//! The attention controller of one render batch: the [`AttentionHook`] that the UNet asks at
//! every attention layer, and the local blend after every scheduler step.
//!
//! The batch's rows alternate unsafe, safe (pair i: rows 2i, 2i + 1); with guidance the
//! UNet sees the unconditional rows first, then the conditional ones. Per layer:
//!
//! - **cross-attention** (every layer, conditional half): the safe row's probabilities become
//!   `P_u · source + P_s ⊙ own` ([`super::pair_control::CrossEdit`]) at the steps the pair replaces; at the blend
//!   level the edited words' maps are summed for the local blend. Probabilities are
//!   materialised only where one of the two happens; elsewhere the layer runs its fused kernel.
//! - **self-attention**: the safe row attends with the unsafe row's queries and keys (its
//!   probabilities are the unsafe row's, its values its own): Prompt-to-Prompt's injection at
//!   the coarse levels in the conditional half, or the InstructPix2Pix generator's shared
//!   self-attention in every layer and both halves. No probabilities are materialised.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Tensor};

use super::blend::{blend_mask, Map};
use super::pair_control::{PairBlend, PairControl};
use super::schedule::{blend_active, self_replace_active, shared_self_attention_active};
use crate::runtime::model::attention_hook::{
    attend_with, attention_probabilities, AttentionHook, AttentionKind, AttentionSite,
};
use crate::runtime::model::layers::attention;
use crate::runtime::model::matmul::matmul;
use crate::runtime::tokenizer::CONTEXT_LENGTH;

/// The blend maps of one pair summed so far: per branch, the edited words' attention at the
/// blend level, summed over tokens, heads, layers and steps.
#[derive(Debug, Default, Clone)]
struct BlendStore {
    /// Map height and width (the blend level's feature map).
    size: (usize, usize),
    /// Unsafe branch.
    source: Vec<f32>,
    /// Safe branch.
    target: Vec<f32>,
    /// Head maps added (layers · heads per step, summed over steps).
    maps: usize,
    /// Steps whose maps were added.
    steps: usize,
}

/// The controller of one batch of pairs.
pub struct BatchController {
    pairs: Vec<Arc<PairControl>>,
    /// Whether the UNet batch holds the unconditional rows first.
    guidance: bool,
    steps: usize,
    step: AtomicUsize,
    /// The current step's cross-attention edit of each pair, as tensors (source weights
    /// [77, 77], own weights [77]), made once per step by [`Self::set_step`].
    edits: Mutex<Vec<Option<(Tensor, Tensor)>>>,
    stores: Mutex<Vec<BlendStore>>,
    masks: Mutex<Vec<Option<Vec<u8>>>>,
    device: Device,
}

impl BatchController {
    /// The controller of `pairs` (in batch order) over a run of `steps` steps, with or without
    /// the unconditional half; `Err` when a pair's control was made for another run length.
    pub fn new(
        pairs: Vec<Arc<PairControl>>,
        guidance: bool,
        steps: usize,
        device: &Device,
    ) -> std::result::Result<Self, String> {
        if let Some(pair) = pairs.iter().find(|p| p.steps != steps) {
            return Err(format!(
                "a pair's attention control was made for {} steps, the run has {steps}",
                pair.steps
            ));
        }
        let count = pairs.len();
        Ok(Self {
            pairs,
            guidance,
            steps,
            step: AtomicUsize::new(0),
            edits: Mutex::new(vec![None; count]),
            stores: Mutex::new(vec![BlendStore::default(); count]),
            masks: Mutex::new(vec![None; count]),
            device: device.clone(),
        })
    }

    /// Sets the step of the next UNet call (0-based) and makes each pair's cross-attention
    /// edit of that step.
    pub fn set_step(&self, step: usize) -> Result<()> {
        self.step.store(step, Ordering::Relaxed);
        let n = CONTEXT_LENGTH;
        let edits = self
            .pairs
            .iter()
            .map(|pair| {
                pair.cross_edit(step)
                    .map(|edit| -> Result<(Tensor, Tensor)> {
                        Ok((
                            Tensor::from_vec(edit.source, (n, n), &self.device)?,
                            Tensor::from_vec(edit.own, n, &self.device)?,
                        ))
                    })
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        *self.edits.lock().unwrap_or_else(|e| e.into_inner()) = edits;
        Ok(())
    }

    fn current_step(&self) -> usize {
        self.step.load(Ordering::Relaxed)
    }

    /// The last blend mask of each pair (one 0/1 byte per latent pixel), `None` where the
    /// pair has no local blend or it never acted.
    pub fn masks(&self) -> Vec<Option<Vec<u8>>> {
        self.masks.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The first conditional row.
    fn conditional_offset(&self) -> usize {
        if self.guidance {
            2 * self.pairs.len()
        } else {
            0
        }
    }

    /// Self-attention: the safe rows that take their unsafe row's queries and keys.
    fn shared_self_attention(
        &self,
        site: &AttentionSite,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        heads: usize,
    ) -> Result<Option<Tensor>> {
        let step = self.current_step();
        let rows = q.dim(0)?;
        let mut source: Vec<u32> = (0..rows as u32).collect();
        let cond = self.conditional_offset();
        let mut any = false;
        for (i, pair) in self.pairs.iter().enumerate() {
            let shared = pair
                .share_self_attention
                .is_some_and(|p| shared_self_attention_active(p, step, self.steps));
            let halves: &[usize] = if shared && self.guidance {
                &[0, cond]
            } else if shared
                || (site.coarse
                    && pair
                        .self_replace
                        .is_some_and(|r| self_replace_active(r, step, self.steps)))
            {
                &[cond]
            } else {
                &[]
            };
            for &half in halves {
                source[half + 2 * i + 1] = (half + 2 * i) as u32;
                any = true;
            }
        }
        if !any {
            return Ok(None);
        }
        let source = Tensor::from_vec(source, rows, q.device())?;
        let q = q.index_select(&source, 0)?;
        let k = k.index_select(&source, 0)?;
        attention(&q, &k, v, heads, None).map(Some)
    }

    /// Cross-attention: the edit of the safe rows and the blend maps.
    fn cross_attention(
        &self,
        site: &AttentionSite,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        heads: usize,
    ) -> Result<Option<Tensor>> {
        let step = self.current_step();
        let edits = self.edits.lock().unwrap_or_else(|e| e.into_inner());
        let blends: Vec<Option<&PairBlend>> = self
            .pairs
            .iter()
            .map(|pair| pair.blend.as_ref().filter(|blend| reads_maps(blend, site)))
            .collect();
        if edits.iter().all(Option::is_none) && blends.iter().all(Option::is_none) {
            return Ok(None);
        }
        if k.dim(1)? != CONTEXT_LENGTH {
            candle_core::bail!(
                "attention control needs the {CONTEXT_LENGTH}-token context, not {}",
                k.dim(1)?
            );
        }
        let probs = attention_probabilities(q, k, heads)?;
        let mut rows: Vec<Tensor> = (0..probs.dim(0)?)
            .map(|r| probs.get(r))
            .collect::<Result<_>>()?;
        let cond = self.conditional_offset();
        for (i, edit) in edits.iter().enumerate() {
            if let Some((source, own)) = edit {
                let (u, s) = (&rows[cond + 2 * i], &rows[cond + 2 * i + 1]);
                let edited = (matmul(u, source)? + s.broadcast_mul(own)?)?;
                rows[cond + 2 * i + 1] = edited;
            }
        }
        drop(edits);
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        for (i, blend) in blends.iter().enumerate() {
            if let Some(blend) = blend {
                let source = word_map(&rows[cond + 2 * i], &blend.source_positions)?;
                let target = word_map(&rows[cond + 2 * i + 1], &blend.target_positions)?;
                let store = &mut stores[i];
                if store.source.is_empty() {
                    store.size = (site.height, site.width);
                    store.source = vec![0.0; source.len()];
                    store.target = vec![0.0; target.len()];
                }
                if store.size != (site.height, site.width) {
                    candle_core::bail!("blend-level layers of different sizes");
                }
                add(&mut store.source, &source);
                add(&mut store.target, &target);
                store.maps += heads;
                store.steps = step + 1;
            }
        }
        drop(stores);
        let probs = Tensor::stack(&rows, 0)?;
        attend_with(&probs, v).map(Some)
    }

    /// Applies the local blend after the scheduler step `step` to `latents` [2 · pairs, c,
    /// h, w]: where a pair blends, its safe row takes the unsafe row's values outside the mask,
    /// bit for bit.
    pub fn after_step(&self, step: usize, latents: Tensor) -> Result<Tensor> {
        let (_, c, h, w) = latents.dims4()?;
        let stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        let mut masks = self.masks.lock().unwrap_or_else(|e| e.into_inner());
        let mut blended = false;
        let mut rows = Vec::with_capacity(2 * self.pairs.len());
        for (i, pair) in self.pairs.iter().enumerate() {
            let unsafe_row = latents.get(2 * i)?;
            let safe_row = latents.get(2 * i + 1)?;
            let mask = match &pair.blend {
                Some(blend) if blend_active(blend.start, step, self.steps) => {
                    pair_mask(&stores[i], blend.threshold, h, w)?
                }
                _ => None,
            };
            let safe_row = match mask {
                Some(mask) => {
                    let bytes: Vec<u8> = mask.iter().map(|&m| u8::from(m)).collect();
                    let selector = Tensor::from_slice(&bytes, (1, h, w), &self.device)?
                        .broadcast_as((c, h, w))?;
                    masks[i] = Some(bytes);
                    blended = true;
                    selector.where_cond(&safe_row, &unsafe_row)?
                }
                None => safe_row,
            };
            rows.push(unsafe_row);
            rows.push(safe_row);
        }
        if !blended {
            return Ok(latents);
        }
        Tensor::stack(&rows, 0)
    }
}

impl AttentionHook for BatchController {
    fn attend(
        &self,
        site: &AttentionSite,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        heads: usize,
    ) -> Result<Option<Tensor>> {
        let expected = 2 * self.pairs.len() * if self.guidance { 2 } else { 1 };
        if q.dim(0)? != expected {
            candle_core::bail!(
                "attention control of {} pairs got a batch of {} rows",
                self.pairs.len(),
                q.dim(0)?
            );
        }
        match site.kind {
            AttentionKind::SelfAttention => self.shared_self_attention(site, q, k, v, heads),
            AttentionKind::Cross => self.cross_attention(site, q, k, v, heads),
        }
    }
}

/// Whether the blend reads its maps at `site`: a down or up cross-attention layer of its level.
fn reads_maps(blend: &PairBlend, site: &AttentionSite) -> bool {
    match blend.level {
        Some(level) => !site.mid && site.level == level,
        None => site.blend_level,
    }
}

/// One branch's map of the words at `positions`: probabilities [heads, n, 77] summed over
/// those columns and the heads, [n] on the host.
fn word_map(probs: &Tensor, positions: &[usize]) -> Result<Vec<f32>> {
    let n = probs.dim(1)?;
    if positions.is_empty() {
        return Ok(vec![0.0; n]);
    }
    let mut selector = vec![0f32; CONTEXT_LENGTH];
    for &p in positions {
        selector[p] = 1.0;
    }
    let selector = Tensor::from_vec(selector, (CONTEXT_LENGTH, 1), probs.device())?;
    matmul(&probs.to_dtype(DType::F32)?, &selector)?
        .sum(0)?
        .flatten_all()?
        .to_vec1()
}

fn add(into: &mut [f32], values: &[f32]) {
    for (a, b) in into.iter_mut().zip(values) {
        *a += b;
    }
}

/// The blend mask of a pair from its store: each branch's map averaged over heads and layers
/// (summed over the steps so far), at the latent's `h` x `w`; `None` before any map was added.
fn pair_mask(store: &BlendStore, threshold: f32, h: usize, w: usize) -> Result<Option<Vec<bool>>> {
    if store.maps == 0 || store.steps == 0 {
        return Ok(None);
    }
    let per_step = (store.maps / store.steps) as f32;
    let map = |values: &[f32]| -> Result<Map> {
        let mean = values.iter().map(|v| v / per_step).collect();
        Map::new(store.size.0, store.size.1, mean).map_err(candle_core::Error::Msg)
    };
    Ok(Some(blend_mask(
        &map(&store.source)?,
        &map(&store.target)?,
        h,
        w,
        threshold,
    )))
}
