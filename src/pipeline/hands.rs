//! What the language model can do besides talking, in a run: the configuration in; the tools
//! (the clock, timers, what the camera shows, pictures) and the channel of things seesay says
//! on its own (a timer's end) out, with how such a thing is spoken as a turn of its own; and
//! the run's memory: what is recalled for a question, and what was said, kept.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::messages::{Say, What};
use super::models::lock;
use super::turns::Context;
use crate::config::Config;
use crate::memory::{time, Kind};
use crate::tools::{self, Eyes, MemoryNotebook, Notebook, Reach, Routed, Timers};

/// The tools the model may call, and what seesay says on its own (a timer's end), spoken as a
/// turn of its own once nobody speaks and nothing is being answered.
pub(crate) struct Hands {
    /// The tools, described only with questions that may need one.
    pub tools: Routed,
    pub announcements: Receiver<String>,
    /// The words last recalled for, and what was recalled: a question heard again at the
    /// verdict (the usual case) is not searched twice, so the prompt prefilled while the user
    /// paused is the prompt answered.
    recalled: Option<(String, Vec<String>)>,
}

impl Hands {
    /// The standard tools for a run (`look` when there is a camera); timers end into
    /// `announcements`.
    pub fn new(cfg: &Config, cx: &Arc<Context>, camera: bool) -> Hands {
        let (tx, announcements) = crossbeam_channel::unbounded::<String>();
        let eyes = camera.then(|| Arc::new(Scene(cx.clone())) as Arc<dyn Eyes>);
        let notebook = cx
            .memory
            .clone()
            .map(|m| Arc::new(MemoryNotebook::new(m)) as Arc<dyn Notebook>);
        let reach = Reach {
            timers: Some(Timers::new(move |text| {
                let _ = tx.send(text);
            })),
            eyes,
            notebook,
            // Descriptions hold the text read in the picture when reading is on.
            reads: camera && cfg.read.enabled,
        };
        let live = cfg.tools.for_live(&cfg.llm);
        Hands {
            tools: Routed::new(tools::standard(&live, &cfg.images, reach), &live),
            announcements,
            recalled: None,
        }
    }

    /// What memory recalls for a question heard as `text` (`None`: no memory in this run). A
    /// failed search is logged and the question is answered without memory.
    pub fn recall(&mut self, cx: &Context, text: &str) -> Option<Vec<String>> {
        let memory = cx.memory.as_ref()?;
        if let Some((words, lines)) = &self.recalled {
            if words == text {
                return Some(lines.clone());
            }
        }
        let t = std::time::Instant::now();
        match lock(memory).recall_context(text, time::now()) {
            Ok(lines) => {
                let ms = t.elapsed().as_millis() as u64;
                tracing::debug!(ms, recalled = lines.len(), "memory searched");
                self.recalled = Some((text.to_string(), lines.clone()));
                Some(lines)
            }
            Err(e) => {
                tracing::warn!("memory could not be searched: {e}");
                None
            }
        }
    }

    /// Keeps what the user said in this run's memory.
    pub fn keep_said(&self, cx: &Context, text: &str) {
        if let Some(m) = &cx.memory {
            if let Err(e) = lock(m).add_at(Kind::Said, text, None, time::now(), "run") {
                tracing::warn!("could not keep what was said: {e}");
            }
        }
    }
}

/// The camera as the run's captioner last described it.
struct Scene(Arc<Context>);

impl Eyes for Scene {
    fn look(&self) -> Result<String, String> {
        lock(&self.0.scene)
            .clone()
            .ok_or_else(|| "the camera has shown nothing yet".to_string())
    }
    /// The text read (OCR) in the newest described frame, from its description.
    fn read(&self) -> Result<String, String> {
        let scene = self.look()?;
        match scene.split_once(crate::stages::caption::reading::TEXT_IN_VIEW) {
            Some((_, text)) if !text.trim().is_empty() => Ok(text.trim().to_string()),
            _ => Ok("No text can be read in the camera's picture.".into()),
        }
    }
}

/// Speaks `text` as a turn of its own (an interruption stops it like any answer); false when
/// the voice is gone.
pub(crate) fn announce(text: String, tx: &Sender<Say>, cx: &Context) -> bool {
    let turn = cx.begin_turn();
    cx.turns.handle(turn);
    tracing::info!(turn, %text, "announcing");
    cx.event(turn, What::Announcement(text.clone()));
    tx.send(Say::Sentence { turn, text }).is_ok() && tx.send(Say::End { turn }).is_ok()
}
