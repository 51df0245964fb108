//! Which files of a hub repository acs needs. A diffusers Stable Diffusion repository: the
//! configs, the tokenizer files and one safetensors file per network (text encoder, UNet, VAE),
//! plus the safety checker and its feature extractor when asked for. A transformers repository
//! (a CLIP model, a safety checker of its own): `config.json`, `preprocessor_config.json` and
//! the safetensors weights. Never pickles (`.bin`, `.ckpt`), never root-level single-file
//! checkpoints.

use std::collections::BTreeSet;

use crate::runtime::error::RuntimeError;

/// A weights variant published beside the full-precision files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `*.fp16.safetensors`: half-precision weights, half the download.
    Fp16,
}

impl Variant {
    /// The variant named on the command line.
    pub fn parse(name: &str) -> Result<Self, RuntimeError> {
        match name {
            "fp16" => Ok(Self::Fp16),
            other => Err(RuntimeError::input(format!(
                "--variant: `{other}` is not a variant (expected fp16)"
            ))),
        }
    }

    /// The infix of the variant's file names (`model.fp16.safetensors`).
    pub fn infix(self) -> &'static str {
        match self {
            Self::Fp16 => "fp16",
        }
    }
}

/// Configs every diffusers Stable Diffusion repository has.
const CONFIGS: [&str; 5] = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "unet/config.json",
    "vae/config.json",
];

/// Tokenizer files, fetched when present.
const TOKENIZER: [&str; 5] = [
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/special_tokens_map.json",
];

/// (component folder, weight file stem) of each network.
const WEIGHTS: [(&str, &str); 3] = [
    ("text_encoder", "model"),
    ("unet", "diffusion_pytorch_model"),
    ("vae", "diffusion_pytorch_model"),
];

/// The files to fetch, and notes about choices made (a variant that is not published).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Repository-relative paths, configs first, weights last.
    pub files: Vec<String>,
    /// One line per fallback, for the user.
    pub notes: Vec<String>,
}

/// Picks the files of `available` (the repository's file list) that `repo` needs; with
/// `safety_checker`, a Stable Diffusion repository's `safety_checker/` and
/// `feature_extractor/` too.
pub fn select_files(
    repo: &str,
    available: &[String],
    variant: Option<Variant>,
    safety_checker: bool,
) -> Result<Selection, RuntimeError> {
    let has: BTreeSet<&str> = available.iter().map(String::as_str).collect();
    if has.contains("config.json") && !has.contains("model_index.json") {
        return select_transformers(repo, &has, variant);
    }
    let mut selection = select_diffusers(repo, &has, variant)?;
    if safety_checker {
        if !has.contains("safety_checker/config.json") {
            return Err(RuntimeError::input(format!(
                "{repo}: has no safety_checker/ folder"
            )));
        }
        selection.files.push("safety_checker/config.json".into());
        if has.contains("feature_extractor/preprocessor_config.json") {
            selection
                .files
                .push("feature_extractor/preprocessor_config.json".into());
        }
        let weights = pick_weights(
            repo,
            "safety_checker",
            "model",
            &has,
            variant,
            &mut selection.notes,
        )?;
        selection.files.push(weights);
    }
    Ok(selection)
}

/// A transformers model: its config, its preprocessor config, its safetensors weights (one
/// file, or the shards of an index).
fn select_transformers(
    repo: &str,
    has: &BTreeSet<&str>,
    variant: Option<Variant>,
) -> Result<Selection, RuntimeError> {
    let mut files = vec!["config.json".to_owned()];
    if has.contains("preprocessor_config.json") {
        files.push("preprocessor_config.json".into());
    }
    let mut notes = Vec::new();
    if has.contains("model.safetensors.index.json") && !has.contains("model.safetensors") {
        files.push("model.safetensors.index.json".into());
        files.extend(
            has.iter()
                .filter(|f| f.starts_with("model-") && f.ends_with(".safetensors"))
                .map(|f| (*f).to_owned()),
        );
        return Ok(Selection { files, notes });
    }
    let weights = pick_weights(repo, "", "model", has, variant, &mut notes)?;
    files.push(weights);
    Ok(Selection { files, notes })
}

