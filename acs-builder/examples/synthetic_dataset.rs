//! Writes a synthetic but valid acs dataset, for benchmarks of `acs validate` and of readers
//! (scripts/bench-validate.sh) where rendering real pairs would take hours.
//!
//! Each pair is a smooth, natural-looking scene (plane waves of random directions, soft-edged
//! ellipses and a little grain, from a seeded splitmix64 generator) with a local edit in the
//! safe image (the "concept" object replaced by another one, plus a faint global brightness
//! drift), and random float16 latents that differ in the edited region. Every column is filled
//! the way `acs build` fills it: metrics from `acs_builder::judge::metrics` on the float16 latents as
//! stored, the verdict from `acs_builder::judge::verdict` under the (default) build manifest recorded
//! in the dataset manifest, the split from the pair id, shards through the build's shard sink
//! and the dataset card, so `acs validate DIR` passes on the result.
//!
//! Usage:
//!
//! ```text
//! cargo run --release -p acs-builder --example synthetic_dataset -- \
//!     --pairs 1000 --size 512 --out DIR [--seed 0]
//! ```

use std::f64::consts::TAU;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use acs_builder::commands::build::metrics_as_stored;
use acs_builder::judge::metrics::ChangedBox;
use acs_builder::judge::verdict::{verdict, JudgeScores, Thresholds};
use acs_builder::manifest::{parse_byte_size, BuildManifest};
use acs_builder::prompts::pairing::PromptPair;
use acs_builder::prompts::plan::{pair_id, split_of};
use acs_builder::store::card::dataset_card;
use acs_builder::store::imaging::encode_png;
use acs_builder::store::sink::ShardSink;
use acs_builder::store::REJECTS_FILE;
use acs_builder::AcsError;
use acs_builder::ACS_VERSION;
use acs_schema::{write_atomic, DatasetManifest, ImageBlob, ModelInfo, PairRecord, SCHEMA_VERSION};
use clap::Parser;
use rayon::prelude::*;
use serde_json::json;

/// The model id recorded in the rows and the manifest.
const MODEL_ID: &str = "acs-synthetic";
/// Pairs generated in parallel before they go to the sink.
const BATCH: usize = 64;

#[derive(Parser)]
#[command(about = "Writes a synthetic, valid acs dataset of aligned image pairs")]
struct Args {
    /// Number of pairs.
    #[arg(long, default_value_t = 1000)]
    pairs: usize,
    /// Image side in pixels (square images, 16 to 4096).
    #[arg(long, default_value_t = 512)]
    size: u32,
    /// Output dataset folder (new or empty).
    #[arg(long)]
    out: PathBuf,
    /// Seed of the content.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// splitmix64: a small, seedable generator (not candle's or torch's).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform();
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (TAU * v).cos()
    }
}

/// A soft-edged, axis-aligned ellipse of one colour.
struct Ellipse {
    cx: f64,
    cy: f64,
    rx: f64,
    ry: f64,
    colour: [f64; 3],
    opacity: f64,
}

impl Ellipse {
    fn random(rng: &mut Rng, side: f64, min_radius: f64, max_radius: f64) -> Self {
        Self {
            cx: rng.range(0.0, side),
            cy: rng.range(0.0, side),
            rx: rng.range(min_radius, max_radius) * side,
            ry: rng.range(min_radius, max_radius) * side,
            colour: [0; 3].map(|_| rng.range(20.0, 235.0)),
            opacity: rng.range(0.5, 0.95),
        }
    }

    /// Blends the ellipse into a float RGB image of `side` x `side` (an edge 1.5 px wide).
    fn paint(&self, image: &mut [f64], side: usize) {
        let x0 = (self.cx - self.rx - 2.0).max(0.0) as usize;
        let x1 = ((self.cx + self.rx + 2.0).max(0.0) as usize).min(side);
        let y0 = (self.cy - self.ry - 2.0).max(0.0) as usize;
        let y1 = ((self.cy + self.ry + 2.0).max(0.0) as usize).min(side);
        let scale = self.rx.min(self.ry);
        for y in y0..y1 {
            for x in x0..x1 {
                let dx = (x as f64 + 0.5 - self.cx) / self.rx;
                let dy = (y as f64 + 0.5 - self.cy) / self.ry;
                // Signed distance to the edge in pixels, roughly.
                let distance = ((dx * dx + dy * dy).sqrt() - 1.0) * scale;
                let coverage = (0.5 - distance / 1.5).clamp(0.0, 1.0) * self.opacity;
                if coverage > 0.0 {
                    let pixel = &mut image[(y * side + x) * 3..][..3];
                    for (v, c) in pixel.iter_mut().zip(self.colour) {
                        *v += (c - *v) * coverage;
                    }
                }
            }
        }
    }
}

