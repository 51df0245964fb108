//! What changed between the build configuration recorded in an output folder and the one a
//! rerun brings: the manifest keys (old -> new), the source files, the lexicons.

use serde_json::Value;

/// At most this many changes are named; the rest are counted.
const MAX_NAMED: usize = 6;

/// The changes from `old` to `new` (two recorded build configurations), one phrase each,
/// e.g. `[sampling].steps 10 -> 20` or `source file samples/p.jsonl changed`.
pub fn changed_keys(old: &Value, new: &Value) -> Vec<String> {
    let mut changes = Vec::new();
    diff(
        old.get("manifest").unwrap_or(&Value::Null),
        new.get("manifest").unwrap_or(&Value::Null),
        &mut Vec::new(),
        &mut changes,
    );
    let files = |config: &Value| -> Vec<(String, String)> {
        let list = config.get("source_files").and_then(Value::as_array);
        list.into_iter()
            .flatten()
            .map(|f| {
                let field = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                (field("path"), field("sha256"))
            })
            .collect()
    };
    let (old_files, new_files) = (files(old), files(new));
    for (path, sha) in &new_files {
        match old_files.iter().find(|(p, _)| p == path) {
            Some((_, old_sha)) if old_sha != sha => {
                changes.push(format!("source file {path} changed"))
            }
            None => changes.push(format!("source file {path} added")),
            _ => {}
        }
    }
    for (path, _) in &old_files {
        if !new_files.iter().any(|(p, _)| p == path) {
            changes.push(format!("source file {path} removed"));
        }
    }
    for (key, what) in [
        ("lexicons_sha256", "the lexicons"),
        ("judges", "the judges"),
    ] {
        if old.get(key) != new.get(key) {
            changes.push(format!("{what} changed"));
        }
    }
    changes
}

/// `changes` as one phrase: the first few, then how many more.
pub fn describe(changes: &[String]) -> String {
    match changes.len() {
        0 => "nothing in the manifest; the acs version or its defaults differ".to_owned(),
        n if n <= MAX_NAMED => changes.join(", "),
        n => format!(
            "{}, and {} more",
            changes[..MAX_NAMED].join(", "),
            n - MAX_NAMED
        ),
    }
}

fn diff(old: &Value, new: &Value, path: &mut Vec<String>, changes: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                path.push(key.clone());
                diff(
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                    path,
                    changes,
                );
                path.pop();
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() && is_table_list(path) => {
            for (index, (x, y)) in a.iter().zip(b).enumerate() {
                path.push(format!("#{}", index + 1));
                diff(x, y, path, changes);
                path.pop();
            }
        }
        _ if old != new => changes.push(format!(
            "{} {} -> {}",
            key_name(path),
            short(old),
            short(new)
        )),
        _ => {}
    }
}

/// `[[sources]]` is a list of tables, compared table by table.
fn is_table_list(path: &[String]) -> bool {
    path.len() == 1 && path[0] == "sources"
}

/// A manifest path as the manifest writes it: `[sampling].steps`, `[[sources]] #2.path`.
fn key_name(path: &[String]) -> String {
    match path {
        [] => "the manifest".to_owned(),
        [table] if table == "sources" => "[[sources]]".to_owned(),
        [table] => format!("[{table}]"),
        [table, index, rest @ ..] if table == "sources" && index.starts_with('#') => {
            let head = format!("[[sources]] {index}");
            if rest.is_empty() {
                head
            } else {
                format!("{head}.{}", rest.join("."))
            }
        }
        [table, rest @ ..] => format!("[{table}].{}", rest.join(".")),
    }
}

/// A value for a message: JSON, `unset` for a missing key, cut at 40 characters.
fn short(value: &Value) -> String {
    if value.is_null() {
        return "unset".to_owned();
    }
    let text = value.to_string();
    if text.chars().count() <= 40 {
        text
    } else {
        format!("{}...", text.chars().take(37).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_each_changed_key_with_old_and_new_values() {
        let old = json!({
            "manifest": {"sampling": {"steps": 10, "scheduler": "ddim"},
                         "sources": [{"kind": "pairs-jsonl", "path": "a.jsonl"}]},
            "source_files": [{"path": "a.jsonl", "sha256": "1"}],
            "lexicons_sha256": "x",
        });
        let new = json!({
            "manifest": {"sampling": {"steps": 20, "scheduler": "ddim", "seed": 3},
                         "sources": [{"kind": "pairs-jsonl", "path": "a.jsonl", "category": "hate"}]},
            "source_files": [{"path": "a.jsonl", "sha256": "2"}],
            "lexicons_sha256": "x",
        });
        assert_eq!(
            changed_keys(&old, &new),
            [
                "[sampling].seed unset -> 3",
                "[sampling].steps 10 -> 20",
                "[[sources]] #1.category unset -> \"hate\"",
                "source file a.jsonl changed",
            ]
        );
        assert_eq!(changed_keys(&old, &old), Vec::<String>::new());
    }

    #[test]
    fn long_lists_are_cut_and_counted() {
        let changes: Vec<String> = (0..9).map(|i| format!("k{i}")).collect();
        assert_eq!(describe(&changes), "k0, k1, k2, k3, k4, k5, and 3 more");
        let old = json!({"manifest": {"sources": [{"path": "a"}]}});
        let new = json!({"manifest": {"sources": [{"path": "a"}, {"path": "b"}]}});
        let changes = changed_keys(&old, &new);
        assert_eq!(changes.len(), 1);
        assert!(
            changes[0].starts_with("[[sources]] [{\"path\":\"a\"}] -> "),
            "{changes:?}"
        );
    }
}
