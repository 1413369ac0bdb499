//! What every chat model is: messages in (`Message`, `Role`), the answer out as word-boundary
//! chunks (`ChatModel`, `WordChunker`), why it ended (`Finish`) and how fast (`GenStats`); with
//! the settings (`LlmConfig`) and errors (`LlmError`) of the stage.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::stages::Cancel;
use crate::store::ModelError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    #[error("cannot load language model {path}: {detail}")]
    Load { path: String, detail: String },
    #[error("model architecture '{0}' is not supported (supported: llama, qwen2, phi3, gemma3)")]
    Architecture(String),
    #[error("cannot render the model's chat template: {0}")]
    Template(String),
    #[error("the prompt needs {needed} tokens but the context window holds {limit}: shorten it or raise llm.context_tokens")]
    PromptTooLong { needed: usize, limit: usize },
    #[error("empty prompt: say or type something to answer")]
    EmptyPrompt,
    #[error("generation failed: {0}")]
    Inference(String),
    #[error("remote model at {url}: {detail}")]
    Remote { url: String, detail: String },
    #[error("unknown llm.backend '{0}': use local or openai")]
    Backend(String),
    #[error("unknown llm.engine '{0}': use llama.cpp or candle")]
    Engine(String),
    #[error("{0}")]
    Setting(String),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Language model settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// `local` (a GGUF file run here) or `openai` (any OpenAI-compatible server).
    pub backend: String,
    /// Local engine: `llama.cpp` (a private llama-server that seesay starts and stops; fast,
    /// answers conversations in parallel) or `candle` (pure Rust, in process; one answer at a
    /// time, prefill about 4x slower).
    pub engine: String,
    /// Local model: a name from `seesay models list`, or the path of a GGUF chat model
    /// (llama.cpp: any; candle: llama, qwen2, phi3 or gemma3 architecture).
    pub model: String,
    /// Instructions the model always sees first. Small models need one to answer directly.
    pub system_prompt: String,
    /// Sampling temperature; 0 picks the most likely token every time.
    pub temperature: f64,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches this.
    pub top_p: f64,
    /// Penalty for repeating recent tokens (1 = none).
    pub repeat_penalty: f32,
    /// How many recent tokens the repeat penalty looks at.
    pub repeat_last_n: usize,
    /// Longest answer, in tokens.
    pub max_tokens: usize,
    /// Random seed for sampling.
    pub seed: u64,
    /// Token budget of the conversation (prompt + answer). Oldest turns are dropped to fit; a
    /// single prompt that cannot fit is refused.
    pub context_tokens: usize,
    /// CPU threads of the local engine; 0: the machine's share for the language model.
    pub threads: usize,
    /// The vision projector of `model` (llama.cpp engine; a GGUF `mmproj` file, a name or a path),
    /// for a vision-language model: the server then also takes images (`image_url` parts of the
    /// API). Empty: text only.
    pub mmproj: String,
    /// The llama-server binary (llama.cpp engine). Empty: `$SEESAY_LLAMA_SERVER`, else the one
    /// scripts/setup builds in the cache.
    pub llama_server: String,
    /// A small model with the same vocabulary as `model` (a name or a GGUF path), for
    /// llama.cpp's speculative decoding: it drafts `draft_max` tokens at a time and the model
    /// checks them in one pass. Empty (the default): none. On two cores it is slower: the
    /// 0.5B drafting for the 1.5B generated 8.1 tokens/s against 13.8 without (see the README).
    pub draft_model: String,
    /// Speculative decoding: most and fewest tokens drafted at a time (llama-server's
    /// `--spec-draft-n-max` and `-n-min`).
    pub draft_max: usize,
    pub draft_min: usize,
    /// Speculative decoding: a token is drafted only while the draft model is at least this
    /// sure of it.
    pub draft_p_min: f32,
    /// Remote backend: base URL of the server, e.g. http://127.0.0.1:8080/v1
    /// (`$SEESAY_LLM_BASE_URL` overrides).
    pub base_url: String,
    /// Remote backend: model name sent to the server (`$SEESAY_LLM_MODEL` overrides).
    pub remote_model: String,
    /// Remote backend: API key; empty reads `$SEESAY_LLM_API_KEY`, then `$OPENAI_API_KEY`.
    pub api_key: String,
    /// Remote backend: seconds to wait for the server to connect and for each piece of the reply.
    pub timeout_s: u64,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            backend: "local".into(),
            engine: "llama.cpp".into(),
            model: "qwen2.5-coder-1.5b".into(),
            system_prompt: "You are a voice assistant: everything you write is spoken aloud. \
                            Answer directly in one or two short sentences of plain words, with \
                            no lists, markdown or code, unless the user asks for more."
                .into(),
            temperature: 0.0,
            top_p: 0.9,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            max_tokens: 256,
            seed: 299_792_458,
            context_tokens: 2048,
            threads: 0,
            mmproj: String::new(),
            llama_server: String::new(),
            draft_model: String::new(),
            draft_max: 3,
            draft_min: 0,
            draft_p_min: 0.75,
            base_url: "http://127.0.0.1:8080/v1".into(),
            remote_model: "default".into(),
            api_key: String::new(),
            timeout_s: 30,
        }
    }
}

