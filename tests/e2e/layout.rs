//! Guards of the code layout (SPEC "Code layout"):
//!
//! - the diffusion runtime (`acs-builder/src/runtime/`) imports no other stage and not
//!   acs-schema: it names only `crate::runtime::...` (and std / third-party crates);
//! - no source file holds more than 600 lines before its `#[cfg(test)]` tests, and `main.rs`
//!   (dispatch only) stays under 150 lines.

use std::path::Path;

use crate::util::{files, repo_root};

/// Stages (and crate-level modules) the runtime must not name.
const OTHER_STAGES: [&str; 6] = ["manifest", "prompts", "judge", "store", "commands", "error"];

const MAX_LINES_BEFORE_TESTS: usize = 600;
const MAX_MAIN_LINES: usize = 150;

/// The Rust source files under `dir` (relative to the repository root), sorted.
fn sources(dir: &str) -> Vec<(String, String)> {
    let root = repo_root();
    files(&root.join(dir))
        .into_iter()
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let relative = path.strip_prefix(&root).unwrap().display().to_string();
            (relative, text)
        })
        .collect()
}

/// `line` without a trailing `//` comment (a `//` inside a string literal is kept).
fn code_of(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_string => i += 1,
            // A character literal ('"', '\'', '\\'): not the start of a string.
            b'\'' if !in_string && bytes.get(i + 1) == Some(&b'\\') => i += 3,
            b'\'' if !in_string && bytes.get(i + 2) == Some(&b'\'') => i += 2,
            b'"' => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The identifier starting at `text[at..]` (after spaces), if any.
fn ident_at(text: &str, at: usize) -> Option<&str> {
    let rest = text[at..].trim_start();
    let end = rest
        .bytes()
        .position(|b| !is_ident_byte(b))
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// Byte offsets where `word` occurs in `text` as a whole identifier.
fn word_offsets(text: &str, word: &str) -> Vec<usize> {
    let bytes = text.as_bytes();
    text.match_indices(word)
        .map(|(at, _)| at)
        .filter(|&at| {
            let before = at == 0 || !is_ident_byte(bytes[at - 1]);
            let end = at + word.len();
            let after = end >= bytes.len() || !is_ident_byte(bytes[end]);
            before && after
        })
        .collect()
}

/// The first path segments of the use-tree that starts at `text[at..]`: `manifest` for
/// `manifest::X`, `manifest` and `runtime` for `{manifest::X, runtime::Y}`.
fn first_segments(text: &str, at: usize) -> Vec<String> {
    let rest = text[at..].trim_start();
    let Some(group) = rest.strip_prefix('{') else {
        return ident_at(text, at).map(str::to_owned).into_iter().collect();
    };
    let mut names = Vec::new();
    let (mut depth, mut item_start) = (0usize, true);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if item_start && depth == 0 && !c.is_whitespace() => {
                item_start = false;
                if let Some(name) = ident_at(group, i) {
                    names.push(name.to_owned());
                }
            }
            _ => {}
        }
    }
    names
}

/// The module depth of a file under `src/` (`runtime/mod.rs` 1, `runtime/rng.rs` 2,
/// `runtime/hub/mod.rs` 2).
fn module_depth(relative_to_src: &Path) -> usize {
    let parts = relative_to_src.components().count();
    if relative_to_src.file_name().is_some_and(|n| n == "mod.rs") {
        parts - 1
    } else {
        parts
    }
}

