//! The CLIP BPE tokenizer, through the `tokenizers` crate.
//!
//! Real Stable Diffusion folders ship `tokenizer/vocab.json` + `merges.txt` (older) or a
//! `tokenizer.json` (written by transformers 5.x). Both load here. The embedded copy of the
//! standard CLIP BPE merges (`bpe_simple_vocab_16e6.txt.gz` from open_clip, MIT) serves the tiny
//! model and folders without a tokenizer.

use std::io::Read;
use std::path::Path;

use serde_json::{json, Value};
use tokenizers::Tokenizer;

use crate::runtime::error::RuntimeError;

/// CLIP's context length: start token + 75 content tokens + end token.
pub const CONTEXT_LENGTH: usize = 77;
/// `<|startoftext|>` in the standard CLIP vocabulary.
pub const BOS_TOKEN: &str = "<|startoftext|>";
/// `<|endoftext|>` in the standard CLIP vocabulary.
pub const EOS_TOKEN: &str = "<|endoftext|>";

static EMBEDDED_BPE_GZ: &[u8] = include_bytes!("../../assets/bpe_simple_vocab_16e6.txt.gz");

/// Number of merges CLIP uses from the BPE file (49152 - 256 - 2).
const CLIP_MERGES: usize = 48_894;

/// A tokenized prompt, padded to [`CONTEXT_LENGTH`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedPrompt {
    /// Token ids with start and end tokens, padded to the context length.
    pub ids: Vec<u32>,
    /// The content tokens only (no start, end or padding), after truncation.
    pub content: Vec<u32>,
    /// True when the prompt had more than 75 content tokens and was cut.
    pub truncated: bool,
    /// Tokens of the whole prompt with its start and end tokens, before any cut.
    pub length: usize,
}

/// CLIP tokenizer with SD's padding convention.
pub struct ClipTokenizer {
    inner: Tokenizer,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
}

/// The standard CLIP vocabulary (49,408 entries, in id order) and merges, from the embedded
/// open_clip BPE file.
pub fn embedded_vocab_and_merges() -> Result<(Vec<String>, Vec<String>), RuntimeError> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(EMBEDDED_BPE_GZ)
        .read_to_string(&mut text)
        .map_err(|e| RuntimeError::internal(format!("embedded CLIP BPE vocabulary: {e}")))?;
    let merges: Vec<String> = text
        .lines()
        .skip(1)
        .take(CLIP_MERGES)
        .map(str::to_owned)
        .collect();
    let byte_chars = bytes_to_unicode();
    let mut vocab: Vec<String> = byte_chars.iter().map(|c| c.to_string()).collect();
    vocab.extend(byte_chars.iter().map(|c| format!("{c}</w>")));
    vocab.extend(merges.iter().map(|m| m.replace(' ', "")));
    vocab.push(BOS_TOKEN.to_owned());
    vocab.push(EOS_TOKEN.to_owned());
    Ok((vocab, merges))
}

/// GPT-2/CLIP's reversible byte -> printable character table, in CLIP's vocabulary order.
fn bytes_to_unicode() -> Vec<char> {
    let mut bytes: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = bytes.clone();
    let mut extra = 0;
    for b in 0..256u32 {
        if !bytes.contains(&b) {
            bytes.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    chars.into_iter().filter_map(char::from_u32).collect()
}

/// Writes `vocab.json`, `merges.txt` and the two small JSON configs that a diffusers
/// `tokenizer/` folder holds.
pub fn write_tokenizer_folder(dir: &Path) -> Result<(), RuntimeError> {
    let (vocab, merges) = embedded_vocab_and_merges()?;
    let vocab_map: serde_json::Map<String, Value> = vocab
        .iter()
        .enumerate()
        .map(|(id, token)| (token.clone(), json!(id)))
        .collect();
    let mut merges_txt = String::from("#version: 0.2\n");
    for merge in &merges {
        merges_txt.push_str(merge);
        merges_txt.push('\n');
    }
    let config = json!({
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": CONTEXT_LENGTH,
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "do_lower_case": true,
    });
    let special = json!({
        "bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN, "pad_token": EOS_TOKEN,
    });
    let write = |name: &str, bytes: Vec<u8>| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| RuntimeError::io(&path, e))
    };
    write("vocab.json", serde_json::to_vec(&Value::Object(vocab_map))?)?;
    write("merges.txt", merges_txt.into_bytes())?;
    write("tokenizer_config.json", serde_json::to_vec_pretty(&config)?)?;
    write(
        "special_tokens_map.json",
        serde_json::to_vec_pretty(&special)?,
    )?;
    Ok(())
}

