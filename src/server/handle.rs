//! A one-turn conversation without audio, for Home Assistant's conversation agent (Wyoming's
//! `handle` service): the user's words in, the answer out as a stream of text pieces, from the
//! same model and system prompt as every conversation.

use tokio::sync::mpsc;

use super::openai::generate;
use super::state::Shared;
use crate::stages::llm::{Message, Role};
use crate::stages::Cancel;

/// A piece of the answer, or why there is none.
pub type Piece = Result<String, String>;

/// Starts answering `text` on a blocking thread; the pieces arrive on the receiver as they are
/// written. Dropping the receiver stops the answer at its next token.
pub fn answer(st: &Shared, text: &str) -> mpsc::Receiver<Piece> {
    let (tx, rx) = mpsc::channel::<Piece>(32);
    let st = st.clone();
    let messages = vec![
        Message::new(Role::System, st.cfg.llm.system_prompt.trim()),
        Message::new(Role::User, text.trim()),
    ];
    tokio::task::spawn_blocking(move || {
        let cancel = Cancel::new();
        let max_tokens = st.cfg.llm.max_tokens;
        let result = generate(&st, &messages, max_tokens, None, &cancel, &mut |piece| {
            if tx.blocking_send(Ok(piece.to_string())).is_err() {
                cancel.cancel();
            }
        });
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e.message));
        }
    });
    rx
}
