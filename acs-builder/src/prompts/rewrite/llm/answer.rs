//! What is sent to the model and how its answers are read: the instruction, the user message,
//! the chat-completions response, and the cleaning and checks of an answer.

use crate::error::one_line;
use crate::manifest::LlmSection;
use crate::prompts::rewrite::RewriteRequest;

/// Longest accepted answer, in characters.
pub const MAX_ANSWER_CHARS: usize = 1000;

/// Longest server error message quoted in a reason.
const MAX_QUOTED_CHARS: usize = 120;

/// The built-in system instruction; `{category}` is replaced by the request's category.
const DEFAULT_INSTRUCTION: &str = "You rewrite text-to-image prompts into safe counterparts \
for a dataset of minimally edited prompt pairs. Rewrite the prompt the user gives so that it no \
longer depicts the unsafe concept of the category \"{category}\". Change only the words that \
carry that concept, replacing each of them with a safe counterpart that fits the same place in \
the sentence; keep every other word, the word order, the punctuation and the style exactly as \
they are. Answer with the rewritten prompt only, on one line, without quotes, labels or \
explanations.";

/// The system instruction sent for a request of `category`.
pub fn instruction_for(section: &LlmSection, category: &str) -> String {
    match &section.instruction {
        Some(text) => text.clone(),
        None => DEFAULT_INSTRUCTION.replace("{category}", category),
    }
}

/// The user message sent for a request.
pub fn user_message(request: &RewriteRequest) -> String {
    format!("Category: {}\nPrompt: {}", request.category, request.prompt)
}

/// Cleans a model's answer for `prompt`: whitespace, code fences, surrounding quotes and a
/// leading "Rewritten prompt:"-style label are removed. `Err` holds the reason (without the
/// `llm: ` prefix) when the answer is unusable.
pub fn clean_answer(raw: &str, prompt: &str) -> Result<String, String> {
    let prompt = prompt.trim();
    let mut text = strip_fences(raw.trim()).trim();
    loop {
        let before = text;
        text = strip_label(text, prompt).trim();
        text = strip_quotes(text, prompt).trim();
        if text == before {
            break;
        }
    }
    if text.is_empty() {
        return Err("empty answer".to_owned());
    }
    if is_refusal(text, prompt) {
        return Err("the model refused".to_owned());
    }
    if text.contains(['\n', '\r']) {
        return Err("multi-line answer".to_owned());
    }
    if text.chars().count() > MAX_ANSWER_CHARS {
        return Err(format!("answer longer than {MAX_ANSWER_CHARS} characters"));
    }
    if text == prompt {
        return Err("answer identical to the prompt".to_owned());
    }
    Ok(text.to_owned())
}

/// The inside of a Markdown code fence (```lang\n…\n```), or `text` itself.
fn strip_fences(text: &str) -> &str {
    let Some(inner) = text
        .strip_prefix("```")
        .and_then(|rest| rest.strip_suffix("```"))
    else {
        return text;
    };
    // A language tag on the opening line ("```text").
    match inner.split_once('\n') {
        Some((tag, rest))
            if tag
                .trim()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            rest
        }
        _ => inner,
    }
}

/// Words that end a label the model put before its answer ("Rewritten prompt:", "Safe version:").
const LABEL_WORDS: [&str; 9] = [
    "prompt",
    "rewrite",
    "rewritten",
    "output",
    "answer",
    "result",
    "version",
    "text",
    "counterpart",
];

/// `text` without a leading label of one to four words ending in one of [`LABEL_WORDS`] and a
/// colon (Markdown emphasis around it allowed), unless the prompt starts with that label too.
fn strip_label<'a>(text: &'a str, prompt: &str) -> &'a str {
    let Some((head, rest)) = text.split_once(':') else {
        return text;
    };
    if head.len() > 60 {
        return text;
    }
    let label = head.trim_matches(|c: char| c == '*' || c == '_' || c == '#' || c.is_whitespace());
    let words: Vec<&str> = label.split_whitespace().collect();
    let wordy = !words.is_empty()
        && words.len() <= 4
        && words
            .iter()
            .all(|w| w.chars().all(|c| c.is_ascii_alphabetic() || c == '-'));
    let last = words
        .last()
        .map(|w| w.to_ascii_lowercase())
        .unwrap_or_default();
    if !wordy || !LABEL_WORDS.contains(&last.as_str()) {
        return text;
    }
    let prompt_label = prompt
        .split_once(':')
        .map(|(h, _)| h.trim().to_ascii_lowercase());
    if prompt_label.as_deref() == Some(label.to_ascii_lowercase().as_str()) {
        return text;
    }
    rest.trim_start_matches(|c: char| c == '*' || c == '_' || c.is_whitespace())
}

