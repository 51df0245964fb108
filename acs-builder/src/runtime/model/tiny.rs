//! The embedded tiny model: a Stable-Diffusion-architecture pipeline (CLIP text encoder,
//! UNet2DCondition with cross-attention, AutoencoderKL) with deterministic weights generated
//! from a fixed seed and written in the diffusers folder layout, so that it loads through the
//! same code path as real checkpoints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::{Init, VarBuilder};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::blocks::{ResnetBlock, SpatialSelfAttention};
use super::config::{text_encoder_config, unet_config, vae_config, JsonConfig};
use super::layers::{conv2d, group_norm};
use super::text_encoder::TextEncoder;
use super::unet::UNet;
use super::vae::{VaeConfig, VaeDecoder};
use crate::runtime::error::RuntimeError;
use crate::runtime::rng::SplitMix64;
use crate::runtime::tokenizer::write_tokenizer_folder;

/// Name and version of the embedded model; bump the version when weights or configs change.
pub const TINY_MODEL_ID: &str = "acs/tiny-sd-v1";
const TINY_SEED: u64 = 20_261_128;

fn model_index() -> Value {
    json!({
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "_name_or_path": TINY_MODEL_ID,
        "feature_extractor": [null, null],
        "requires_safety_checker": false,
        "safety_checker": [null, null],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]
    })
}

fn unet_config_json() -> Value {
    json!({
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": "0.42.1",
        "act_fn": "silu",
        "attention_head_dim": 4,
        "block_out_channels": [32, 64],
        "center_input_sample": false,
        "cross_attention_dim": 32,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 1,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "sample_size": 8,
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "use_linear_projection": false
    })
}

fn vae_config_json() -> Value {
    json!({
        "_class_name": "AutoencoderKL",
        "_diffusers_version": "0.42.1",
        "act_fn": "silu",
        "block_out_channels": [32, 32, 32, 32],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 1,
        "norm_num_groups": 32,
        "out_channels": 3,
        "sample_size": 64,
        "scaling_factor": 0.18215,
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
    })
}

fn text_encoder_config_json() -> Value {
    json!({
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "attention_dropout": 0.0,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 49407,
        "hidden_act": "quick_gelu",
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "projection_dim": 32,
        "torch_dtype": "float32",
        "vocab_size": 49408
    })
}

fn scheduler_config() -> Value {
    json!({
        "_class_name": "DDIMScheduler",
        "_diffusers_version": "0.42.1",
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": false,
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "set_alpha_to_one": false,
        "steps_offset": 1,
        "timestep_spacing": "leading"
    })
}

/// A VarBuilder backend that invents every requested tensor from the seed, the tensor's name
/// and candle's init hint, and remembers it so it can be saved.
struct GeneratingBackend {
    seed: u64,
    tensors: Mutex<BTreeMap<String, Tensor>>,
}

impl GeneratingBackend {
    fn values(&self, shape: &Shape, name: &str, init: Init) -> Vec<f32> {
        let digest = Sha256::digest(format!("{}:{name}", self.seed).as_bytes());
        let mut seed_bytes = [0u8; 8];
        seed_bytes.copy_from_slice(&digest[..8]);
        let mut rng = SplitMix64::new(u64::from_le_bytes(seed_bytes));
        let n = shape.elem_count();
        let normal = |rng: &mut SplitMix64, mean: f64, std: f64| (mean + std * rng.normal()) as f32;
        let uniform =
            |rng: &mut SplitMix64, lo: f64, up: f64| (lo + (up - lo) * rng.uniform()) as f32;
        match init {
            Init::Const(v) => vec![v as f32; n],
            Init::Randn { mean, stdev } => (0..n).map(|_| normal(&mut rng, mean, stdev)).collect(),
            Init::Uniform { lo, up } => (0..n).map(|_| uniform(&mut rng, lo, up)).collect(),
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let std = non_linearity.gain() / (fan.for_shape(shape).max(1) as f64).sqrt();
                match dist {
                    candle_nn::init::NormalOrUniform::Normal => {
                        (0..n).map(|_| normal(&mut rng, 0.0, std)).collect()
                    }
                    candle_nn::init::NormalOrUniform::Uniform => {
                        let bound = 3f64.sqrt() * std;
                        (0..n).map(|_| uniform(&mut rng, -bound, bound)).collect()
                    }
                }
            }
        }
    }
}

impl candle_nn::var_builder::SimpleBackend for GeneratingBackend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let values = self.values(&shape, name, init);
        let tensor = Tensor::from_vec(values, shape, dev)?.to_dtype(dtype)?;
        self.tensors
            .lock()
            .map_err(|_| candle_core::Error::Msg("weight generator lock poisoned".into()))?
            .insert(name.to_owned(), tensor.clone());
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        Err(candle_core::Error::Msg(format!(
            "tiny model generator: no shape given for {name}"
        )))
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// Builds one component through `build` with generated weights and saves them.
fn generate_component(
    path: &Path,
    seed: u64,
    build: impl FnOnce(VarBuilder) -> candle_core::Result<()>,
) -> Result<(), RuntimeError> {
    let backend = std::sync::Arc::new(GeneratingBackend {
        seed,
        tensors: Mutex::new(BTreeMap::new()),
    });
    struct Shared(std::sync::Arc<GeneratingBackend>);
    impl candle_nn::var_builder::SimpleBackend for Shared {
        fn get(
            &self,
            s: Shape,
            n: &str,
            h: Init,
            d: DType,
            dev: &Device,
        ) -> candle_core::Result<Tensor> {
            self.0.get(s, n, h, d, dev)
        }
        fn get_unchecked(&self, n: &str, d: DType, dev: &Device) -> candle_core::Result<Tensor> {
            self.0.get_unchecked(n, d, dev)
        }
        fn contains_tensor(&self, n: &str) -> bool {
            self.0.contains_tensor(n)
        }
    }
    let vb = VarBuilder::from_backend(Box::new(Shared(backend.clone())), DType::F32, Device::Cpu);
    build(vb).map_err(|e| RuntimeError::candle("generating the tiny model", e))?;
    let tensors = backend
        .tensors
        .lock()
        .map_err(|_| RuntimeError::internal("weight generator lock poisoned"))?
        .clone()
        .into_iter()
        .collect::<std::collections::HashMap<_, _>>();
    candle_core::safetensors::save(&tensors, path)
        .map_err(|e| RuntimeError::candle(&format!("writing {}", path.display()), e))
}

