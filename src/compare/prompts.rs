//! Reference prompts: a built-in diverse set, or a JSONL file (`{"text": ...}` for raw text,
//! `{"messages": [{"role", "content"}, ...]}` for chats, or a bare JSON string per line). An
//! object may carry `"answer"`: the reference's reply, used instead of generating one.

use std::path::Path;

use crate::chat::Message;
use crate::error::{Error, Result};
use crate::format::read_capped_text;

/// One prompt: a chat (rendered through the model's template) or raw text.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum Prompt {
    Chat {
        messages: Vec<Message>,
        /// The reference's answer, when the prompts file carries it: generation is skipped.
        #[serde(skip_serializing_if = "Option::is_none")]
        answer: Option<String>,
    },
    Text {
        text: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        answer: Option<String>,
    },
}

impl Prompt {
    /// The reference answer the prompts file gave (`"answer": "…"`), if any.
    pub fn answer(&self) -> Option<&str> {
        match self {
            Prompt::Chat { answer, .. } | Prompt::Text { answer, .. } => answer.as_deref(),
        }
    }

    /// The plain text of the prompt for a base model (chats: the contents joined by newlines).
    pub fn as_text(&self) -> String {
        match self {
            Prompt::Text { text, .. } => text.clone(),
            Prompt::Chat { messages, .. } => messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n"),
        }
    }
    /// The prompt as a chat (raw text becomes one user message).
    pub fn as_messages(&self) -> Vec<Message> {
        match self {
            Prompt::Chat { messages, .. } => messages.clone(),
            Prompt::Text { text, .. } => vec![Message::new("user", text)],
        }
    }
    /// A short label for reports.
    pub fn label(&self) -> String {
        let t = match self {
            Prompt::Chat { messages, .. } => messages.last().map(|m| m.content.clone()).unwrap_or_default(),
            Prompt::Text { text, .. } => text.clone(),
        };
        let one_line: String = t.split_whitespace().collect::<Vec<_>>().join(" ");
        if one_line.chars().count() > 48 {
            format!("{}…", one_line.chars().take(47).collect::<String>())
        } else {
            one_line
        }
    }
}

/// The prompts' origin as messages name it: the JSONL file, or `<built-in prompts>`.
pub fn source_name(file: Option<&Path>) -> std::path::PathBuf {
    file.map(Path::to_path_buf).unwrap_or_else(|| "<built-in prompts>".into())
}

/// Lines longer than this in a prompts file are refused (a 1 MB prompt is not a probe).
const MAX_PROMPT_BYTES: usize = 1 << 20;

/// Prompts files larger than this are refused: 64 prompts at the per-line limit. Real probe sets
/// are a few KB to a few MB (the built-in 32 prompts are 2 KB); every prompt runs through two
/// models, so a set this large would already take hours.
const MAX_PROMPTS_FILE_BYTES: u64 = 64 << 20;

/// Reads a JSONL prompts file (a regular file of at most `MAX_PROMPTS_FILE_BYTES`, read through
/// `format::read_capped`: a FIFO or `/dev/zero` is refused, never read).
pub fn load_jsonl(path: &Path) -> Result<Vec<Prompt>> {
    let text = read_capped_text(path, MAX_PROMPTS_FILE_BYTES, "a prompts file")?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        let field = |detail: String| Error::Field { path: path.to_path_buf(), field: format!("line {}", i + 1), detail };
        if line.len() > MAX_PROMPT_BYTES {
            return Err(field(format!("{} bytes, over the {MAX_PROMPT_BYTES}-byte limit", line.len())));
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| field(format!("not JSON: {e}")))?;
        let p = match &v {
            serde_json::Value::String(s) => Prompt::Text { text: s.clone(), answer: None },
            serde_json::Value::Object(o) => {
                let answer = match o.get("answer") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(a)) => Some(a.clone()),
                    Some(_) => return Err(field("`answer` must be a string (the reference's reply to this prompt)".into())),
                };
                if let Some(msgs) = o.get("messages").and_then(|m| m.as_array()) {
                    let mut messages = Vec::new();
                    for m in msgs {
                        let role = m.get("role").and_then(|r| r.as_str());
                        let content = m.get("content").and_then(|c| c.as_str());
                        match (role, content) {
                            (Some(r), Some(c)) => messages.push(Message::new(r, c)),
                            _ => return Err(field("each message needs string `role` and `content`".into())),
                        }
                    }
                    if messages.is_empty() {
                        return Err(field("`messages` is empty".into()));
                    }
                    Prompt::Chat { messages, answer }
                } else if let Some(t) = o.get("text").and_then(|t| t.as_str()) {
                    Prompt::Text { text: t.to_string(), answer }
                } else {
                    return Err(field("expected `messages` (a list) or `text` (a string)".into()));
                }
            }
            _ => return Err(field("expected a JSON object or string".into())),
        };
        out.push(p);
    }
    if out.is_empty() {
        return Err(Error::Field { path: path.to_path_buf(), field: "prompts".into(), detail: "the file holds no prompts".into() });
    }
    Ok(out)
}

