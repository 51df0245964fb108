//! diffusers / transformers `config.json` files -> the runtime's model configurations.
//!
//! Every value that changes the computation is read from the file; values that this runtime
//! cannot honour are refused with the file and key named, never silently ignored.

use std::path::Path;

use serde_json::Value;

use super::layers::Activation;
use super::text_encoder::TextEncoderConfig;
use super::unet::{UNetConfig, UNetLevel};
use super::vae::VaeConfig;

use crate::runtime::error::RuntimeError;

/// A parsed JSON config file with typed accessors that name the file and key on error.
pub struct JsonConfig {
    value: Value,
    origin: String,
}

impl JsonConfig {
    /// Reads `path`.
    pub fn read(path: &Path) -> Result<Self, RuntimeError> {
        let bytes = std::fs::read(path).map_err(|e| RuntimeError::io(path, e))?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| RuntimeError::input(format!("{}: invalid JSON: {e}", path.display())))?;
        if !value.is_object() {
            return Err(RuntimeError::input(format!(
                "{}: expected a JSON object",
                path.display()
            )));
        }
        Ok(Self {
            value,
            origin: path.display().to_string(),
        })
    }

    /// The nested object `key` (e.g. a `CLIPConfig`'s `vision_config`), if present.
    pub fn section(&self, key: &str) -> Option<JsonConfig> {
        self.get(key)
            .filter(|v| v.is_object())
            .map(|value| JsonConfig {
                value: value.clone(),
                origin: format!("{} ({key})", self.origin),
            })
    }

    pub(super) fn error(&self, key: &str, reason: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::input(format!("{}: key `{key}`: {reason}", self.origin))
    }

    pub(super) fn get(&self, key: &str) -> Option<&Value> {
        self.value.get(key).filter(|v| !v.is_null())
    }

    /// A required non-negative integer.
    pub fn usize(&self, key: &str) -> Result<usize, RuntimeError> {
        self.usize_or(key, None)
    }

    /// A non-negative integer with a default.
    pub fn usize_or(&self, key: &str, default: Option<usize>) -> Result<usize, RuntimeError> {
        match self.get(key) {
            None => default.ok_or_else(|| self.error(key, "missing")),
            Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| {
                self.error(key, format!("expected a non-negative integer, got {v}"))
            }),
        }
    }

    /// A number with a default.
    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64, RuntimeError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.error(key, format!("expected a number, got {v}"))),
        }
    }

    /// A boolean with a default.
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, RuntimeError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.error(key, format!("expected true or false, got {v}"))),
        }
    }

    /// A string with a default.
    pub fn str_or<'a>(&'a self, key: &str, default: &'a str) -> Result<&'a str, RuntimeError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_str()
                .ok_or_else(|| self.error(key, format!("expected a string, got {v}"))),
        }
    }

    /// The activation named by `key` (`hidden_act`), else `default`.
    pub fn activation_or(&self, key: &str, default: &str) -> Result<Activation, RuntimeError> {
        let name = self.str_or(key, default)?;
        Activation::from_config_name(name).ok_or_else(|| {
            self.error(
                key,
                format!(
                    "`{name}` is not supported (supported: {})",
                    Activation::NAMES.join(", ")
                ),
            )
        })
    }

    /// A list of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<String>, RuntimeError> {
        let list = self
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| self.error(key, "expected a list of strings"))?;
        list.iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| self.error(key, format!("expected strings, got {v}")))
            })
            .collect()
    }

    /// A required list of non-negative integers.
    pub fn usize_list(&self, key: &str) -> Result<Vec<usize>, RuntimeError> {
        let list = self
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| self.error(key, "expected a list of integers"))?;
        list.iter()
            .map(|v| {
                v.as_u64()
                    .map(|x| x as usize)
                    .ok_or_else(|| self.error(key, format!("expected integers, got {v}")))
            })
            .collect()
    }

    /// An integer or a list of `n` integers (diffusers allows both for per-block values).
    pub fn per_block(
        &self,
        key: &str,
        n: usize,
        default: Option<usize>,
    ) -> Result<Vec<usize>, RuntimeError> {
        match self.get(key) {
            None => default
                .map(|d| vec![d; n])
                .ok_or_else(|| self.error(key, "missing")),
            Some(Value::Array(items)) => {
                if items.len() != n {
                    return Err(
                        self.error(key, format!("expected {n} values, got {}", items.len()))
                    );
                }
                items
                    .iter()
                    .map(|v| {
                        v.as_u64()
                            .map(|x| x as usize)
                            .ok_or_else(|| self.error(key, format!("expected integers, got {v}")))
                    })
                    .collect()
            }
            Some(v) => v
                .as_u64()
                .map(|x| vec![x as usize; n])
                .ok_or_else(|| self.error(key, format!("expected an integer or a list, got {v}"))),
        }
    }

    /// Fails unless `key` is absent, null, or one of `accepted`.
    pub fn require_one_of(&self, key: &str, accepted: &[&str]) -> Result<(), RuntimeError> {
        match self.get(key) {
            None => Ok(()),
            Some(Value::String(s)) if accepted.contains(&s.as_str()) => Ok(()),
            Some(v) => Err(self.error(
                key,
                format!(
                    "{v} is not supported by this runtime (supported: {})",
                    accepted.join(", ")
                ),
            )),
        }
    }

    /// Fails unless `key` is absent or null (features this runtime does not implement).
    pub fn require_absent(&self, key: &str) -> Result<(), RuntimeError> {
        match self.get(key) {
            None | Some(Value::Bool(false)) => Ok(()),
            Some(v) => Err(self.error(key, format!("{v} is not supported by this runtime"))),
        }
    }
}

