//! The tools the language model can call: a request in the model's own words (a JSON call,
//! parsed tolerantly) in, the text of the tool's result out, fed back to the model until it
//! answers. Each tool is a small type with a name, a description, the JSON schema of its
//! arguments, a time limit and a `call`; the `Registry` runs calls on a worker thread so a slow
//! or failing tool gives the model an error to say, never a hang.

pub mod answer;
pub mod clock;
#[cfg(test)]
mod fakes;
pub mod images;
pub mod notebook;
pub mod parse;
pub mod registry;
pub mod route;
pub mod senses;
pub mod timers;
pub mod tool;

pub use self::answer::{answer, results_message, Answer};
pub use self::images::ImagesConfig;
pub use self::notebook::MemoryNotebook;
pub use self::parse::{parse_calls, ParsedCall};
pub use self::registry::{CallRecord, Registry};
pub use self::route::{may_need_tools, Routed};
pub use self::senses::{Eyes, Notebook};
pub use self::timers::Timers;
pub use self::tool::{Tool, ToolError, ToolsConfig};

/// What the standard tools reach: timers (whose end text goes where the caller decides), the
/// user's notebook and the camera, where there are such.
#[derive(Default)]
pub struct Reach {
    pub timers: Option<Timers>,
    pub notebook: Option<std::sync::Arc<dyn Notebook>>,
    pub eyes: Option<std::sync::Arc<dyn Eyes>>,
    /// Whether `eyes` can read text (OCR).
    pub reads: bool,
}

/// The standard tools: the clock always; timers, notes and the camera where `reach` has them;
/// pictures when `[images] base_url` is set. Empty when `tools.enabled` is false.
pub fn standard(cfg: &ToolsConfig, images: &ImagesConfig, reach: Reach) -> Registry {
    use std::sync::Arc;
    let mut r = Registry::new(cfg);
    if !cfg.enabled {
        return r;
    }
    r.add(Arc::new(clock::GetTime));
    if let Some(t) = reach.timers {
        r.add(Arc::new(timers::SetTimer(t.clone())));
        r.add(Arc::new(timers::ListTimers(t.clone())));
        r.add(Arc::new(timers::CancelTimer(t)));
    }
    for tool in reach
        .notebook
        .map(senses::NoteTool::all)
        .unwrap_or_default()
    {
        r.add(tool);
    }
    for tool in reach
        .eyes
        .map(|e| senses::EyesTool::all(e, reach.reads))
        .unwrap_or_default()
    {
        r.add(tool);
    }
    if let Some(p) = images::MakePicture::new(images) {
        r.add(Arc::new(p));
    }
    r
}
