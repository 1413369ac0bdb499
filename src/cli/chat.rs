//! `seesay chat PROMPT` (a question in, the answer streamed out, optionally spoken; interactive
//! on a terminal) and `seesay describe IMAGE...` (images in, a sentence or two each out).

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::speech::{Speech, SpeechArgs};
use seesay::config::Config;
use seesay::media::image::{image_files, jpeg_data_uri, load_image};
use seesay::memory::{time, Kind, Memory};
use seesay::stages::caption;
use seesay::stages::embed::Embedder;
use seesay::stages::llm::{self, ChatModel, Conversation, Engine, Finish, LlmConfig, LlmError};
use seesay::stages::{lock, Cancel};
use seesay::store::Store;
use seesay::text::splitter::SentenceSplitter;
use seesay::tools::{self, MemoryNotebook, Notebook, Reach, Routed, Timers};

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The question. Without it: interactive on a terminal, else standard input.
    pub prompt: Option<String>,
    /// Local GGUF model (a name from `seesay models list` or a file).
    #[arg(long, short)]
    pub model: Option<String>,
    /// Backend: local or openai.
    #[arg(long)]
    pub backend: Option<String>,
    /// Sampling temperature (0: always the most likely token).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Longest answer, in tokens.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// System prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// An image the question is about: its description enters the model's context.
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// Neither recall memories for the question nor remember it (memory.enabled turns memory
    /// off for good).
    #[arg(long)]
    pub no_memory: bool,
    #[command(flatten)]
    pub speech: SpeechArgs,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Image files or folders of images (PNG, JPEG, WebP, BMP, GIF).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Captioner: efficientnet, blip, llama.cpp or openai (default: vision.backend).
    #[arg(long)]
    pub backend: Option<String>,
    /// What to write: text (a description) or html (a screenshot as a web page: its headings,
    /// paragraphs and buttons, from the text read in it, or written by the vision-language
    /// model when vision.backend is llama.cpp or openai; one image).
    #[arg(long = "as", value_name = "FORMAT", default_value = "text")]
    pub format: String,
    #[command(flatten)]
    pub speech: SpeechArgs,
}

pub fn chat(mut cfg: Config, mut a: ChatArgs) -> Result<()> {
    apply_llm_args(&mut cfg.llm, &mut a);
    let interactive = a.prompt.is_none() && std::io::stdin().is_terminal();
    let one_shot = one_shot_prompt(a.prompt.take(), interactive)?;
    let store = Store::from_config(&cfg.models)?;
    let engine = llm::Engine::load(&cfg.llm, &store, 1)?;
    let scene = match &a.image {
        Some(path) => Some(caption_image(&cfg, &store, path, Some(&engine))?),
        None => None,
    };
    let speech = Speech::start(&cfg, &a.speech)?;
    let model = engine.chat(&cfg.llm)?;
    let memory =
        open_memory(&cfg, &store, a.no_memory, scene.as_deref())?.map(|m| Arc::new(Mutex::new(m)));
    let tools = chat_tools(&cfg, memory.as_ref());
    let mut conv = Conversation::new(&cfg.llm);
    conv.set_tools(tools.system_prompt());
    conv.set_scene(scene);
    if let (Some(path), true) = (&a.image, engine.takes_images()) {
        // A model that takes images sees the picture itself too.
        let img = load_image(path, cfg.vision.max_side)?;
        conv.set_picture(Some(Arc::from(jpeg_data_uri(&img)?)));
    }
    let mut asker = Asker {
        model,
        tools,
        memory,
        cancel: Cancel::new(),
        max_tokens: cfg.llm.max_tokens,
    };
    let describe = asker.model.describe();
    if let Some(p) = one_shot {
        asker.ask(&mut conv, &p, speech.as_ref())?;
        return finish_speech(speech);
    }
    eprintln!("chatting with {describe} (empty line or Ctrl-D to quit)");
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            return finish_speech(speech);
        }
        if let Err(e) = asker.ask(&mut conv, &line, speech.as_ref()) {
            eprintln!("error: {}", super::one_line(&e));
        }
    }
}

/// Applies `--model`, `--backend`, `--temperature`, `--max-tokens` and `--system`.
fn apply_llm_args(llm: &mut LlmConfig, a: &mut ChatArgs) {
    if let Some(m) = a.model.take() {
        llm.model = m;
    }
    if let Some(b) = a.backend.take() {
        llm.backend = b;
    }
    if let Some(t) = a.temperature {
        llm.temperature = t;
    }
    if let Some(n) = a.max_tokens {
        llm.max_tokens = n;
    }
    if let Some(s) = a.system.take() {
        llm.system_prompt = s;
    }
}

/// The one question to answer: `prompt`, else all of standard input unless `interactive`
/// (then `None`). An empty question is an error.
fn one_shot_prompt(prompt: Option<String>, interactive: bool) -> Result<Option<String>> {
    let one_shot = match prompt {
        Some(p) => Some(p),
        None if interactive => None,
        None => {
            let mut t = String::new();
            std::io::stdin()
                .read_to_string(&mut t)
                .context("reading the prompt from standard input")?;
            Some(t)
        }
    };
    if let Some(p) = &one_shot {
        if p.trim().is_empty() {
            return Err(LlmError::EmptyPrompt.into());
        }
    }
    Ok(one_shot)
}

/// The chat's tools (timers that print when they end, the memory as a notebook), each question
/// offered those its words point at.
fn chat_tools(cfg: &Config, memory: Option<&Arc<Mutex<Memory>>>) -> Routed {
    // Timers end on their own thread: their text is printed when it comes.
    let timers = Timers::new(|text| outln!("\n{text}"));
    let reach = Reach {
        timers: Some(timers),
        notebook: memory
            .cloned()
            .map(|m| Arc::new(MemoryNotebook::new(m)) as Arc<dyn Notebook>),
        ..Reach::default()
    };
    let usable = cfg.tools.for_model(&cfg.llm);
    Routed::new(tools::standard(&usable, &cfg.images, reach), &usable)
}