/// A smooth background: per channel a base level plus plane waves of random direction,
/// frequency (1 to 14 cycles per image) and phase, amplitude falling with frequency. Each wave
/// sin(ax + by + p) = sin(ax + p) cos(by) + cos(ax + p) sin(by) is separable, so the image
/// costs two multiply-adds per wave and pixel.
fn background(rng: &mut Rng, side: usize) -> Vec<f64> {
    let mut image = vec![0.0; side * side * 3];
    for channel in 0..3 {
        let base = rng.range(70.0, 180.0);
        let mut columns = Vec::new();
        let mut rows = Vec::new();
        for _ in 0..6 {
            let cycles = rng.range(1.0, 14.0);
            let angle = rng.range(0.0, TAU);
            let amplitude = 70.0 / cycles.sqrt() * rng.range(0.3, 1.0);
            let phase = rng.range(0.0, TAU);
            let (a, b) = (
                TAU * cycles * angle.cos() / side as f64,
                TAU * cycles * angle.sin() / side as f64,
            );
            let sin_x: Vec<f64> = (0..side)
                .map(|x| amplitude * (a * x as f64 + phase).sin())
                .collect();
            let cos_x: Vec<f64> = (0..side)
                .map(|x| amplitude * (a * x as f64 + phase).cos())
                .collect();
            let cos_y: Vec<f64> = (0..side).map(|y| (b * y as f64).cos()).collect();
            let sin_y: Vec<f64> = (0..side).map(|y| (b * y as f64).sin()).collect();
            columns.push((sin_x, cos_x));
            rows.push((cos_y, sin_y));
        }
        for y in 0..side {
            for x in 0..side {
                let mut v = base;
                for ((sin_x, cos_x), (cos_y, sin_y)) in columns.iter().zip(&rows) {
                    v += sin_x[x] * cos_y[y] + cos_x[x] * sin_y[y];
                }
                image[(y * side + x) * 3 + channel] = v;
            }
        }
    }
    image
}

/// Rounds a float image to RGB8, adding uniform grain of +-`grain` levels.
fn quantise(image: &[f64], rng: &mut Rng, grain: f64) -> Vec<u8> {
    image
        .iter()
        .map(|&v| (v + rng.range(-grain, grain)).round().clamp(0.0, 255.0) as u8)
        .collect()
}

/// One rendered pair: RGB8 images and float32 latents (before the float16 round trip).
struct SyntheticPair {
    unsafe_rgb: Vec<u8>,
    safe_rgb: Vec<u8>,
    unsafe_latent: Vec<f32>,
    safe_latent: Vec<f32>,
    x_t_sha256: String,
}

/// The images and latents of pair `seed`: the scene with a "concept" object, and the same scene
/// with another object in its place and a faint brightness drift.
fn synthesise(seed: u64, side: usize, latent_shape: [usize; 3]) -> SyntheticPair {
    let mut rng = Rng::new(seed);
    let mut scene = background(&mut rng, side);
    for _ in 0..(3 + rng.next_u64() % 5) {
        Ellipse::random(&mut rng, side as f64, 0.04, 0.25).paint(&mut scene, side);
    }
    let concept = Ellipse::random(&mut rng, side as f64, 0.06, 0.16);
    let replacement = Ellipse {
        colour: [0; 3].map(|_| rng.range(20.0, 235.0)),
        rx: concept.rx * rng.range(0.7, 1.2),
        ry: concept.ry * rng.range(0.7, 1.2),
        ..concept
    };
    let mut unsafe_scene = scene.clone();
    concept.paint(&mut unsafe_scene, side);
    let mut safe_scene = scene;
    replacement.paint(&mut safe_scene, side);
    // A global drift of at most 2 levels, as two renderings never agree exactly.
    let drift = rng.range(-2.0, 2.0);
    let tilt = rng.range(0.0, TAU);
    for (i, v) in safe_scene.iter_mut().enumerate() {
        let (x, y) = ((i / 3) % side, (i / 3) / side);
        *v += drift * (tilt + TAU * (x + y) as f64 / (2 * side) as f64).cos();
    }
    let grain_seed = rng.next_u64();
    let unsafe_rgb = quantise(&unsafe_scene, &mut Rng::new(grain_seed), 3.0);
    let safe_rgb = quantise(&safe_scene, &mut Rng::new(grain_seed), 3.0);

    let [channels, lh, lw] = latent_shape;
    let x_t: Vec<f32> = (0..channels * lh * lw)
        .map(|_| rng.normal() as f32)
        .collect();
    let x_t_bytes: Vec<u8> = x_t.iter().flat_map(|v| v.to_le_bytes()).collect();
    let unsafe_latent: Vec<f32> = x_t.iter().map(|&v| v * 0.9 + 0.05).collect();
    let scale = lw as f64 / side as f64;
    let inside = |x: usize, y: usize| {
        let dx = (x as f64 + 0.5 - concept.cx * scale) / (concept.rx * scale + 1.0);
        let dy = (y as f64 + 0.5 - concept.cy * scale) / (concept.ry * scale + 1.0);
        dx * dx + dy * dy <= 1.0
    };
    let safe_latent: Vec<f32> = unsafe_latent
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let (x, y) = (i % lw, (i / lw) % lh);
            let noise = rng.normal() as f32;
            if inside(x, y) {
                noise
            } else {
                v + 0.02 * noise
            }
        })
        .collect();
    SyntheticPair {
        unsafe_rgb,
        safe_rgb,
        unsafe_latent,
        safe_latent,
        x_t_sha256: acs_schema::sha256_bytes(&x_t_bytes),
    }
}

