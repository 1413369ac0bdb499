//! The language model stage: a conversation in, the answer out as a stream of text chunks cut at
//! word boundaries. Backends: a local GGUF model run by candle (`llm_local.rs`) or any
//! OpenAI-compatible server (`llm_remote.rs`). Generation stops between any two tokens when its
//! turn is cancelled.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

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
}

/// Language model settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// `local` (a GGUF file run here) or `openai` (any OpenAI-compatible server).
    pub backend: String,
    /// Local model: a name from `seesay models list`, or the path of a GGUF chat model
    /// (llama, qwen2, phi3 or gemma3 architecture).
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
    /// CPU threads for candle; 0 uses every core.
    pub threads: usize,
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
            model: "smollm2-135m".into(),
            system_prompt: "You are a concise assistant. Answer factual questions directly.".into(),
            temperature: 0.0,
            top_p: 0.9,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            max_tokens: 256,
            seed: 299_792_458,
            context_tokens: 2048,
            threads: 0,
            base_url: "http://127.0.0.1:8080/v1".into(),
            remote_model: "default".into(),
            api_key: String::new(),
            timeout_s: 30,
        }
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
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
        }
    }
}

/// Cancellation by turn number: the pipeline bumps the shared counter when the user barges in;
/// a generation belonging to an older turn stops at its next token.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    current: Arc<AtomicU64>,
    turn: u64,
}

impl Cancel {
    /// A token that is never cancelled unless `cancel_all` is called on a clone.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// A token for `turn`, cancelled once the shared counter moves past it.
    pub fn for_turn(current: Arc<AtomicU64>, turn: u64) -> Cancel {
        Cancel { current, turn }
    }

    pub fn is_cancelled(&self) -> bool {
        self.current.load(Ordering::Acquire) != self.turn
    }

