//! The language model stage: a conversation in, the answer out as a stream of text chunks cut at
//! word boundaries. `chat.rs` holds the model trait and its messages, `conversation.rs` the
//! memory; the backends are a local GGUF model run by candle (`local.rs`) or any
//! OpenAI-compatible server (`remote.rs`). Generation stops between any two tokens when its
//! turn is cancelled.

pub mod chat;
pub mod conversation;
pub mod llama;
pub mod local;
pub mod remote;
pub mod server;
mod slots;

use std::sync::{Arc, Mutex};

pub use self::chat::{
    open_ended, ChatModel, Finish, GenStats, LlmConfig, LlmError, Message, Role, WordChunker,
};
pub use self::conversation::Conversation;
use super::{lock, Cancel};
use crate::store::Store;

/// The language model as loaded once for the process. Each conversation (or request) gets a
/// `ChatModel` of its own from it (`chat`): with llama.cpp a client with a server slot of its own
/// (answers are written in parallel, each prefix stays cached); with candle a handle on the one
/// in-process model (answers take turns); with a remote server a client.
pub enum Engine {
    Llama(Arc<llama::LlamaServer>),
    Candle(Arc<Mutex<local::LocalModel>>),
    Remote,
}

impl Engine {
    /// Loads the configured backend and engine; `slots` is how many conversations may be
    /// answered at once (llama.cpp).
    pub fn load(cfg: &LlmConfig, store: &Store, slots: usize) -> Result<Engine, LlmError> {
        cfg.check()?;
        match (cfg.backend.as_str(), cfg.engine.as_str()) {
            ("local", "llama.cpp") => {
                let resolve = |name: &str| match name {
                    "" => Ok(None),
                    m => store.resolve(m).map(Some),
                };
                let files = llama::Files {
                    model: store.resolve(&cfg.model)?,
                    mmproj: resolve(&cfg.mmproj)?,
                    draft: resolve(&cfg.draft_model)?,
                };
                Ok(Engine::Llama(llama::LlamaServer::start(
                    cfg, &files, slots,
                )?))
            }
            ("local", "candle") => Ok(Engine::Candle(Arc::new(Mutex::new(
                local::LocalModel::load(&store.resolve(&cfg.model)?, cfg)?,
            )))),
            ("local", other) => Err(LlmError::Engine(other.to_string())),
            ("openai", _) => {
                remote::RemoteModel::new(cfg)?;
                Ok(Engine::Remote)
            }
            (other, _) => Err(LlmError::Backend(other.to_string())),
        }
    }

    /// Whether the model takes images: a llama.cpp server with a vision projector
    /// (`llm.mmproj`).
    pub fn takes_images(&self) -> bool {
        self.vision_server().is_some()
    }

    /// The llama.cpp server, if it runs a vision projector (it can describe pictures too).
    pub fn vision_server(&self) -> Option<&Arc<llama::LlamaServer>> {
        match self {
            Engine::Llama(server) if server.takes_images() => Some(server),
            _ => None,
        }
    }

    /// A chat model of its own for one conversation or request.
    pub fn chat(&self, cfg: &LlmConfig) -> Result<Box<dyn ChatModel>, LlmError> {
        Ok(match self {
            Engine::Llama(server) => Box::new(server.client(cfg)),
            Engine::Candle(model) => Box::new(SharedModel {
                model: model.clone(),
                cfg: cfg.clone(),
            }),
            Engine::Remote => Box::new(remote::RemoteModel::new(cfg)?),
        })
    }
}

/// Opens the configured backend for one conversation.
pub fn open(cfg: &LlmConfig, store: &Store) -> Result<Box<dyn ChatModel>, LlmError> {
    Engine::load(cfg, store, 1)?.chat(cfg)
}

/// The in-process candle model shared by several conversations: each call takes the model for
/// its duration (with this handle's settings), so answers take turns.
struct SharedModel {
    model: Arc<Mutex<local::LocalModel>>,
    cfg: LlmConfig,
}

impl ChatModel for SharedModel {
    fn generate(
        &mut self,
        messages: &[Message],
        cancel: &Cancel,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<(String, Finish), LlmError> {
        let mut model = lock(&self.model);
        model.set_config(&self.cfg);
        model.generate(messages, cancel, on_text)
    }
    fn count_tokens(&mut self, messages: &[Message]) -> Result<usize, LlmError> {
        lock(&self.model).count_tokens(messages)
    }
    fn describe(&self) -> String {
        lock(&self.model).describe()
    }
    fn set_config(&mut self, cfg: &LlmConfig) {
        self.cfg = cfg.clone();
    }
    fn warm_up(&mut self, messages: &[Message]) -> Result<(), LlmError> {
        lock(&self.model).warm_up(messages)
    }
    fn stats(&self) -> Option<GenStats> {
        lock(&self.model).stats()
    }
    fn end_of_turn(&mut self, messages: &[Message]) -> Result<Option<f32>, LlmError> {
        lock(&self.model).end_of_turn(messages)
    }
    fn reads_turns(&self) -> bool {
        true
    }
}
