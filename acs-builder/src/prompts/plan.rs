//! Planning: prompt pairs -> the rows to render, each with its stable pair_id, split, seed and
//! prompt alignment, before any pixel is computed.

use std::collections::{BTreeMap, HashSet};

use std::sync::Arc;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::manifest::{AlignmentMode, BuildManifest};
use crate::prompts::align::PromptAlignment;
use crate::prompts::pairing::{AlignedPair, PromptPair};
use crate::runtime::attention::pair_control::PairControl;

/// A row that will be rendered.
#[derive(Debug, Clone)]
pub struct PlannedPair {
    /// Stable identifier of the pair (32 hex digits).
    pub pair_id: String,
    /// Split derived from pair_id.
    pub split: String,
    /// The prompt pair.
    pub prompts: PromptPair,
    /// x_T seed.
    pub seed: u64,
    /// Guidance scale of this row.
    pub guidance_scale: f32,
    /// CLIP-token alignment of the two prompts.
    pub alignment: PromptAlignment,
    /// Attention control of the pair, in attention mode (set when the build prepares its
    /// plan; `None` for benign prompts and in the other modes).
    pub attention: Option<Arc<PairControl>>,
    /// Its place in the whole build's render order (before a worker takes its slice): what
    /// `acs merge` orders worker rows by.
    pub position: u64,
}

impl PlannedPair {
    /// The id of its prompt pair (category and both prompts; 16 hex digits): the renders
    /// that `keep_best` ranks together, and that one worker renders.
    pub fn group_id(&self) -> String {
        let p = &self.prompts;
        prompt_group_id(&p.category, &p.unsafe_prompt, &p.safe_prompt)
    }
}

/// The id of a prompt pair of one category (16 hex digits), from a planned pair or a row.
pub fn prompt_group_id(category: &str, unsafe_prompt: &str, safe_prompt: &str) -> String {
    let digest = digest_u64(&[
        category.as_bytes(),
        unsafe_prompt.as_bytes(),
        safe_prompt.as_bytes(),
    ]);
    format!("{digest:016x}")
}

/// The rows of a build and what was left out.
#[derive(Debug, Default)]
pub struct Plan {
    /// Rows in render order.
    pub pairs: Vec<PlannedPair>,
    /// Input pairs dropped because an identical row (same pair_id) came earlier.
    pub duplicates: usize,
}

fn digest_u64(parts: &[&[u8]]) -> u64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// The seed of the `k`-th rendering of a pair whose source gives no seed: 32 bits (torch seeds
/// alias modulo 2^32) derived from the base seed and both prompts.
pub fn derived_seed(base_seed: u64, unsafe_prompt: &str, safe_prompt: &str, k: u32) -> u64 {
    digest_u64(&[
        b"acs-seed-v1",
        &base_seed.to_le_bytes(),
        unsafe_prompt.as_bytes(),
        safe_prompt.as_bytes(),
        &k.to_le_bytes(),
    ]) & 0xffff_ffff
}

/// The split of a pair: a uniform draw from its id against the cumulative split fractions
/// (in split-name order).
pub fn split_of(pair_id: &str, splits: &BTreeMap<String, f64>) -> String {
    let u = (digest_u64(&[b"acs-split-v1", pair_id.as_bytes()]) >> 11) as f64 / (1u64 << 53) as f64;
    let mut cumulative = 0.0;
    let mut last = None;
    for (name, fraction) in splits {
        if *fraction <= 0.0 {
            continue;
        }
        cumulative += fraction;
        last = Some(name);
        if u < cumulative {
            return name.clone();
        }
    }
    last.or_else(|| splits.keys().next())
        .cloned()
        .unwrap_or_default()
}

