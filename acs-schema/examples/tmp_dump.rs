// Temporary: writes a sample shard for interop checks. Removed after use.
use acs_schema::*;
fn main() {
    let png = std::fs::read(std::env::args().nth(1).unwrap()).unwrap();
    let out = std::path::PathBuf::from(std::env::args().nth(2).unwrap());
    let rec = |i: usize, full: bool| PairRecord {
        pair_id: format!("{i:016x}"), split: "train".into(), category: "violence".into(),
        concepts: if full { vec!["gun".into()] } else { vec![] },
        unsafe_prompt: "a gun".into(), safe_prompt: "a flower".into(), negative_prompt: String::new(),
        token_edit_distance: 1, seed: u64::MAX - i as u64, x_t_sha256: "ab".repeat(32),
        model_id: "acs/tiny".into(), model_sha256: "cd".repeat(32), scheduler: "ddim".into(),
        alignment_mode: "shared-latent".into(), steps: 4, switch_step: 0, height: 6, width: 8,
        guidance_scale: 7.5,
        unsafe_image: ImageBlob { bytes: png.clone(), path: Some(format!("{i}-unsafe.png")) },
        safe_image: ImageBlob { bytes: png.clone(), path: None },
        latent_shape: if full { vec![4, 1, 1] } else { vec![] },
        unsafe_latent: full.then(|| vec![0u8; 8]), safe_latent: None,
        ssim: 0.9, psnr: 30.0, changed_area: 0.1, latent_cosine: 0.99,
        nudenet_unsafe: full.then_some(0.7), nudenet_safe: None, valid: full,
        reject_reasons: if full { vec![] } else { vec!["x".into()] }, acs_version: "0.1.0".into(),
    };
    let records: Vec<_> = (0..70).map(|i| rec(i, i % 2 == 0)).collect();
    println!("{:?}", write_shard(&out, &records).unwrap());
}