impl LlmConfig {
    /// Refuses settings no model can work with, saying which and what is allowed.
    pub fn check(&self) -> Result<(), LlmError> {
        let bad = |m: String| Err(LlmError::Setting(m));
        if self.max_tokens == 0 {
            return bad("llm.max_tokens must be at least 1".into());
        }
        if !(0.0..=2.0).contains(&self.temperature) {
            return bad(format!(
                "llm.temperature is {}: use a value from 0 (always the likeliest token) to 2",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!(
                "llm.top_p is {}: use a value above 0, at most 1",
                self.top_p
            ));
        }
        if self.context_tokens <= self.max_tokens {
            return bad(format!(
                "llm.context_tokens ({}) must be larger than llm.max_tokens ({})",
                self.context_tokens, self.max_tokens
            ));
        }
        self.check_draft()
    }

    /// The speculative decoding settings (`draft_*`).
    fn check_draft(&self) -> Result<(), LlmError> {
        let bad = |m: String| Err(LlmError::Setting(m));
        if self.draft_model.is_empty() {
            return Ok(());
        }
        if !self.mmproj.is_empty() {
            return bad(
                "llm.draft_model and llm.mmproj cannot be used together: llama-server \
                        does not decode speculatively with a vision projector"
                    .into(),
            );
        }
        if self.draft_max == 0 || self.draft_min > self.draft_max {
            return bad(format!(
                "llm.draft_min ({}) and llm.draft_max ({}): draft_max must be at least 1 and \
                 at least draft_min",
                self.draft_min, self.draft_max
            ));
        }
        if !(0.0..=1.0).contains(&self.draft_p_min) {
            return bad(format!(
                "llm.draft_p_min is {}: use a probability from 0 to 1",
                self.draft_p_min
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// A picture that comes with the words (a `data:image/...;base64,` URI), for a model that
    /// takes images (`llm.mmproj`): sent as an `image_url` part.
    pub image: Option<Arc<str>>,
}

/// Prompt tokens counted for a picture when a prompt is fitted to the context: vision-language
/// models take from 64 (SmolVLM, one tile) to a few thousand (Qwen2.5-VL, a large picture);
/// the server refuses a prompt that does not fit.
pub const IMAGE_TOKENS: usize = 1024;

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            image: None,
        }
    }

    /// The message with `image` (a data URI) attached.
    pub fn with_image(mut self, image: Option<Arc<str>>) -> Message {
        self.image = image;
        self
    }

    /// The message as an OpenAI-compatible API takes it: its text, or an `image_url` part and
    /// a text part when a picture comes with it. The picture comes first: the words of a question
    /// change from one reading at a pause to the next, and what comes before them stays cached
    /// in the server, the picture's tokens with it.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.image {
            None => serde_json::json!({"role": self.role, "content": self.content}),
            Some(url) => serde_json::json!({"role": self.role, "content": [
                {"type": "image_url", "image_url": {"url": url.as_ref()}},
                {"type": "text", "text": self.content},
            ]}),
        }
    }