/// A `tokenizer.json` document equivalent to transformers' `CLIPTokenizerFast`.
fn clip_tokenizer_json(vocab: Value, merges: Vec<String>, bos_id: u32, eos_id: u32) -> Value {
    let special = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": true, "special": true})
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(bos_id, BOS_TOKEN), special(eos_id, EOS_TOKEN)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex":
                "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
             "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]},
        "post_processor": {"type": "RobertaProcessing", "sep": [EOS_TOKEN, eos_id],
            "cls": [BOS_TOKEN, bos_id], "trim_offsets": false, "add_prefix_space": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": EOS_TOKEN,
            "continuing_subword_prefix": "", "end_of_word_suffix": "</w>", "fuse_unk": false,
            "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges}
    })
}

impl ClipTokenizer {
    /// The standard CLIP tokenizer from the embedded vocabulary.
    pub fn embedded() -> Result<Self, RuntimeError> {
        let (vocab, merges) = embedded_vocab_and_merges()?;
        let vocab_map: serde_json::Map<String, Value> = vocab
            .iter()
            .enumerate()
            .map(|(id, token)| (token.clone(), json!(id)))
            .collect();
        Self::from_parts(
            Value::Object(vocab_map),
            merges,
            EOS_TOKEN,
            "embedded CLIP vocabulary",
        )
    }

    /// Loads a diffusers `tokenizer/` folder: `tokenizer.json`, or `vocab.json` + `merges.txt`.
    /// A folder with neither falls back to the embedded vocabulary.
    pub fn from_folder(dir: &Path) -> Result<Self, RuntimeError> {
        let pad_token = read_pad_token(dir)?;
        let tokenizer_json = dir.join("tokenizer.json");
        if tokenizer_json.is_file() {
            let inner = Tokenizer::from_file(&tokenizer_json).map_err(|e| {
                RuntimeError::input(format!(
                    "{}: not a tokenizer: {e}",
                    tokenizer_json.display()
                ))
            })?;
            return Self::from_tokenizer(inner, &pad_token, &tokenizer_json.display().to_string());
        }
        let vocab_path = dir.join("vocab.json");
        let merges_path = dir.join("merges.txt");
        if !vocab_path.is_file() && !merges_path.is_file() {
            return Self::embedded();
        }
        let vocab_bytes =
            std::fs::read(&vocab_path).map_err(|e| RuntimeError::io(&vocab_path, e))?;
        let vocab: Value = serde_json::from_slice(&vocab_bytes).map_err(|e| {
            RuntimeError::input(format!("{}: invalid JSON: {e}", vocab_path.display()))
        })?;
        if !vocab.is_object() {
            return Err(RuntimeError::input(format!(
                "{}: expected an object of token -> id",
                vocab_path.display()
            )));
        }
        let merges_text =
            std::fs::read_to_string(&merges_path).map_err(|e| RuntimeError::io(&merges_path, e))?;
        let merges: Vec<String> = merges_text
            .lines()
            .filter(|line| !line.starts_with("#version") && !line.trim().is_empty())
            .map(str::to_owned)
            .collect();
        Self::from_parts(vocab, merges, &pad_token, &dir.display().to_string())
    }

    fn from_parts(
        vocab: Value,
        merges: Vec<String>,
        pad_token: &str,
        origin: &str,
    ) -> Result<Self, RuntimeError> {
        let id_of = |token: &str| {
            vocab.get(token).and_then(Value::as_u64).ok_or_else(|| {
                RuntimeError::input(format!("{origin}: vocabulary has no token {token}"))
            })
        };
        let bos_id = id_of(BOS_TOKEN)? as u32;
        let eos_id = id_of(EOS_TOKEN)? as u32;
        let document = clip_tokenizer_json(vocab, merges, bos_id, eos_id);
        let inner = Tokenizer::from_bytes(serde_json::to_vec(&document)?)
            .map_err(|e| RuntimeError::input(format!("{origin}: cannot build tokenizer: {e}")))?;
        Self::from_tokenizer(inner, pad_token, origin)
    }

