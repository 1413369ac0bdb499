//! The llama.cpp engine: one conversation's client of the shared `llama-server` (`server.rs`),
//! spoken to through the OpenAI-compatible client in `remote.rs`. The server keeps several slots
//! (`--parallel`), each with its own cached prompt, and decodes them together (continuous
//! batching): each conversation gets a slot of its own, so their answers are written at the same
//! time and their prefixes stay cached.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::chat::{ChatModel, Finish, GenStats, LlmConfig, LlmError, Message, Role};
use super::remote::RemoteModel;
use super::server::START_LIMIT;
pub use super::server::{server_binary, Files, LlamaServer, LLAMA_CPP_SOURCE};
use super::slots::{Prompts, Slot};
use crate::stages::openai::Endpoint;
use crate::stages::Cancel;

impl LlamaServer {
    /// A client of its own for one conversation (or request), with two slots of its own while
    /// they are free (given back when the client is dropped), else the next one shared.
    pub fn client(self: &Arc<Self>, cfg: &LlmConfig) -> LlamaModel {
        LlamaModel {
            server: self.clone(),
            cfg: cfg.clone(),
            held: self.held.take(),
            second: self.held.take_free(),
            prompts: Prompts::default(),
            last: None,
            eot: None,
            piecewise: None,
            warmed_key: None,
        }
    }
}

/// One conversation's (or request's) handle on the shared server: its own slots, so its prompt
/// prefixes (system prompt, history) stay cached between turns.
pub struct LlamaModel {
    server: Arc<LlamaServer>,
    cfg: LlmConfig,
    /// Its slot, given back when it is dropped.
    held: Slot,
    /// A second slot of its own while one was free: each holds the prompt of one system prompt
    /// (`slot_for`).
    second: Option<Slot>,
    /// Which system prompt each of the two slots holds.
    prompts: Prompts,
    last: Option<GenStats>,
    /// The chat template's end-of-turn token (the first token after a user message).
    eot: Option<u32>,
    /// The prompt being prefilled a piece at a time (`warm_up_piece`).
    piecewise: Option<Piecewise>,
    /// The system prompt `warm_up` prefilled last (`system_key`).
    warmed_key: Option<u64>,
}

/// A prompt prefilled a piece at a time: which messages (`messages_key`), its tokens, and how
/// many of them are prefilled.
struct Piecewise {
    key: u64,
    /// The server's `epoch` when its pieces were prefilled.
    epoch: u64,
    tokens: Vec<serde_json::Value>,
    done: usize,
}

impl Drop for LlamaModel {
    fn drop(&mut self) {
        self.server.held.put_back(self.held);
        if let Some(second) = self.second {
            self.server.held.put_back(second);
        }
    }
}

impl LlamaModel {
    /// The slot for a request with `messages`: the one whose cache starts with the same system
    /// prompt, else the one used least recently (its cache is replaced).
    fn slot_for(&mut self, messages: &[Message]) -> usize {
        let Some(second) = self.second else {
            return self.held.id;
        };
        [self.held.id, second.id][self.prompts.pick(system_key(messages))]
    }

    /// The OpenAI-compatible client for the server as it is now (its port may have changed),
    /// on `slot`.
    fn client(&self, slot: usize) -> Result<RemoteModel, LlmError> {
        self.server
            .wait_ready(START_LIMIT)
            .map_err(LlmError::Inference)?;
        let base = self.server.base_url();
        let endpoint = Endpoint::fixed(&format!("{base}/v1"), self.cfg.timeout_s);
        let extra = json!({
            "id_slot": slot,
            "cache_prompt": true,
            "repeat_penalty": self.cfg.repeat_penalty,
            "repeat_last_n": self.cfg.repeat_last_n,
        });
        Ok(RemoteModel::at(
            endpoint,
            self.server.name.clone(),
            &self.cfg,
            extra,
        ))
    }

    /// The prompt of `messages` (which do not end with the user) as the server's template
    /// renders it, up to where the next user message's words go, the template's user header
    /// included, so that prefilled, the next reading of a user's words pays for those words
    /// alone. None for messages that end with the user, or a template that hides the cut.
    fn prompt_before_next_user(&self, messages: &[Message]) -> Result<Option<String>, LlmError> {
        const NEXT: &str = "\u{2063}seesay-next\u{2063}";
        if messages.last().is_none_or(|m| m.role == Role::User) {
            return Ok(None);
        }
        let mut next = messages.to_vec();
        next.push(Message::new(Role::User, NEXT));
        let rendered = self.post("/apply-template", json!({"messages": messages_json(&next)}))?;
        let rendered = rendered["prompt"].as_str().unwrap_or_default();
        Ok(rendered.rfind(NEXT).map(|cut| rendered[..cut].to_string()))
    }