/// Reads `unet/config.json` (diffusers `UNet2DConditionModel`).
pub fn unet_config(cfg: &JsonConfig) -> Result<UNetConfig, RuntimeError> {
    check_unet_features(cfg)?;
    let levels = unet_levels(cfg)?;
    let channels: Vec<usize> = levels.iter().map(|l| l.channels).collect();
    let norm_num_groups = cfg.usize_or("norm_num_groups", Some(32))?;
    if norm_num_groups == 0 {
        return Err(cfg.error("norm_num_groups", "must be positive"));
    }
    if let Some(c) = channels.iter().find(|c| **c % norm_num_groups != 0) {
        return Err(cfg.error(
            "block_out_channels",
            format!("{c} is not divisible by norm_num_groups {norm_num_groups}"),
        ));
    }
    let layers_per_block = cfg.usize_or("layers_per_block", Some(2))?;
    if layers_per_block == 0 {
        return Err(cfg.error("layers_per_block", "must be at least 1"));
    }
    if cfg.f64_or("mid_block_scale_factor", 1.0)? != 1.0 {
        return Err(cfg.error("mid_block_scale_factor", "only 1.0 is supported"));
    }
    Ok(UNetConfig {
        in_channels: cfg.usize_or("in_channels", Some(4))?,
        out_channels: cfg.usize_or("out_channels", Some(4))?,
        levels,
        layers_per_block,
        norm_num_groups,
        norm_eps: cfg.f64_or("norm_eps", 1e-5)?,
        cross_attention_dim: cfg.usize("cross_attention_dim")?,
        use_linear_projection: cfg.bool_or("use_linear_projection", false)?,
        flip_sin_to_cos: cfg.bool_or("flip_sin_to_cos", true)?,
        freq_shift: cfg.f64_or("freq_shift", 0.0)?,
        downsample_padding: cfg.usize_or("downsample_padding", Some(1))?,
        center_input_sample: cfg.bool_or("center_input_sample", false)?,
    })
}