    /// The tokens its picture takes, as counted when a prompt is fitted (`IMAGE_TOKENS`).
    pub fn image_tokens(&self) -> usize {
        self.image.as_ref().map_or(0, |_| IMAGE_TOKENS)
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model said it was done.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The turn was cancelled.
    Cancelled,
}

/// Speed of the last generation.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GenStats {
    pub prompt_tokens: usize,
    /// Prompt tokens actually computed (the rest came from the KV cache).
    pub prefilled: usize,
    pub prefill_s: f64,
    pub generated: usize,
    pub generate_s: f64,
}

/// A chat model: messages in, streamed text out.
pub trait ChatModel: Send {
    /// Generates the assistant's answer to `messages`, calling `on_text` with each chunk as it is
    /// produced (cut at word boundaries). Returns the whole answer and why it ended.
    fn generate(
        &mut self,
        messages: &[Message],
        cancel: &Cancel,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<(String, Finish), LlmError>;

    /// Number of tokens the rendered `messages` take, for the conversation budget.
    fn count_tokens(&mut self, messages: &[Message]) -> Result<usize, LlmError>;

    /// Whether the rendered `messages` fit in `limit` tokens. By default they are counted; an
    /// engine whose count is costly may first try a cheap bound.
    fn fits(&mut self, messages: &[Message], limit: usize) -> Result<bool, LlmError> {
        Ok(self.count_tokens(messages)? <= limit)
    }

    /// A short description (model file or server) for logs.
    fn describe(&self) -> String;

    /// Replaces the sampling settings (temperature, top-p, max tokens, ...) for later
    /// generations; the server sets them per request.
    fn set_config(&mut self, cfg: &LlmConfig);

    /// Computes what `messages` (the fixed start of every prompt, e.g. the system prompt) need
    /// ahead of time, so the first question only pays for its own tokens. A no-op by default.
    fn warm_up(&mut self, _messages: &[Message]) -> Result<(), LlmError> {
        Ok(())
    }

    /// Prefills a second prompt beside the one `warm_up` keeps (another system prompt), a piece
    /// at a time, for work that must leave the cores at once when someone speaks: about `tokens`
    /// more of `messages` (nothing while the engine is busy with other requests). Returns
    /// whether it is all prefilled; called again with the same messages, it goes on where it
    /// stopped. By default nothing, and true: an engine that caches one prompt would lose the
    /// other.
    fn warm_up_piece(&mut self, _messages: &[Message], _tokens: usize) -> Result<bool, LlmError> {
        Ok(true)
    }

    /// Token counts and timings of the last generation, where the backend knows them.
    fn stats(&self) -> Option<GenStats> {
        None
    }

    /// The probability that the user's message, the last of `messages`, ends where it does:
    /// what the model itself expects after its last word (its end-of-turn token, or a full stop
    /// or question mark), read while it prefills the prompt up to there, so the answer to it
    /// starts sooner. `None`: this engine cannot tell. Pass the text without its final
    /// punctuation (`open_ended`): a recogniser puts a full stop after fragments too.
    fn end_of_turn(&mut self, _messages: &[Message]) -> Result<Option<f32>, LlmError> {
        Ok(None)
    }
    /// Can `end_of_turn` tell at all (a remote model cannot)?
    fn reads_turns(&self) -> bool {
        false
    }
}

/// `text` without the punctuation a recogniser puts at its end, for `ChatModel::end_of_turn`.
pub fn open_ended(text: &str) -> &str {
    text.trim()
        .trim_end_matches(|c: char| ".?!,;:\u{2026}-".contains(c) || c.is_whitespace())
}

/// Where the prompt `rendered` for `messages` must be cut to end just after the last (user)
/// message's text: what the model sees while the user is still speaking.
pub fn cut_after_user(rendered: &str, messages: &[Message]) -> Option<usize> {
    let last = messages.last().filter(|m| m.role == Role::User)?;
    if last.content.is_empty() {
        return None;
    }
    rendered
        .rfind(&last.content)
        .map(|i| i + last.content.len())
}

/// The part of a next-token distribution that ends the user's message: `eot` (the chat
/// template's end-of-turn token) and tokens that are only sentence-final punctuation (the
/// model would put its end-of-turn token after them). `top`: (token id, its text, probability).
pub fn end_mass<'a>(eot: u32, top: impl IntoIterator<Item = (u32, &'a str, f32)>) -> f32 {
    top.into_iter()
        .filter(|&(id, text, _)| {
            let t = text.trim();
            id == eot || (!t.is_empty() && t.chars().all(|c| ".?!".contains(c)))
        })
        .map(|(_, _, p)| p)
        .fold(0.0f32, |a, p| a + p)
        .min(1.0)
}

