//! Category lexicons: unsafe concept terms (single and multi-word, each inflection listed) with
//! safe substitutes, one TOML file per category. A lexicon finds concept spans in a prompt and
//! rewrites only those spans; every other byte of the prompt stays as it was.
//!
//! ```toml
//! category = "violence"
//! [terms]
//! "bloody" = "clean"
//! "covered in blood" = "covered in paint"
//! ```
//!
//! Terms match case-insensitively on whole words; inside a multi-word term, words may be
//! separated by spaces or hyphens. At each position the longest term wins.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;

use crate::error::AcsError;
use crate::manifest::CATEGORIES;

/// The lexicons built into acs (manifests/lexicons/ of the source tree).
const BUILT_IN: [(&str, &str); 7] = [
    (
        "sexual",
        include_str!("../../../manifests/lexicons/sexual.toml"),
    ),
    (
        "violence",
        include_str!("../../../manifests/lexicons/violence.toml"),
    ),
    (
        "hate",
        include_str!("../../../manifests/lexicons/hate.toml"),
    ),
    (
        "harassment",
        include_str!("../../../manifests/lexicons/harassment.toml"),
    ),
    (
        "self-harm",
        include_str!("../../../manifests/lexicons/self-harm.toml"),
    ),
    (
        "shocking",
        include_str!("../../../manifests/lexicons/shocking.toml"),
    ),
    (
        "illegal-activity",
        include_str!("../../../manifests/lexicons/illegal-activity.toml"),
    ),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LexiconFile {
    category: String,
    terms: BTreeMap<String, String>,
}

/// A word of a prompt: its lowercase text and byte span.
#[derive(Debug, Clone)]
struct Word {
    lower: String,
    start: usize,
    end: usize,
}

fn words(text: &str) -> Vec<Word> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        let inside = c.is_alphanumeric() || c == '\'' || c == '’';
        match (inside, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push(word(text, s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(word(text, s, text.len()));
    }
    out
}

fn word(text: &str, start: usize, end: usize) -> Word {
    Word {
        lower: text[start..end].to_lowercase().replace('’', "'"),
        start,
        end,
    }
}

/// A concept term found in a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// Byte span in the prompt.
    pub start: usize,
    /// End of the byte span.
    pub end: usize,
    /// The term as the lexicon writes it.
    pub term: String,
}

/// One category's terms.
#[derive(Debug, Clone)]
pub struct Lexicon {
    /// The category.
    pub category: String,
    /// First word -> (term words, term, substitute), longest first.
    index: HashMap<String, Vec<(Vec<String>, String, String)>>,
}

impl Lexicon {
    /// Parses a lexicon file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, AcsError> {
        let file: LexiconFile =
            toml::from_str(text).map_err(|e| crate::error::toml_error(text, origin, &e))?;
        if !CATEGORIES.contains(&file.category.as_str()) {
            return Err(AcsError::input(format!(
                "{origin}: category `{}` is not one of {}",
                file.category,
                CATEGORIES.join(", ")
            )));
        }
        let mut index: HashMap<String, Vec<(Vec<String>, String, String)>> = HashMap::new();
        for (term, substitute) in file.terms {
            let term_words: Vec<String> = words(&term).into_iter().map(|w| w.lower).collect();
            if term_words.is_empty() {
                return Err(AcsError::input(format!(
                    "{origin}: term `{term}` has no words"
                )));
            }
            index
                .entry(term_words[0].clone())
                .or_default()
                .push((term_words, term, substitute));
        }
        for entries in index.values_mut() {
            entries.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        }
        Ok(Self {
            category: file.category,
            index,
        })
    }

    /// This lexicon with `other`'s terms added; a term both hold takes `other`'s substitute.
    pub fn merged_with(mut self, other: Lexicon) -> Self {
        for (first, entries) in other.index {
            let mine = self.index.entry(first).or_default();
            for entry in entries {
                mine.retain(|(words, _, _)| *words != entry.0);
                mine.push(entry);
            }
            mine.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        }
        self
    }

    /// Number of terms.
    pub fn len(&self) -> usize {
        self.index.values().map(Vec::len).sum()
    }

    /// True when the lexicon has no terms.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every term with its substitute.
    pub fn terms(&self) -> impl Iterator<Item = (&str, &str)> {
        self.index
            .values()
            .flatten()
            .map(|(_, term, substitute)| (term.as_str(), substitute.as_str()))
    }

    /// Non-overlapping concept spans of `text`, left to right, longest term first.
    pub fn find(&self, text: &str) -> Vec<(Match, &str)> {
        let words = words(text);
        let mut found = Vec::new();
        let mut i = 0;
        'outer: while i < words.len() {
            if let Some(entries) = self.index.get(&words[i].lower) {
                for (term_words, term, substitute) in entries {
                    let n = term_words.len();
                    if i + n > words.len() {
                        continue;
                    }
                    let matches = (0..n).all(|k| {
                        words[i + k].lower == term_words[k]
                            && (k == 0 || joined(text, &words[i + k - 1], &words[i + k]))
                    });
                    if matches {
                        found.push((
                            Match {
                                start: words[i].start,
                                end: words[i + n - 1].end,
                                term: term.clone(),
                            },
                            substitute.as_str(),
                        ));
                        i += n;
                        continue 'outer;
                    }
                }
            }
            i += 1;
        }
        found
    }

    /// `text` with every concept span replaced by its substitute (case adapted); `None` when
    /// the text holds no term. Bytes outside the spans are copied unchanged.
    pub fn rewrite(&self, text: &str) -> Option<(String, Vec<String>)> {
        let found = self.find(text);
        if found.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len() + 16);
        let mut at = 0;
        let mut concepts = Vec::new();
        for (m, substitute) in found {
            out.push_str(&text[at..m.start]);
            out.push_str(&match_case(&text[m.start..m.end], substitute));
            concepts.push(m.term);
            at = m.end;
        }
        out.push_str(&text[at..]);
        Some((out, concepts))
    }
}

