//! The llama.cpp engine: a GGUF file in, a private `llama-server` out (built by scripts/setup from
//! pinned llama.cpp source), spoken to through the OpenAI-compatible client in `remote.rs`.
//!
//! One supervisor thread per server starts it on a free 127.0.0.1 port, restarts it if it dies,
//! and kills it when the engine is dropped. The server is started with `PR_SET_PDEATHSIG`, so the
//! kernel kills it with the supervisor thread, also when seesay is killed with `kill -9`: it is
//! never left behind. The server keeps several slots (`--parallel`), each with its own cached
//! prompt, and decodes them together (continuous batching): each conversation gets a slot of its
//! own, so their answers are written at the same time and their prefixes stay cached.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::chat::{ChatModel, Finish, GenStats, LlmConfig, LlmError, Message, Role};
use super::remote::RemoteModel;
use super::slots::{Slot, Slots};
use crate::host;
use crate::stages::openai::Endpoint;
use crate::stages::{lock, Cancel};

/// The pinned llama.cpp source (vendored by this PyPI sdist) that scripts/setup builds.
pub const LLAMA_CPP_SOURCE: &str = "llama-cpp-python==0.3.36";

/// How long a (re)started server may take to load its model and answer /health.
const START_LIMIT: Duration = Duration::from_secs(180);

/// Where the llama-server binary is: `llm.llama_server`, else `$SEESAY_LLAMA_SERVER`, else the one
/// scripts/setup builds in the cache.
pub fn server_binary(configured: &str) -> PathBuf {
    if !configured.is_empty() {
        return host::expand_home(configured);
    }
    if let Some(p) = std::env::var_os("SEESAY_LLAMA_SERVER").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    host::cache_root()
        .join("llama.cpp")
        .join("build")
        .join("bin")
        .join("llama-server")
}

/// A llama-server process under supervision.
pub struct LlamaServer {
    name: String,
    port: Arc<AtomicU16>,
    /// Set once the current process answers /health; cleared when it dies.
    healthy: Arc<AtomicBool>,
    /// How many times a server became healthy (a restart moves it).
    epoch: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// Why the last start failed, for the error a waiting request returns.
    failure: Arc<Mutex<Option<String>>>,
    supervisor: Option<std::thread::JoinHandle<()>>,
    /// Each client's own while one is free (handed out in turn, a conversation's slot went to
    /// API requests, and its prompt was prefilled again at its next turn).
    held: Slots,
}

impl LlamaServer {
    /// Starts a server for `model` with `slots` parallel sequences of `cfg.context_tokens` each and
    /// waits until it answers.
    pub fn start(
        cfg: &LlmConfig,
        model: &Path,
        slots: usize,
    ) -> Result<Arc<LlamaServer>, LlmError> {
        let exe = server_binary(&cfg.llama_server);
        let err = |detail: String| LlmError::Load {
            path: model.display().to_string(),
            detail,
        };
        if !exe.is_file() {
            return Err(err(format!(
                "the llama.cpp engine needs llama-server, not found at {}: run scripts/setup (it \
                 builds llama.cpp from {LLAMA_CPP_SOURCE}), set llm.llama_server, or set \
                 llm.engine = \"candle\"",
                exe.display()
            )));
        }
        // A file that is not GGUF at all is told apart before a server is started for it.
        let mut f = std::fs::File::open(model).map_err(|e| err(e.to_string()))?;
        candle_core::quantized::gguf_file::Content::read(&mut f)
            .map_err(|e| err(format!("not a GGUF file ({e})")))?;
        let slots = slots.max(1);
        let threads = host::thread_count(cfg.threads, host::Budget::machine().llm);
        let mut args: Vec<String> = vec![
            "--model".into(),
            model.display().to_string(),
            "--host".into(),
            "127.0.0.1".into(),
            "--ctx-size".into(),
            (cfg.context_tokens * slots).to_string(),
            "--parallel".into(),
            slots.to_string(),
            "--threads".into(),
            threads.to_string(),
            "--threads-batch".into(),
            threads.to_string(),
            "--no-webui".into(),
            "--jinja".into(),
            // Each conversation has a slot of its own, whose KV cache already holds its prompt.
            // The server's extra prompt cache (up to 8 GiB by default) kept a copy of every slot
            // state it replaced: llama-server grew from 2.1 to 6.9 GB in a 10-minute soak.
            "--cache-ram".into(),
            "0".into(),
        ];
        if slots > 1 {
            // Serving several conversations, its threads sleep while they wait instead of
            // spinning: the recogniser and the voice of the others need those cores between the
            // model's steps. One conversation keeps the faster spinning wait.
            args.extend(["--poll".into(), "0".into()]);
        }
        if cfg!(feature = "cuda") {
            args.extend(["--n-gpu-layers".into(), "999".into()]);
        }
        let name = model
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let port = Arc::new(AtomicU16::new(0));
        let healthy = Arc::new(AtomicBool::new(false));
        let epoch = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let supervisor = {
            let watch = Watch {
                port: port.clone(),
                healthy: healthy.clone(),
                epoch: epoch.clone(),
                stop: stop.clone(),
                failure: failure.clone(),
            };
            std::thread::Builder::new()
                .name("llama-server".into())
                .spawn(move || supervise(&exe, &args, &watch))
                .map_err(|e| err(format!("cannot start the supervisor thread: {e}")))?
        };
        let server = Arc::new(LlamaServer {
            name,
            port,
            healthy,
            epoch,
            stop,
            failure,
            supervisor: Some(supervisor),
            held: Slots::new(slots),
        });
        server.wait_ready(START_LIMIT).map_err(err)?;
        Ok(server)
    }