/// Refuses the UNet variants acs does not implement (other classes, activations, embeddings).
fn check_unet_features(cfg: &JsonConfig) -> Result<(), RuntimeError> {
    let class = cfg.str_or("_class_name", "UNet2DConditionModel")?;
    if class != "UNet2DConditionModel" {
        return Err(cfg.error(
            "_class_name",
            format!("`{class}` is not supported (supported: UNet2DConditionModel)"),
        ));
    }
    cfg.require_one_of("act_fn", &["silu"])?;
    cfg.require_one_of("mid_block_type", &["UNetMidBlock2DCrossAttn"])?;
    cfg.require_one_of("time_embedding_type", &["positional"])?;
    cfg.require_one_of("resnet_time_scale_shift", &["default"])?;
    cfg.require_one_of("attention_type", &["default"])?;
    if cfg.f64_or("resnet_out_scale_factor", 1.0)? != 1.0 {
        return Err(cfg.error("resnet_out_scale_factor", "only 1.0 is supported"));
    }
    for key in [
        "class_embed_type",
        "addition_embed_type",
        "encoder_hid_dim",
        "time_cond_proj_dim",
        "num_class_embeds",
        "only_cross_attention",
        "dual_cross_attention",
        "resnet_skip_time_act",
        "cross_attention_norm",
        "class_embeddings_concat",
        "time_embedding_dim",
        "time_embedding_act_fn",
        "timestep_post_act",
        "mid_block_only_cross_attention",
        "projection_class_embeddings_input_dim",
    ] {
        cfg.require_absent(key)?;
    }
    for key in ["conv_in_kernel", "conv_out_kernel"] {
        if cfg.usize_or(key, Some(3))? != 3 {
            return Err(cfg.error(key, "only 3 is supported"));
        }
    }
    Ok(())
}

/// The UNet's levels: channels, cross-attention (down and up blocks mirrored), heads and
/// transformer layers of each.
fn unet_levels(cfg: &JsonConfig) -> Result<Vec<UNetLevel>, RuntimeError> {
    let channels = cfg.usize_list("block_out_channels")?;
    let n = channels.len();
    if n == 0 {
        return Err(cfg.error("block_out_channels", "must not be empty"));
    }
    let down = cfg.strings("down_block_types")?;
    let up = cfg.strings("up_block_types")?;
    if down.len() != n || up.len() != n {
        return Err(cfg.error(
            "down_block_types",
            format!("expected {n} down and up block types to match block_out_channels"),
        ));
    }
    let heads = match cfg.get("num_attention_heads") {
        Some(_) => cfg.per_block("num_attention_heads", n, None)?,
        None => cfg.per_block("attention_head_dim", n, Some(8))?,
    };
    let transformer_layers = cfg.per_block("transformer_layers_per_block", n, Some(1))?;
    let mut levels = Vec::with_capacity(n);
    for i in 0..n {
        let cross_attention = match down[i].as_str() {
            "CrossAttnDownBlock2D" => true,
            "DownBlock2D" => false,
            other => {
                return Err(cfg.error("down_block_types", format!("`{other}` is not supported")))
            }
        };
        let expected_up = if cross_attention {
            "CrossAttnUpBlock2D"
        } else {
            "UpBlock2D"
        };
        if up[n - 1 - i] != expected_up {
            return Err(cfg.error(
                "up_block_types",
                format!(
                    "block {} is `{}`, expected `{expected_up}` to mirror down block {i}",
                    n - 1 - i,
                    up[n - 1 - i]
                ),
            ));
        }
        if heads[i] == 0 || channels[i] % heads[i] != 0 {
            return Err(cfg.error(
                "attention_head_dim",
                format!("{} heads do not divide {} channels", heads[i], channels[i]),
            ));
        }
        levels.push(UNetLevel {
            channels: channels[i],
            cross_attention,
            heads: heads[i],
            transformer_layers: transformer_layers[i],
        });
    }
    Ok(levels)
}