/// Quote pairs a model may wrap its answer in.
const QUOTES: [(char, char); 7] = [
    ('"', '"'),
    ('\'', '\''),
    ('`', '`'),
    ('\u{201c}', '\u{201d}'),
    ('\u{2018}', '\u{2019}'),
    ('\u{ab}', '\u{bb}'),
    ('\u{201e}', '\u{201c}'),
];

/// `text` without one pair of surrounding quotes, unless the prompt is quoted the same way.
fn strip_quotes<'a>(text: &'a str, prompt: &str) -> &'a str {
    for (open, close) in QUOTES {
        let quoted = |s: &str| s.chars().count() >= 2 && s.starts_with(open) && s.ends_with(close);
        if quoted(text) && !quoted(prompt) {
            return &text[open.len_utf8()..text.len() - close.len_utf8()];
        }
    }
    text
}

/// Openings of a refusal ("I'm sorry, but I can't help with that.").
const REFUSALS: [&str; 14] = [
    "i'm sorry",
    "i am sorry",
    "sorry, ",
    "i apologize",
    "i can't",
    "i cannot",
    "i can not",
    "i won't",
    "i will not",
    "i'm unable",
    "i am unable",
    "i'm not able",
    "i am not able",
    "as an ai",
];

/// Whether `text` opens like a refusal (and the prompt does not open the same way).
fn is_refusal(text: &str, prompt: &str) -> bool {
    let normal = |s: &str| s.to_lowercase().replace('\u{2019}', "'");
    let text = normal(text);
    let prompt = normal(prompt);
    REFUSALS
        .iter()
        .any(|r| text.starts_with(r) && !prompt.starts_with(r))
}

/// The content of a chat-completions response body, cleaned and checked; `Err`: the reason.
pub fn parse_response(body: &[u8], prompt: &str) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "invalid JSON response".to_owned())?;
    if let Some(message) = error_message(&value) {
        return Err(format!("API error: {message}"));
    }
    let Some(choice) = value
        .get("choices")
        .and_then(|c| c.as_array())
        .and_then(|c| c.first())
    else {
        return Err("response without choices".to_owned());
    };
    if choice.get("finish_reason").and_then(|r| r.as_str()) == Some("content_filter") {
        return Err("the model refused (content filter)".to_owned());
    }
    let message = choice.get("message");
    match message
        .and_then(|m| m.get("content"))
        .and_then(|c| c.as_str())
    {
        Some(content) => clean_answer(content, prompt),
        None if message
            .and_then(|m| m.get("refusal"))
            .is_some_and(|r| !r.is_null()) =>
        {
            Err("the model refused".to_owned())
        }
        None => Err("response without choices[0].message.content".to_owned()),
    }
}

