//! What the language model can do besides talking, in a run: the configuration in; the tools
//! (the clock, timers, what the camera shows, pictures) and the channel of things seesay says
//! on its own (a timer's end) out, with how such a thing is spoken as a turn of its own.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::messages::{Say, What};
use super::models::lock;
use super::turns::Context;
use crate::config::Config;
use crate::tools::{self, Eyes, Reach, Registry, Timers};

/// The tools the model may call, and what seesay says on its own (a timer's end), spoken as a
/// turn of its own once nobody speaks and nothing is being answered.
pub(crate) struct Hands {
    pub tools: Registry,
    pub announcements: Receiver<String>,
}

impl Hands {
    /// The standard tools for a run (`look` when there is a camera); timers end into
    /// `announcements`.
    pub fn new(cfg: &Config, cx: &Arc<Context>, camera: bool) -> Hands {
        let (tx, announcements) = crossbeam_channel::unbounded::<String>();
        let eyes = camera.then(|| Arc::new(Scene(cx.clone())) as Arc<dyn Eyes>);
        let reach = Reach {
            timers: Some(Timers::new(move |text| {
                let _ = tx.send(text);
            })),
            eyes,
            ..Reach::default()
        };
        Hands {
            tools: tools::standard(&cfg.tools, &cfg.images, reach),
            announcements,
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
    fn read(&self) -> Result<String, String> {
        Err("reading text in the camera's picture is not available".into())
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