/// What every row shares.
struct Context {
    manifest: BuildManifest,
    thresholds: Thresholds,
    model_sha256: String,
    side: u32,
    latent_shape: [usize; 3],
    seed: u64,
}

/// The schema v1 row of pair `index`, filled as `acs build` fills it.
fn record(index: usize, context: &Context) -> Result<PairRecord, AcsError> {
    let manifest = &context.manifest;
    let s = &manifest.sampling;
    let subjects = [
        "a man",
        "a woman",
        "two people",
        "a soldier",
        "a child",
        "a crowd",
    ];
    let places = [
        "in a park",
        "on a street",
        "in a kitchen",
        "at the beach",
        "in a forest",
    ];
    let subject = subjects[index % subjects.len()];
    let place = places[(index / subjects.len()) % places.len()];
    let prompts = PromptPair {
        unsafe_prompt: format!("{subject} holding a gun {place}, photo {index}"),
        safe_prompt: format!("{subject} holding a camera {place}, photo {index}"),
        category: "violence".to_owned(),
        seed: None,
        guidance_scale: None,
        file: PathBuf::from("synthetic"),
        line: index + 1,
    };
    let seed = Rng::new(context.seed ^ (index as u64).wrapping_mul(0x2545_f491_4f6c_dd1d))
        .next_u64()
        & 0xffff_ffff;
    let id = pair_id(
        &prompts,
        seed,
        s.guidance_scale,
        &context.model_sha256,
        manifest,
    );
    let side = context.side as usize;
    let pair = synthesise(seed, side, context.latent_shape);
    // As the build: metrics see the latents as stored (float16).
    let (metrics, unsafe_f16, safe_f16) = metrics_as_stored(
        &pair.unsafe_rgb,
        &pair.safe_rgb,
        side,
        side,
        &pair.unsafe_latent,
        &pair.safe_latent,
        manifest.output.change_rule(),
    );
    let token_edit_distance = 1;
    let reasons = verdict(
        &[],
        &metrics,
        &prompts.category,
        &JudgeScores::default(),
        &context.thresholds,
    );
    let image = |rgb: &[u8], which: &str| -> Result<ImageBlob, AcsError> {
        Ok(ImageBlob {
            bytes: encode_png(rgb, context.side, context.side)?,
            path: Some(format!("{id}-{which}.png")),
        })
    };
    let store = manifest.output.store_latents;
    Ok(PairRecord {
        split: split_of(&id, &manifest.output.splits),
        category: prompts.category.clone(),
        concepts: vec!["gun".to_owned()],
        unsafe_prompt: prompts.unsafe_prompt.clone(),
        safe_prompt: prompts.safe_prompt.clone(),
        negative_prompt: s.negative_prompt.clone(),
        token_edit_distance,
        seed,
        x_t_sha256: pair.x_t_sha256,
        model_id: MODEL_ID.to_owned(),
        model_sha256: context.model_sha256.clone(),
        scheduler: s.scheduler.to_string(),
        alignment_mode: manifest.alignment.mode.to_string(),
        steps: s.steps as i32,
        switch_step: manifest.switch_step() as i32,
        height: context.side as i32,
        width: context.side as i32,
        guidance_scale: s.guidance_scale,
        unsafe_image: image(&pair.unsafe_rgb, "unsafe")?,
        safe_image: image(&pair.safe_rgb, "safe")?,
        latent_shape: context.latent_shape.iter().map(|&d| d as i32).collect(),
        unsafe_latent: store.then_some(unsafe_f16),
        safe_latent: store.then_some(safe_f16),
        ssim: metrics.ssim,
        psnr: metrics.psnr,
        changed_area: metrics.changed_area,
        changed_box: metrics.changed_box.map(ChangedBox::to_vec),
        latent_cosine: metrics.latent_cosine,
        nudenet_unsafe: None,
        nudenet_safe: None,
        q16_unsafe: None,
        q16_safe: None,
        sd_safety_checker_unsafe: None,
        sd_safety_checker_safe: None,
        change_mask: None,
        change_mask_latent: None,
        trajectory_steps: None,
        trajectory_timesteps: None,
        trajectory_latents: None,
        trajectory_eps_unsafe: None,
        trajectory_eps_safe: None,
        valid: reasons.is_empty(),
        reject_reasons: reasons,
        acs_version: ACS_VERSION.to_owned(),
        kernel_path: None,
        shapes_unsafe: None,
        shapes_safe: None,
        alignment_settings: None,
        blend_mask: None,
        clip_direction: None,
        clip_image: None,
        clip_unsafe: None,
        clip_safe: None,
        blend_mask_image: None,
        pair_id: id,
    })
}

