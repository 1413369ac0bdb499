//! `seesay chat PROMPT` (a question in, the answer streamed out, optionally spoken; interactive
//! on a terminal) and `seesay describe IMAGE...` (images in, a sentence or two each out).

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::speech::{Speech, SpeechArgs};
use seesay::config::Config;
use seesay::media::image::{image_files, load_image};
use seesay::memory::{time, Kind, Memory};
use seesay::stages::caption;
use seesay::stages::embed::Embedder;
use seesay::stages::llm::{self, Conversation, Engine, Finish, LlmError};
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
    /// Captioner: efficientnet, blip or openai (default: vision.backend).
    #[arg(long)]
    pub backend: Option<String>,
    /// What to write: text (a description) or html (a screenshot as a web page: its headings,
    /// paragraphs and buttons, from the text read in it; one image).
    #[arg(long = "as", value_name = "FORMAT", default_value = "text")]
    pub format: String,
    #[command(flatten)]
    pub speech: SpeechArgs,
}

pub fn chat(mut cfg: Config, a: ChatArgs) -> Result<()> {
    let llm = &mut cfg.llm;
    if let Some(m) = a.model {
        llm.model = m;
    }
    if let Some(b) = a.backend {
        llm.backend = b;
    }
    if let Some(t) = a.temperature {
        llm.temperature = t;
    }
    if let Some(n) = a.max_tokens {
        llm.max_tokens = n;
    }
    if let Some(s) = a.system {
        llm.system_prompt = s;
    }
    let interactive = a.prompt.is_none() && std::io::stdin().is_terminal();
    let one_shot = match a.prompt {
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
    let store = Store::from_config(&cfg.models)?;
    let engine = llm::Engine::load(&cfg.llm, &store, 1)?;
    let scene = match &a.image {
        Some(path) => Some(caption_image(&cfg, &store, path, Some(&engine))?),
        None => None,
    };
    let mut speech = Speech::start(&cfg, &a.speech)?;
    let mut model = engine.chat(&cfg.llm)?;
    let memory =
        open_memory(&cfg, &store, a.no_memory, scene.as_deref())?.map(|m| Arc::new(Mutex::new(m)));
    // Timers end on their own thread: their text is printed when it comes.
    let timers = Timers::new(|text| outln!("\n{text}"));
    let reach = Reach {
        timers: Some(timers),
        notebook: memory
            .clone()
            .map(|m| Arc::new(MemoryNotebook::new(m)) as Arc<dyn Notebook>),
        ..Reach::default()
    };
    let usable = cfg.tools.for_model(&cfg.llm);
    let tools = Routed::new(tools::standard(&usable, &cfg.images, reach), &usable);
    let mut conv = Conversation::new(&cfg.llm);
    conv.set_tools(tools.system_prompt());
    conv.set_scene(scene);
    let cancel = Cancel::new();
    let describe = model.describe();
    let mut ask = |conv: &mut Conversation, q: &str| -> Result<()> {
        if let Some(m) = &memory {
            conv.set_recalled(Some(lock(m).recall_context(q, time::now())?));
        }
        conv.with_tools(tools.with_tools(q));
        let msgs = conv.prompt_for(model.as_mut(), q)?;
        let mut out = std::io::stdout().lock();
        let mut splitter = SentenceSplitter::new(4);
        let registry = tools.for_question(q);
        let said = tools::answer(model.as_mut(), &msgs, registry, &cancel, &mut |chunk| {
            let _ = out.write_all(chunk.as_bytes());
            let _ = out.flush();
            if let Some(s) = &speech {
                splitter.push(chunk).into_iter().for_each(|p| s.say(p));
            }
        })?;
        let (answer, finish) = (said.text, said.finish);
        if let Some(s) = &speech {
            splitter.finish().into_iter().for_each(|p| s.say(p));
        }
        let _ = writeln!(out);
        if finish == Finish::Length {
            tracing::warn!("answer cut at llm.max_tokens ({})", cfg.llm.max_tokens);
        }
        conv.record(q, &answer);
        if let Some(m) = &memory {
            lock(m).add_at(Kind::Said, q, None, time::now(), "chat")?;
        }
        Ok(())
    };
    if let Some(p) = one_shot {
        ask(&mut conv, &p)?;
        return match speech.take() {
            Some(s) => s.finish(),
            None => Ok(()),
        };
    }
    eprintln!("chatting with {describe} (empty line or Ctrl-D to quit)");
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            return match speech.take() {
                Some(s) => s.finish(),
                None => Ok(()),
            };
        }
        if let Err(e) = ask(&mut conv, &line) {
            eprintln!("error: {}", super::one_line(&e));
        }
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
