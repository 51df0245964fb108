//! End-to-end tests of `[alignment] mode = "attention"` on the embedded demonstrator: the rows
//! record the mode and each pair's settings, a local blend keeps the safe latent equal to the
//! unsafe latent outside its mask bit for bit, replay reproduces the rows (blend masks
//! included) one pair at a time although they were rendered in batches, a pair that cannot be
//! controlled (its blend would have no word) goes to rejects.jsonl, and the InstructPix2Pix variant draws its fraction from each
//! pair's seed. Parity with a reference controller on diffusers is
//! tests/python/test_attention_control_parity.py.

use std::path::Path;

use acs_schema::{Dataset, PairRecord};

use crate::util::{acs, build, repo_root, s, stderr, stdout};

/// A demonstrator build of the first five shape pairs with `alignment`.
fn attention_build(dir: &Path, alignment: &str) -> (Vec<PairRecord>, String) {
    let pairs = dir.join("pairs.jsonl");
    let lines = std::fs::read_to_string(repo_root().join("samples/shapes-pairs.jsonl"))
        .unwrap()
        .lines()
        .take(5)
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    std::fs::write(&pairs, lines).unwrap();
    let manifest = dir.join("m.toml");
    std::fs::write(
        &manifest,
        format!(
            "[sampling]\nscheduler = \"euler-ancestral\"\nsteps = 5\nguidance_scale = 5.0\n\
             height = 64\nwidth = 64\nbatch_pairs = 3\n[alignment]\n{alignment}\n\
             max_token_edits = 100\n[[sources]]\nkind = \"pairs-jsonl\"\npath = {:?}\n\
             category = \"shapes\"\n[output]\nsplits = {{ train = 1.0 }}\nstore_latents = true\nmasks = true\n",
            s(&pairs)
        ),
    )
    .unwrap();
    let home = dir.join("home");
    let out = dir.join("out");
    let run = build(&home, &manifest, &out);
    assert!(run.status.success(), "{}", stderr(&run));
    let rows = Dataset::open(&out).unwrap().records().unwrap();
    let rejects = std::fs::read_to_string(out.join("rejects.jsonl")).unwrap();
    (rows, rejects)
}

fn latent(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect()
}

#[test]
fn a_local_blend_keeps_the_safe_latent_outside_its_mask_and_replays_bit_for_bit() {
    let work = tempfile::tempdir().unwrap();
    let (rows, rejects) = attention_build(
        work.path(),
        "mode = \"attention\"\nlocal_blend = { threshold = 0.9, start = 0.2, downscale = 1, \
         words = [\"circle\", \"square\"] }",
    );
    // The third pair (a triangle) has neither word: its blend would have no mask.
    assert_eq!(rows.len(), 4);
    assert!(
        rejects.contains("\"line\":3,\"reason\":\"attention-unmapped\"")
            && rejects.contains("no edited word"),
        "{rejects}"
    );
    let mut partial = 0;
    for row in &rows {
        assert_eq!(row.alignment_mode, "attention");
        assert_eq!(
            row.alignment_settings.as_deref(),
            Some("map=swap;cross=0-0.8;self=0-0.4;blend=0.9@0.2,latent/1,words:circle+square")
        );
        let mask = row.blend_mask.as_ref().expect("a blend mask");
        let [_, h, w] = [0, 1, 2].map(|i| row.latent_shape[i] as usize);
        assert_eq!(mask.len(), h * w);
        // Asked for masks: the blend mask upsampled to the image, each latent pixel its block.
        let image = image::load_from_memory(&row.blend_mask_image.as_ref().unwrap().bytes)
            .unwrap()
            .into_luma8();
        assert_eq!((image.width(), image.height()), (64, 64));
        for (x, y, value) in image.enumerate_pixels() {
            let cell = mask[(y as usize * h / 64) * w + x as usize * w / 64];
            assert_eq!(value.0[0] != 0, cell == 1, "({x}, {y})");
        }
        assert!(mask.iter().all(|&m| m <= 1));
        let (u, v) = (
            latent(row.unsafe_latent.as_ref().unwrap()),
            latent(row.safe_latent.as_ref().unwrap()),
        );
        for (i, (a, b)) in u.iter().zip(&v).enumerate() {
            if mask[i % (h * w)] == 0 {
                assert_eq!(a, b, "pair {} differs outside its mask", row.pair_id);
            }
        }
        if mask.contains(&0) {
            partial += 1;
            assert_ne!(u, v, "the edit changed nothing inside the mask");
        }
    }
    assert!(partial > 0, "no mask left anything outside");

    let card = std::fs::read_to_string(work.path().join("out/README.md")).unwrap();
    assert!(
        card.contains(
            "- alignment: attention control (Prompt-to-Prompt: cross 0-0.8; self 0-0.4; \
             blend 0.9@0.2,latent/1,words:circle+square)"
        ),
        "{card}"
    );
    let home = work.path().join("home");
    let out = s(work.path().join("out"));
    let replay = acs(
        &home,
        &[
            "validate",
            &out,
            "--replay",
            "1.0",
            "--max-invalid-fraction",
            "1",
        ],
    );
    let text = stdout(&replay);
    assert!(
        text.contains("replay: 4 of 4 re-rendered rows identical"),
        "{text}\n{}",
        stderr(&replay)
    );
}

#[test]
fn the_instructpix2pix_variant_draws_its_fraction_from_each_pairs_seed() {
    let work = tempfile::tempdir().unwrap();
    let (rows, _) = attention_build(
        work.path(),
        "mode = \"attention\"\nshare_self_attention = [0.1, 0.9]",
    );
    let fractions: Vec<f64> = rows
        .iter()
        .map(|row| {
            let settings = row.alignment_settings.as_deref().unwrap();
            let p = settings.strip_prefix("map=swap;share=").expect(settings);
            p.parse().unwrap()
        })
        .collect();
    assert!(
        fractions.iter().all(|p| (0.1..0.9).contains(p)),
        "{fractions:?}"
    );
    assert!(fractions.windows(2).any(|w| w[0] != w[1]), "{fractions:?}");
    assert!(rows.iter().all(|row| row.blend_mask.is_none()));
}
