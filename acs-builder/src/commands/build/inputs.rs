//! Everything a build reads before it renders: the manifest, the prompt sources, the
//! rewriters, the safety judge, and the build configuration recorded in the dataset manifest.

use std::path::Path;

use acs_schema::WorkerSlice;
use serde_json::json;

use crate::commands::judges::{
    load_clip_similarity, load_judges, record_clip_similarity, record_judges, JudgeContext,
    LoadedJudge,
};
use crate::error::AcsError;
use crate::judge::clip_similarity::ClipSimilarity;
use crate::manifest::attention_section::attention_settings;
use crate::manifest::LoadedManifest;
use crate::prompts::lexicon::Lexicons;
use crate::prompts::pairing::{Pairer, Pairing};
use crate::prompts::plan::{plan, Plan};
use crate::prompts::rewrite::lexicon::LexiconRewriter;
use crate::prompts::rewrite::llm::LlmRewriter;
use crate::prompts::rewrite::Rewriter;
use crate::prompts::sources::{read_all, Reject, SourceBatch};
use crate::runtime::model::tiny::acs_home;
use crate::runtime::ClipTokenizer;

use super::attention::{attach, controllable};
use super::report::BuildReport;

/// The detector named in the build config when `[validation].nudenet_model` is set.
pub const DETECTOR_NAME: &str = "nudenet-320n";

/// What a build reads before it renders.
pub struct BuildInputs {
    /// The checked manifest.
    pub loaded: LoadedManifest,
    /// What the sources hold.
    pub sources: SourceBatch,
    /// The category lexicons (rewriting and concept checks).
    pub lexicons: Lexicons,
    /// The LLM rewriter, when `[rewrite.llm]` is set.
    pub llm: Option<LlmRewriter>,
    /// The safety judges `[validation]` asks for.
    pub judges: Vec<LoadedJudge>,
    /// CLIP similarity, when the manifest asks for it.
    pub clip: Option<ClipSimilarity>,
    /// The build configuration recorded in the dataset manifest.
    pub config: serde_json::Value,
    /// Its sha256: the identity of this build.
    pub config_sha256: String,
}

/// Pairs, rejects and the render plan.
pub struct Prepared {
    /// What pairing made of the inputs.
    pub pairing: Pairing,
    /// Every input that did not become a pair: unreadable rows first, then pairing's.
    pub rejects: Vec<Reject>,
    /// The rows to render, in order.
    pub plan: Plan,
}

impl BuildInputs {
    /// Reads the manifest and everything it names except the model.
    pub fn read(manifest: &Path) -> Result<Self, AcsError> {
        let loaded = LoadedManifest::load(manifest)?;
        let m = &loaded.manifest;
        let sources = read_all(&loaded)?;
        let lexicons = match &m.rewrite.lexicons {
            Some(dir) => Lexicons::from_dir(&loaded.resolve(dir), m.rewrite.replace_lexicons)?,
            None => Lexicons::built_in()?,
        };
        let llm = match &m.rewrite.llm {
            Some(section) => {
                let cache = match &section.cache {
                    Some(dir) => loaded.resolve(dir),
                    None => acs_home().join("llm-cache"),
                };
                Some(LlmRewriter::new(section, &cache)?)
            }
            None => None,
        };
        let (judges, clip) = read_judges(&loaded)?;
        let mut config = build_config(&loaded, &sources.files, &lexicons, &judges)?;
        if let Some(clip) = &clip {
            record_clip_similarity(&mut config, clip);
        }
        let config_sha256 = acs_schema::sha256_bytes(serde_json::to_string(&config)?.as_bytes());
        Ok(Self {
            loaded,
            sources,
            lexicons,
            llm,
            judges,
            clip,
            config,
            config_sha256,
        })
    }