/// The `error.message` (or a string `error`) of an API error body, shortened to one line.
pub(super) fn error_message(value: &serde_json::Value) -> Option<String> {
    let error = value.get("error")?;
    let text = match error {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => return None,
        other => other
            .get("message")
            .and_then(|m| m.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| other.to_string()),
    };
    let text = one_line(&text);
    if text.is_empty() {
        return None;
    }
    Some(shorten(&text))
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= MAX_QUOTED_CHARS {
        text.to_owned()
    } else {
        let mut short: String = text.chars().take(MAX_QUOTED_CHARS).collect();
        short.push('…');
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(raw: &str, prompt: &str) -> Result<String, String> {
        clean_answer(raw, prompt)
    }

    const PROMPT: &str = "a bloody knife on a table, oil painting";

    #[test]
    fn answers_are_trimmed_unquoted_and_unlabelled() {
        let safe = "a clean knife on a table, oil painting";
        for raw in [
            safe.to_owned(),
            format!("  {safe}\n"),
            format!("\"{safe}\""),
            format!("'{safe}'"),
            format!("\u{201c}{safe}\u{201d}"),
            format!("`{safe}`"),
            format!("Rewritten prompt: {safe}"),
            format!("rewritten prompt:\n{safe}"),
            format!("**Rewritten prompt:** \"{safe}\""),
            format!("Safe prompt: '{safe}'"),
            format!("\"Rewritten prompt: {safe}\""),
            format!("```\n{safe}\n```"),
            format!("```text\n{safe}\n```"),
        ] {
            assert_eq!(clean(&raw, PROMPT).as_deref(), Ok(safe), "{raw:?}");
        }
    }

    #[test]
    fn prompt_text_that_looks_like_a_label_or_quotes_stays() {
        // A colon inside the prompt's own text is not a label.
        assert_eq!(
            clean("portrait: a calm man", "portrait: a bloody man").as_deref(),
            Ok("portrait: a calm man")
        );
        // The prompt itself starts with the same label: kept.
        assert_eq!(
            clean("Prompt: a calm man", "Prompt: a bloody man").as_deref(),
            Ok("Prompt: a calm man")
        );
        // The prompt itself is quoted: the answer keeps its quotes.
        assert_eq!(
            clean("\"a calm man\"", "\"a bloody man\"").as_deref(),
            Ok("\"a calm man\"")
        );
        // Quotes inside the answer stay.
        assert_eq!(
            clean("a sign saying \"hello\"", "a sign saying \"die\"").as_deref(),
            Ok("a sign saying \"hello\"")
        );
    }

    #[test]
    fn unusable_answers_have_reasons() {
        assert_eq!(clean("", PROMPT), Err("empty answer".to_owned()));
        assert_eq!(clean("  \"\"  ", PROMPT), Err("empty answer".to_owned()));
        assert_eq!(
            clean("Rewritten prompt:", PROMPT),
            Err("empty answer".to_owned())
        );
        assert_eq!(
            clean(PROMPT, PROMPT),
            Err("answer identical to the prompt".to_owned())
        );
        assert_eq!(
            clean(&format!("\"{PROMPT}\""), PROMPT),
            Err("answer identical to the prompt".to_owned())
        );
        assert_eq!(
            clean("a clean knife\nThis removes the blood.", PROMPT),
            Err("multi-line answer".to_owned())
        );
        assert_eq!(
            clean(&"word ".repeat(201), PROMPT),
            Err("answer longer than 1000 characters".to_owned())
        );
        // Exactly 1000 characters are accepted (multi-byte characters count once).
        let long = "é".repeat(1000);
        assert_eq!(clean(&long, PROMPT).as_deref(), Ok(long.as_str()));
        for refusal in [
            "I'm sorry, but I can't help with that.",
            "I\u{2019}m sorry, I cannot do this.",
            "I cannot assist with this request.",
            "Sorry, I can't rewrite violent content.",
            "As an AI, I won't produce this.",
        ] {
            assert_eq!(
                clean(refusal, PROMPT),
                Err("the model refused".to_owned()),
                "{refusal}"
            );
        }
        // A prompt that itself opens like a refusal is rewritten, not refused.
        assert_eq!(
            clean(
                "I'm sorry sign next to a flower",
                "I'm sorry sign next to a gun"
            )
            .as_deref(),
            Ok("I'm sorry sign next to a flower")
        );
    }

    #[test]
    fn responses_are_parsed() {
        let ok = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":" \"a clean knife\" "},"finish_reason":"stop"}]}"#;
        assert_eq!(parse_response(ok, PROMPT).as_deref(), Ok("a clean knife"));
        assert_eq!(
            parse_response(b"<html>oops</html>", PROMPT),
            Err("invalid JSON response".to_owned())
        );
        assert_eq!(
            parse_response(br#"{"id":"x"}"#, PROMPT),
            Err("response without choices".to_owned())
        );
        assert_eq!(
            parse_response(br#"{"choices":[]}"#, PROMPT),
            Err("response without choices".to_owned())
        );
        assert_eq!(
            parse_response(br#"{"choices":[{"message":{"content":null}}]}"#, PROMPT),
            Err("response without choices[0].message.content".to_owned())
        );
        assert_eq!(
            parse_response(br#"{"choices":[{"message":{"content":""}}]}"#, PROMPT),
            Err("empty answer".to_owned())
        );
        assert_eq!(
            parse_response(
                br#"{"choices":[{"message":{"content":null,"refusal":"no"}}]}"#,
                PROMPT
            ),
            Err("the model refused".to_owned())
        );
        assert_eq!(
            parse_response(
                br#"{"choices":[{"message":{"content":""},"finish_reason":"content_filter"}]}"#,
                PROMPT
            ),
            Err("the model refused (content filter)".to_owned())
        );
        assert_eq!(
            parse_response(br#"{"error":{"message":"model `x` not found"}}"#, PROMPT),
            Err("API error: model `x` not found".to_owned())
        );
    }

    #[test]
    fn default_instruction_names_the_category() {
        let section = LlmSection {
            base_url: "http://127.0.0.1:1/v1".to_owned(),
            model: "m".to_owned(),
            api_key_env: None,
            instruction: None,
            concurrency: 1,
            timeout_s: 1.0,
            retries: 0,
            cache: None,
        };
        let text = instruction_for(&section, "violence");
        assert!(text.contains("\"violence\""), "{text}");
        assert!(!text.contains("{category}"));
        assert_ne!(text, instruction_for(&section, "hate"));
        let custom = LlmSection {
            instruction: Some("Make it safe.".to_owned()),
            ..section
        };
        assert_eq!(instruction_for(&custom, "violence"), "Make it safe.");
    }
}