/// Words of a multi-word term may be separated by whitespace or hyphens only.
fn joined(text: &str, before: &Word, after: &Word) -> bool {
    let gap = &text[before.end..after.start];
    !gap.is_empty() && gap.chars().all(|c| c.is_whitespace() || c == '-')
}

/// The substitute in the case of the original: UPPER, Capitalised or as written.
fn match_case(original: &str, substitute: &str) -> String {
    let letters: Vec<char> = original.chars().filter(|c| c.is_alphabetic()).collect();
    if letters.len() > 1 && letters.iter().all(|c| c.is_uppercase()) {
        return substitute.to_uppercase();
    }
    if letters.first().is_some_and(|c| c.is_uppercase()) {
        let mut chars = substitute.chars();
        return match chars.next() {
            Some(first) => first.to_uppercase().chain(chars).collect(),
            None => String::new(),
        };
    }
    substitute.to_owned()
}

/// The lexicons of every category.
#[derive(Debug, Clone)]
pub struct Lexicons {
    by_category: BTreeMap<String, Lexicon>,
    /// sha256 of every lexicon file's text, in category order.
    texts: BTreeMap<String, String>,
}

impl Lexicons {
    /// The lexicons built into acs.
    pub fn built_in() -> Result<Self, AcsError> {
        let mut by_category = BTreeMap::new();
        let mut texts = BTreeMap::new();
        for (category, text) in BUILT_IN {
            let lexicon = Lexicon::parse(text, &format!("built-in lexicon {category}"))?;
            by_category.insert(category.to_owned(), lexicon);
            texts.insert(
                category.to_owned(),
                acs_schema::sha256_bytes(text.as_bytes()),
            );
        }
        Ok(Self { by_category, texts })
    }

