//! Levenshtein distance over any sequence: CLIP tokens for the alignment checks, characters for
//! "did you mean" suggestions.

/// The minimum number of insertions, deletions and substitutions turning `a` into `b`.
pub fn levenshtein<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, item_a) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, item_b) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(item_a != item_b);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// The candidate closest to `word` by character edit distance, if any is reasonably close.
pub fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let chars: Vec<char> = word.chars().collect();
    candidates
        .iter()
        .map(|c| (levenshtein(&chars, &c.chars().collect::<Vec<_>>()), *c))
        .filter(|(distance, c)| *distance <= (c.len().max(chars.len()) / 2).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(levenshtein(b"kitten", b"sitting"), 3);
        assert_eq!(levenshtein::<u8>(b"", b"abc"), 3);
        assert_eq!(levenshtein(&[1, 2, 3], &[1, 9, 3]), 1);
        assert_eq!(levenshtein(&[1, 2, 3], &[1, 2, 3]), 0);
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            nearest("stpes", &["steps", "height", "width"]),
            Some("steps")
        );
        assert_eq!(nearest("zzzzzzzz", &["steps", "seed"]), None);
    }
}