/// Every place in the runtime that names another stage: `file:line: text`.
fn runtime_violations() -> Vec<String> {
    let src = repo_root().join("acs-builder/src");
    let runtime = sources("acs-builder/src/runtime");
    assert!(
        !runtime.is_empty(),
        "no source file under acs-builder/src/runtime"
    );
    let mut found = Vec::new();
    for (file, text) in runtime {
        let depth = module_depth(
            repo_root()
                .join(&file)
                .strip_prefix(&src)
                .expect("under acs-builder/src"),
        );
        // Comments dropped, line breaks kept (offsets map back to lines).
        let code: String = text
            .lines()
            .map(|line| {
                if line.trim_start().starts_with("//") {
                    ""
                } else {
                    code_of(line)
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let line_of = |at: usize| code[..at].matches('\n').count() + 1;
        let source_line = |at: usize| text.lines().nth(line_of(at) - 1).unwrap_or("").trim();
        let mut report = |at: usize, why: String| {
            found.push(format!(
                "{file}:{}: {why}: {}",
                line_of(at),
                source_line(at)
            ));
        };
        for at in word_offsets(&code, "acs_schema") {
            report(at, "names acs_schema".to_owned());
        }
        for (at, _) in code.match_indices("crate::") {
            if at > 0 && (is_ident_byte(code.as_bytes()[at - 1]) || code.as_bytes()[at - 1] == b'$')
            {
                continue;
            }
            for name in first_segments(&code, at + "crate::".len()) {
                if name != "runtime" {
                    report(at, format!("names crate::{name}"));
                }
            }
        }
        // `super::` chains that climb out of the runtime to the crate root.
        for at in word_offsets(&code, "super") {
            if at >= 2 && &code[at - 2..at] == "::" {
                continue; // counted from the chain's first `super`
            }
            let mut climbs = 0;
            let mut next = at;
            while code[next..].starts_with("super::") {
                climbs += 1;
                next += "super::".len();
            }
            if climbs >= depth {
                for name in first_segments(&code, next) {
                    if name != "runtime" {
                        report(at, format!("reaches the crate root for `{name}`"));
                    }
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn the_runtime_imports_no_other_stage() {
    let found = runtime_violations();
    assert!(
        found.is_empty(),
        "acs-builder/src/runtime/ may only use crate::runtime::... (no other stage: {}, and \
         not acs_schema); {} place(s):\n{}",
        OTHER_STAGES.join(", "),
        found.len(),
        found.join("\n")
    );
}

#[test]
fn the_checks_find_imports_of_other_stages() {
    // The scanner on samples, so that a broken scanner cannot pass the guard above silently.
    assert_eq!(code_of("let a = 1; // crate::manifest"), "let a = 1; ");
    assert_eq!(code_of("let a = \"//\"; // x"), "let a = \"//\"; ");
    assert_eq!(code_of("let q = '\"'; // x"), "let q = '\"'; ");
    assert_eq!(code_of("let q = '\\''; // x"), "let q = '\\''; ");
    let text = "use crate::{\n    runtime::rng,\n    manifest::LlmSection,\n};";
    assert_eq!(
        first_segments(text, "use crate::".len()),
        ["runtime", "manifest"]
    );
    assert_eq!(first_segments("crate::store::x", 7), ["store"]);
    assert_eq!(
        word_offsets("acs_schema::x; my_acs_schema", "acs_schema"),
        [0]
    );
    assert_eq!(module_depth(Path::new("runtime/mod.rs")), 1);
    assert_eq!(module_depth(Path::new("runtime/hub/client.rs")), 3);
    for name in OTHER_STAGES {
        assert!(
            first_segments(&format!("crate::{name}::X"), 7) == [name],
            "{name}"
        );
    }
}

#[test]
fn source_files_stay_small_and_main_stays_thin() {
    let mut too_long = Vec::new();
    for dir in ["acs-builder/src", "acs-schema/src"] {
        for (file, text) in sources(dir) {
            let before_tests = text
                .lines()
                .take_while(|line| !line.starts_with("#[cfg(test)]"))
                .count();
            if before_tests > MAX_LINES_BEFORE_TESTS {
                too_long.push(format!("{file}: {before_tests} lines before #[cfg(test)]"));
            }
        }
    }
    let main = std::fs::read_to_string(repo_root().join("acs-builder/src/main.rs")).unwrap();
    let main_lines = main.lines().count();
    if main_lines >= MAX_MAIN_LINES {
        too_long.push(format!(
            "acs-builder/src/main.rs: {main_lines} lines (dispatch only: fewer than \
             {MAX_MAIN_LINES})"
        ));
    }
    assert!(
        too_long.is_empty(),
        "at most {MAX_LINES_BEFORE_TESTS} lines per source file before its tests; split these \
         by responsibility:\n{}",
        too_long.join("\n")
    );
}
