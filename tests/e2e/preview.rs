//! End-to-end tests of `acs preview` (the contact sheet) and `acs stats --plot` (the metric
//! histograms) on the smoke build: sizes, the blurred column, filters, and bad input (exit 2,
//! nothing written).

use std::path::Path;

use acs_builder::commands::plot::PlotLayout;
use acs_builder::commands::preview::SheetLayout;
use acs_builder::store::imaging::decode_png;
use acs_schema::Dataset;

use crate::util::{acs, assert_exit_2, smoke_manifest, stderr, stdout};

fn decode(path: &Path) -> (Vec<u8>, u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    decode_png(&bytes).unwrap()
}

/// Runs `acs preview` and returns the decoded sheet.
fn preview(home: &Path, dir: &Path, out: &Path, extra: &[&str]) -> (Vec<u8>, u32, u32) {
    let mut args = vec![
        "preview",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let run = acs(home, &args);
    assert!(run.status.success(), "preview {extra:?}: {}", stderr(&run));
    decode(out)
}

/// Builds the smoke dataset once for the whole file (about 10 s) and runs every check on it.
#[test]
fn preview_and_plot_of_the_smoke_build() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("smoke");
    let manifest = smoke_manifest();
    let build = acs(
        home.path(),
        &[
            "build",
            "--manifest",
            manifest.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
        ],
    );
    assert!(build.status.success(), "build failed: {}", stderr(&build));

    blurred_sheet_differs_only_in_the_unsafe_column(home.path(), &dir, work.path());
    default_sheet_has_twelve_rows_of_256_px_panels(home.path(), &dir, work.path());
    filters_select_rows_in_dataset_order(home.path(), &dir, work.path());
    no_match_exits_2_and_writes_nothing(home.path(), &dir, work.path());
    stats_plot_writes_the_histograms(home.path(), &dir, work.path());
}

fn blurred_sheet_differs_only_in_the_unsafe_column(home: &Path, dir: &Path, work: &Path) {
    let options = ["--count", "5", "--panel", "96"];
    let plain_path = work.join("plain.png");
    let (plain, w, h) = preview(home, dir, &plain_path, &options);
    let layout = SheetLayout::new(96, 5);
    assert_eq!((w, h), (layout.width, layout.height));

    let blurred_options = ["--count", "5", "--panel", "96", "--blur-unsafe"];
    let (blurred, bw, bh) = preview(home, dir, &work.join("blur.png"), &blurred_options);
    assert_eq!((bw, bh), (w, h));
    let unsafe_columns = layout.columns[0]..layout.columns[0] + layout.panel;
    let mut changed_rows = std::collections::BTreeSet::new();
    for (i, (p, q)) in plain
        .chunks_exact(3)
        .zip(blurred.chunks_exact(3))
        .enumerate()
    {
        if p != q {
            let (x, y) = (i as u32 % w, i as u32 / w);
            assert!(
                unsafe_columns.contains(&x),
                "pixel ({x}, {y}) outside the unsafe column differs"
            );
            if y >= layout.header_height {
                changed_rows.insert((y - layout.header_height) / layout.row_height);
            }
        }
    }
    // Every row's unsafe panel is blurred.
    assert_eq!(changed_rows.len(), 5, "{changed_rows:?}");

    // The sheet starts with the pairs in dataset order: the first row's safe panel shows the
    // first row's safe image, scaled 1.5x with nearest neighbour (checked away from the box).
    let first = &Dataset::open(dir).unwrap().records().unwrap()[0];
    let (safe, sw, _) = decode_png(&first.safe_image.bytes).unwrap();
    let top = layout.row_top(0);
    let mut same = 0;
    for (sx, sy) in [(4u32, 4u32), (60, 4), (4, 60), (60, 60), (32, 20)] {
        let (px, py) = (layout.columns[1] + sx * 3 / 2, top + sy * 3 / 2);
        let sheet_pixel = &plain[((py * w + px) * 3) as usize..][..3];
        let image_pixel = &safe[((sy * sw + sx) * 3) as usize..][..3];
        same += usize::from(sheet_pixel == image_pixel);
    }
    assert!(
        same >= 3,
        "only {same} of 5 sampled pixels match the safe image"
    );
}

