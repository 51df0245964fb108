//! Value checks of a parsed manifest, one function per table. Names (schedulers, dtypes,
//! devices, source kinds) are already checked by their serde types; these are the ranges and
//! the rules that tie keys together.

use super::sections::DEFAULT_CLIP_THRESHOLDS;
use super::sections::{
    AlignmentSection, LlmSection, OutputSection, SamplingSection, ValidationSection,
};
use super::{
    parse_byte_size, BuildManifest, ModelSection, MAX_GUIDANCE_SCALE, MAX_SEEDS_PER_PROMPT,
};
use crate::error::AcsError;
use crate::judge::selection::RankBy;
use crate::judge::JudgeKind;
use crate::runtime::{DeviceSpec, Dtype};

/// A failed check: the key and why.
pub type Check = Result<(), (String, String)>;

pub fn fail(key: &str, reason: impl Into<String>) -> Check {
    Err((key.to_owned(), reason.into()))
}

/// Checks every table; `origin` names the file in the message.
pub fn check_values(m: &BuildManifest, origin: &str) -> Result<(), AcsError> {
    let checks = [
        m.model.as_ref().map_or(Ok(()), check_model),
        check_sampling(&m.sampling),
        check_alignment(&m.alignment),
        super::attention_section::check_attention(&m.alignment),
        check_validation(&m.validation, m.alignment.require_flip),
        check_selection(m),
        super::source_checks::check_sources(&m.sources),
        m.rewrite.llm.as_ref().map_or(Ok(()), check_llm),
        check_output(&m.output),
        check_training_outputs(&m.output, m.sampling.steps),
    ];
    match checks.into_iter().find_map(Result::err) {
        Some((key, reason)) => Err(AcsError::input(format!("{origin}: {key}: {reason}"))),
        None => Ok(()),
    }
}

fn check_model(model: &ModelSection) -> Check {
    if model.path.is_some() && model.repo.is_some() {
        return fail(
            "[model]",
            "`path` and `repo` are both set; set at most one of them (neither: the embedded \
             shapes demonstrator)",
        );
    }
    if let (Some(embedded), true) = (model.embedded, model.path.is_some() || model.repo.is_some()) {
        return fail(
            "[model].embedded",
            format!("`{embedded}` names an embedded model, but `path` or `repo` names another"),
        );
    }
    if model.dtype == Dtype::Bf16 && model.device == DeviceSpec::Cpu {
        return fail(
            "[model].dtype",
            "bf16 needs a GPU device (candle's CPU matmul has no bf16); use f32 or f16 on cpu",
        );
    }
    // A device this build lacks is refused when the model is loaded (a dry run needs none).
    Ok(())
}

fn check_sampling(s: &SamplingSection) -> Check {
    if s.steps == 0 || s.steps > 1000 {
        return fail(
            "[sampling].steps",
            format!("must be 1..=1000 (got {})", s.steps),
        );
    }
    if !(s.guidance_scale.is_finite() && (0.0..=MAX_GUIDANCE_SCALE).contains(&s.guidance_scale)) {
        return fail(
            "[sampling].guidance_scale",
            format!(
                "must be in [0, {MAX_GUIDANCE_SCALE}] (got {}; Stable Diffusion uses 1-15, 0 \
                 or 1 turns guidance off)",
                s.guidance_scale
            ),
        );
    }
    for (field, value) in [("height", s.height), ("width", s.width)] {
        if value == 0 || value % 8 != 0 {
            return fail(
                &format!("[sampling].{field}"),
                format!("must be a positive multiple of 8 (got {value})"),
            );
        }
        if value > 4096 {
            return fail(
                &format!("[sampling].{field}"),
                format!("must be at most 4096 (got {value})"),
            );
        }
    }
    if s.seeds_per_prompt == 0 || s.seeds_per_prompt > MAX_SEEDS_PER_PROMPT {
        return fail(
            "[sampling].seeds_per_prompt",
            format!(
                "must be 1..={MAX_SEEDS_PER_PROMPT} (got {})",
                s.seeds_per_prompt
            ),
        );
    }
    if s.batch_pairs == 0 {
        return fail("[sampling].batch_pairs", "must be at least 1");
    }
    Ok(())
}