/// Cuts a growing text into chunks that end at a word boundary; `finish` flushes the rest.
#[derive(Debug, Default)]
pub struct WordChunker {
    sent: usize,
}

impl WordChunker {
    /// Given the whole text so far, returns the new complete words (with their trailing space).
    pub fn push<'a>(&mut self, text: &'a str) -> Option<&'a str> {
        let rest = text.get(self.sent..)?;
        let cut = rest.rfind(char::is_whitespace)?;
        let end = cut + rest[cut..].chars().next().map_or(1, char::len_utf8);
        let chunk = &rest[..end];
        self.sent += end;
        (!chunk.is_empty()).then_some(chunk)
    }

    pub fn finish<'a>(&mut self, text: &'a str) -> Option<&'a str> {
        let rest = text.get(self.sent..)?;
        self.sent = text.len();
        (!rest.is_empty()).then_some(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_no_model_can_use_are_refused() {
        assert!(LlmConfig::default().check().is_ok());
        for (cfg, says) in [
            (
                LlmConfig {
                    max_tokens: 0,
                    ..LlmConfig::default()
                },
                "max_tokens",
            ),
            (
                LlmConfig {
                    temperature: -3.0,
                    ..LlmConfig::default()
                },
                "temperature",
            ),
            (
                LlmConfig {
                    top_p: 0.0,
                    ..LlmConfig::default()
                },
                "top_p",
            ),
            (
                LlmConfig {
                    context_tokens: 100,
                    ..LlmConfig::default()
                },
                "context_tokens",
            ),
        ] {
            let e = cfg.check().unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn the_end_of_a_message_is_read_from_the_next_token() {
        assert_eq!(
            open_ended(" What is the capital of? "),
            "What is the capital of"
        );
        assert_eq!(open_ended("Wait, stop."), "Wait, stop");
        assert_eq!(open_ended("Hmm..."), "Hmm");
        let msgs = [
            Message::new(Role::System, "Be brief."),
            Message::new(Role::User, "Who wrote"),
        ];
        let rendered = "<s>system Be brief.</s><s>user Who wrote</s><s>assistant ";
        let cut = cut_after_user(rendered, &msgs).unwrap();
        assert_eq!(&rendered[..cut], "<s>system Be brief.</s><s>user Who wrote");
        assert_eq!(cut_after_user(rendered, &msgs[..1]), None);
        // The end-of-turn token and bare punctuation count; words and commas do not.
        let top = [
            (7, "", 0.2),
            (1, "?", 0.3),
            (2, "?\n", 0.1),
            (3, ",", 0.2),
            (4, " Hamlet", 0.2),
        ];
        assert!((end_mass(7, top) - 0.6).abs() < 1e-6);
    }

    #[test]
    fn chunks_end_at_word_boundaries() {
        let mut c = WordChunker::default();
        assert_eq!(c.push("The cap"), Some("The "));
        assert_eq!(c.push("The capital"), None);
        assert_eq!(c.push("The capital is Par"), Some("capital is "));
        assert_eq!(c.finish("The capital is Paris."), Some("Paris."));
        assert_eq!(c.finish("The capital is Paris."), None);
    }

    #[test]
    fn draft_settings_that_cannot_work_are_refused() {
        let draft = LlmConfig {
            draft_model: "qwen2.5-coder-0.5b".into(),
            ..LlmConfig::default()
        };
        assert!(draft.check().is_ok());
        let with_eyes = LlmConfig {
            mmproj: "projector".into(),
            ..draft.clone()
        };
        assert!(with_eyes
            .check()
            .unwrap_err()
            .to_string()
            .contains("mmproj"));
        let upside_down = LlmConfig {
            draft_min: 5,
            draft_max: 3,
            ..draft.clone()
        };
        assert!(upside_down.check().is_err());
        let unsure = LlmConfig {
            draft_p_min: 1.5,
            ..draft
        };
        assert!(unsure.check().is_err());
    }
}