fn default_sheet_has_twelve_rows_of_256_px_panels(home: &Path, dir: &Path, work: &Path) {
    let out = work.join("default.png");
    let run = acs(
        home,
        &[
            "preview",
            dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let rows = Dataset::open(dir).unwrap().manifest().total_rows();
    assert!(
        stdout(&run).contains(&format!("12 of {rows} matching pairs")),
        "{}",
        stdout(&run)
    );
    let (_, w, h) = decode(&out);
    let layout = SheetLayout::new(256, 12);
    assert_eq!((w, h), (layout.width, layout.height));
}

fn filters_select_rows_in_dataset_order(home: &Path, dir: &Path, work: &Path) {
    let records = Dataset::open(dir).unwrap().records().unwrap();
    let train = |category: &str| {
        records
            .iter()
            .filter(|r| r.split == "train" && r.category == category && r.valid)
            .count()
    };
    let category = records
        .iter()
        .map(|r| r.category.as_str())
        .max_by_key(|c| train(c))
        .unwrap()
        .to_owned();
    let matched = train(&category);
    assert!(matched >= 1);
    let out = work.join("filtered.png");
    let args = [
        "preview",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--category",
        &category,
        "--split",
        "train",
        "--valid",
        "true",
        "--panel",
        "64",
    ];
    let run = acs(home, &args);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        stdout(&run).contains(&format!("{matched} of {matched} matching pairs")),
        "{}",
        stdout(&run)
    );
    let (_, w, h) = decode(&out);
    let layout = SheetLayout::new(64, matched as u32);
    assert_eq!((w, h), (layout.width, layout.height));

    // --count cuts the matches.
    let (_, _, h1) = preview(home, dir, &out, &["--count", "1", "--panel", "64"]);
    assert_eq!(h1, SheetLayout::new(64, 1).height);
}

fn no_match_exits_2_and_writes_nothing(home: &Path, dir: &Path, work: &Path) {
    // Every smoke row is valid.
    let out = work.join("none.png");
    let dir_arg = dir.to_str().unwrap();
    let out_arg = out.to_str().unwrap();
    let run = acs(
        home,
        &["preview", dir_arg, "--out", out_arg, "--valid", "false"],
    );
    assert_exit_2(&run, &["no row", "valid=false", dir_arg]);
    let unknown = ["preview", dir_arg, "--out", out_arg, "--category", "nope"];
    assert_exit_2(
        &acs(home, &unknown),
        &["no row", "category=nope", "violence"],
    );
    let split = ["preview", dir_arg, "--out", out_arg, "--split", "nope"];
    assert_exit_2(&acs(home, &split), &["no row", "split=nope"]);
    let panel = ["preview", dir_arg, "--out", out_arg, "--panel", "8"];
    assert_exit_2(&acs(home, &panel), &["--panel"]);
    let count = ["preview", dir_arg, "--out", out_arg, "--count", "0"];
    assert_exit_2(&acs(home, &count), &["--count"]);
    let missing = work.join("missing");
    let missing_arg = missing.to_str().unwrap();
    assert_exit_2(
        &acs(home, &["preview", missing_arg, "--out", out_arg]),
        &[missing_arg],
    );
    let bad_dir = work.join("no-such-folder").join("x.png");
    let bad_out = ["preview", dir_arg, "--out", bad_dir.to_str().unwrap()];
    assert_exit_2(&acs(home, &bad_out), &["no-such-folder"]);
    let leftovers: Vec<String> = std::fs::read_dir(work)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("none") || name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn stats_plot_writes_the_histograms(home: &Path, dir: &Path, work: &Path) {
    let out = work.join("plot.png");
    let dir_arg = dir.to_str().unwrap();
    let run = acs(
        home,
        &["stats", dir_arg, "--json", "--plot", out.to_str().unwrap()],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    // stdout stays JSON.
    let stats: serde_json::Value = serde_json::from_str(&stdout(&run)).unwrap();
    assert!(stats["rows"].as_u64().unwrap() >= 16);
    assert!(stderr(&run).contains("ssim, psnr, changed_area, latent_cosine"));
    // No NudeNet scores in the smoke build: four panels.
    let (pixels, w, h) = decode(&out);
    let layout = PlotLayout::new(4);
    assert_eq!((w, h), (layout.width, layout.height));
    let valid = pixels
        .chunks_exact(3)
        .filter(|p| *p == acs_builder::commands::plot::VALID_COLOR)
        .count();
    assert!(valid > 500, "{valid} pixels of valid bars");

    let bad = work.join("no-such-folder").join("plot.png");
    let run = acs(home, &["stats", dir_arg, "--plot", bad.to_str().unwrap()]);
    assert_exit_2(&run, &["no-such-folder"]);
}

#[test]
fn prompts_in_any_script_build_and_preview() {
    // Explicit pairs in Chinese, Japanese, Russian and accented French: built with the embedded
    // model and drawn on a sheet (the caption glyphs themselves are checked in the unit tests
    // of preview::sheet; this is the whole path from a JSONL file to the PNG).
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let pairs = work.path().join("pairs.jsonl");
    let lines = [
        ("一只流血的猫", "一只干净的猫"),
        ("血まみれのナイフ", "きれいなナイフ"),
        ("кровавый нож на столе", "чистый нож на столе"),
        ("un couteau ensanglanté", "un couteau propre"),
    ];
    let text: String = lines
        .iter()
        .map(|(u, s)| {
            serde_json::json!({"unsafe_prompt": u, "safe_prompt": s, "category": "violence"})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&pairs, text).unwrap();
    let manifest = work.path().join("m.toml");
    std::fs::write(
        &manifest,
        "[sampling]\nsteps = 2\nheight = 64\nwidth = 64\n[alignment]\nmax_token_edits = 40\n\
         [[sources]]\nkind = \"pairs-jsonl\"\npath = \"pairs.jsonl\"\n\
         [output]\nsplits = { train = 1.0 }\n",
    )
    .unwrap();
    let out = work.path().join("ds");
    let built = crate::util::build(home.path(), &manifest, &out);
    assert!(built.status.success(), "{}", stderr(&built));
    assert_eq!(Dataset::open(&out).unwrap().manifest().total_rows(), 4);
    let sheet = work.path().join("sheet.png");
    let (_, w, h) = preview(home.path(), &out, &sheet, &["--panel", "128"]);
    let layout = SheetLayout::new(128, 4);
    assert_eq!((w, h), (layout.width, layout.height));
}
