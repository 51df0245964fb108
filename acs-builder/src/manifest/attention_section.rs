//! The attention-control keys of `[alignment]` (`mode = "attention"`), their checks, and the
//! runtime settings they make (`runtime::attention::pair_control::AttentionSettings`).
//!
//! ```toml
//! [alignment]
//! mode = "attention"
//! cross_replace = 0.8            # or [start, end], or { default = 1.0, "clean" = 0.4 }
//! self_replace = 0.4             # or [start, end]
//! reweight = { "clean" = 2.0 }
//! local_blend = { threshold = 0.3, start = 0.2 }   # words = [...]: else the edited words;
//!                                                  # downscale = 2: maps at latent/2
//! # or the InstructPix2Pix generator's variant, instead of the four above:
//! # share_self_attention = 0.5   # or [0.1, 0.9], drawn per pair from its seed
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::checks::{fail, Check};
use super::sections::{AlignmentMode, AlignmentSection};
use crate::runtime::attention::pair_control::{AttentionSettings, LocalBlend, ShareFraction};
use crate::runtime::attention::schedule::{CrossReplace, StepRange};

/// A fraction of the steps from the start (`0.4`), or a range of them (`[0.1, 0.6]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StepsSetting {
    /// The first fraction of the steps.
    Fraction(f64),
    /// [start, end) as fractions of the steps.
    Range([f64; 2]),
}

impl StepsSetting {
    fn range(self) -> Result<StepRange, String> {
        match self {
            StepsSetting::Fraction(end) => StepRange::first(end),
            StepsSetting::Range([start, end]) => StepRange::new(start, end),
        }
    }
}

/// `cross_replace`: for every token, or per word with a `default` for the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CrossReplaceSetting {
    /// The same steps for every token.
    All(StepsSetting),
    /// `{ default = ..., "word" = ... }`.
    PerWord(BTreeMap<String, StepsSetting>),
}

/// The word key of [`CrossReplaceSetting::PerWord`] that sets the other tokens' steps.
pub const DEFAULT_WORD_KEY: &str = "default";

/// Steps of cross-attention replacement where the manifest sets none.
pub const DEFAULT_CROSS_REPLACE: f64 = 0.8;

/// `local_blend`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalBlendSection {
    /// Mask threshold over the map's maximum, in (0, 1).
    pub threshold: f32,
    /// Fraction of the steps after which blending starts.
    pub start: f64,
    /// The words whose attention makes the mask; empty: the words the edit changed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub words: Vec<String>,
    /// The maps come from the cross-attention layers at latent size / `downscale` (1, 2, 4,
    /// 8, ...); absent: the coarsest level with cross-attention (latent/4 in SD 1.x and 2.x,
    /// Prompt-to-Prompt's 16 x 16 at 512 px).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downscale: Option<u32>,
}

impl Default for LocalBlendSection {
    fn default() -> Self {
        Self {
            threshold: 0.3,
            start: 0.2,
            words: Vec::new(),
            downscale: None,
        }
    }
}

/// The first Prompt-to-Prompt key that is set.
fn prompt_to_prompt_key(a: &AlignmentSection) -> Option<&'static str> {
    [
        ("cross_replace", a.cross_replace.is_some()),
        ("self_replace", a.self_replace.is_some()),
        ("reweight", !a.reweight.is_empty()),
        ("local_blend", a.local_blend.is_some()),
    ]
    .into_iter()
    .find(|(_, set)| *set)
    .map(|(key, _)| key)
}

/// The first attention-control key that is set.
fn any_key(a: &AlignmentSection) -> Option<&'static str> {
    prompt_to_prompt_key(a).or(a.share_self_attention.map(|_| "share_self_attention"))
}

/// Checks the attention keys of `[alignment]`.
pub fn check_attention(a: &AlignmentSection) -> Check {
    if a.mode != AlignmentMode::Attention {
        return match any_key(a) {
            Some(key) => fail(
                &format!("[alignment].{key}"),
                format!("needs mode = \"attention\" (the mode is \"{}\")", a.mode),
            ),
            None => Ok(()),
        };
    }
    settings_of(a).map(|_| ())
}

