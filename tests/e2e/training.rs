//! End-to-end tests of the training outputs: change masks, counterfactual trajectory targets
//! and benign preservation rows, on the embedded tiny model. Their values against diffusers are
//! checked by tests/python/test_trajectory_parity.py.

use std::path::{Path, PathBuf};

use acs_builder::judge::change_mask::{ChangeMask, ChangeRule};
use acs_builder::store::imaging::decode_png;
use acs_schema::{Dataset, PairRecord};

use crate::util::{acs, build, stdout, text};

/// A pair and a benign prompt equal to the pair's safe prompt, both with seed 7: the benign
/// rendering must be the pair's safe branch.
const PAIRS: &str = concat!(
    r#"{"unsafe_prompt": "a bloody knife on a kitchen table", "safe_prompt": "a clean knife on a kitchen table", "category": "violence", "seed": 7}"#,
    "\n",
    r#"{"unsafe_prompt": "a nude figure in a garden, oil painting", "safe_prompt": "a clothed figure in a garden, oil painting", "category": "sexual"}"#,
    "\n"
);
const BENIGN: &str = concat!(
    r#"{"prompt": "a clean knife on a kitchen table", "seed": 7}"#,
    "\n",
    r#"{"prompt": "a red bicycle by a brick wall"}"#,
    "\n"
);

fn manifest(output: &str) -> String {
    format!(
        "[model]\nembedded = \"tiny\"\n\
         [sampling]\nsteps = 6\nheight = 64\nwidth = 64\nbatch_pairs = 2\n\
         [[sources]]\nkind = \"pairs-jsonl\"\npath = \"pairs.jsonl\"\n\
         [[sources]]\nkind = \"pairs-jsonl\"\npath = \"benign.jsonl\"\nrole = \"benign\"\n\
         [output]\nsplits = {{ train = 1.0 }}\n{output}"
    )
}

/// Builds `manifest(output)` in `dir/NAME`; returns the dataset folder.
fn built(dir: &Path, name: &str, output: &str) -> PathBuf {
    std::fs::write(dir.join("pairs.jsonl"), PAIRS).unwrap();
    std::fs::write(dir.join("benign.jsonl"), BENIGN).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, manifest(output)).unwrap();
    let out = dir.join(name);
    let run = build(&dir.join("home"), &path, &out);
    assert!(run.status.success(), "{}", text(&run.stderr));
    out
}

fn rows(dir: &Path) -> Vec<PairRecord> {
    Dataset::open(dir).unwrap().records().unwrap()
}

fn by_prompt<'a>(rows: &'a [PairRecord], unsafe_prompt: &str) -> &'a PairRecord {
    rows.iter()
        .find(|r| r.unsafe_prompt == unsafe_prompt)
        .unwrap()
}