    /// The server's OpenAI-compatible base URL (its port changes when it restarts).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port.load(Ordering::Acquire))
    }

    /// Waits for a healthy server (at start, or while it restarts after dying).
    pub fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let t = Instant::now();
        while !self.healthy.load(Ordering::Acquire) {
            if let Some(why) = lock(&self.failure).clone() {
                return Err(why);
            }
            if t.elapsed() > limit {
                return Err(format!(
                    "llama-server did not answer within {} s",
                    limit.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// After a request failed: whether the server died under it (it is restarting, or has
    /// restarted since `epoch`), waiting a moment for the supervisor to notice.
    fn died_since(&self, epoch: u64) -> bool {
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(500) {
            if !self.healthy.load(Ordering::Acquire) || self.epoch.load(Ordering::Acquire) != epoch
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// A client of its own for one conversation (or request), with a slot of its own while one
    /// is free (given back when the client is dropped), else the next one shared.
    pub fn client(self: &Arc<Self>, cfg: &LlmConfig) -> LlamaModel {
        LlamaModel {
            server: self.clone(),
            cfg: cfg.clone(),
            held: self.held.take(),
            last: None,
            eot: None,
        }
    }

    pub fn slots(&self) -> usize {
        self.held.count()
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.supervisor.take() {
            let _ = h.join();
        }
    }
}

/// What the supervisor shares with the engine.
struct Watch {
    port: Arc<AtomicU16>,
    healthy: Arc<AtomicBool>,
    epoch: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
}

/// The last lines the server logged, for the error when it cannot start.
type Tail = Arc<Mutex<std::collections::VecDeque<String>>>;

/// The supervisor: starts the server, watches it, restarts it when it dies (with a growing
/// pause, so a server that cannot start does not spin), kills it when told to stop.
fn supervise(exe: &Path, args: &[String], w: &Watch) {
    let Watch {
        port,
        healthy,
        epoch,
        stop,
        failure,
    } = w;
    let tail: Tail = Arc::default();
    let mut pause = Duration::from_millis(200);
    while !stop.load(Ordering::Acquire) {
        let p = match free_port() {
            Ok(p) => p,
            Err(e) => {
                *lock(failure) = Some(format!("no free port: {e}"));
                return;
            }
        };
        let mut child = match spawn(exe, args, p, tail.clone()) {
            Ok(c) => c,
            Err(e) => {
                *lock(failure) = Some(format!("cannot start {}: {e}", exe.display()));
                return;
            }
        };
        port.store(p, Ordering::Release);
        let started = Instant::now();
        let url = format!("http://127.0.0.1:{p}/health");
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(2))
            .build();
        let status = loop {
            if stop.load(Ordering::Acquire) {
                let _ = child.kill();
                let _ = child.wait();
                healthy.store(false, Ordering::Release);
                return;
            }
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            if !healthy.load(Ordering::Acquire) {
                if agent.get(&url).call().is_ok() {
                    tracing::info!(
                        port = p,
                        ms = started.elapsed().as_millis() as u64,
                        "llama-server is ready"
                    );
                    *lock(failure) = None;
                    epoch.fetch_add(1, Ordering::AcqRel);
                    healthy.store(true, Ordering::Release);
                    pause = Duration::from_millis(200);
                } else if started.elapsed() > START_LIMIT {
                    tracing::error!("llama-server did not become ready; restarting it");
                    let _ = child.kill();
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        healthy.store(false, Ordering::Release);
        if stop.load(Ordering::Acquire) {
            return;
        }
        if epoch.load(Ordering::Acquire) == 0 {
            // It never came up: the model cannot be loaded (or the binary is broken). Say why,
            // once, rather than restarting it forever.
            std::thread::sleep(Duration::from_millis(100)); // the last log lines
            let said: Vec<String> = lock(&tail)
                .iter()
                .filter(|l| l.contains(" E ") || l.contains("error"))
                .map(|l| {
                    l.split_once(" E ")
                        .map_or(l.as_str(), |(_, m)| m)
                        .trim()
                        .to_string()
                })
                .collect();
            // The model loader's own reason is the most useful line.
            let why = said
                .iter()
                .find(|l| l.contains("error loading model:"))
                .or(said.last())
                .cloned()
                .unwrap_or_else(|| "it said nothing".into());
            *lock(failure) = Some(format!("llama-server could not start ({status}): {why}"));
            return;
        }
        tracing::warn!("llama-server exited ({status}); restarting it");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts llama-server on `port`; its log goes to seesay's log (debug level). The kernel kills it
/// when the thread that started it ends (with seesay, however seesay ends).
fn spawn(exe: &Path, args: &[String], port: u16, tail: Tail) -> std::io::Result<Child> {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .args(["--port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    host::background_child(&mut cmd);
    let mut child = cmd.spawn()?;
    if let Some(err) = child.stderr.take() {
        std::thread::Builder::new()
            .name("llama-log".into())
            .spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    tracing::debug!(target: "seesay::llama_server", "{line}");
                    let mut t = lock(&tail);
                    if t.len() >= 40 {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            })?;
    }
    Ok(child)
}

/// One conversation's (or request's) handle on the shared server: its own slot, so its prompt
/// prefix (system prompt, history) stays cached between turns.
pub struct LlamaModel {
    server: Arc<LlamaServer>,
    cfg: LlmConfig,
    /// Its slot, given back when it is dropped.
    held: Slot,
    last: Option<GenStats>,
    /// The chat template's end-of-turn token (the first token after a user message).
    eot: Option<u32>,
}

impl Drop for LlamaModel {
    fn drop(&mut self) {
        self.server.held.put_back(self.held);
    }
}

impl LlamaModel {
    /// The OpenAI-compatible client for the server as it is now (its port may have changed).
    fn client(&self) -> Result<RemoteModel, LlmError> {
        self.server
            .wait_ready(START_LIMIT)
            .map_err(LlmError::Inference)?;
        let base = self.server.base_url();
        let endpoint = Endpoint::fixed(&format!("{base}/v1"), self.cfg.timeout_s);
        let extra = json!({
            "id_slot": self.held.id,
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

    fn post(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value, LlmError> {
        self.server
            .wait_ready(START_LIMIT)
            .map_err(LlmError::Inference)?;
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
        let epoch = self.server.epoch.load(Ordering::Acquire);
        let mut client = self.client()?;
        let mut result = client.generate(messages, cancel, &mut listen);
        if result.is_err() && !said.get() && self.server.died_since(epoch) {
            tracing::warn!("llama-server died during a request; asking the restarted one");
            client = self.client()?;
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
        Ok(tokens["tokens"].as_array().map_or(0, Vec::len))
    }

    /// A token is at least one byte (and each message's template adds a few): text well inside
    /// the budget by that bound is not sent for counting, which saves two round trips a turn.
    fn fits(&mut self, messages: &[Message], limit: usize) -> Result<bool, LlmError> {
        let bound: usize = messages.iter().map(|m| m.content.len() + 16).sum();
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

    /// Prefills `messages` into this conversation's slot (one token is generated and dropped),
    /// so the next question computes only its own tokens.
    /// Prefills `messages`. A conversation so far (not ending with the user) is prefilled up to
    /// where the next user message's words go, the template's user header included, so the
    /// next reading of a user's words pays for those words alone.
    fn warm_up(&mut self, messages: &[Message]) -> Result<(), LlmError> {
        let t = Instant::now();
        if messages.last().is_some_and(|m| m.role != Role::User) {
            const NEXT: &str = "\u{2063}seesay-next\u{2063}";
            let mut next = messages.to_vec();
            next.push(Message::new(Role::User, NEXT));
            let rendered =
                self.post("/apply-template", json!({"messages": messages_json(&next)}))?;
            let rendered = rendered["prompt"].as_str().unwrap_or_default();
            if let Some(cut) = rendered.rfind(NEXT) {
                self.post(
                    "/completion",
                    json!({
                        "prompt": &rendered[..cut],
                        "n_predict": 1,
                        "id_slot": self.held.id,
                        "cache_prompt": true,
                    }),
                )?;
                tracing::debug!(
                    slot = self.held.id,
                    ms = t.elapsed().as_millis() as u64,
                    "prompt prefilled up to the next user message"
                );
                return Ok(());
            }
        }
        let mut client = self.client()?;
        let mut cfg = self.cfg.clone();
        cfg.max_tokens = 1;
        client.set_config(&cfg);
        client.generate(messages, &Cancel::new(), &mut |_| {})?;
        tracing::debug!(
            slot = self.held.id,
            ms = t.elapsed().as_millis() as u64,
            "prompt prefilled"
        );
        Ok(())
    }

    fn stats(&self) -> Option<GenStats> {
        self.last
    }

    /// Renders the prompt with the server's template, cuts it after the user's text and asks
    /// this conversation's slot for the next token's distribution (the prefix stays cached for
    /// the answer).
    fn end_of_turn(&mut self, messages: &[Message]) -> Result<Option<f32>, LlmError> {
        let t = Instant::now();
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
                "id_slot": self.held.id,
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
            slot = self.held.id,
            ms = t.elapsed().as_millis() as u64,
            p,
            "end of turn read from the language model"
        );
        Ok(Some(p))
    }
}