/// The built-in set: chat questions, instructions, code, arithmetic, reasoning, a long-context
/// recall, and non-English text (German, French, Spanish, Chinese, Japanese, Russian, Arabic).
pub const BUILTIN: &[&str] = &[
    "What is the capital of France?",
    "Explain in two sentences why the sky is blue.",
    "Write a haiku about autumn leaves.",
    "Give me three tips for sleeping better.",
    "What is 17 times 23?",
    "If a train leaves at 3 pm and travels 120 km at 60 km/h, when does it arrive?",
    "Solve for x: 2x + 6 = 20.",
    "What is the square root of 144?",
    "Write a Python function that returns the n-th Fibonacci number.",
    "What does this code print?\n\nfor i in range(3):\n    print(i * 2)",
    "Write a SQL query that counts the rows in a table named users.",
    "Fix the bug: def add(a, b): return a - b",
    "Translate to English: Der Hund schläft im Garten.",
    "Réponds en français : quelle est la plus haute montagne d'Europe ?",
    "¿Cuántos días tiene una semana?",
    "用一句话介绍北京。",
    "日本の首都はどこですか？",
    "Как дела? Ответь одним предложением.",
    "ما هي عاصمة مصر؟",
    "List the days of the week in order.",
    "Summarize: The meeting was moved from Monday to Wednesday because the room was booked. Everyone must bring their laptop.",
    "Is a tomato a fruit or a vegetable? Answer briefly.",
    "Name three primary colors.",
    "What is the opposite of 'ancient'?",
    "Continue the sequence: 2, 4, 8, 16, ...",
    "Write a short, polite email declining a meeting invitation.",
    "Who wrote 'Romeo and Juliet'?",
    "Convert 100 degrees Fahrenheit to Celsius.",
    "What is a prime number? Give two examples.",
    "Count from 1 to 10.",
    "Reply with only the word yes.",
    "Read the notes below, then answer the question.\n\nNote 1: The blue box holds the keys.\nNote 2: The red box holds the letters.\nNote 3: The green box is empty.\nNote 4: The yellow box holds the coins.\nNote 5: The keys open the garden gate.\nNote 6: The coins are old and rare.\nNote 7: The letters were written in 1920.\nNote 8: Nobody has opened the green box in years.\nNote 9: The white box holds a map of the old town.\nNote 10: The map shows a well behind the church.\nNote 11: The black box holds candles and matches.\nNote 12: The candles are used during storms.\nNote 13: The orange box holds seeds for the spring.\nNote 14: The seeds are for tomatoes and beans.\nNote 15: The grey box holds tools for the garden.\nNote 16: The tools need oil before winter.\n\nQuestion: which box holds the keys?",
];

pub fn builtin() -> Vec<Prompt> {
    BUILTIN.iter().map(|p| Prompt::Chat { messages: vec![Message::new("user", p)], answer: None }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_forms_and_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("p.jsonl");
        std::fs::write(&p, "\"raw\"\n{\"text\": \"t\"}\n\n{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n").unwrap();
        let v = load_jsonl(&p).unwrap();
        assert_eq!(v.len(), 3);
        assert!(matches!(&v[2], Prompt::Chat { messages, .. } if messages[0].content == "hi"));
        std::fs::write(&p, "{\"text\": \"t\", \"answer\": \"a\"}\n{\"text\": \"u\"}\n").unwrap();
        let v = load_jsonl(&p).unwrap();
        assert_eq!((v[0].answer(), v[1].answer()), (Some("a"), None));
        std::fs::write(&p, "{\"text\": \"t\", \"answer\": 3}\n").unwrap();
        let e = load_jsonl(&p).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("answer"), "{e}");
        std::fs::write(&p, "{\"text\": \"ok\"}\n{\"messages\": [{\"role\": \"user\"}]}\n").unwrap();
        let e = load_jsonl(&p).unwrap_err().to_string();
        assert!(e.contains("p.jsonl") && e.contains("line 2") && e.contains("content"), "{e}");
    }

    #[test]
    fn builtin_set_is_diverse() {
        assert!(BUILTIN.len() >= 32);
        assert!(BUILTIN.iter().any(|p| p.contains("def ")));
        assert!(BUILTIN.iter().any(|p| !p.is_ascii()));
        assert!(BUILTIN.iter().any(|p| p.len() > 700), "a long-context prompt");
    }
}
