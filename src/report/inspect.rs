//! What both `inspect` reports (an HF directory's and a GGUF's) show alike: the chat template
//! rendered on the sample conversation as transformers renders it, with its text rows, and
//! `head_dim` as transformers derives it. The reports themselves are in `commands/inspect*.rs`.

use serde::Serialize;

use crate::chat::{sample_conversation, turn_end, ChatTemplate, Message};
use crate::checkpoint::Facts;

#[derive(Debug, Serialize)]
pub struct TemplateSummary {
    pub source: String,
    pub rendered_sample: Result<String, String>,
    pub generation_prompt: Result<String, String>,
    pub turn_end_token: Option<String>,
}

/// A chat template rendered on the sample conversation as transformers would, and the token its
/// assistant turn ends with; an HF directory's and a GGUF's (`inspect_gguf`) alike.
pub fn summarize_template(facts: &Facts, t: &ChatTemplate, source: String) -> TemplateSummary {
    let tokens = &facts.template_tokens;
    let rendered_sample = t.render(&sample_conversation(), false, tokens).map_err(|e| e.to_string());
    let generation_prompt = t.render(&[Message::new("user", "What is 6 times 7?")], true, tokens).map_err(|e| e.to_string());
    let specials: Vec<String> = facts.tokenizer.as_ref().map(|tk| tk.special_strings()).unwrap_or_default();
    let turn_end_token = rendered_sample.as_ref().ok().and_then(|r| turn_end(r, &specials)).and_then(|e| e.token);
    TemplateSummary { source, rendered_sample, generation_prompt, turn_end_token }
}

/// The template rows of the text: where it is, the turn end, the sample render.
pub fn template_text(s: &mut String, t: Option<&TemplateSummary>) {
    let mut row = |k: &str, v: String| s.push_str(&format!("{k:<18} {v}\n"));
    match t {
        None => row("chat template", "none".into()),
        Some(t) => {
            row("chat template", t.source.clone());
            row("turn ends with", t.turn_end_token.clone().unwrap_or_else(|| "(no special token)".into()));
            match &t.rendered_sample {
                Ok(text) => {
                    s.push_str("sample render:\n");
                    for line in text.lines() {
                        s.push_str(&format!("  | {line}\n"));
                    }
                }
                Err(e) => s.push_str(&format!("sample render failed: {e}\n")),
            }
        }
    }
}

/// `head_dim` as config.json (a GGUF's `attention.key_length`) gives it, else as transformers derives it (hidden / heads: Qwen2
/// and Llama configs leave it out), marked as derived.
pub fn head_dim(given: Option<u64>, hidden: Option<u64>, heads: Option<u64>) -> String {
    match (given, hidden, heads) {
        (Some(d), _, _) => d.to_string(),
        (None, Some(h), Some(n)) if n > 0 => format!("{} (hidden / heads)", h / n),
        _ => "?".into(),
    }
}