/// Reads `vae/config.json` (diffusers `AutoencoderKL`).
pub fn vae_config(cfg: &JsonConfig) -> Result<VaeConfig, RuntimeError> {
    let class = cfg.str_or("_class_name", "AutoencoderKL")?;
    if class != "AutoencoderKL" {
        return Err(cfg.error(
            "_class_name",
            format!("`{class}` is not supported (supported: AutoencoderKL)"),
        ));
    }
    cfg.require_one_of("act_fn", &["silu"])?;
    if !cfg.bool_or("mid_block_add_attention", true)? {
        return Err(cfg.error("mid_block_add_attention", "false is not supported"));
    }
    let channels = cfg.usize_list("block_out_channels")?;
    if channels.is_empty() {
        return Err(cfg.error("block_out_channels", "must not be empty"));
    }
    for (key, expected) in [
        ("down_block_types", "DownEncoderBlock2D"),
        ("up_block_types", "UpDecoderBlock2D"),
    ] {
        if cfg.get(key).is_some() {
            let types = cfg.strings(key)?;
            if types.len() != channels.len() || types.iter().any(|t| t != expected) {
                return Err(cfg.error(key, format!("expected {} × {expected}", channels.len())));
            }
        }
    }
    let norm_num_groups = cfg.usize_or("norm_num_groups", Some(32))?;
    if let Some(c) = channels.iter().find(|c| **c % norm_num_groups != 0) {
        return Err(cfg.error(
            "block_out_channels",
            format!("{c} is not divisible by norm_num_groups {norm_num_groups}"),
        ));
    }
    cfg.require_absent("shift_factor")?;
    cfg.require_absent("latents_mean")?;
    Ok(VaeConfig {
        out_channels: cfg.usize_or("out_channels", Some(3))?,
        block_out_channels: channels,
        layers_per_block: cfg.usize_or("layers_per_block", Some(1))?,
        latent_channels: cfg.usize_or("latent_channels", Some(4))?,
        norm_num_groups,
        use_post_quant_conv: cfg.bool_or("use_post_quant_conv", true)?,
        scaling_factor: cfg.f64_or("scaling_factor", 0.18215)?,
    })
}

/// Reads `text_encoder/config.json` (transformers `CLIPTextModel`).
pub fn text_encoder_config(cfg: &JsonConfig) -> Result<TextEncoderConfig, RuntimeError> {
    let hidden_act = cfg.activation_or("hidden_act", "quick_gelu")?;
    let hidden_size = cfg.usize("hidden_size")?;
    let heads = cfg.usize("num_attention_heads")?;
    if heads == 0 || hidden_size % heads != 0 {
        return Err(cfg.error(
            "num_attention_heads",
            format!("{heads} does not divide hidden_size {hidden_size}"),
        ));
    }
    Ok(TextEncoderConfig {
        vocab_size: cfg.usize("vocab_size")?,
        hidden_size,
        intermediate_size: cfg.usize("intermediate_size")?,
        num_hidden_layers: cfg.usize("num_hidden_layers")?,
        num_attention_heads: heads,
        max_position_embeddings: cfg.usize_or("max_position_embeddings", Some(77))?,
        hidden_act,
        layer_norm_eps: cfg.f64_or("layer_norm_eps", 1e-5)?,
    })
}

/// Noise schedule settings from `scheduler/scheduler_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    /// First beta.
    pub beta_start: f64,
    /// Last beta.
    pub beta_end: f64,
    /// linear or scaled_linear.
    pub beta_schedule: String,
    /// Training timesteps (1000).
    pub num_train_timesteps: usize,
    /// Added to every inference timestep (1 for SD).
    pub steps_offset: usize,
    /// DDIM: whether the final step's previous alpha is 1 (else alphas_cumprod[0]); `None`
    /// when the config (of another scheduler class) does not say, where diffusers' DDIM
    /// defaults to true.
    pub set_alpha_to_one: Option<bool>,
    /// DDIM: clip the predicted x0 to ±`clip_sample_range`; `None` as above (DDIM: true).
    pub clip_sample: Option<bool>,
    /// DDIM: the clipping range.
    pub clip_sample_range: f64,
    /// epsilon or v_prediction.
    pub prediction_type: String,
    /// leading, trailing or linspace.
    pub timestep_spacing: String,
}