/// Stable pair_id: hash of the prompts, seed, model fingerprint and every setting that changes
/// the pixels.
pub fn pair_id(
    prompts: &PromptPair,
    seed: u64,
    guidance_scale: f32,
    model_sha256: &str,
    manifest: &BuildManifest,
) -> String {
    let s = &manifest.sampling;
    let mut identity = json!({
        "unsafe_prompt": prompts.unsafe_prompt,
        "safe_prompt": prompts.safe_prompt,
        "negative_prompt": s.negative_prompt,
        "seed": seed,
        "model_sha256": model_sha256,
        "scheduler": s.scheduler,
        "steps": s.steps,
        "guidance_scale": guidance_scale,
        "height": s.height,
        "width": s.width,
        "rng": s.rng,
        "alignment_mode": manifest.alignment.mode,
        "switch_step": manifest.switch_step(),
    });
    if manifest.alignment.mode == AlignmentMode::Attention {
        // The control changes the pixels; the other modes' ids stay as they were.
        let a = &manifest.alignment;
        identity["attention"] = json!({
            "cross_replace": a.cross_replace,
            "self_replace": a.self_replace,
            "reweight": a.reweight,
            "local_blend": a.local_blend,
            "share_self_attention": a.share_self_attention,
        });
    }
    let digest = Sha256::digest(identity.to_string().as_bytes());
    hex::encode(&digest[..16])
}

/// Expands checked prompt pairs by seeds_per_prompt, assigns ids, splits and seeds, and drops
/// exact duplicates (same pair_id).
pub fn plan(prompts: Vec<AlignedPair>, manifest: &BuildManifest, model_sha256: &str) -> Plan {
    let mut seen = HashSet::new();
    let mut plan = Plan::default();
    for AlignedPair { pair, alignment } in prompts {
        let guidance_scale = pair
            .guidance_scale
            .unwrap_or(manifest.sampling.guidance_scale);
        for k in 0..manifest.sampling.seeds_per_prompt {
            let seed = match pair.seed {
                Some(seed) => seed.wrapping_add(u64::from(k)),
                None => derived_seed(
                    manifest.sampling.base_seed,
                    &pair.unsafe_prompt,
                    &pair.safe_prompt,
                    k,
                ),
            };
            let id = pair_id(&pair, seed, guidance_scale, model_sha256, manifest);
            if !seen.insert(id.clone()) {
                plan.duplicates += 1;
                continue;
            }
            plan.pairs.push(PlannedPair {
                split: split_of(&id, &manifest.output.splits),
                pair_id: id,
                prompts: pair.clone(),
                seed,
                guidance_scale,
                alignment: alignment.clone(),
                attention: None,
                position: 0,
            });
        }
    }
    if manifest.keep_best().is_some() {
        keep_groups_together(&mut plan.pairs);
    }
    for (position, pair) in (0u64..).zip(&mut plan.pairs) {
        pair.position = position;
    }
    plan
}

/// Moves the renders of each prompt pair next to its first (a stable reorder), so that
/// `keep_best` sees a group's renders one after another even when a source lists the same
/// pair twice.
fn keep_groups_together(pairs: &mut Vec<PlannedPair>) {
    let mut first: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut ranked: Vec<(usize, PlannedPair)> = pairs
        .drain(..)
        .enumerate()
        .map(|(i, p)| (*first.entry(p.group_id()).or_insert(i), p))
        .collect();
    // Stable: a group's renders keep their order.
    ranked.sort_by_key(|(rank, _)| *rank);
    pairs.extend(ranked.into_iter().map(|(_, p)| p));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_are_stable_and_32_bit() {
        let a = derived_seed(0, "a bloody knife", "a clean knife", 0);
        assert_eq!(a, derived_seed(0, "a bloody knife", "a clean knife", 0));
        assert_ne!(a, derived_seed(0, "a bloody knife", "a clean knife", 1));
        assert_ne!(a, derived_seed(1, "a bloody knife", "a clean knife", 0));
        assert!(a <= u32::MAX as u64);
    }

    #[test]
    fn splits_follow_their_fractions() {
        let splits = BTreeMap::from([
            ("train".to_string(), 0.8),
            ("test".to_string(), 0.2),
            ("unused".to_string(), 0.0),
        ]);
        let mut train = 0;
        for i in 0..2000 {
            match split_of(&format!("{i:032x}"), &splits).as_str() {
                "train" => train += 1,
                "test" => {}
                other => panic!("unexpected split {other}"),
            }
        }
        assert!((1500..1700).contains(&train), "{train}");
    }
}