/// Requests the VAE encoder's weights (acs never runs the encoder, but diffusers refuses a
/// VAE file without them), with diffusers' names and shapes.
fn declare_vae_encoder(vb: VarBuilder, vae: &VaeConfig) -> candle_core::Result<()> {
    const EPS: f64 = 1e-6;
    let channels = &vae.block_out_channels;
    let groups = vae.norm_num_groups;
    let latent = vae.latent_channels;
    let deepest = channels[channels.len() - 1];
    let enc = vb.pp("encoder");
    conv2d(3, channels[0], 3, 1, 1, enc.pp("conv_in"))?;
    let mut prev = channels[0];
    for (i, &out) in channels.iter().enumerate() {
        let block = enc.pp(format!("down_blocks.{i}"));
        for j in 0..vae.layers_per_block {
            let in_c = if j == 0 { prev } else { out };
            let vb = block.pp(format!("resnets.{j}"));
            ResnetBlock::new(vb, in_c, out, None, groups, EPS)?;
        }
        if i + 1 < channels.len() {
            conv2d(out, out, 3, 2, 0, block.pp("downsamplers.0.conv"))?;
        }
        prev = out;
    }
    let mid = enc.pp("mid_block");
    for i in 0..2 {
        let vb = mid.pp(format!("resnets.{i}"));
        ResnetBlock::new(vb, deepest, deepest, None, groups, EPS)?;
    }
    SpatialSelfAttention::new(mid.pp("attentions.0"), deepest, groups, EPS)?;
    group_norm(groups, deepest, EPS, enc.pp("conv_norm_out"))?;
    conv2d(deepest, 2 * latent, 3, 1, 1, enc.pp("conv_out"))?;
    conv2d(2 * latent, 2 * latent, 1, 1, 0, vb.pp("quant_conv"))?;
    Ok(())
}

fn write_json(path: &Path, value: &Value) -> Result<(), RuntimeError> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    std::fs::write(path, bytes).map_err(|e| RuntimeError::io(path, e))
}

/// Writes the tiny model in diffusers layout into `dir`, which must not exist yet or be empty.
/// The folder is assembled under a temporary sibling name and renamed when complete.
pub fn write_tiny_model(dir: &Path) -> Result<(), RuntimeError> {
    super::embedded::write_staged(dir, fill_tiny_model)
}

/// Writes the tiny model's files under `root` (an empty staging folder).
fn fill_tiny_model(root: &Path) -> Result<(), RuntimeError> {
    for sub in ["unet", "vae", "text_encoder", "tokenizer", "scheduler"] {
        let path = root.join(sub);
        std::fs::create_dir_all(&path).map_err(|e| RuntimeError::io(&path, e))?;
    }
    write_json(&root.join("model_index.json"), &model_index())?;
    write_json(
        &root.join("scheduler/scheduler_config.json"),
        &scheduler_config(),
    )?;
    write_tokenizer_folder(&root.join("tokenizer"))?;

    let unet_json = unet_config_json();
    write_json(&root.join("unet/config.json"), &unet_json)?;
    let unet = unet_config(&JsonConfig::read(&root.join("unet/config.json"))?)?;
    generate_component(
        &root.join("unet/diffusion_pytorch_model.safetensors"),
        TINY_SEED,
        |vb| UNet::new(vb, &unet).map(|_| ()),
    )?;

    write_json(&root.join("vae/config.json"), &vae_config_json())?;
    let vae = vae_config(&JsonConfig::read(&root.join("vae/config.json"))?)?;
    generate_component(
        &root.join("vae/diffusion_pytorch_model.safetensors"),
        TINY_SEED + 1,
        |vb| {
            declare_vae_encoder(vb.clone(), &vae)?;
            VaeDecoder::new(vb, &vae).map(|_| ())
        },
    )?;

    write_json(
        &root.join("text_encoder/config.json"),
        &text_encoder_config_json(),
    )?;
    let clip = text_encoder_config(&JsonConfig::read(&root.join("text_encoder/config.json"))?)?;
    generate_component(
        &root.join("text_encoder/model.safetensors"),
        TINY_SEED + 2,
        |vb| TextEncoder::new(vb, &clip).map(|_| ()),
    )?;

    Ok(())
}

/// acs's own folder for caches: `$ACS_HOME`, else `$XDG_CACHE_HOME/acs`, else `~/.cache/acs`.
pub fn acs_home() -> PathBuf {
    std::env::var_os("ACS_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("acs")))
        .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache/acs")))
        .unwrap_or_else(|| std::env::temp_dir().join("acs"))
}