/// The runtime settings of `[alignment]` in attention mode (`None` in the other modes); the
/// `Err` names the key and the reason.
pub fn attention_settings(a: &AlignmentSection) -> Option<AttentionSettings> {
    (a.mode == AlignmentMode::Attention)
        .then(|| settings_of(a).ok())
        .flatten()
}

fn settings_of(a: &AlignmentSection) -> Result<AttentionSettings, (String, String)> {
    let key = |name: &str| format!("[alignment].{name}");
    let steps = |name: &str, s: StepsSetting| s.range().map_err(|r| (key(name), r));
    if let (Some(_), Some(other)) = (&a.share_self_attention, prompt_to_prompt_key(a)) {
        return Err((
            key("share_self_attention"),
            format!(
                "the InstructPix2Pix variant replaces the Prompt-to-Prompt controls; remove \
                 `{other}` or `share_self_attention`"
            ),
        ));
    }
    if let Some(share) = a.share_self_attention {
        steps("share_self_attention", share)?;
        let fraction = match share {
            StepsSetting::Fraction(p) => ShareFraction::Fixed(p),
            StepsSetting::Range([low, high]) => ShareFraction::Drawn { low, high },
        };
        return Ok(AttentionSettings {
            share_self_attention: Some(fraction),
            ..AttentionSettings::default()
        });
    }
    let cross_replace = match &a.cross_replace {
        None => CrossReplace {
            default: StepRange::first(DEFAULT_CROSS_REPLACE).expect("a valid fraction"),
            words: Vec::new(),
        },
        Some(CrossReplaceSetting::All(s)) => CrossReplace {
            default: steps("cross_replace", *s)?,
            words: Vec::new(),
        },
        Some(CrossReplaceSetting::PerWord(words)) => {
            // As Prompt-to-Prompt: a per-word table without `default` replaces the other
            // tokens at every step.
            let mut default = StepRange::first(1.0).expect("a valid fraction");
            let mut overrides = Vec::new();
            for (word, s) in words {
                let name = format!("cross_replace.{word}");
                let range = steps(&name, *s)?;
                if word == DEFAULT_WORD_KEY {
                    default = range;
                } else {
                    check_word(&name, word)?;
                    overrides.push((word.clone(), range));
                }
            }
            CrossReplace {
                default,
                words: overrides,
            }
        }
    };
    let self_replace = match a.self_replace {
        Some(s) => steps("self_replace", s)?,
        None => StepRange::first(0.4).expect("a valid fraction"),
    };
    let mut reweight = Vec::new();
    for (word, &factor) in &a.reweight {
        let name = format!("reweight.{word}");
        check_word(&name, word)?;
        if !(factor.is_finite() && factor >= 0.0) {
            return Err((
                key(&name),
                format!("must be a finite factor >= 0 (got {factor})"),
            ));
        }
        reweight.push((word.clone(), factor));
    }
    let local_blend = match &a.local_blend {
        None => None,
        Some(blend) => {
            if !(blend.threshold > 0.0 && blend.threshold < 1.0) {
                return Err((
                    key("local_blend.threshold"),
                    format!("must be in (0, 1) (got {})", blend.threshold),
                ));
            }
            if !(0.0..=1.0).contains(&blend.start) {
                return Err((
                    key("local_blend.start"),
                    format!("must be in [0, 1] (got {})", blend.start),
                ));
            }
            for word in &blend.words {
                check_word("local_blend.words", word)?;
            }
            let level = match blend.downscale {
                None => None,
                Some(d) if d.is_power_of_two() => Some(d.trailing_zeros() as usize),
                Some(d) => {
                    return Err((
                        key("local_blend.downscale"),
                        format!("must be a power of two: 1, 2, 4, 8, ... (got {d})"),
                    ))
                }
            };
            Some(LocalBlend {
                threshold: blend.threshold,
                start: blend.start,
                words: blend.words.clone(),
                level,
            })
        }
    };
    Ok(AttentionSettings {
        cross_replace: Some(cross_replace),
        self_replace: Some(self_replace),
        reweight,
        local_blend,
        share_self_attention: None,
    })
}

