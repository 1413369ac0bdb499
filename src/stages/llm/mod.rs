//! The language model stage: a conversation in, the answer out as a stream of text chunks cut at
//! word boundaries. `chat.rs` holds the model trait and its messages, `conversation.rs` the
//! memory; the backends are a local GGUF model run by candle (`local.rs`) or any
//! OpenAI-compatible server (`remote.rs`). Generation stops between any two tokens when its
//! turn is cancelled.

pub mod chat;
pub mod conversation;
pub mod local;
pub mod remote;

pub use self::chat::{
    ChatModel, Finish, GenStats, LlmConfig, LlmError, Message, Role, WordChunker,
};
pub use self::conversation::Conversation;
use crate::store::Store;

/// Opens the configured backend.
pub fn open(cfg: &LlmConfig, store: &Store) -> Result<Box<dyn ChatModel>, LlmError> {
    match cfg.backend.as_str() {
        "local" => {
            let path = store.resolve(&cfg.model)?;
            Ok(Box::new(local::LocalModel::load(&path, cfg)?))
        }
        "openai" => Ok(Box::new(remote::RemoteModel::new(cfg)?)),
        other => Err(LlmError::Backend(other.to_string())),
    }
}
