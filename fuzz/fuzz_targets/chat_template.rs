//! Any UTF-8 text as a chat template must render or fail with an error, never panic, hang or
//! exhaust memory: rendering is bounded by the template fuel (`chat::TEMPLATE_FUEL`).
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run -a -s none chat_template` (see fuzz/README.md).
#![no_main]

use std::sync::OnceLock;

use ckptcheck::chat::{sample_conversation, ChatTemplate, Message, TemplateTokens};
use libfuzzer_sys::fuzz_target;

fn conversation() -> &'static [Message] {
    static CONV: OnceLock<Vec<Message>> = OnceLock::new();
    CONV.get_or_init(sample_conversation)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let t = ChatTemplate { source: "fuzz.jinja".into(), field: None, text: text.to_string() };
    let _ = t.render(conversation(), true, &TemplateTokens::default());
});