    /// The prompt of `messages` to prefill in pieces, and how much of it is prefilled (taken out
    /// of `piecewise`, to be put back): the one begun, or a new one, tokenized, that goes on from
    /// where the one before (the same with fewer turns) parts from it. (Sent again from its
    /// start, a shorter prompt would make the server drop what its cache holds beyond it.) None
    /// where the template hides the cut.
    fn pieces_of(&mut self, messages: &[Message]) -> Result<Option<Piecewise>, LlmError> {
        let key = messages_key(messages);
        let epoch = self.server.epoch.load(Ordering::Acquire);
        if self.piecewise.as_ref().is_some_and(|p| p.epoch != epoch) {
            self.piecewise = None; // a restarted server holds nothing of it
        }
        if self.piecewise.as_ref().is_some_and(|p| p.key == key) {
            return Ok(self.piecewise.take());
        }
        let Some(prompt) = self.prompt_before_next_user(messages)? else {
            return Ok(None);
        };
        let t = self.post("/tokenize", json!({"content": prompt, "add_special": true}))?;
        let tokens = t["tokens"].as_array().cloned().unwrap_or_default();
        let done = self.piecewise.take().map_or(0, |old| {
            let same = old.tokens.iter().zip(&tokens).take_while(|(a, b)| a == b);
            same.count().min(old.done)
        });
        Ok(Some(Piecewise {
            key,
            epoch,
            tokens,
            done,
        }))
    }

