//! Chat templates: where a checkpoint keeps its template, rendering it the way transformers does
//! (Jinja with `trim_blocks` + `lstrip_blocks`, Python string methods, `raise_exception`), and
//! finding the token that ends an assistant turn.

use std::path::PathBuf;

use minijinja::{context, Environment, ErrorKind};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::hf::HfDir;

/// Template evaluation budget. Real HF templates render a 4-message chat in well under 10k
/// instructions; this caps hostile templates (infinite recursion, huge loops) without limiting any.
const TEMPLATE_FUEL: u64 = 5_000_000;

/// Stands in for the assistant's reply so the text after it (the end-of-turn marker) can be found.
pub const ASSISTANT_PROBE: &str = "The answer is 42.";

/// A chat template and the file (and field) it came from.
#[derive(Debug, Clone, Serialize)]
pub struct ChatTemplate {
    pub source: PathBuf,
    pub field: Option<String>,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message { role: role.into(), content: content.into() }
    }
}

/// The conversation every template is probed with: user, assistant, user, assistant (no system
/// turn: Gemma-style templates raise on one).
pub fn sample_conversation() -> Vec<Message> {
    vec![
        Message::new("user", "What is 6 times 7?"),
        Message::new("assistant", ASSISTANT_PROBE),
        Message::new("user", "Thanks! And 2 plus 2?"),
        Message::new("assistant", ASSISTANT_PROBE),
    ]
}

/// Special-token strings a template may reference (`bos_token`, `eos_token`, ...).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TemplateTokens {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    pub unk_token: Option<String>,
}

impl ChatTemplate {
    /// Finds the template as transformers 5 does: `chat_template.jinja`, then
    /// `tokenizer_config.json:chat_template` (a string, or a list of named templates: "default"),
    /// then `chat_template.json`.
    pub fn find(dir: &HfDir) -> Option<ChatTemplate> {
        if let Some((p, text)) = &dir.chat_template_jinja {
            return Some(ChatTemplate { source: p.clone(), field: None, text: text.clone() });
        }
        for doc in [&dir.tokenizer_config, &dir.chat_template_json].into_iter().flatten() {
            match doc.value.get("chat_template") {
                Some(serde_json::Value::String(s)) => {
                    return Some(ChatTemplate { source: doc.path.clone(), field: Some("chat_template".into()), text: s.clone() })
                }
                Some(serde_json::Value::Array(list)) => {
                    let named = |n: &str| {
                        list.iter().find(|t| t.get("name").and_then(|x| x.as_str()) == Some(n)).and_then(|t| t.get("template")?.as_str())
                    };
                    let text = named("default").or_else(|| list.first()?.get("template")?.as_str());
                    if let Some(text) = text {
                        return Some(ChatTemplate {
                            source: doc.path.clone(),
                            field: Some("chat_template[default]".into()),
                            text: text.to_string(),
                        });
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// Renders `messages` like `tokenizer.apply_chat_template(..., tokenize=False)`.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool, tokens: &TemplateTokens) -> Result<String> {
        let env = environment();
        let tmpl = env.template_from_str(&self.text).map_err(|e| self.err(e))?;
        tmpl.render(context! {
            messages => minijinja::value::Serde(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => tokens.bos_token.clone().unwrap_or_default(),
            eos_token => tokens.eos_token.clone().unwrap_or_default(),
            pad_token => tokens.pad_token.clone().unwrap_or_default(),
            unk_token => tokens.unk_token.clone().unwrap_or_default(),
        })
        .map_err(|e| self.err(e))
    }

    fn err(&self, e: minijinja::Error) -> Error {
        let mut detail = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            detail.push_str(&format!(": {s}"));
            src = s.source();
        }
        Error::Template { path: self.source.clone(), detail }
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build().expect("static syntax config is valid"),
    );
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
        Err(minijinja::Error::new(ErrorKind::InvalidOperation, format!("template raised: {msg}")))
    });
    // Templates that print today's date (Llama 3.1+): a fixed date keeps renders reproducible.
    env.add_function("strftime_now", |_fmt: String| "26 Nov 2026".to_string());
    env
}

/// What follows an assistant message in a rendered conversation: the end-of-turn marker.
#[derive(Debug, Clone, Serialize)]
pub struct TurnEnd {
    /// The special token that ends the assistant turn, if one follows the reply directly.
    pub token: Option<String>,
    /// The raw text after the reply up to the next turn (for messages).
    pub suffix: String,
}

/// Finds the end-of-turn marker after the first assistant reply in `rendered`. `specials` are the
/// tokenizer's special-token strings; the longest one that starts the suffix (after whitespace) wins.
pub fn turn_end(rendered: &str, specials: &[String]) -> Option<TurnEnd> {
    let at = rendered.find(ASSISTANT_PROBE)? + ASSISTANT_PROBE.len();
    let suffix: String = rendered[at..].chars().take(64).collect();
    let trimmed = suffix.trim_start();
    let token = specials.iter().filter(|s| !s.is_empty() && trimmed.starts_with(s.as_str())).max_by_key(|s| s.len()).cloned();
    Some(TurnEnd { token, suffix })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn t(text: &str) -> ChatTemplate {
        ChatTemplate { source: "tokenizer_config.json".into(), field: None, text: text.into() }
    }

    #[test]
    fn renders_chatml_and_finds_turn_end() {
        let out = t(CHATML).render(&sample_conversation(), false, &TemplateTokens::default()).unwrap();
        assert!(out.starts_with("<|im_start|>user\nWhat is 6 times 7?<|im_end|>\n<|im_start|>assistant\n"));
        let specials = vec!["<|im_start|>".to_string(), "<|im_end|>".to_string()];
        let end = turn_end(&out, &specials).unwrap();
        assert_eq!(end.token.as_deref(), Some("<|im_end|>"));
    }

    #[test]
    fn python_methods_and_trim_blocks_behave_like_transformers() {
        // Output verified with jinja2 3.1 ImmutableSandboxedEnvironment(trim_blocks, lstrip_blocks).
        let src = "{% for m in messages %}\n  {% if m['content'].strip().startswith('What') %}\nQ:{{ m['content'].split(' ')[0] }}\n  {% endif %}\n{% endfor %}";
        let out = t(src).render(&sample_conversation(), false, &TemplateTokens::default()).unwrap();
        assert_eq!(out, "Q:What\n");
    }

    #[test]
    fn raise_exception_is_an_error_naming_the_file() {
        let e = t("{{ raise_exception('no system role') }}").render(&[], false, &TemplateTokens::default()).unwrap_err().to_string();
        assert!(e.contains("tokenizer_config.json") && e.contains("no system role"), "{e}");
    }

    #[test]
    fn runaway_template_is_stopped_by_fuel() {
        let e = t("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}")
            .render(&[], false, &TemplateTokens::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("fuel") || e.contains("range"), "{e}");
    }
}
