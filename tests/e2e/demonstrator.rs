//! End-to-end tests of the embedded shapes demonstrator: the default model of a manifest without
//! `[model]`, named by `acs model list`, its pairs judged by the shapes judge; the tiny model
//! under its own name; the bad inputs of the new keys and flags. Its numbers against diffusers
//! and its training record are checked by tests/python/test_demonstrator.py.

use acs_builder::judge::shapes::scene::{Colour, Scene};
use acs_builder::store::imaging::encode_png;
use acs_schema::Dataset;

use crate::util::{acs, assert_exit_2, build, repo_root, s, stderr, stdout};

const SHAPES_MODEL_ID: &str = "acs/shapes-sd-v1";

#[test]
fn a_manifest_without_model_renders_with_the_demonstrator_and_judges_its_pairs() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let manifest = work.path().join("shapes.toml");
    let text = std::fs::read_to_string(repo_root().join("manifests/shapes.toml"))
        .unwrap()
        .replace(
            "../samples/",
            &format!("{}/samples/", repo_root().display()),
        )
        .replace("steps = 12", "steps = 4");
    std::fs::write(&manifest, text).unwrap();
    let out = work.path().join("out");
    let built = build(home.path(), &manifest, &out);
    assert!(built.status.success(), "{}", stderr(&built));
    let dataset = Dataset::open(&out).unwrap();
    assert_eq!(dataset.manifest().model.id, SHAPES_MODEL_ID);
    let rows = dataset.records().unwrap();
    assert_eq!(rows.len(), 18);
    for row in &rows {
        assert_eq!(row.category, "shapes");
        assert_eq!(row.model_id, SHAPES_MODEL_ID);
        let (u, v) = (row.shapes_unsafe.unwrap(), row.shapes_safe.unwrap());
        assert!((0.0..=1.0).contains(&u) && (0.0..=1.0).contains(&v));
        // A pair is valid exactly when both images show their own prompts.
        assert_eq!(row.valid, u == 1.0 && v == 1.0, "{row:?}");
    }
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(card.contains("category `shapes`"), "{card}");
    assert!(
        card.contains("- shapes: the shapes demonstrator's scene reader"),
        "{card}"
    );

    let listed = stdout(&acs(home.path(), &["model", "list"]));
    let line = listed
        .lines()
        .find(|l| l.contains(SHAPES_MODEL_ID))
        .unwrap();
    assert!(
        line.contains("models/shapes-sd-v1") && line.contains("MiB"),
        "{listed}"
    );
    assert!(listed.contains("acs/tiny-sd-v1"), "{listed}");

    // Replay finds the embedded model from the dataset alone.
    let replay = acs(
        home.path(),
        &[
            "validate",
            &s(&out),
            "--replay",
            "0.3",
            "--max-invalid-fraction",
            "1",
        ],
    );
    assert!(stdout(&replay).contains("replay: "), "{}", stderr(&replay));
}

#[test]
fn the_tiny_model_keeps_its_own_name_and_the_embedded_key_is_checked() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let pairs = s(repo_root().join("samples/shapes-pairs.jsonl"));
    let write = |name: &str, model: &str| {
        let path = work.path().join(format!("{name}.toml"));
        let text = format!(
            "{model}[sampling]\nsteps = 1\nheight = 64\nwidth = 64\n[[sources]]\n\
             kind = \"pairs-jsonl\"\npath = {pairs:?}\ncategory = \"shapes\"\n\
             [output]\nsplits = {{ train = 1.0 }}\n"
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let tiny = write("tiny", "[model]\nembedded = \"tiny\"\n");
    let out = work.path().join("tiny-out");
    assert!(build(home.path(), &tiny, &out).status.success());
    assert_eq!(
        Dataset::open(&out).unwrap().manifest().model.id,
        "acs/tiny-sd-v1"
    );

    let bad = write("bad", "[model]\nembedded = \"huge\"\n");
    assert_exit_2(
        &build(home.path(), &bad, &work.path().join("bad-out")),
        &["bad.toml", "embedded", "huge"],
    );
    let both = write("both", "[model]\nembedded = \"tiny\"\npath = \"m\"\n");
    assert_exit_2(
        &build(home.path(), &both, &work.path().join("both-out")),
        &["both.toml", "[model].embedded", "`tiny`"],
    );
    assert!(!work.path().join("bad-out").exists() && !work.path().join("both-out").exists());
}

#[test]
fn detect_and_metrics_read_generator_scenes() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let scene = Scene::draw(1);
    let colour = scene.objects[0].colour;
    let other = Colour::ALL.into_iter().find(|&c| c != colour).unwrap();
    let twin = scene.with_colour(0, other).unwrap();
    let png = |scene: &Scene, name: &str| {
        let path = work.path().join(name);
        std::fs::write(&path, encode_png(&scene.render(64), 64, 64).unwrap()).unwrap();
        s(path)
    };
    let (a, b) = (png(&scene, "a.png"), png(&twin, "b.png"));
    let (caption, twin_caption) = (scene.caption(), twin.caption());

    let detect = acs(
        home.path(),
        &[
            "detect", "--judge", "shapes", "--json", "--prompt", &caption, &a, &b,
        ],
    );
    let verdicts: serde_json::Value = serde_json::from_slice(&detect.stdout).unwrap();
    assert_eq!(verdicts[0]["all_ok"], true, "{verdicts}");
    assert_eq!(verdicts[1]["colour_ok"], false, "{verdicts}");
    assert_eq!(verdicts[1]["shape_ok"], true, "{verdicts}");

    let metrics = acs(
        home.path(),
        &[
            "metrics",
            &a,
            &b,
            "--prompts",
            &caption,
            &twin_caption,
            "--json",
        ],
    );
    let figures: serde_json::Value = serde_json::from_slice(&metrics.stdout).unwrap();
    assert_eq!(figures["shapes"]["edit_ok"], true, "{figures}");
    assert_eq!(figures["shapes"]["others_kept"], true, "{figures}");
    assert_eq!(figures["shapes"]["outside_changed_2px"], 0.0, "{figures}");

    assert_exit_2(
        &acs(home.path(), &["detect", "--judge", "shapes", &a]),
        &["--judge shapes", "--prompt"],
    );
    assert_exit_2(
        &acs(
            home.path(),
            &["metrics", &a, &b, "--prompts", &caption, "a cat"],
        ),
        &["--prompts", "`cat`"],
    );
    assert_exit_2(
        &acs(
            home.path(),
            &[
                "detect", "--judge", "shapes", "--prompt", "x", "--prompt", "y", "--prompt", "z",
                &a, &b,
            ],
        ),
        &["3 prompts for 2 images"],
    );
}