    fn post(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value, LlmError> {
        self.server
            .wait_ready(START_LIMIT)
            .map_err(LlmError::Inference)?;
        let _busy = self.server.request();
        let url = format!("{}{path}", self.server.base_url());
        let fail = |detail: String| LlmError::Remote {
            url: url.clone(),
            detail,
        };
        let text = ureq::post(&url)
            .timeout(Duration::from_secs(self.cfg.timeout_s.max(1)))
            .set("Content-Type", "application/json")
            .send_string(&body.to_string())
            .map_err(|e| fail(e.to_string()))?
            .into_string()
            .map_err(|e| fail(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| fail(e.to_string()))
    }
}

/// How much of the system prompt tells one from another: its start (the voice's prompt or the
/// tools' descriptions), not what is added at its end (what the camera shows, how memories
/// come), so a new scene replaces the prompt in its own slot, not the other one.
const SYSTEM_KEY_CHARS: usize = 80;

/// What tells one system prompt from another (messages without one: all alike).
fn system_key(messages: &[Message]) -> u64 {
    let start = messages
        .first()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.chars().take(SYSTEM_KEY_CHARS).collect::<String>());
    hash_of(start)
}

/// What tells one list of messages from another (for a prompt prefilled in pieces).
fn messages_key(messages: &[Message]) -> u64 {
    hash_of(messages_json(messages).to_string())
}

fn hash_of(x: impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    x.hash(&mut h);
    h.finish()
}

/// The messages' words, for the server to render with the model's template (to count or read
/// them): their pictures are counted apart (`Message::image_tokens`).
fn messages_json(messages: &[Message]) -> serde_json::Value {
    messages
        .iter()
        .map(|m| json!({"role": m.role, "content": m.content}))
        .collect()
}

impl ChatModel for LlamaModel {
    fn generate(
        &mut self,
        messages: &[Message],
        cancel: &Cancel,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<(String, Finish), LlmError> {
        // A server that dies before the answer starts is waited for (the supervisor restarts
        // it) and asked again, once; an answer cut off midway is an error, not repeated.
        let said = std::cell::Cell::new(false);
        let mut listen = |t: &str| {
            said.set(true);
            on_text(t)
        };
        let server = self.server.clone();
        let _busy = server.request();
        let epoch = self.server.epoch.load(Ordering::Acquire);
        let slot = self.slot_for(messages);
        let mut client = self.client(slot)?;
        let mut result = client.generate(messages, cancel, &mut listen);
        if result.is_err() && !said.get() && self.server.died_since(epoch) {
            tracing::warn!("llama-server died during a request; asking the restarted one");
            client = self.client(slot)?;
            result = client.generate(messages, cancel, &mut listen);
        }
        self.last = client.stats();
        result
    }

    /// The exact count: the server renders the model's chat template and tokenizes it.
    fn count_tokens(&mut self, messages: &[Message]) -> Result<usize, LlmError> {
        let prompt = self.post(
            "/apply-template",
            json!({"messages": messages_json(messages)}),
        )?;
        let tokens = self.post(
            "/tokenize",
            json!({"content": prompt["prompt"], "add_special": false}),
        )?;
        let pictures: usize = messages.iter().map(Message::image_tokens).sum();
        Ok(tokens["tokens"].as_array().map_or(0, Vec::len) + pictures)
    }

    /// A token is at least one byte (and each message's template adds a few): text well inside
    /// the budget by that bound is not sent for counting, which saves two round trips a turn.
    fn fits(&mut self, messages: &[Message], limit: usize) -> Result<bool, LlmError> {
        let bound: usize = messages
            .iter()
            .map(|m| m.content.len() + 16 + m.image_tokens())
            .sum();
        if bound <= limit {
            return Ok(true);
        }
        Ok(self.count_tokens(messages)? <= limit)
    }

    fn describe(&self) -> String {
        format!("{} (llama.cpp)", self.server.name)
    }

    fn set_config(&mut self, cfg: &LlmConfig) {
        self.cfg = cfg.clone();
    }

    /// Prefills `messages` into this conversation's slot, so the next question computes only its
    /// own tokens. A conversation so far (not ending with the user) is prefilled up to
    /// where the next user message's words go, the template's user header included, so the
    /// next reading of a user's words pays for those words alone.
    fn warm_up(&mut self, messages: &[Message]) -> Result<(), LlmError> {
        let t = Instant::now();
        let slot = self.slot_for(messages);
        self.warmed_key = Some(system_key(messages));
        if let Some(prompt) = self.prompt_before_next_user(messages)? {
            self.post(
                "/completion",
                json!({
                    "prompt": prompt,
                    "n_predict": 1,
                    "id_slot": slot,
                    "cache_prompt": true,
                }),
            )?;
            tracing::debug!(
                slot,
                ms = t.elapsed().as_millis() as u64,
                "prompt prefilled up to the next user message"
            );
            return Ok(());
        }
        let mut client = self.client(slot)?;
        let mut cfg = self.cfg.clone();
        cfg.max_tokens = 1;
        client.set_config(&cfg);
        client.generate(messages, &Cancel::new(), &mut |_| {})?;
        tracing::debug!(
            slot,
            ms = t.elapsed().as_millis() as u64,
            "prompt prefilled"
        );
        Ok(())
    }

    /// Tokenizes the prompt (up to the next user message) once, then prefills it `tokens` at
    /// a time into its slot (the second one, by its system prompt): each piece is a prompt the
    /// slot's cache already holds all but the new piece of.
    fn warm_up_piece(&mut self, messages: &[Message], tokens: usize) -> Result<bool, LlmError> {
        if self.second.is_none() {
            return Ok(true); // one slot: the second prompt would replace the first
        }
        if self.server.busy() {
            return Ok(false);
        }
        if self.warmed_key == Some(system_key(messages)) {
            return Ok(true); // the same system prompt's start: it would go to warm_up's slot
        }
        let Some(p) = self.pieces_of(messages)? else {
            return Ok(true); // not in pieces: left to be read with its question
        };
        let slot = self.slot_for(messages);
        if p.done >= p.tokens.len() {
            self.piecewise = Some(p);
            return Ok(true);
        }
        let end = (p.done + tokens.max(1)).min(p.tokens.len());
        let t = Instant::now();
        let piece = json!({
            "prompt": &p.tokens[..end],
            "n_predict": 1,
            "id_slot": slot,
            "cache_prompt": true,
        });
        let sent = self.post("/completion", piece);
        tracing::debug!(
            slot,
            end,
            of = p.tokens.len(),
            ms = t.elapsed().as_millis() as u64,
            "prompt prefilled in part"
        );
        sent?;
        let whole = end == p.tokens.len();
        self.piecewise = Some(Piecewise { done: end, ..p });
        Ok(whole)
    }

    fn stats(&self) -> Option<GenStats> {
        self.last
    }

    fn reads_turns(&self) -> bool {
        true
    }

    /// Renders the prompt with the server's template, cuts it after the user's text and asks
    /// this conversation's slot for the next token's distribution (the prefix stays cached for
    /// the answer).
    fn end_of_turn(&mut self, messages: &[Message]) -> Result<Option<f32>, LlmError> {
        let t = Instant::now();
        let slot = self.slot_for(messages);
        let rendered = self.post(
            "/apply-template",
            json!({"messages": messages_json(messages)}),
        )?;
        let rendered = rendered["prompt"].as_str().unwrap_or_default();
        let Some(cut) = super::chat::cut_after_user(rendered, messages) else {
            return Ok(None);
        };
        let eot = match self.eot {
            Some(id) => id,
            None => {
                let after = self.post(
                    "/tokenize",
                    json!({"content": &rendered[cut..], "add_special": false}),
                )?;
                let Some(id) = after["tokens"][0].as_u64() else {
                    return Ok(None);
                };
                *self.eot.insert(id as u32)
            }
        };
        let r = self.post(
            "/completion",
            json!({
                "prompt": &rendered[..cut],
                "n_predict": 1,
                "n_probs": 20,
                "id_slot": slot,
                "cache_prompt": true,
            }),
        )?;
        let top = r["completion_probabilities"][0]["top_logprobs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if top.is_empty() {
            return Ok(None);
        }
        let p = super::chat::end_mass(
            eot,
            top.iter().map(|t| {
                (
                    t["id"].as_u64().unwrap_or(u64::MAX) as u32,
                    t["token"].as_str().unwrap_or(""),
                    t["logprob"].as_f64().map_or(0.0, f64::exp) as f32,
                )
            }),
        );
        tracing::debug!(
            slot,
            ms = t.elapsed().as_millis() as u64,
            p,
            "end of turn read from the language model"
        );
        Ok(Some(p))
    }
}
