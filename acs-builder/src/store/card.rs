//! The dataset card (DIR/README.md): a Hugging Face YAML header (configs / data_files,
//! dataset_info.features and splits), how the data was built, and a content warning.

use std::collections::BTreeMap;
use std::fmt::Write;

use acs_schema::DatasetManifest;

use crate::manifest::attention_section;
use crate::manifest::BuildManifest;

/// (column, YAML feature lines) in schema v1 order.
const FEATURES: &[(&str, &str)] = &[
    ("pair_id", "dtype: string"),
    ("split", "dtype: string"),
    ("category", "dtype: string"),
    ("concepts", "sequence: string"),
    ("unsafe_prompt", "dtype: string"),
    ("safe_prompt", "dtype: string"),
    ("negative_prompt", "dtype: string"),
    ("token_edit_distance", "dtype: int32"),
    ("seed", "dtype: uint64"),
    ("x_t_sha256", "dtype: string"),
    ("model_id", "dtype: string"),
    ("model_sha256", "dtype: string"),
    ("scheduler", "dtype: string"),
    ("alignment_mode", "dtype: string"),
    ("steps", "dtype: int32"),
    ("switch_step", "dtype: int32"),
    ("height", "dtype: int32"),
    ("width", "dtype: int32"),
    ("guidance_scale", "dtype: float32"),
    ("unsafe_image", "dtype: image"),
    ("safe_image", "dtype: image"),
    ("latent_shape", "sequence: int32"),
    ("unsafe_latent", "dtype: binary"),
    ("safe_latent", "dtype: binary"),
    ("ssim", "dtype: float32"),
    ("psnr", "dtype: float32"),
    ("changed_area", "dtype: float32"),
    ("changed_box", "sequence: int32"),
    ("latent_cosine", "dtype: float32"),
    ("nudenet_unsafe", "dtype: float32"),
    ("nudenet_safe", "dtype: float32"),
    ("q16_unsafe", "dtype: float32"),
    ("q16_safe", "dtype: float32"),
    ("sd_safety_checker_unsafe", "dtype: float32"),
    ("sd_safety_checker_safe", "dtype: float32"),
    ("change_mask", "dtype: image"),
    ("change_mask_latent", "dtype: binary"),
    ("trajectory_steps", "sequence: int32"),
    ("trajectory_timesteps", "sequence: int32"),
    ("trajectory_latents", "dtype: binary"),
    ("trajectory_eps_unsafe", "dtype: binary"),
    ("trajectory_eps_safe", "dtype: binary"),
    ("valid", "dtype: bool"),
    ("reject_reasons", "sequence: string"),
    ("acs_version", "dtype: string"),
    ("kernel_path", "dtype: string"),
    ("shapes_unsafe", "dtype: float32"),
    ("shapes_safe", "dtype: float32"),
    ("alignment_settings", "dtype: string"),
    ("blend_mask", "dtype: binary"),
    ("clip_direction", "dtype: float32"),
    ("clip_image", "dtype: float32"),
    ("clip_unsafe", "dtype: float32"),
    ("clip_safe", "dtype: float32"),
    ("blend_mask_image", "dtype: image"),
];

/// Renders the card for a finished dataset.
pub fn dataset_card(dataset: &DatasetManifest, build: &BuildManifest, valid_rows: u64) -> String {
    let mut out = yaml_header(dataset, build.output.license.as_deref());
    let _ = writeln!(out, "# Aligned Counterfactual Safety dataset\n");
    let _ = writeln!(
        out,
        "> **Content warning.** This dataset pairs prompts that describe unsafe content (sexual, \
         violent, hateful, harassing, self-harm, shocking or illegal-activity concepts) with \
         minimally edited safe counterparts, and the images a text-to-image model rendered for \
         them. It exists to train and evaluate safety modules. Do not use it to generate or \
         distribute harmful content.\n"
    );
    let _ = writeln!(
        out,
        "Each row is a pair: an unsafe prompt and a minimally edited safe prompt, rendered by the \
         same model from the same seed and the same initial latent x_T (`x_t_sha256`), so that the \
         two images differ only where the unsafe concept differs.\n"
    );
    out.push_str(&how_it_was_built(dataset, build, valid_rows));
    let _ = writeln!(out, "\n## Loading\n");
    let _ = writeln!(
        out,
        "```python\nfrom datasets import load_dataset\nds = load_dataset(\"parquet\", data_dir=\"data\")\nds[\"train\"][0][\"unsafe_image\"]  # PIL image\n```\n"
    );
    let _ = writeln!(
        out,
        "Latents are float16 little-endian bytes of shape `latent_shape`; `acs validate` re-checks \
         integrity and alignment (see `validation.json` when present)."
    );
    out
}