    fn from_tokenizer(
        mut inner: Tokenizer,
        pad_token: &str,
        origin: &str,
    ) -> Result<Self, RuntimeError> {
        // A tokenizer.json saved by transformers may pad (and truncate) to 77 itself; the
        // context is laid out in `encode`, which needs the content tokens alone.
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| RuntimeError::input(format!("{origin}: {e}")))?;
        let id = |token: &str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| RuntimeError::input(format!("{origin}: no token {token}")))
        };
        Ok(Self {
            bos_id: id(BOS_TOKEN)?,
            eos_id: id(EOS_TOKEN)?,
            pad_id: id(pad_token)?,
            inner,
        })
    }

    /// The id used to pad prompts to the context length.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Tokenizes a prompt to CLIP's 77-token context, truncating over-long prompts. The text is
    /// first cleaned as open_clip does (see [`clip_clean`]).
    pub fn encode(&self, prompt: &str) -> Result<TokenizedPrompt, RuntimeError> {
        let cleaned = clip_clean(prompt);
        let encoding = self
            .inner
            .encode(cleaned.as_str(), false)
            .map_err(|e| RuntimeError::input(format!("cannot tokenize prompt {prompt:?}: {e}")))?;
        let mut content = encoding.get_ids().to_vec();
        let length = content.len() + 2;
        let max_content = CONTEXT_LENGTH - 2;
        let truncated = content.len() > max_content;
        content.truncate(max_content);
        let mut ids = Vec::with_capacity(CONTEXT_LENGTH);
        ids.push(self.bos_id);
        ids.extend_from_slice(&content);
        ids.push(self.eos_id);
        ids.resize(CONTEXT_LENGTH, self.pad_id);
        Ok(TokenizedPrompt {
            ids,
            content,
            truncated,
            length,
        })
    }
}

/// open_clip's `basic_clean` without ftfy's mojibake repair: ftfy's other default fixes
/// (curly quotes to straight ones, Latin ligatures, full-width characters, control characters)
/// and HTML entities decoded twice. Whitespace and case are handled by the tokenizer's
/// normalizer.
pub fn clip_clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{02bc}' | '\u{2018}'..='\u{201b}' => out.push('\''),
            '\u{201c}'..='\u{201f}' => out.push('"'),
            '\u{3000}' => out.push(' '),
            '\u{ff01}'..='\u{ff5e}' => {
                out.push(char::from_u32(c as u32 - 0xff01 + 0x21).unwrap_or(c))
            }
            '\u{fb00}' => out.push_str("ff"),
            '\u{fb01}' => out.push_str("fi"),
            '\u{fb02}' => out.push_str("fl"),
            '\u{fb03}' => out.push_str("ffi"),
            '\u{fb04}' => out.push_str("ffl"),
            '\u{fb05}' | '\u{fb06}' => out.push_str("st"),
            '\u{0132}' => out.push_str("IJ"),
            '\u{0133}' => out.push_str("ij"),
            '\u{0000}'..='\u{0008}'
            | '\u{000b}'
            | '\u{000e}'..='\u{001f}'
            | '\u{007f}'
            | '\u{206a}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffc}' => {}
            _ => out.push(c),
        }
    }
    let once = html_escape::decode_html_entities(&out).into_owned();
    html_escape::decode_html_entities(&once).trim().to_owned()
}