/// Reads a diffusers scheduler config (any of the SD schedulers share these keys).
pub fn noise_schedule(cfg: &JsonConfig) -> Result<NoiseSchedule, RuntimeError> {
    cfg.require_one_of("beta_schedule", &["linear", "scaled_linear"])?;
    cfg.require_one_of("prediction_type", &["epsilon", "v_prediction"])?;
    cfg.require_one_of("timestep_spacing", &["leading", "trailing", "linspace"])?;
    cfg.require_absent("trained_betas")?;
    for key in ["thresholding", "rescale_betas_zero_snr"] {
        if cfg.bool_or(key, false)? {
            return Err(cfg.error(key, "true is not supported"));
        }
    }
    cfg.require_one_of("interpolation_type", &["linear"])?;
    cfg.require_one_of("timestep_type", &["discrete"])?;
    cfg.require_one_of("final_sigmas_type", &["zero"])?;
    let schedule = NoiseSchedule {
        beta_start: cfg.f64_or("beta_start", 0.00085)?,
        beta_end: cfg.f64_or("beta_end", 0.012)?,
        beta_schedule: cfg.str_or("beta_schedule", "scaled_linear")?.to_owned(),
        num_train_timesteps: cfg.usize_or("num_train_timesteps", Some(1000))?,
        steps_offset: cfg.usize_or("steps_offset", Some(1))?,
        set_alpha_to_one: cfg
            .get("set_alpha_to_one")
            .map(|_| cfg.bool_or("set_alpha_to_one", false))
            .transpose()?,
        clip_sample: cfg
            .get("clip_sample")
            .map(|_| cfg.bool_or("clip_sample", false))
            .transpose()?,
        clip_sample_range: cfg.f64_or("clip_sample_range", 1.0)?,
        prediction_type: cfg.str_or("prediction_type", "epsilon")?.to_owned(),
        timestep_spacing: cfg.str_or("timestep_spacing", "leading")?.to_owned(),
    };
    if schedule.num_train_timesteps < 2 {
        return Err(cfg.error("num_train_timesteps", "must be at least 2"));
    }
    Ok(schedule)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> JsonConfig {
        JsonConfig {
            value: serde_json::from_str(json).unwrap(),
            origin: "unet/config.json".into(),
        }
    }

    #[test]
    fn sd15_unet_config_maps_to_levels() {
        let cfg = config(
            r#"{"_class_name":"UNet2DConditionModel","act_fn":"silu","attention_head_dim":8,
            "block_out_channels":[320,640,1280,1280],"cross_attention_dim":768,
            "down_block_types":["CrossAttnDownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D","DownBlock2D"],
            "up_block_types":["UpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D"],
            "in_channels":4,"out_channels":4,"layers_per_block":2,"norm_num_groups":32,"sample_size":64}"#,
        );
        let unet = unet_config(&cfg).unwrap();
        assert_eq!(unet.levels.len(), 4);
        assert!(unet.levels[0].cross_attention);
        assert!(!unet.levels[3].cross_attention);
        assert_eq!(unet.levels[2].heads, 8);
        assert_eq!(unet.levels[1].transformer_layers, 1);
        assert_eq!(unet.cross_attention_dim, 768);
    }

    #[test]
    fn sd2_head_lists_and_linear_projection_are_read() {
        let cfg = config(
            r#"{"attention_head_dim":[5,10,20,20],"block_out_channels":[320,640,1280,1280],
            "cross_attention_dim":1024,"use_linear_projection":true,"upcast_attention":true,
            "down_block_types":["CrossAttnDownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D","DownBlock2D"],
            "up_block_types":["UpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D"]}"#,
        );
        let unet = unet_config(&cfg).unwrap();
        let heads: Vec<usize> = unet.levels.iter().map(|l| l.heads).collect();
        assert_eq!(heads, [5, 10, 20, 20]);
        assert!(unet.use_linear_projection);
    }

    #[test]
    fn unsupported_values_name_the_key() {
        let cfg = config(
            r#"{"block_out_channels":[48],"cross_attention_dim":32,"norm_num_groups":32,
            "down_block_types":["DownBlock2D"],"up_block_types":["UpBlock2D"]}"#,
        );
        let err = unet_config(&cfg).unwrap_err().to_string();
        assert!(
            err.starts_with("unet/config.json: key `block_out_channels`: 48 is not divisible"),
            "{err}"
        );
        let cfg = config(r#"{"addition_embed_type":"text_time","block_out_channels":[32]}"#);
        let err = unet_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("key `addition_embed_type`"), "{err}");
        let cfg = config(
            r#"{"hidden_act":"relu","hidden_size":8,"num_attention_heads":2,"vocab_size":10,
            "intermediate_size":16,"num_hidden_layers":1}"#,
        );
        let err = text_encoder_config(&cfg).err().unwrap().to_string();
        assert!(
            err.contains("key `hidden_act`: `relu` is not supported"),
            "{err}"
        );
    }
}
