//! The llama.cpp server process: a GGUF file (and, for a vision-language model, its projector)
//! in, a private `llama-server` out (built by scripts/setup from pinned llama.cpp source) on a
//! free 127.0.0.1 port. The language model (`llama.rs`) and the llama.cpp captioner talk to it.
//!
//! One supervisor thread per server starts it, restarts it if it dies, and kills it when the
//! server is dropped. The server is started with `PR_SET_PDEATHSIG`, so the kernel kills it with
//! the supervisor thread, also when seesay is killed with `kill -9`: it is never left behind.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::chat::{LlmConfig, LlmError};
use super::slots::Slots;
use crate::host;
use crate::stages::lock;

/// The pinned llama.cpp source (vendored by this PyPI sdist) that scripts/setup builds.
pub const LLAMA_CPP_SOURCE: &str = "llama-cpp-python==0.3.36";

/// How long a (re)started server may take to load its model and answer /health.
pub const START_LIMIT: Duration = Duration::from_secs(180);

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
    pub(super) name: String,
    port: Arc<AtomicU16>,
    /// Set once the current process answers /health; cleared when it dies.
    healthy: Arc<AtomicBool>,
    /// How many times a server became healthy (a restart moves it).
    pub(super) epoch: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// Why the last start failed, for the error a waiting request returns.
    failure: Arc<Mutex<Option<String>>>,
    supervisor: Option<std::thread::JoinHandle<()>>,
    /// Each client's own while one is free (handed out in turn, a conversation's slot went to
    /// API requests, and its prompt was prefilled again at its next turn).
    pub(super) held: Slots,
    /// Started with a vision projector: it takes images.
    images: bool,
    /// Requests of its clients being answered now (`InFlight`).
    in_flight: AtomicUsize,
}

/// A request being answered: counted in `LlamaServer::in_flight` while it lives.
pub(super) struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The model files a llama-server runs.
pub struct Files {
    pub model: PathBuf,
    /// Its vision projector: the server then takes images too.
    pub mmproj: Option<PathBuf>,
    /// A draft model for speculative decoding (`llm.draft_model`).
    pub draft: Option<PathBuf>,
}

impl Files {
    /// Just a model.
    pub fn model(model: PathBuf) -> Files {
        Files {
            model,
            mmproj: None,
            draft: None,
        }
    }
}

impl LlamaServer {
    /// Starts a server for `files` with `slots` parallel sequences of `cfg.context_tokens` each
    /// and waits until it answers.
    pub fn start(
        cfg: &LlmConfig,
        files: &Files,
        slots: usize,
    ) -> Result<Arc<LlamaServer>, LlmError> {
        let exe = server_binary(&cfg.llama_server);
        let (model, mmproj) = (files.model.as_path(), files.mmproj.as_deref());
        let what = match mmproj {
            Some(p) => format!("{} with projector {}", model.display(), p.display()),
            None => model.display().to_string(),
        };
        let err = |detail: String| LlmError::Load {
            path: what.clone(),
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
        for file in std::iter::once(model)
            .chain(mmproj)
            .chain(files.draft.as_deref())
        {
            check_gguf(file)?;
        }
        let conversations = slots.max(1);
        let slots = conversations * SLOTS_PER_CLIENT;
        let args = server_args(cfg, files, slots, conversations);
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
            images: mmproj.is_some(),
            in_flight: AtomicUsize::new(0),
        });
        server.wait_ready(START_LIMIT).map_err(err)?;
        Ok(server)
    }

    /// Counts a request as being answered until the guard is dropped.
    pub(super) fn request(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(&self.in_flight)
    }

    /// Whether any client's request is being answered now.
    pub(super) fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Whether it takes images (it runs a vision projector).
    pub fn takes_images(&self) -> bool {
        self.images
    }

    /// The model's file name, for logs and as the model name in requests.
    pub fn name(&self) -> &str {
        &self.name
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
    pub(super) fn died_since(&self, epoch: u64) -> bool {
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

/// Refuses a file that cannot be read or is not GGUF, naming it.
fn check_gguf(file: &Path) -> Result<(), LlmError> {
    let err = |detail: String| LlmError::Load {
        path: file.display().to_string(),
        detail,
    };
    let mut f = std::fs::File::open(file).map_err(|e| err(e.to_string()))?;
    candle_core::quantized::gguf_file::Content::read(&mut f)
        .map_err(|e| err(format!("not a GGUF file ({e})")))?;
    Ok(())
}

/// Server slots per client: a conversation's questions are read and answered against two
/// system prompts (with the tools described, about 700 tokens more, or without), and each stays
/// cached in a slot of its own. With one slot, a question routed to the tools re-read the whole
/// prompt (629 tokens, 6.6 s on two cores) and the next one the other prompt again (3.2 s).
pub const SLOTS_PER_CLIENT: usize = 2;

/// llama-server's command line (without the port): `slots` parallel sequences, for
/// `conversations` clients at once.
fn server_args(cfg: &LlmConfig, files: &Files, slots: usize, conversations: usize) -> Vec<String> {
    let threads = host::thread_count(cfg.threads, host::Budget::machine().llm);
    let mut args: Vec<String> = vec![
        "--model".into(),
        files.model.display().to_string(),
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
    if let Some(p) = &files.mmproj {
        args.extend(["--mmproj".into(), p.display().to_string()]);
    }
    if let Some(d) = &files.draft {
        args.extend([
            "--model-draft".into(),
            d.display().to_string(),
            // Without a type the draft model is loaded but never asked.
            "--spec-type".into(),
            "draft-simple".into(),
            "--spec-draft-p-min".into(),
            cfg.draft_p_min.to_string(),
            "--spec-draft-n-max".into(),
            cfg.draft_max.to_string(),
            "--spec-draft-n-min".into(),
            cfg.draft_min.to_string(),
            "--threads-draft".into(),
            threads.to_string(),
            "--threads-batch-draft".into(),
            threads.to_string(),
        ]);
        if cfg!(feature = "cuda") {
            args.extend(["--n-gpu-layers-draft".into(), "999".into()]);
        }
    }
    if conversations > 1 {
        // Serving several conversations, its threads sleep while they wait instead of
        // spinning: the recogniser and the voice of the others need those cores between the
        // model's steps. One conversation keeps the faster spinning wait.
        args.extend(["--poll".into(), "0".into()]);
    }
    if cfg!(feature = "cuda") {
        args.extend(["--n-gpu-layers".into(), "999".into()]);
    }
    args
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
            // The model loader's own reason is the most useful line (the projector loader's
            // "clip_init: failed to load model '...': <why>" for a vision projector).
            let why = said
                .iter()
                .find(|l| l.contains("error loading model:") || l.contains("clip_init:"))
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