/// The Hugging Face YAML header: configs and data files per split, the features, sizes.
fn yaml_header(dataset: &DatasetManifest, license: Option<&str>) -> String {
    let mut bytes_per_split: BTreeMap<&str, u64> = BTreeMap::new();
    for shard in &dataset.shards {
        *bytes_per_split.entry(shard.split.as_str()).or_insert(0) += shard.bytes;
    }
    let rows_per_split = dataset.rows_per_split();
    let total_bytes: u64 = bytes_per_split.values().sum();
    let mut out = String::new();
    let _ = writeln!(out, "---");
    let _ = writeln!(out, "pretty_name: Aligned Counterfactual Safety pairs");
    if let Some(license) = license {
        let _ = writeln!(out, "license: {license}");
    }
    let _ = writeln!(
        out,
        "tags:\n- text-to-image\n- safety\n- counterfactual\n- acs"
    );
    let _ = writeln!(out, "configs:\n- config_name: default\n  data_files:");
    for split in rows_per_split.keys() {
        let _ = writeln!(out, "  - split: {split}\n    path: data/{split}-*");
    }
    let _ = writeln!(out, "dataset_info:\n  features:");
    for (name, feature) in FEATURES {
        let _ = writeln!(out, "  - name: {name}\n    {feature}");
    }
    let _ = writeln!(out, "  splits:");
    for (split, rows) in &rows_per_split {
        let bytes = bytes_per_split.get(split.as_str()).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "  - name: {split}\n    num_bytes: {bytes}\n    num_examples: {rows}"
        );
    }
    let _ = writeln!(
        out,
        "  download_size: {total_bytes}\n  dataset_size: {total_bytes}"
    );
    let _ = writeln!(out, "---\n");
    out
}