    /// One `<category>.toml` per category from `dir`, added to the built-in lexicon of that
    /// category (its substitutes win where both name a term), or replacing it when `replace`;
    /// categories without a file keep the built-in lexicon.
    pub fn from_dir(dir: &Path, replace: bool) -> Result<Self, AcsError> {
        if !dir.is_dir() {
            return Err(AcsError::input(format!(
                "{}: lexicon folder not found",
                dir.display()
            )));
        }
        let mut lexicons = Self::built_in()?;
        for category in CATEGORIES {
            let path = dir.join(format!("{category}.toml"));
            if !path.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| AcsError::io(&path, e))?;
            let lexicon = Lexicon::parse(&text, &path.display().to_string())?;
            if lexicon.category != category {
                return Err(AcsError::input(format!(
                    "{}: holds category `{}`, expected `{category}`",
                    path.display(),
                    lexicon.category
                )));
            }
            let sha = acs_schema::sha256_bytes(text.as_bytes());
            let (lexicon, sha) = match lexicons.by_category.remove(category) {
                Some(built_in) if !replace => {
                    let built_in_sha = lexicons.texts.get(category).cloned().unwrap_or_default();
                    (
                        built_in.merged_with(lexicon),
                        format!("{built_in_sha}+{sha}"),
                    )
                }
                _ => (lexicon, sha),
            };
            lexicons.by_category.insert(category.to_owned(), lexicon);
            lexicons.texts.insert(category.to_owned(), sha);
        }
        Ok(lexicons)
    }

    /// sha256 over the lexicon files in use (recorded in the build config).
    pub fn sha256(&self) -> String {
        let joined: Vec<String> = self
            .texts
            .iter()
            .map(|(category, sha)| format!("{category}:{sha}"))
            .collect();
        acs_schema::sha256_bytes(joined.join("\n").as_bytes())
    }

    /// The lexicon of `category`.
    pub fn get(&self, category: &str) -> Option<&Lexicon> {
        self.by_category.get(category)
    }

    /// The first term of any category in `text`, as (category, term).
    pub fn any_term(&self, text: &str) -> Option<(String, String)> {
        self.by_category.iter().find_map(|(category, lexicon)| {
            lexicon
                .find(text)
                .into_iter()
                .next()
                .map(|(m, _)| (category.clone(), m.term))
        })
    }

    /// Every category's lexicon.
    pub fn iter(&self) -> impl Iterator<Item = &Lexicon> {
        self.by_category.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lexicon() -> Lexicon {
        Lexicon::parse(
            "category = \"violence\"\n[terms]\n\"bloody\" = \"clean\"\n\"blood\" = \"red paint\"\n\
             \"covered in blood\" = \"covered in paint\"\n\"blood-soaked\" = \"rain-soaked\"\n",
            "test",
        )
        .unwrap()
    }

    #[test]
    fn only_the_spans_change() {
        let lex = lexicon();
        let (out, concepts) = lex
            .rewrite("A Bloody knife,  covered in blood; BLOODY hell  (blood-soaked)")
            .unwrap();
        assert_eq!(
            out,
            "A Clean knife,  covered in paint; CLEAN hell  (rain-soaked)"
        );
        assert_eq!(
            concepts,
            ["bloody", "covered in blood", "bloody", "blood-soaked"]
        );
        assert!(lex.rewrite("a bloodhound at sunset").is_none());
        assert!(lex.rewrite("").is_none());
    }

    #[test]
    fn one_prompt_per_category_before_and_after() {
        let lexicons = Lexicons::built_in().unwrap();
        let cases = [
            (
                "sexual",
                "a Nude woman on a beach, oil painting",
                "a Clothed woman on a beach, oil painting",
            ),
            (
                "violence",
                "soldiers with rifles, war photo, 35mm",
                "soldiers with walking sticks, war photo, 35mm",
            ),
            (
                "hate",
                "a nazi rally in a stadium (1936)",
                "a museum rally in a stadium (1936)",
            ),
            (
                "harassment",
                "a bully pushing a kid — candid",
                "a friend pushing a kid — candid",
            ),
            (
                "self-harm",
                "a noose in an empty barn, depression",
                "a garland in an empty barn, serenity",
            ),
            (
                "shocking",
                "a pile of SKULLS in a cave, macabre",
                "a pile of SEASHELLS in a cave, whimsical",
            ),
            (
                "illegal-activity",
                "a drug lab in a basement, police photo",
                "a bakery in a basement, police photo",
            ),
        ];
        for (category, before, after) in cases {
            let (out, _) = lexicons.get(category).unwrap().rewrite(before).unwrap();
            assert_eq!(out, after, "{category}");
        }
    }

    #[test]
    fn bytes_outside_the_spans_never_change() {
        let lexicons = Lexicons::built_in().unwrap();
        let fillers = [
            "a",
            "photo",
            "of",
            ",",
            "  ",
            "🪦",
            "“quoted”",
            "highly",
            "detailed",
            "\u{301}e",
            "(",
            ")",
            "artstation",
            "4k",
            "über",
            "-",
            ";",
            "by",
            "greg",
        ];
        let mut rng = crate::runtime::rng::SplitMix64::new(7);
        for lexicon in lexicons.iter() {
            let terms: Vec<&str> = lexicon.terms().map(|(t, _)| t).collect();
            for _ in 0..200 {
                let mut prompt = String::new();
                for _ in 0..(3 + rng.next_u64() % 8) {
                    let pick = rng.next_u64() as usize;
                    if pick.is_multiple_of(3) {
                        prompt.push_str(terms[pick % terms.len()]);
                    } else {
                        prompt.push_str(fillers[pick % fillers.len()]);
                    }
                    prompt.push(' ');
                }
                let Some((out, _)) = lexicon.rewrite(&prompt) else {
                    continue;
                };
                // Removing the matched spans from the input and the substitutes from the
                // output leaves the same bytes.
                let mut kept_in = String::new();
                let mut kept_out = String::new();
                let (mut a, mut b) = (0, 0);
                for (m, substitute) in lexicon.find(&prompt) {
                    kept_in.push_str(&prompt[a..m.start]);
                    let plain = &prompt[a..m.start];
                    kept_out.push_str(&out[b..b + plain.len()]);
                    b += plain.len() + match_case(&prompt[m.start..m.end], substitute).len();
                    a = m.end;
                }
                kept_in.push_str(&prompt[a..]);
                kept_out.push_str(&out[b..]);
                assert_eq!(kept_in, kept_out, "{prompt}");
            }
        }
    }

    #[test]
    fn every_built_in_category_rewrites_and_substitutes_are_safe() {
        let lexicons = Lexicons::built_in().unwrap();
        for category in CATEGORIES {
            let lexicon = lexicons.get(category).unwrap();
            assert!(lexicon.len() >= 30, "{category}: {} terms", lexicon.len());
            for (term, substitute) in lexicon.terms() {
                // A substitute must not itself be a concept term of any category.
                assert!(
                    lexicons.any_term(substitute).is_none(),
                    "{category}: substitute `{substitute}` of `{term}` is a term: {:?}",
                    lexicons.any_term(substitute)
                );
                // The term is found in a prompt and replaced there.
                let prompt = format!("a photo of {term} at night, 35mm");
                let (out, _) = lexicon.rewrite(&prompt).unwrap();
                assert_eq!(out, format!("a photo of {substitute} at night, 35mm"));
            }
        }
    }

    #[test]
    fn words_that_are_not_unsafe_in_themselves_are_no_terms() {
        let lexicons = Lexicons::built_in().unwrap();
        for prompt in [
            "a smiling clown at a birthday party",
            "a troll under a stone bridge, fairy tale illustration",
            "a trash can on a street corner",
            "an angry cat, photo",
            "a crying baby in a crib",
            "a lonely lighthouse at dusk",
            "a watch on a wrist, tears of rain on the glass",
            "a sewing needle and thread",
            "a roast joint on a table",
            "colourful graffiti on a brick wall",
        ] {
            assert_eq!(lexicons.any_term(prompt), None, "{prompt}");
        }
    }
}
