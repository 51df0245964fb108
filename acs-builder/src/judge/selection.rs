//! `keep_best`: of the renders of one prompt pair (its `seeds_per_prompt` seeds), keep the k
//! best valid ones, as the InstructPix2Pix generator keeps the best samples of each prompt by
//! CLIP directional similarity. The others stay in the dataset, invalid, with the reason
//! `keep_best: rank r of n valid, keeps k`, so that nothing rendered is lost and the choice can
//! be checked.
//!
//! The rank is a score (higher is better): `clip_direction`, or on the shapes demonstrator the
//! shapes judge's alignment figure (minus the fraction of pixels changed outside the edited
//! object grown by one latent cell). Ties go to the higher SSIM, then to the smaller pair_id;
//! a missing score ranks last.

use std::cmp::Ordering;

use acs_schema::PairRecord;
use serde::{Deserialize, Serialize};

use super::shapes::judge::describe_pair;

/// What ranks the renders of a prompt pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RankBy {
    /// CLIP directional similarity (`clip_direction`), the InstructPix2Pix generator's rank.
    #[default]
    ClipDirection,
    /// The shapes judge: fewest pixels changed outside the edited object (grown by 8 px).
    Shapes,
}

impl std::fmt::Display for RankBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.serialize(f)
    }
}

/// The prefix of the reject reason of a valid render that was not kept.
pub const KEEP_BEST_REASON: &str = "keep_best: ";

/// Which renders belong together: one prompt pair of one category.
pub fn group_key(record: &PairRecord) -> (&str, &str, &str) {
    (&record.category, &record.unsafe_prompt, &record.safe_prompt)
}

/// True for a row whose only reject reasons are `keep_best`'s: valid, but not kept.
pub fn only_not_kept(record: &PairRecord) -> bool {
    !record.reject_reasons.is_empty()
        && record
            .reject_reasons
            .iter()
            .all(|r| r.starts_with(KEEP_BEST_REASON))
}

/// A render's rank score (higher is better; NaN when it has none). `images` (unsafe, safe RGB8
/// of the row's size) are read by the shapes rank only.
pub fn rank_score(by: RankBy, record: &PairRecord, images: Option<(&[u8], &[u8])>) -> f32 {
    match by {
        RankBy::ClipDirection => record.clip_direction.unwrap_or(f32::NAN),
        RankBy::Shapes => {
            let Some((unsafe_rgb, safe_rgb)) = images else {
                return f32::NAN;
            };
            let (w, h) = (record.width.max(0) as usize, record.height.max(0) as usize);
            describe_pair(
                unsafe_rgb,
                safe_rgb,
                w,
                h,
                &record.unsafe_prompt,
                &record.safe_prompt,
            )
            .ok()
            .and_then(|figures| figures["outside_changed_8px"].as_f64())
            .map_or(f32::NAN, |outside| -(outside as f32))
        }
    }
}

/// A render as the selection sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Its pair_id (the last tie-break).
    pub pair_id: String,
    /// Valid before the selection.
    pub valid: bool,
    /// Its rank score.
    pub score: f32,
    /// Its SSIM (the first tie-break).
    pub ssim: f32,
}

impl Candidate {
    /// A row with its rank score; valid when its only reasons (if any) are `keep_best`'s, so
    /// that a stored row is seen as the selection saw it.
    pub fn of(record: &PairRecord, score: f32) -> Self {
        Self {
            pair_id: record.pair_id.clone(),
            valid: record.valid || only_not_kept(record),
            score,
            ssim: record.ssim,
        }
    }
}

fn better(a: &Candidate, b: &Candidate) -> Ordering {
    let key = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
    key(b.score)
        .total_cmp(&key(a.score))
        .then(key(b.ssim).total_cmp(&key(a.ssim)))
        .then(a.pair_id.cmp(&b.pair_id))
}

/// The reason each render of one group gets from keeping the `keep` best valid ones: `None`
/// for the kept and for renders that were invalid already, `Some(reason)` for the others.
pub fn selection(group: &[Candidate], keep: usize) -> Vec<Option<String>> {
    let mut valid: Vec<usize> = (0..group.len()).filter(|&i| group[i].valid).collect();
    valid.sort_by(|&a, &b| better(&group[a], &group[b]));
    let mut reasons = vec![None; group.len()];
    let n = valid.len();
    for (rank, &i) in valid.iter().enumerate().skip(keep) {
        reasons[i] = Some(format!(
            "{KEEP_BEST_REASON}rank {} of {n} valid, keeps {keep}",
            rank + 1
        ));
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(id: &str, valid: bool, score: f32, ssim: f32) -> Candidate {
        Candidate {
            pair_id: id.into(),
            valid,
            score,
            ssim,
        }
    }

    #[test]
    fn keeps_the_best_valid_renders() {
        let group = [
            candidate("a", true, 0.1, 0.9),
            candidate("b", false, 0.9, 0.9),
            candidate("c", true, 0.3, 0.5),
            candidate("d", true, f32::NAN, 0.99),
            candidate("e", true, 0.3, 0.6),
        ];
        let reasons = selection(&group, 2);
        assert_eq!(reasons[1], None, "an invalid render keeps its own reasons");
        assert_eq!(reasons[4], None, "0.3 with the higher ssim ranks first");
        assert_eq!(reasons[2], None);
        assert_eq!(
            reasons[0].as_deref(),
            Some("keep_best: rank 3 of 4 valid, keeps 2")
        );
        assert_eq!(
            reasons[3].as_deref(),
            Some("keep_best: rank 4 of 4 valid, keeps 2")
        );
        assert!(selection(&group, 4).iter().all(Option::is_none));
        // Full ties fall to the pair_id, so the choice never depends on the order.
        let tied = [
            candidate("y", true, 0.5, 0.5),
            candidate("x", true, 0.5, 0.5),
        ];
        assert_eq!(
            selection(&tied, 1),
            vec![Some("keep_best: rank 2 of 2 valid, keeps 1".into()), None]
        );
    }
}
