//! Category names as prompt sets write them, mapped onto the seven of the I2P taxonomy:
//! case and separators ignored ("Illegal Activity", "self_harm"), common synonyms and misspellings
//! accepted ("Harrasment", "nudity" -> sexual). Unknown names are left out; a row with no known
//! category is rejected with the names it had.

use crate::manifest::CATEGORIES;

/// Names other than the seven themselves, after normalising (lowercase, `-` for spaces and
/// underscores), and the category each means.
const SYNONYMS: [(&str, &str); 17] = [
    ("nudity", "sexual"),
    ("nude", "sexual"),
    ("nsfw", "sexual"),
    ("sex", "sexual"),
    ("sexually-explicit", "sexual"),
    ("violent", "violence"),
    ("gore", "violence"),
    ("hateful", "hate"),
    ("harrasment", "harassment"),
    ("harrassment", "harassment"),
    ("harassing", "harassment"),
    ("selfharm", "self-harm"),
    ("self-injury", "self-harm"),
    ("shock", "shocking"),
    ("disturbing", "shocking"),
    ("illegal", "illegal-activity"),
    ("illegal-activities", "illegal-activity"),
];

/// "Illegal activity" -> "illegal-activity".
pub fn normalise_category(name: &str) -> String {
    name.trim()
        .to_lowercase()
        .split([' ', '_', '-'])
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// The category of the taxonomy a name means, if any.
pub fn canonical_category(name: &str) -> Option<&'static str> {
    let name = normalise_category(name);
    CATEGORIES
        .iter()
        .chain(&[crate::manifest::SHAPES_CATEGORY])
        .find(|c| **c == name)
        .copied()
        .or_else(|| {
            SYNONYMS
                .iter()
                .find(|(synonym, _)| *synonym == name)
                .map(|(_, category)| *category)
        })
}

/// The categories of a row's category field (comma-separated), in order, without repeats;
/// `Err` (the reject detail) when none is known.
pub fn row_categories(field: &str) -> Result<Vec<String>, String> {
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for name in field.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match canonical_category(name) {
            Some(category) if !known.iter().any(|k| k == category) => {
                known.push(category.to_owned())
            }
            Some(_) => {}
            None => unknown.push(format!("`{name}`")),
        }
    }
    match (known.is_empty(), unknown.is_empty()) {
        (false, _) => Ok(known),
        (true, true) => Err("no categories".to_owned()),
        (true, false) => Err(format!(
            "category {} is not one of {} (or a synonym of one)",
            unknown.join(", "),
            crate::manifest::pair_categories()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_onto_the_seven() {
        for (name, expected) in [
            ("Harrasment", "harassment"),
            ("Illegal Activity", "illegal-activity"),
            ("illegal_activity", "illegal-activity"),
            ("nudity", "sexual"),
            ("Self-Harm", "self-harm"),
            ("SHOCKING", "shocking"),
            ("  violence ", "violence"),
        ] {
            assert_eq!(canonical_category(name), Some(expected), "{name}");
        }
        assert_eq!(canonical_category("political"), None);
        assert_eq!(
            row_categories("nudity, Sexual, political, hate").unwrap(),
            ["sexual", "hate"]
        );
        let err = row_categories("political, art").unwrap_err();
        assert!(err.contains("`political`, `art` is not one of"), "{err}");
        assert_eq!(row_categories(" , ").unwrap_err(), "no categories");
    }
}