fn check_alignment(a: &AlignmentSection) -> Check {
    if !(0.0..=1.0).contains(&a.switch_at) {
        return fail(
            "[alignment].switch_at",
            format!("must be in [0, 1] (got {})", a.switch_at),
        );
    }
    if !(-1.0..=1.0).contains(&a.ssim_min) {
        return fail(
            "[alignment].ssim_min",
            format!("must be in [-1, 1] (got {})", a.ssim_min),
        );
    }
    if !(0.0..=1.0).contains(&a.changed_area_max) {
        return fail(
            "[alignment].changed_area_max",
            format!("must be in [0, 1] (got {})", a.changed_area_max),
        );
    }
    Ok(())
}

fn check_validation(v: &ValidationSection, require_flip: bool) -> Check {
    if !(v.nudenet_threshold.is_finite() && (0.0..=1.0).contains(&v.nudenet_threshold)) {
        return fail(
            "[validation].nudenet_threshold",
            format!("must be in [0, 1] (got {})", v.nudenet_threshold),
        );
    }
    if v.nudenet_classes.is_empty() {
        return fail("[validation].nudenet_classes", "name at least one class");
    }
    if let Err(reason) = crate::judge::nudenet::class_ids(&v.nudenet_classes) {
        return fail("[validation].nudenet_classes", reason);
    }
    if v.nudenet_model.as_deref() == Some("") {
        return fail(
            "[validation].nudenet_model",
            "empty; give the path to 320n.onnx or \"installed\"",
        );
    }
    if !(v.q16_threshold.is_finite() && (0.0..=1.0).contains(&v.q16_threshold)) {
        return fail(
            "[validation].q16_threshold",
            format!("must be in [0, 1] (got {})", v.q16_threshold),
        );
    }
    for (key, value) in [
        ("clip_model", &v.clip_model),
        ("safety_checker", &v.safety_checker),
    ] {
        if value.as_deref() == Some("") {
            return fail(
                &format!("[validation].{key}"),
                "empty; give a folder or a hub id",
            );
        }
    }
    let active = v.active_judges();
    for (category, judge) in &v.flip_judges {
        if !super::is_pair_category(category) {
            return fail(
                "[validation].flip_judges",
                format!("`{category}` is not one of {}", super::pair_categories()),
            );
        }
        if !active.contains(judge) {
            return fail(
                &format!("[validation].flip_judges.{category}"),
                format!("`{judge}` does not run: add it to [validation].judges"),
            );
        }
    }
    if require_flip && active.is_empty() {
        return fail(
            "[alignment].require_flip",
            "needs a judge: set [validation].judges (nudenet, q16, sd-safety-checker, shapes) or \
             [validation].nudenet_model (a path to 320n.onnx, or \"installed\")",
        );
    }
    Ok(())
}

/// `keep_best`, its rank and the CLIP similarity thresholds.
fn check_selection(m: &BuildManifest) -> Check {
    let (a, v) = (&m.alignment, &m.validation);
    if a.keep_best > m.sampling.seeds_per_prompt {
        return fail(
            "[alignment].keep_best",
            format!(
                "{} is more than [sampling].seeds_per_prompt {} (it keeps the best of each \
                 prompt pair's seeds)",
                a.keep_best, m.sampling.seeds_per_prompt
            ),
        );
    }
    match (a.rank_by, a.keep_best) {
        (Some(by), 0) => {
            return fail(
                "[alignment].rank_by",
                format!("`{by}` ranks renders for keep_best, which is not set"),
            )
        }
        (Some(RankBy::Shapes), _) if !v.active_judges().contains(&JudgeKind::Shapes) => {
            return fail(
                "[alignment].rank_by",
                "`shapes` needs the shapes judge ([validation] judges = [\"shapes\"])",
            )
        }
        _ => {}
    }
    let thresholds = [
        (
            "clip_direction_min",
            v.clip_direction_min,
            DEFAULT_CLIP_THRESHOLDS[0],
        ),
        (
            "clip_image_min",
            v.clip_image_min,
            DEFAULT_CLIP_THRESHOLDS[1],
        ),
        ("clip_text_min", v.clip_text_min, DEFAULT_CLIP_THRESHOLDS[2]),
    ];
    for (key, value, default) in thresholds {
        let key = format!("[validation].{key}");
        if !(-1.0..=1.0).contains(&value) {
            return fail(
                &key,
                format!("{value} is outside [-1, 1] (a cosine similarity)"),
            );
        }
        if value != default && !m.clip_similarity() {
            return fail(
                &key,
                "CLIP similarity is off (set [validation] clip_similarity = true, or \
                 [alignment] keep_best ranked by clip-direction)",
            );
        }
    }
    Ok(())
}