/// The "How it was built" section: acs version, model, sampling, alignment, rows per split.
fn how_it_was_built(dataset: &DatasetManifest, build: &BuildManifest, valid_rows: u64) -> String {
    let s = &build.sampling;
    let mut out = String::new();
    let _ = writeln!(out, "## How it was built\n");
    let _ = writeln!(
        out,
        "- built by acs {} (schema v{})",
        dataset.acs_version, dataset.schema_version
    );
    let _ = writeln!(
        out,
        "- model: `{}` (sha256 `{}`)",
        dataset.model.id, dataset.model.sha256
    );
    if !dataset.kernel_paths.is_empty() {
        let paths: Vec<String> = dataset
            .kernel_paths
            .iter()
            .map(|p| format!("`{p}`"))
            .collect();
        let _ = writeln!(
            out,
            "- kernel path: {} (the code path that rendered the rows, column `kernel_path`; a \
             re-render on the same path gives the same bits, on another path values that differ \
             by float rounding)",
            paths.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "- sampling: {} {} steps, guidance {}, {}x{} px, negative prompt {:?}, x_T from `{}` seeds",
        s.scheduler, s.steps, s.guidance_scale, s.width, s.height, s.negative_prompt, s.rng
    );
    match build.switch_step() {
        0 => match attention_section::attention_settings(&build.alignment) {
            Some(settings) => {
                let _ = writeln!(
                    out,
                    "- alignment: attention control ({}); each row's `alignment_settings` \
                     holds its own",
                    settings.summary()
                );
            }
            None => {
                let _ = writeln!(out, "- alignment: {}", build.alignment.mode);
            }
        },
        k => {
            let _ = writeln!(
                out,
                "- alignment: {} (the first {k} of {} steps are shared, conditioned on the unsafe prompt)",
                build.alignment.mode, s.steps
            );
        }
    }
    let _ = writeln!(
        out,
        "- build config sha256: `{}`",
        dataset.build_config_sha256
    );
    let _ = writeln!(
        out,
        "- rows: {} ({} valid under the build's thresholds)",
        dataset.total_rows(),
        valid_rows
    );
    for (split, rows) in &dataset.rows_per_split() {
        let _ = writeln!(out, "  - {split}: {rows}");
    }
    out.push_str(&judges_section(dataset, build));
    out.push_str(&training_outputs_section(build));
    out
}

/// The training outputs the build stored: change masks, trajectory targets, benign rows.
fn training_outputs_section(build: &BuildManifest) -> String {
    let o = &build.output;
    let mut lines = Vec::new();
    if o.masks {
        lines.push(format!(
            "- change masks: `change_mask` (1-bit PNG, white = a pixel whose largest channel \
             difference exceeds {}, grown by {} px) and `change_mask_latent` (one byte per \
             latent pixel, 1 where any pixel of its block changed); `changed_area` and \
             `changed_box` are this mask's mean and bounding box",
            o.mask_threshold, o.mask_dilation
        ));
    }
    if !o.trajectory_steps.is_empty() {
        lines.push(format!(
            "- counterfactual trajectory targets at steps {:?}: `trajectory_latents` (the unsafe \
             branch's x_k), `trajectory_eps_unsafe` / `trajectory_eps_safe` (the guided UNet \
             output of the unsafe / safe prompt at that same x_k), float16 little-endian, \
             `[steps, *latent_shape]`",
            o.trajectory_step_indices()
        ));
    }
    if build.sources.iter().any(|s| {
        s.category.as_deref() == Some(acs_schema::SHAPES_CATEGORY)
            || s.categories
                .iter()
                .any(|c| c == acs_schema::SHAPES_CATEGORY)
    }) {
        lines.push(
            "- shapes demonstrator rows: category `shapes`, scenes of flat shapes whose prompts \
             differ in one colour or shape word (a demonstration of alignment, not unsafe \
             content)"
                .to_owned(),
        );
    }
    if build
        .sources
        .iter()
        .any(|s| s.role == crate::manifest::SourceRole::Benign)
    {
        lines.push(
            "- benign preservation rows: category `benign`, one rendering of one prompt on both \
             sides (what a safety patch must leave unchanged)"
                .to_owned(),
        );
    }
    if lines.is_empty() {
        return String::new();
    }
    format!("\n## Training outputs\n\n{}\n", lines.join("\n"))
}

/// The judges that scored the images, with their weights' sha256 and the credit Q16 is due.
fn judges_section(dataset: &DatasetManifest, build: &BuildManifest) -> String {
    let config = &dataset.build_config;
    let mut lines = Vec::new();
    if let Some(sha) = config["detector"]["sha256"].as_str() {
        lines.push(format!(
            "- nudenet: NudeNet 320n (sha256 `{sha}`), columns `nudenet_unsafe` / `nudenet_safe`, \
             flagged at >= {}",
            build.validation.nudenet_threshold
        ));
    }
    for judge in config["judges"].as_array().into_iter().flatten() {
        let name = judge["name"].as_str().unwrap_or("?");
        let sha = judge["sha256"].as_str().unwrap_or("?");
        let line = match name {
            "q16" => format!(
                "- q16: Q16 (Schramowski et al., FAccT 2022; prompts from github.com/ml-research/Q16, \
                 MIT licence) on CLIP ViT-L/14 (sha256 `{sha}`), columns `q16_unsafe` / \
                 `q16_safe` = P(inappropriate), flagged at >= {}",
                build.validation.q16_threshold
            ),
            "shapes" => "- shapes: the shapes demonstrator's scene reader (colour by hue, shape by \
                 solidity and extent, position by the object's box), columns `shapes_unsafe` / \
                 `shapes_safe` = the fraction of its own prompt an image shows; a pair flips \
                 when both images show all of their prompts"
                .to_owned(),
            _ => format!(
                "- sd-safety-checker: the Stable Diffusion safety checker (sha256 `{sha}`), \
                 columns `sd_safety_checker_unsafe` / `sd_safety_checker_safe` = its largest \
                 concept margin, flagged when positive"
            ),
        };
        lines.push(line);
        if judge["default_preprocessing"].as_bool() == Some(true) {
            lines.push(format!(
                "  - {name} had no preprocessor_config.json: CLIP's default preprocessing was used"
            ));
        }
    }
    if let Some(sha) = config["clip_similarity"]["sha256"].as_str() {
        let v = &build.validation;
        lines.push(format!(
            "- CLIP similarity (the InstructPix2Pix generator's, on `{}`, sha256 `{sha}`): \
             `clip_direction` = cos(image_safe - image_unsafe, text_safe - text_unsafe) >= {}, \
             `clip_image` = cos(image_unsafe, image_safe) >= {}, `clip_unsafe` / `clip_safe` = \
             cos(image, its prompt) >= {}",
            v.clip_model
                .as_deref()
                .unwrap_or(crate::commands::judges::DEFAULT_CLIP_MODEL),
            v.clip_direction_min,
            v.clip_image_min,
            v.clip_text_min
        ));
    }
    if let Some((keep, by)) = build.keep_best() {
        lines.push(format!(
            "- keep_best: of each prompt pair's {} renders, the {keep} best valid ones by \
             {by} are kept; the others are invalid with a `keep_best: rank r of n valid` reason",
            build.sampling.seeds_per_prompt
        ));
    }
    if lines.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n## Safety judges\n\n");
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    if build.alignment.require_flip {
        let _ = writeln!(
            out,
            "\nValid pairs flip: the judge of their category flags the unsafe image and not the \
             safe one."
        );
    }
    out
}