#[test]
fn masks_trajectories_and_benign_rows_build_validate_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let output =
        "masks = true\nmask_dilation = 1\ntrajectory_steps = [4, 0]\nlicense = \"cc-by-4.0\"\n";
    let ds = built(dir.path(), "full", output);
    let home = dir.path().join("home");
    let run = acs(
        &home,
        &["validate", &ds.display().to_string(), "--replay", "1"],
    );
    assert!(
        run.status.success(),
        "{}{}",
        stdout(&run),
        text(&run.stderr)
    );
    assert!(stdout(&run).contains("replay: 4 of 4 re-rendered rows identical"));

    // The contact sheet shows the stored masks as a fourth column.
    let sheet = dir.path().join("sheet.png");
    let preview = acs(
        &home,
        &[
            "preview",
            &ds.display().to_string(),
            "--out",
            &sheet.display().to_string(),
            "--panel",
            "64",
        ],
    );
    assert!(preview.status.success(), "{}", text(&preview.stderr));
    let (_, width, height) = decode_png(&std::fs::read(&sheet).unwrap()).unwrap();
    let layout = acs_builder::commands::preview::SheetLayout::new(64, 4).with_mask_column();
    assert_eq!((width, height), (layout.width, layout.height));

    let rows = rows(&ds);
    assert_eq!(rows.len(), 4);
    let rule = ChangeRule {
        threshold: 25,
        dilation: 1,
    };
    for row in &rows {
        // The stored mask is the mask of the two images; area and box are its own.
        let (u, w, h) = decode_png(&row.unsafe_image.bytes).unwrap();
        let (s, _, _) = decode_png(&row.safe_image.bytes).unwrap();
        let expected = ChangeMask::of(&u, &s, w as usize, h as usize, rule);
        let stored = ChangeMask::from_png(&row.change_mask.as_ref().unwrap().bytes).unwrap();
        assert_eq!(stored, expected);
        assert_eq!(row.changed_area, expected.area() as f32);
        assert_eq!(row.changed_box, expected.bounding_box().map(|b| b.to_vec()));
        let latent = row.latent_mask().unwrap().unwrap();
        assert_eq!((latent.height, latent.width), (8, 8));
        assert_eq!(latent.values, expected.at_latent_resolution(8, 8));
        // Trajectory targets: ascending steps, one latent-shaped array per step.
        let t = row.trajectory().unwrap().unwrap();
        assert_eq!(t.steps, vec![0, 4]);
        assert_eq!(t.latents.shape, vec![2, 4, 8, 8]);
        assert!(t.timesteps[0] > t.timesteps[1]);
        assert!(row.valid, "{:?}", row.reject_reasons);
    }

    let pair = by_prompt(&rows, "a bloody knife on a kitchen table");
    let benign = by_prompt(&rows, "a clean knife on a kitchen table");
    assert!(benign.is_benign() && !pair.is_benign());
    // Rendered once: both sides are the same rendering, which is the pair's safe branch.
    assert_eq!(benign.safe_prompt, benign.unsafe_prompt);
    assert_eq!(benign.unsafe_image.bytes, benign.safe_image.bytes);
    assert_eq!(benign.unsafe_image.bytes, pair.safe_image.bytes);
    assert_eq!(benign.unsafe_latent, pair.safe_latent);
    assert_eq!(benign.changed_area, 0.0);
    let (bt, pt) = (
        benign.trajectory().unwrap().unwrap(),
        pair.trajectory().unwrap().unwrap(),
    );
    assert_eq!(bt.eps_safe, bt.eps_unsafe);
    // Both start from the same x_T, so at step 0 the pair's counterfactual target is what the
    // safe prompt itself predicted there.
    assert_eq!(bt.latents.slice(0), pt.latents.slice(0));
    let (target, own) = (pt.eps_safe.to_f32(), bt.eps_unsafe.to_f32());
    let per_step = 4 * 8 * 8;
    let range = own[..per_step].iter().fold(0f32, |m, v| m.max(v.abs()));
    for (a, b) in target[..per_step].iter().zip(&own[..per_step]) {
        assert!((a - b).abs() <= 1e-3 * range.max(1.0), "{a} vs {b}");
    }
    assert_ne!(pt.eps_safe, pt.eps_unsafe);

    let stats = acs(&home, &["stats", &ds.display().to_string(), "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats["benign_rows"], 2);
    assert_eq!(stats["rows"], 4);
    let card = std::fs::read_to_string(ds.join("README.md")).unwrap();
    assert!(card.contains("## Training outputs") && card.contains("benign preservation rows"));
    assert!(card.starts_with("---\n") && card.contains("\nlicense: cc-by-4.0\n"));
}

#[test]
fn recording_changes_no_image_and_plain_builds_leave_the_columns_null() {
    let dir = tempfile::tempdir().unwrap();
    let recorded = rows(&built(dir.path(), "recorded", "trajectory_steps = [2]\n"));
    let plain = rows(&built(dir.path(), "plain", ""));
    for (a, b) in recorded.iter().zip(&plain) {
        assert_eq!(a.pair_id, b.pair_id);
        assert_eq!(a.unsafe_image, b.unsafe_image);
        assert_eq!(a.safe_latent, b.safe_latent);
        assert!(a.trajectory_latents.is_some() && a.change_mask.is_none());
        assert!(b.trajectory_steps.is_none() && b.trajectory_eps_safe.is_none());
        assert!(b.change_mask.is_none() && b.change_mask_latent.is_none());
    }
}
