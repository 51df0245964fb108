//! Replays the committed fuzz corpora (seeds and regression inputs, `fuzz/corpus/TARGET/`)
//! through the same harness functions the cargo-fuzz targets call, on stable Rust: a panic on
//! any input fails the test. Live fuzzing (nightly, libFuzzer) is `scripts/fuzz.sh`
//! (docs/fuzzing.md).

use std::panic::{self, AssertUnwindSafe};

use crate::util::{files, repo_root};

// The harness is the fuzz crate's file, written for its lints: `TARGETS`' tuple type is spelled
// out there on purpose (it is the table `cargo fuzz list` mirrors).
#[allow(clippy::type_complexity)]
#[path = "../../fuzz/fuzz_targets/harness.rs"]
mod harness;

#[test]
fn every_fuzz_corpus_replays_without_a_panic() {
    let fuzz = repo_root().join("fuzz");
    let corpus = fuzz.join("corpus");
    let mut problems = Vec::new();

    // Every corpus folder belongs to a target (a renamed target must take its corpus along).
    for entry in std::fs::read_dir(&corpus).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir()
            && !harness::TARGETS.iter().any(|(target, _)| *target == name)
        {
            problems.push(format!(
                "fuzz/corpus/{name}/ has no entry in harness::TARGETS"
            ));
        }
    }

    let mut replayed = 0;
    for (name, target) in harness::TARGETS {
        if !fuzz
            .join("fuzz_targets")
            .join(format!("{name}.rs"))
            .is_file()
        {
            problems.push(format!("fuzz/fuzz_targets/{name}.rs is missing"));
        }
        let dir = corpus.join(name);
        if !dir.is_dir() {
            problems.push(format!("fuzz/corpus/{name}/ is missing"));
            continue;
        }
        let inputs = files(&dir);
        if inputs.is_empty() {
            problems.push(format!("fuzz/corpus/{name}/ is empty"));
        }
        for input in inputs {
            let bytes = std::fs::read(&input).unwrap();
            let relative = input
                .strip_prefix(repo_root())
                .unwrap()
                .display()
                .to_string();
            // The panic message itself is printed by the panic hook (captured by the harness).
            if panic::catch_unwind(AssertUnwindSafe(|| target(&bytes))).is_err() {
                problems.push(format!("{name}: {relative} panicked"));
            }
            replayed += 1;
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s) after replaying {replayed} corpus inputs:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