/// The weights file of `component` (`""`: the repository root): the variant when asked for
/// and published, else the full-precision file.
fn pick_weights(
    repo: &str,
    component: &str,
    stem: &str,
    has: &BTreeSet<&str>,
    variant: Option<Variant>,
    notes: &mut Vec<String>,
) -> Result<String, RuntimeError> {
    let prefix = if component.is_empty() {
        String::new()
    } else {
        format!("{component}/")
    };
    let full = format!("{prefix}{stem}.safetensors");
    let wanted = variant.map(|v| format!("{prefix}{stem}.{}.safetensors", v.infix()));
    match &wanted {
        Some(wanted) if has.contains(wanted.as_str()) => Ok(wanted.clone()),
        Some(wanted) if has.contains(full.as_str()) => {
            notes.push(format!(
                "{repo}: {wanted} is not published; fetching {full} instead"
            ));
            Ok(full)
        }
        None if has.contains(full.as_str()) => Ok(full),
        _ => Err(no_weights(repo, component, stem, has, variant)),
    }
}

/// A diffusers Stable Diffusion repository's configs, tokenizer and network weights.
fn select_diffusers(
    repo: &str,
    has: &BTreeSet<&str>,
    variant: Option<Variant>,
) -> Result<Selection, RuntimeError> {
    let missing: Vec<&str> = CONFIGS.into_iter().filter(|f| !has.contains(f)).collect();
    if !missing.is_empty() {
        return Err(RuntimeError::input(format!(
            "{repo}: not a diffusers Stable Diffusion repository: it has no {}",
            missing.join(", ")
        )));
    }
    let mut files: Vec<String> = CONFIGS.iter().map(|f| (*f).to_owned()).collect();
    let tokenizer: Vec<&str> = TOKENIZER.into_iter().filter(|f| has.contains(f)).collect();
    let bpe =
        tokenizer.contains(&"tokenizer/vocab.json") && tokenizer.contains(&"tokenizer/merges.txt");
    if !bpe && !tokenizer.contains(&"tokenizer/tokenizer.json") {
        return Err(RuntimeError::input(format!(
            "{repo}: has no CLIP tokenizer (tokenizer/vocab.json + merges.txt, or \
             tokenizer/tokenizer.json)"
        )));
    }
    files.extend(tokenizer.into_iter().map(str::to_owned));
    let mut notes = Vec::new();
    for (component, stem) in WEIGHTS {
        files.push(pick_weights(
            repo, component, stem, has, variant, &mut notes,
        )?);
    }
    Ok(Selection { files, notes })
}