fn check_output(out: &Path) -> Result<(), AcsError> {
    if out.exists() {
        let mut entries = std::fs::read_dir(out).map_err(|e| AcsError::io(out, e))?;
        if entries.next().is_some() {
            return Err(AcsError::input(format!(
                "{}: output folder is not empty",
                out.display()
            )));
        }
    }
    Ok(())
}

fn run(args: &Args) -> Result<(), AcsError> {
    if !(16..=4096).contains(&args.size) {
        return Err(AcsError::input(format!(
            "--size: must be in 16..=4096 (got {})",
            args.size
        )));
    }
    check_output(&args.out)?;
    let started = Instant::now();
    // The default build manifest at this size; `acs validate` re-derives verdicts from it.
    let manifest: BuildManifest = serde_json::from_value(json!({
        "sampling": {"height": args.size, "width": args.size},
    }))?;
    let config = json!({
        "manifest": serde_json::to_value(&manifest)?,
        "source_files": [],
        "lexicons_sha256": "",
        "synthetic": {
            "generator": "acs-builder/examples/synthetic_dataset.rs",
            "pairs": args.pairs,
            "size": args.size,
            "seed": args.seed,
        },
    });
    let model_sha256 = acs_schema::sha256_bytes(b"acs synthetic pairs v1");
    let base = DatasetManifest {
        schema_version: SCHEMA_VERSION,
        acs_version: ACS_VERSION.to_owned(),
        build_config_sha256: acs_schema::sha256_bytes(serde_json::to_string(&config)?.as_bytes()),
        build_config: config,
        model: ModelInfo {
            id: MODEL_ID.to_owned(),
            sha256: model_sha256.clone(),
        },
        kernel_paths: Vec::new(),
        complete: false,
        shards: Vec::new(),
        worker: None,
    };
    let latent_side = (args.size as usize).div_ceil(8);
    let context = Context {
        thresholds: manifest.thresholds(),
        model_sha256,
        side: args.size,
        latent_shape: [4, latent_side, latent_side],
        seed: args.seed,
        manifest,
    };
    let shard_bytes = parse_byte_size(&context.manifest.output.shard_bytes).unwrap_or(u64::MAX);
    let mut sink = ShardSink::create(
        &args.out,
        base,
        context.manifest.output.shard_rows as usize,
        shard_bytes,
    )?;
    write_atomic(&args.out.join(REJECTS_FILE), b"")?;
    let mut valid_rows = 0u64;
    for start in (0..args.pairs).step_by(BATCH) {
        let end = (start + BATCH).min(args.pairs);
        let records: Vec<PairRecord> = (start..end)
            .into_par_iter()
            .map(|i| record(i, &context))
            .collect::<Result<_, _>>()?;
        for record in records {
            valid_rows += u64::from(record.valid);
            sink.push(record)?;
        }
        eprintln!("synthesised {end}/{} pairs", args.pairs);
    }
    let finished = sink.finish(|dataset, valid| dataset_card(dataset, &context.manifest, valid))?;
    println!(
        "wrote {} synthetic pairs of {}x{} ({valid_rows} valid) in {} shards to {} in {:.1} s",
        args.pairs,
        args.size,
        args.size,
        finished.shards.len(),
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