/// A word key must be one whitespace-free word.
fn check_word(name: &str, word: &str) -> Result<(), (String, String)> {
    if word.is_empty() || word.chars().any(char::is_whitespace) {
        return Err((
            format!("[alignment].{name}"),
            format!("{word:?} is not one word (words are compared whitespace-separated)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml_text: &str) -> AlignmentSection {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn the_defaults_are_prompt_to_prompts_example() {
        let settings = attention_settings(&section("mode = \"attention\"")).unwrap();
        assert_eq!(settings, AttentionSettings::prompt_to_prompt_defaults());
    }

    #[test]
    fn every_form_of_the_keys_is_read() {
        let no_default = section("mode = \"attention\"\ncross_replace = { clean = 0.4 }");
        let cross = attention_settings(&no_default)
            .unwrap()
            .cross_replace
            .unwrap();
        assert_eq!(cross.default, StepRange::first(1.0).unwrap());
        let a = section(
            "mode = \"attention\"\ncross_replace = { default = 1, clean = [0.1, 0.4] }\n\
             self_replace = [0.0, 0.3]\nreweight = { clean = 2.0 }\n\
             local_blend = { threshold = 0.5, words = [\"knife\"] }",
        );
        let s = attention_settings(&a).unwrap();
        let cross = s.cross_replace.unwrap();
        assert_eq!(cross.default, StepRange::first(1.0).unwrap());
        assert_eq!(
            cross.words,
            vec![("clean".into(), StepRange::new(0.1, 0.4).unwrap())]
        );
        assert_eq!(s.self_replace, Some(StepRange::new(0.0, 0.3).unwrap()));
        assert_eq!(s.reweight, vec![("clean".into(), 2.0)]);
        let blend = s.local_blend.unwrap();
        assert_eq!((blend.threshold, blend.start), (0.5, 0.2));
        let ip2p = section("mode = \"attention\"\nshare_self_attention = [0.1, 0.9]");
        assert_eq!(
            attention_settings(&ip2p).unwrap().share_self_attention,
            Some(ShareFraction::Drawn {
                low: 0.1,
                high: 0.9
            })
        );
    }

    #[test]
    fn bad_settings_name_their_key() {
        let refused = |text: &str| check_attention(&section(text)).unwrap_err();
        assert_eq!(
            refused("cross_replace = 0.5").0,
            "[alignment].cross_replace"
        );
        let (key, reason) = refused("mode = \"attention\"\ncross_replace = 1.5");
        assert_eq!(key, "[alignment].cross_replace");
        assert!(reason.contains("[0, 1]"), "{reason}");
        let (key, _) = refused("mode = \"attention\"\nself_replace = [0.6, 0.2]");
        assert_eq!(key, "[alignment].self_replace");
        let (key, _) = refused("mode = \"attention\"\nlocal_blend = { threshold = 1.0 }");
        assert_eq!(key, "[alignment].local_blend.threshold");
        let (key, _) = refused("mode = \"attention\"\nlocal_blend = { downscale = 3 }");
        assert_eq!(key, "[alignment].local_blend.downscale");
        let (key, _) = refused("mode = \"attention\"\nreweight = { \"two words\" = 2.0 }");
        assert_eq!(key, "[alignment].reweight.two words");
        let (key, reason) =
            refused("mode = \"attention\"\nshare_self_attention = 0.5\nself_replace = 0.2");
        assert_eq!(key, "[alignment].share_self_attention");
        assert!(reason.contains("self_replace"), "{reason}");
    }
}