    /// Cancels every generation that holds a clone of this token.
    pub fn cancel_all(&self) {
        self.current.fetch_add(1, Ordering::AcqRel);
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

    /// Token counts and timings of the last generation, where the backend knows them.
    fn stats(&self) -> Option<GenStats> {
        None
    }
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

/// A conversation with memory: the system prompt stays, the oldest turns go first when the
/// token budget is exceeded.
pub struct Conversation {
    system: Option<Message>,
    turns: Vec<Message>,
    /// The newest camera caption, told to the model with the system prompt (small models use it
    /// far better there than inside the question) and never kept in memory.
    scene: Option<String>,
    budget: usize,
    reserve: usize,
}

impl Conversation {
    pub fn new(cfg: &LlmConfig) -> Conversation {
        let system = (!cfg.system_prompt.trim().is_empty())
            .then(|| Message::new(Role::System, cfg.system_prompt.trim()));
        Conversation {
            system,
            turns: Vec::new(),
            scene: None,
            budget: cfg.context_tokens,
            reserve: cfg.max_tokens,
        }
    }

    /// The messages the model sees for `user`'s next question, after trimming to the budget.
    pub fn prompt_for(
        &mut self,
        model: &mut dyn ChatModel,
        user: &str,
    ) -> Result<Vec<Message>, LlmError> {
        if user.trim().is_empty() {
            return Err(LlmError::EmptyPrompt);
        }
        let limit = self.budget.saturating_sub(self.reserve);
        let question = user.trim().to_string();
        let system = self.system_message();
        let mut alone: Vec<Message> = system.iter().cloned().collect();
        alone.push(Message::new(Role::User, question.as_str()));
        let needed = model.count_tokens(&alone)?;
        if needed > limit {
            // Refused whole: memory is kept, nothing is truncated silently.
            return Err(LlmError::PromptTooLong { needed, limit });
        }
        loop {
            let mut msgs: Vec<Message> = system.iter().cloned().collect();
            msgs.extend(self.turns.iter().cloned());
            msgs.push(Message::new(Role::User, question.as_str()));
            let needed = model.count_tokens(&msgs)?;
            if needed <= limit {
                return Ok(msgs);
            }
            // Drop the oldest exchange (user + assistant).
            let n = self.turns.len().min(2);
            self.turns.drain(..n);
            tracing::debug!(
                needed,
                limit,
                "conversation over budget; dropped the oldest turn"
            );
        }
    }

    /// Records a finished exchange.
    pub fn record(&mut self, user: &str, answer: &str) {
        self.turns.push(Message::new(Role::User, user.trim()));
        self.turns
            .push(Message::new(Role::Assistant, answer.trim()));
    }

    /// What the next prompt starts with: the system prompt with the current scene, and the
    /// turns remembered so far (to prefill while nobody speaks).
    pub fn preamble(&self) -> Vec<Message> {
        let mut msgs: Vec<Message> = self.system_message().into_iter().collect();
        msgs.extend(self.turns.iter().cloned());
        msgs
    }

    /// The system prompt, with what the camera shows now.
    fn system_message(&self) -> Option<Message> {
        let Some(scene) = &self.scene else {
            return self.system.clone();
        };
        let seen = format!(
            "You can see through a camera. {}",
            crate::caption::context_line(scene)
        );
        Some(match &self.system {
            Some(m) => Message::new(Role::System, format!("{} {seen}", m.content)),
            None => Message::new(Role::System, seen),
        })
    }

    /// Sets (or clears) what the camera shows now: the next question is asked with it.
    pub fn set_scene(&mut self, caption: Option<String>) {
        self.scene = caption.filter(|c| !c.trim().is_empty());
    }

    pub fn turns(&self) -> usize {
        self.turns.len() / 2
    }
}

/// Opens the configured backend.
pub fn open(
    cfg: &LlmConfig,
    store: &crate::models::Store,
) -> Result<Box<dyn ChatModel>, anyhow::Error> {
    match cfg.backend.as_str() {
        "local" => {
            let path = store.resolve(&cfg.model)?;
            Ok(Box::new(crate::llm_local::LocalModel::load(&path, cfg)?))
        }
        "openai" => Ok(Box::new(crate::llm_remote::RemoteModel::new(cfg)?)),
        other => Err(LlmError::Backend(other.to_string()).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn cancel_by_turn_number() {
        let shared = Arc::new(AtomicU64::new(3));
        let c = Cancel::for_turn(shared.clone(), 3);
        assert!(!c.is_cancelled());
        shared.fetch_add(1, Ordering::AcqRel);
        assert!(c.is_cancelled());
    }

    /// Counts one token per character, so budgets are easy to reason about.
    struct CharModel;
    impl ChatModel for CharModel {
        fn generate(
            &mut self,
            _: &[Message],
            _: &Cancel,
            _: &mut dyn FnMut(&str),
        ) -> Result<(String, Finish), LlmError> {
            Ok((String::new(), Finish::Stop))
        }
        fn count_tokens(&mut self, m: &[Message]) -> Result<usize, LlmError> {
            Ok(m.iter().map(|m| m.content.len()).sum())
        }
        fn set_config(&mut self, _: &LlmConfig) {}
        fn describe(&self) -> String {
            "chars".into()
        }
    }

    #[test]
    fn memory_drops_oldest_turns_and_refuses_what_cannot_fit() {
        let cfg = LlmConfig {
            system_prompt: "sys".into(),
            context_tokens: 40,
            max_tokens: 10,
            ..LlmConfig::default()
        };
        let mut conv = Conversation::new(&cfg);
        let mut m = CharModel;
        conv.record("aaaaaaaaaa", "bbbbbbbbbb");
        conv.record("cccc", "dddd");
        // sys(3) + 10 + 10 + 4 + 4 + q(5) = 36 > 30: the first exchange goes, the second stays.
        let msgs = conv.prompt_for(&mut m, "qqqqq").unwrap();
        assert_eq!(msgs[0].content, "sys");
        assert_eq!(msgs[1].content, "cccc");
        assert_eq!(msgs.len(), 4);
        assert_eq!(conv.turns(), 1);
        let err = conv.prompt_for(&mut m, &"x".repeat(40)).unwrap_err();
        assert!(
            matches!(
                err,
                LlmError::PromptTooLong {
                    needed: 43,
                    limit: 30
                }
            ),
            "{err}"
        );
        assert_eq!(conv.turns(), 1, "a refused prompt keeps the memory");
        assert!(matches!(
            conv.prompt_for(&mut m, "  "),
            Err(LlmError::EmptyPrompt)
        ));
    }

    #[test]
    fn the_scene_joins_the_system_prompt_and_is_not_remembered() {
        let mut conv = Conversation::new(&LlmConfig {
            system_prompt: "Be brief.".into(),
            ..LlmConfig::default()
        });
        conv.set_scene(Some("a cat.".into()));
        let msgs = conv.prompt_for(&mut CharModel, "What is this?").unwrap();
        assert_eq!(
            msgs[0].content,
            "Be brief. You can see through a camera. The camera currently shows: a cat."
        );
        assert_eq!(msgs[1].content, "What is this?");
        conv.record("What is this?", "A cat.");
        conv.set_scene(None);
        let msgs = conv.prompt_for(&mut CharModel, "And now?").unwrap();
        assert_eq!(msgs[0].content, "Be brief.");
        assert!(msgs.iter().all(|m| !m.content.contains("camera")));
    }
}