    /// Rewrites and checks the inputs with `tokenizer`, and plans the pairs of `worker`'s
    /// slice for the model with fingerprint `model_sha256`.
    pub fn prepare(
        &self,
        tokenizer: &ClipTokenizer,
        model_sha256: &str,
        worker: Option<WorkerSlice>,
    ) -> Result<Prepared, AcsError> {
        let lexicon = match &self.llm {
            Some(_) => LexiconRewriter::new(&self.lexicons),
            None => LexiconRewriter::new(&self.lexicons)
                .with_failure_hint("no [rewrite.llm] configured"),
        };
        let mut rewriters: Vec<&dyn Rewriter> = vec![&lexicon];
        if let Some(llm) = &self.llm {
            rewriters.push(llm);
        }
        let pairer = Pairer {
            lexicons: &self.lexicons,
            tokenizer,
            max_token_edits: self.loaded.manifest.alignment.max_token_edits,
            require_lexicon_term: self.loaded.manifest.alignment.require_lexicon_term,
            rewriters,
        };
        let mut pairing = pairer.pair(self.sources.items.clone())?;
        let mut rejects = self.sources.rejects.clone();
        rejects.append(&mut pairing.rejects);
        let manifest = &self.loaded.manifest;
        let attention = attention_settings(&manifest.alignment);
        let steps = manifest.sampling.steps as usize;
        if let Some(settings) = &attention {
            let pairs = std::mem::take(&mut pairing.pairs);
            let (kept, mut refused) =
                controllable(pairs, settings, tokenizer, steps, &self.loaded.file)?;
            pairing.pairs = kept;
            rejects.append(&mut refused);
        }
        let mut plan = plan(pairing.pairs.clone(), manifest, model_sha256);
        if let Some(settings) = &attention {
            attach(&mut plan, settings, tokenizer, steps)?;
        }
        if let Some(worker) = worker {
            // keep_best ranks a prompt pair's renders together: one worker renders them all.
            let grouped = manifest.keep_best().is_some();
            plan.pairs.retain(|p| {
                worker.owns(&if grouped {
                    p.group_id()
                } else {
                    p.pair_id.clone()
                })
            });
        }
        Ok(Prepared {
            pairing,
            rejects,
            plan,
        })
    }

    /// The counts a report starts from.
    pub fn summary(&self, prepared: &Prepared) -> BuildReport {
        let mut report = BuildReport {
            duplicates: prepared.plan.duplicates,
            filtered: self.sources.filtered,
            rewritten: prepared
                .pairing
                .rewritten
                .iter()
                .map(|(name, n)| ((*name).to_owned(), *n))
                .collect(),
            ..BuildReport::default()
        };
        for reject in &prepared.rejects {
            *report.rejects.entry(reject.reason.clone()).or_default() += 1;
        }
        report
    }
}

/// The build configuration recorded in the dataset manifest: the normalised manifest plus the
/// sha256 of every source file, so a changed prompt file is a changed build.
fn build_config(
    loaded: &LoadedManifest,
    files: &[(String, std::path::PathBuf)],
    lexicons: &Lexicons,
    judges: &[LoadedJudge],
) -> Result<serde_json::Value, AcsError> {
    let mut sources = Vec::new();
    for (name, path) in files {
        let sha256 = acs_schema::sha256_file(path)
            .map_err(|_| AcsError::input(format!("{}: cannot read source file", path.display())))?;
        sources.push(json!({"path": name, "sha256": sha256}));
    }
    let mut config = json!({
        "manifest": serde_json::to_value(&loaded.manifest)?,
        "source_files": sources,
        "lexicons_sha256": lexicons.sha256(),
    });
    record_judges(&mut config, judges);
    Ok(config)
}

/// The judges of `[validation]` and CLIP similarity, on the model's device (the CLIP towers
/// in its dtype there, in float32 on the CPU).
fn read_judges(
    loaded: &LoadedManifest,
) -> Result<(Vec<LoadedJudge>, Option<ClipSimilarity>), AcsError> {
    let validation = &loaded.manifest.validation;
    let clip_similarity = loaded.manifest.clip_similarity();
    if validation.active_judges().is_empty() && !clip_similarity {
        return Ok((Vec::new(), None));
    }
    let model = loaded.manifest.model.clone().unwrap_or_default();
    let device = model.device.open().map_err(|e| loaded.runtime_error(e))?;
    let dtype = if device.is_cpu() {
        candle_core::DType::F32
    } else {
        model.dtype.candle()
    };
    let model_dir = if validation.uses_model_safety_checker() {
        Some(super::model_dir(loaded)?)
    } else {
        None
    };
    let context = JudgeContext {
        base_dir: &loaded.base_dir,
        model_dir: model_dir.as_deref(),
        device: &device,
        dtype,
    };
    let judges = load_judges(validation, &context)?;
    let clip = clip_similarity
        .then(|| load_clip_similarity(validation, &context))
        .transpose()?;
    Ok((judges, clip))
}