/// The pad token named by `tokenizer_config.json` or `special_tokens_map.json`; SD 1.x pads
/// with `<|endoftext|>`, SD 2.x with `!`.
fn read_pad_token(dir: &Path) -> Result<String, RuntimeError> {
    for name in ["tokenizer_config.json", "special_tokens_map.json"] {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| RuntimeError::io(&path, e))?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| RuntimeError::input(format!("{}: invalid JSON: {e}", path.display())))?;
        match value.get("pad_token") {
            Some(Value::String(token)) => return Ok(token.clone()),
            Some(Value::Object(obj)) => {
                if let Some(Value::String(token)) = obj.get("content") {
                    return Ok(token.clone());
                }
            }
            _ => {}
        }
    }
    Ok(EOS_TOKEN.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_vocabulary_has_clip_size() {
        let (vocab, merges) = embedded_vocab_and_merges().unwrap();
        assert_eq!(vocab.len(), 49_408);
        assert_eq!(merges.len(), CLIP_MERGES);
        assert_eq!(vocab[49_406], BOS_TOKEN);
    }

    #[test]
    fn matches_transformers_clip_tokenizer_ids() {
        // transformers' CLIPTokenizer over the same vocabulary (shared/notes, 2026-11-28).
        let tokenizer = ClipTokenizer::embedded().unwrap();
        let tokens = tokenizer.encode("a nude woman on a beach, photo").unwrap();
        assert_eq!(
            &tokens.ids[..10],
            &[49406, 320, 16630, 2308, 525, 320, 2117, 267, 1125, 49407]
        );
        assert!(tokens.ids[10..].iter().all(|&id| id == 49407));
        assert_eq!(tokens.ids.len(), CONTEXT_LENGTH);
        assert!(!tokens.truncated);
    }

    #[test]
    fn text_is_cleaned_like_open_clip() {
        assert_eq!(
            clip_clean("\u{201c}it\u{2019}s\u{201d} &amp;amp; ﬁne ＡＢ"),
            "\"it's\" & fine AB"
        );
        let tokenizer = ClipTokenizer::embedded().unwrap();
        assert_eq!(
            tokenizer.encode("\u{201c}a cat\u{201d}").unwrap(),
            tokenizer.encode("\"a cat\"").unwrap()
        );
    }

    #[test]
    fn long_prompts_are_truncated_and_flagged() {
        let tokenizer = ClipTokenizer::embedded().unwrap();
        let prompt = "red apple ".repeat(60);
        let tokens = tokenizer.encode(&prompt).unwrap();
        assert!(tokens.truncated);
        assert_eq!(tokens.content.len(), 75);
        assert_eq!(tokens.ids[76], 49407);
    }

    #[test]
    fn a_tokenizer_json_that_pads_itself_gives_the_same_ids() {
        // transformers 5 saves CLIPTokenizer's tokenizer.json with padding and truncation to 77.
        let (vocab, merges) = embedded_vocab_and_merges().unwrap();
        let vocab: serde_json::Map<String, Value> = vocab
            .iter()
            .enumerate()
            .map(|(id, token)| (token.clone(), json!(id)))
            .collect();
        let mut document = clip_tokenizer_json(Value::Object(vocab), merges, 49406, 49407);
        document["padding"] = json!({"strategy": {"Fixed": 77}, "direction": "Right",
            "pad_to_multiple_of": null, "pad_id": 49407, "pad_type_id": 0,
            "pad_token": EOS_TOKEN});
        document["truncation"] = json!({"direction": "Right", "max_length": 77,
            "strategy": "LongestFirst", "stride": 0});
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), document.to_string()).unwrap();
        let from_json = ClipTokenizer::from_folder(dir.path()).unwrap();
        let embedded = ClipTokenizer::embedded().unwrap();
        let prompt = "a red circle in the center on a white background";
        assert_eq!(
            from_json.encode(prompt).unwrap(),
            embedded.encode(prompt).unwrap()
        );
        assert!(!from_json.encode(prompt).unwrap().truncated);
    }

    #[test]
    fn folder_round_trip_gives_the_same_ids() {
        let dir = tempfile::tempdir().unwrap();
        write_tokenizer_folder(dir.path()).unwrap();
        let from_folder = ClipTokenizer::from_folder(dir.path()).unwrap();
        let embedded = ClipTokenizer::embedded().unwrap();
        for prompt in ["A  Photo of  a CAT!!", "café 東京 🙂 42", ""] {
            assert_eq!(
                from_folder.encode(prompt).unwrap(),
                embedded.encode(prompt).unwrap()
            );
        }
    }
}
