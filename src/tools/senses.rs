//! The tools that reach memory and the camera: `remember`, `recall`, `forget` through a
//! `Notebook`, and `look`, `read` through `Eyes`; the arguments in, the notebook's or the
//! camera's words out. The traits are implemented where memory and the camera live.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::tool::{string_schema, text_arg, Tool, ToolError};

/// Notes the user asks to keep, searchable by meaning. Errors are texts for the model to say.
pub trait Notebook: Send + Sync {
    /// Keeps `text`; returns a confirmation (e.g. the note's id).
    fn remember(&self, text: &str) -> Result<String, String>;
    /// The notes (and other memories) most relevant to `query`, best first, as short lines.
    fn recall(&self, query: &str, limit: usize) -> Result<Vec<String>, String>;
    /// Forgets what `what` names (a note's id or words); returns what was forgotten.
    fn forget(&self, what: &str) -> Result<String, String>;
}

/// The camera's current frame, described. Errors are texts for the model to say.
pub trait Eyes: Send + Sync {
    /// What the current frame shows.
    fn look(&self) -> Result<String, String>;
    /// The text readable in the current frame.
    fn read(&self) -> Result<String, String>;
}

/// `remember`, `recall` or `forget`.
pub struct NoteTool {
    kind: NoteKind,
    notebook: Arc<dyn Notebook>,
}

#[derive(Clone, Copy)]
enum NoteKind {
    Remember,
    Recall,
    Forget,
}

impl NoteTool {
    /// The three notebook tools.
    pub fn all(notebook: Arc<dyn Notebook>) -> Vec<Arc<dyn Tool>> {
        [NoteKind::Remember, NoteKind::Recall, NoteKind::Forget]
            .into_iter()
            .map(|kind| {
                Arc::new(NoteTool {
                    kind,
                    notebook: notebook.clone(),
                }) as Arc<dyn Tool>
            })
            .collect()
    }
}

impl Tool for NoteTool {
    fn name(&self) -> &str {
        match self.kind {
            NoteKind::Remember => "remember",
            NoteKind::Recall => "recall",
            NoteKind::Forget => "forget",
        }
    }
    fn description(&self) -> &str {
        match self.kind {
            NoteKind::Remember => {
                "Only when the user tells you to remember or note something: keep it as a note. \
                 Never for a question."
            }
            NoteKind::Recall => {
                "Search your memory (notes, what was said, what the camera saw) for something, \
                 e.g. where the user left a thing."
            }
            NoteKind::Forget => {
                "Only when the user tells you to forget something: forget that note."
            }
        }
    }
    fn parameters(&self) -> Value {
        match self.kind {
            NoteKind::Remember => string_schema(&[("text", "What to remember.")], 1),
            NoteKind::Recall => string_schema(&[("query", "What to look for.")], 1),
            NoteKind::Forget => string_schema(&[("what", "The note to forget.")], 1),
        }
    }
    fn limit(&self) -> Duration {
        Duration::from_secs(10)
    }
    fn call(&self, args: Value) -> Result<String, ToolError> {
        // The model's first string argument, whatever it named it.
        let first = args
            .as_object()
            .and_then(|o| o.values().find_map(|v| v.as_str().map(str::trim)))
            .filter(|s| !s.is_empty());
        let key = match self.kind {
            NoteKind::Remember => "text",
            NoteKind::Recall => "query",
            NoteKind::Forget => "what",
        };
        let arg = text_arg(&args, key)
            .or(first)
            .ok_or_else(|| ToolError::arguments(self.name(), format!("give {key}")))?;
        let done = match self.kind {
            NoteKind::Remember => self.notebook.remember(arg),
            NoteKind::Forget => self.notebook.forget(arg),
            NoteKind::Recall => self
                .notebook
                .recall(arg, 5)
                .map(|found| match found.is_empty() {
                    true => format!("Nothing about '{arg}' is in memory."),
                    false => found.join("\n"),
                }),
        };
        done.map_err(ToolError::Failed)
    }
}

/// `look` or `read`.
pub struct EyesTool {
    reads: bool,
    eyes: Arc<dyn Eyes>,
}

impl EyesTool {
    /// `look`, and `read` when `can_read` (a text reader is there).
    pub fn all(eyes: Arc<dyn Eyes>, can_read: bool) -> Vec<Arc<dyn Tool>> {
        let mut tools: Vec<Arc<dyn Tool>> = vec![Arc::new(EyesTool {
            reads: false,
            eyes: eyes.clone(),
        })];
        if can_read {
            tools.push(Arc::new(EyesTool { reads: true, eyes }));
        }
        tools
    }
}

impl Tool for EyesTool {
    fn name(&self) -> &str {
        match self.reads {
            false => "look",
            true => "read",
        }
    }
    fn description(&self) -> &str {
        match self.reads {
            false => "Look through the camera now: what it shows.",
            true => "Read the text the camera shows now (a page, a sign, a screen).",
        }
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {}, "required": []})
    }
    fn limit(&self) -> Duration {
        Duration::from_secs(15)
    }
    fn call(&self, _args: Value) -> Result<String, ToolError> {
        match self.reads {
            false => self.eyes.look(),
            true => self.eyes.read(),
        }
        .map_err(ToolError::Failed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Pad(Mutex<Vec<String>>);

    impl Notebook for Pad {
        fn remember(&self, text: &str) -> Result<String, String> {
            self.0.lock().unwrap().push(text.to_string());
            Ok(format!("Noted as note {}.", self.0.lock().unwrap().len()))
        }
        fn recall(&self, query: &str, limit: usize) -> Result<Vec<String>, String> {
            let notes = self.0.lock().unwrap();
            Ok(notes
                .iter()
                .filter(|n| n.contains(query))
                .take(limit)
                .cloned()
                .collect())
        }
        fn forget(&self, _what: &str) -> Result<String, String> {
            Err("memory is switched off (memory.enabled = false)".into())
        }
    }

    struct Blind;

    impl Eyes for Blind {
        fn look(&self) -> Result<String, String> {
            Ok("a mug on a desk".into())
        }
        fn read(&self) -> Result<String, String> {
            Err("no camera frame yet".into())
        }
    }

    #[test]
    fn notes_go_through_the_notebook() {
        let tools = NoteTool::all(Arc::new(Pad::default()));
        let [remember, recall, forget] = &tools[..] else {
            panic!("three tools")
        };
        assert_eq!(
            remember
                .call(json!({"text": "keys in the drawer"}))
                .unwrap(),
            "Noted as note 1."
        );
        // An argument under another name is taken too.
        remember.call(json!({"note": "bike in the shed"})).unwrap();
        assert_eq!(
            recall.call(json!({"query": "keys"})).unwrap(),
            "keys in the drawer"
        );
        assert!(recall
            .call(json!({"query": "car"}))
            .unwrap()
            .contains("Nothing about 'car'"));
        assert!(recall.call(json!({})).is_err());
        let e = forget
            .call(json!({"what": "keys"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("memory.enabled"), "{e}");
    }

    #[test]
    fn eyes_look_and_read() {
        let tools = EyesTool::all(Arc::new(Blind), true);
        assert_eq!(tools[0].name(), "look");
        assert_eq!(tools[0].call(json!({})).unwrap(), "a mug on a desk");
        assert_eq!(
            tools[1].call(json!({})).unwrap_err().to_string(),
            "no camera frame yet"
        );
        assert_eq!(EyesTool::all(Arc::new(Blind), false).len(), 1);
    }
}