/// Why `component` has no usable weights, with what to do about it.
fn no_weights(
    repo: &str,
    component: &str,
    stem: &str,
    has: &BTreeSet<&str>,
    variant: Option<Variant>,
) -> RuntimeError {
    let prefix = if component.is_empty() {
        String::new()
    } else {
        format!("{component}/")
    };
    let half = format!("{prefix}{stem}.fp16.safetensors");
    if variant.is_none() && has.contains(half.as_str()) {
        return RuntimeError::input(format!(
            "{repo}: {prefix}{stem}.safetensors is not published, only {half}: rerun with \
             --variant fp16"
        ));
    }
    let index = format!("{prefix}{stem}.safetensors.index.json");
    if has.contains(index.as_str()) {
        return RuntimeError::input(format!(
            "{repo}: {component} weights are sharded ({index}); acs loads single-file \
             safetensors weights only"
        ));
    }
    let pickles: Vec<&str> = has
        .iter()
        .copied()
        .filter(|f| {
            f.strip_prefix(prefix.as_str()).is_some_and(|name| {
                !name.contains('/') && (name.ends_with(".bin") || name.ends_with(".ckpt"))
            })
        })
        .collect();
    if !pickles.is_empty() {
        return RuntimeError::input(format!(
            "{repo}: {component} weights are published only as pickles ({}); acs downloads \
             safetensors only (unpickling runs arbitrary code)",
            pickles.join(", ")
        ));
    }
    let what = if component.is_empty() {
        "model"
    } else {
        component
    };
    RuntimeError::input(format!(
        "{repo}: has no {what} weights ({prefix}{stem}.safetensors)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file list of a typical Stable Diffusion 1.x repository.
    fn sd15() -> Vec<String> {
        [
            ".gitattributes",
            "README.md",
            "feature_extractor/preprocessor_config.json",
            "model_index.json",
            "safety_checker/config.json",
            "safety_checker/model.safetensors",
            "safety_checker/pytorch_model.bin",
            "scheduler/scheduler_config.json",
            "text_encoder/config.json",
            "text_encoder/model.fp16.safetensors",
            "text_encoder/model.safetensors",
            "text_encoder/pytorch_model.bin",
            "tokenizer/merges.txt",
            "tokenizer/special_tokens_map.json",
            "tokenizer/tokenizer_config.json",
            "tokenizer/vocab.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.bin",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "unet/diffusion_pytorch_model.safetensors",
            "v1-5-pruned-emaonly.ckpt",
            "v1-5-pruned-emaonly.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.bin",
            "vae/diffusion_pytorch_model.safetensors",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    #[test]
    fn picks_configs_tokenizer_and_safetensors() {
        let selection = select_files("o/n", &sd15(), None, false).unwrap();
        assert_eq!(
            selection.files,
            [
                "model_index.json",
                "scheduler/scheduler_config.json",
                "text_encoder/config.json",
                "unet/config.json",
                "vae/config.json",
                "tokenizer/vocab.json",
                "tokenizer/merges.txt",
                "tokenizer/tokenizer_config.json",
                "tokenizer/special_tokens_map.json",
                "text_encoder/model.safetensors",
                "unet/diffusion_pytorch_model.safetensors",
                "vae/diffusion_pytorch_model.safetensors",
            ]
        );
        assert!(selection.notes.is_empty());
    }

    #[test]
    fn fp16_variant_falls_back_per_component() {
        let selection = select_files("o/n", &sd15(), Some(Variant::Fp16), false).unwrap();
        let weights = &selection.files[selection.files.len() - 3..];
        assert_eq!(
            weights,
            [
                "text_encoder/model.fp16.safetensors",
                "unet/diffusion_pytorch_model.fp16.safetensors",
                "vae/diffusion_pytorch_model.safetensors",
            ]
        );
        assert_eq!(selection.notes.len(), 1);
        assert!(
            selection.notes[0]
                .contains("vae/diffusion_pytorch_model.fp16.safetensors is not published"),
            "{:?}",
            selection.notes
        );
        for file in &selection.files {
            let excluded = file.ends_with(".bin")
                || file.ends_with(".ckpt")
                || file.starts_with("safety_checker/")
                || file.starts_with("feature_extractor/")
                || (!file.contains('/') && file != "model_index.json");
            assert!(!excluded, "{file}");
        }
    }

    #[test]
    fn unusable_repositories_say_why() {
        let without = |drop: &[&str]| -> Vec<String> {
            sd15()
                .into_iter()
                .filter(|f| !drop.contains(&f.as_str()))
                .collect()
        };
        let err = |files: Vec<String>, variant| {
            select_files("o/n", &files, variant, false)
                .unwrap_err()
                .to_string()
        };
        let message = err(without(&["unet/diffusion_pytorch_model.safetensors"]), None);
        assert!(message.contains("rerun with --variant fp16"), "{message}");
        let message = err(
            without(&[
                "unet/diffusion_pytorch_model.safetensors",
                "unet/diffusion_pytorch_model.fp16.safetensors",
            ]),
            Some(Variant::Fp16),
        );
        assert!(
            message.contains("only as pickles (unet/diffusion_pytorch_model.bin)"),
            "{message}"
        );
        let message = err(without(&["vae/config.json", "model_index.json"]), None);
        assert!(
            message.contains("not a diffusers")
                && message.contains("model_index.json, vae/config.json"),
            "{message}"
        );
        let message = err(without(&["tokenizer/vocab.json"]), None);
        assert!(message.contains("no CLIP tokenizer"), "{message}");
        let mut sharded = without(&[
            "text_encoder/model.safetensors",
            "text_encoder/model.fp16.safetensors",
            "text_encoder/pytorch_model.bin",
        ]);
        sharded.push("text_encoder/model.safetensors.index.json".to_owned());
        assert!(err(sharded, None).contains("sharded"));
        assert!(Variant::parse("bf16").is_err());
    }

    #[test]
    fn safety_checkers_and_transformers_models() {
        let selection = select_files("o/n", &sd15(), Some(Variant::Fp16), true).unwrap();
        let extra = &selection.files[selection.files.len() - 3..];
        assert_eq!(
            extra,
            [
                "safety_checker/config.json",
                "feature_extractor/preprocessor_config.json",
                "safety_checker/model.safetensors",
            ]
        );
        let clip: Vec<String> = [
            "config.json",
            "merges.txt",
            "model.safetensors",
            "preprocessor_config.json",
            "pytorch_model.bin",
            "tf_model.h5",
            "tokenizer.json",
        ]
        .map(str::to_owned)
        .to_vec();
        let selection = select_files("openai/clip", &clip, None, false).unwrap();
        assert_eq!(
            selection.files,
            [
                "config.json",
                "preprocessor_config.json",
                "model.safetensors"
            ]
        );
        let pickled: Vec<String> = clip
            .into_iter()
            .filter(|f| f != "model.safetensors")
            .collect();
        let err = select_files("openai/clip", &pickled, None, false).unwrap_err();
        assert!(
            err.to_string()
                .contains("only as pickles (pytorch_model.bin)"),
            "{err}"
        );
        assert_eq!(Variant::parse("fp16").unwrap(), Variant::Fp16);
    }
}