fn check_llm(llm: &LlmSection) -> Check {
    if !(llm.base_url.starts_with("http://") || llm.base_url.starts_with("https://")) {
        return fail(
            "[rewrite.llm].base_url",
            format!("`{}` is not an http(s) URL", llm.base_url),
        );
    }
    if llm.model.trim().is_empty() {
        return fail("[rewrite.llm].model", "must not be empty");
    }
    if !(1..=256).contains(&llm.concurrency) {
        return fail(
            "[rewrite.llm].concurrency",
            format!("must be 1..=256 (got {})", llm.concurrency),
        );
    }
    if let Some(cache) = &llm.cache {
        // A manifest may come from someone else: it must not make acs write elsewhere.
        let escapes = cache.is_absolute()
            || cache
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir));
        if escapes || cache.as_os_str().is_empty() {
            return fail(
                "[rewrite.llm].cache",
                format!(
                    "`{}` must be a relative path inside the manifest's folder (no `..`, not \
                     absolute); leave it out to use $ACS_HOME/llm-cache",
                    cache.display()
                ),
            );
        }
    }
    if !(llm.timeout_s.is_finite() && llm.timeout_s > 0.0) {
        return fail(
            "[rewrite.llm].timeout_s",
            format!("must be > 0 (got {})", llm.timeout_s),
        );
    }
    if llm.retries > 20 {
        return fail(
            "[rewrite.llm].retries",
            format!("must be at most 20 (got {})", llm.retries),
        );
    }
    Ok(())
}

fn check_output(o: &OutputSection) -> Check {
    if let Some(license) = &o.license {
        let id_like = !license.is_empty()
            && license
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '+' | '_'));
        if !id_like {
            return fail(
                "[output].license",
                format!(
                    "`{license}` is not a license identifier (e.g. \"cc-by-4.0\", \"mit\", \
                     \"other\"; see huggingface.co/docs/hub/repositories-licenses)"
                ),
            );
        }
    }
    if o.shard_rows == 0 {
        return fail("[output].shard_rows", "must be at least 1");
    }
    if parse_byte_size(&o.shard_bytes).is_none() {
        return fail(
            "[output].shard_bytes",
            format!("`{}` is not a size such as \"500MB\"", o.shard_bytes),
        );
    }
    if o.splits.is_empty() {
        return fail("[output].splits", "at least one split is required");
    }
    for (name, fraction) in &o.splits {
        let well_named =
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !well_named {
            return fail(
                "[output].splits",
                format!("split name `{name}` must be alphanumeric or _"),
            );
        }
        if !(fraction.is_finite() && *fraction >= 0.0) {
            return fail(
                &format!("[output].splits.{name}"),
                format!("must be >= 0 (got {fraction})"),
            );
        }
    }
    let total: f64 = o.splits.values().sum();
    if (total - 1.0).abs() > 1e-6 {
        return fail(
            "[output].splits",
            format!("fractions must sum to 1 (got {total})"),
        );
    }
    Ok(())
}

/// `[output]`'s masks and trajectory targets against the schedule.
fn check_training_outputs(o: &OutputSection, steps: u32) -> Check {
    if o.mask_threshold == u8::MAX {
        return fail(
            "[output].mask_threshold",
            "must be 0..=254 (a pixel changes when its difference exceeds it)",
        );
    }
    if o.mask_dilation > 4096 {
        return fail(
            "[output].mask_dilation",
            format!("must be at most 4096 pixels (got {})", o.mask_dilation),
        );
    }
    let key = "[output].trajectory_steps";
    let mut seen = std::collections::BTreeSet::new();
    for &step in &o.trajectory_steps {
        if step >= steps {
            return fail(
                key,
                format!(
                    "step {step} is outside the schedule: [sampling].steps = {steps} has steps \
                     0..={}",
                    steps.saturating_sub(1)
                ),
            );
        }
        if !seen.insert(step) {
            return fail(key, format!("step {step} is listed twice"));
        }
    }
    if !o.trajectory_steps.is_empty() && !o.store_latents {
        return fail(
            key,
            "trajectory targets are stored latents; they need [output].store_latents = true",
        );
    }
    Ok(())
}