/// Waits for the speech still to be spoken, if any.
fn finish_speech(speech: Option<Speech>) -> Result<()> {
    match speech {
        Some(s) => s.finish(),
        None => Ok(()),
    }
}

/// What answering a question needs: the model, its tools and the memory store.
struct Asker {
    model: Box<dyn ChatModel>,
    tools: Routed,
    memory: Option<Arc<Mutex<Memory>>>,
    cancel: Cancel,
    /// `llm.max_tokens`, named when an answer is cut there.
    max_tokens: usize,
}

impl Asker {
    /// Answers `q`: memories recalled for it, the answer streamed to standard output (and
    /// spoken), the exchange recorded in the conversation and the memory.
    fn ask(&mut self, conv: &mut Conversation, q: &str, speech: Option<&Speech>) -> Result<()> {
        if let Some(m) = &self.memory {
            conv.set_recalled(Some(lock(m).recall_context(q, time::now())?));
        }
        conv.with_tools(self.tools.with_tools(q));
        let msgs = conv.prompt_for(self.model.as_mut(), q)?;
        let mut out = std::io::stdout().lock();
        let mut splitter = SentenceSplitter::new(4);
        let registry = self.tools.for_question(q);
        let model = self.model.as_mut();
        let said = tools::answer(model, &msgs, registry, &self.cancel, &mut |chunk| {
            let _ = out.write_all(chunk.as_bytes());
            let _ = out.flush();
            if let Some(s) = speech {
                splitter.push(chunk).into_iter().for_each(|p| s.say(p));
            }
        })?;
        let (answer, finish) = (said.text, said.finish);
        if let Some(s) = speech {
            splitter.finish().into_iter().for_each(|p| s.say(p));
        }
        let _ = writeln!(out);
        if finish == Finish::Length {
            tracing::warn!("answer cut at llm.max_tokens ({})", self.max_tokens);
        }
        conv.record(q, &answer);
        if let Some(m) = &self.memory {
            lock(m).add_at(Kind::Said, q, None, time::now(), "chat")?;
        }
        Ok(())
    }
}

/// The default memory store with the embedding model, unless memory is off; what `--image`
/// showed is remembered as seen.
pub(super) fn open_memory(
    cfg: &Config,
    store: &Store,
    off: bool,
    scene: Option<&str>,
) -> Result<Option<Memory>> {
    if off || !cfg.memory.enabled {
        return Ok(None);
    }
    let embedder = Embedder::open(&cfg.embed, store)
        .context("memory needs the embedding model (or use --no-memory)")?;
    let mut m = Memory::open(&cfg.memory, std::sync::Arc::new(embedder))?;
    if let Some(seen) = scene {
        m.remember_scene(seen, None, "chat --image")?;
    }
    Ok(Some(m))
}

/// The language model's engine, loaded only for a captioner that runs in its server
/// (`caption::in_llm_server`).
pub(crate) fn llm_for_vision(cfg: &Config, store: &Store) -> Result<Option<Engine>> {
    Ok(match caption::in_llm_server(&cfg.vision) {
        true => Some(Engine::load(&cfg.llm, store, 1)?),
        false => None,
    })
}

/// Describes one image with the configured captioner, logging how long it took.
fn caption_image(cfg: &Config, store: &Store, path: &Path, llm: Option<&Engine>) -> Result<String> {
    let img = load_image(path, cfg.vision.max_side)?;
    let mut captioner =
        caption::open_with_reading(&cfg.vision, &cfg.read, &cfg.tts.onnxruntime, store, llm)?;
    let t = std::time::Instant::now();
    let caption = captioner.caption(&img)?;
    tracing::debug!(image = %path.display(), ms = t.elapsed().as_millis() as u64, %caption, "captioned");
    Ok(caption)
}

pub fn describe(mut cfg: Config, a: DescribeArgs) -> Result<()> {
    if let Some(b) = a.backend {
        cfg.vision.backend = b;
    }
    let mut files = Vec::new();
    for p in &a.images {
        files.extend(image_files(p)?);
    }
    match a.format.as_str() {
        "text" => {}
        "html" => return super::read::screenshot_html(&cfg, &files),
        other => bail!("--as {other}: use text or html"),
    }
    let store = Store::from_config(&cfg.models)?;
    let speech = Speech::start(&cfg, &a.speech)?;
    let engine = llm_for_vision(&cfg, &store)?;
    let mut captioner = caption::open_with_reading(
        &cfg.vision,
        &cfg.read,
        &cfg.tts.onnxruntime,
        &store,
        engine.as_ref(),
    )?;
    let mut failed = 0;
    for f in &files {
        let result = load_image(f, cfg.vision.max_side)
            .map_err(anyhow::Error::from)
            .and_then(|img| {
                let t = std::time::Instant::now();
                let c = captioner.caption(&img);
                tracing::debug!(image = %f.display(), ms = t.elapsed().as_millis() as u64, "captioned");
                Ok(c?)
            });
        match result {
            Ok(text) => {
                if files.len() > 1 {
                    outln!("{}: {text}", f.display());
                } else {
                    outln!("{text}");
                }
                if let Some(s) = &speech {
                    s.say(text);
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    if let Some(s) = speech {
        s.finish()?;
    }
    if failed > 0 {
        bail!("{failed} of {} images could not be described", files.len());
    }
    Ok(())
}
