//! The memory store as the model's notebook: `remember` keeps a note, `recall` searches
//! everything kept (notes, what was seen and said) by meaning, `forget` removes a note by its id
//! or the best match for some words. Results are short lines with their age, for the model.

use std::sync::{Arc, Mutex};

use super::senses::Notebook;
use crate::memory::recall::recall_line;
use crate::memory::{time, Kind, Memory};

/// A shared memory store behind the `Notebook` the tools use.
pub struct MemoryNotebook {
    memory: Arc<Mutex<Memory>>,
}

impl MemoryNotebook {
    pub fn new(memory: Arc<Mutex<Memory>>) -> MemoryNotebook {
        MemoryNotebook { memory }
    }
}

/// A match this close is what "forget the note about X" means; below it nothing is forgotten.
const FORGET_SCORE: f32 = 0.5;

impl Notebook for MemoryNotebook {
    fn remember(&self, text: &str) -> Result<String, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("there is nothing to remember".into());
        }
        let mut m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        let id = m.add(Kind::Note, text, None).map_err(|e| e.to_string())?;
        Ok(format!("Kept as note {id}: {text}"))
    }

    fn recall(&self, query: &str, limit: usize) -> Result<Vec<String>, String> {
        let mut m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        let floor = m.config().min_score as f32;
        let hits = m.search(query, limit.max(1)).map_err(|e| e.to_string())?;
        let now = time::now();
        let lines: Vec<String> = hits
            .iter()
            .filter(|h| h.score >= floor)
            .map(|h| recall_line(&h.item, now))
            .collect();
        Ok(match lines.is_empty() {
            true => vec!["Nothing relevant is remembered.".into()],
            false => lines,
        })
    }

    fn forget(&self, what: &str) -> Result<String, String> {
        let mut m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        let id = match what.trim().trim_start_matches('#').parse::<i64>() {
            Ok(id) => id,
            Err(_) => {
                let hits = m.search(what, 1).map_err(|e| e.to_string())?;
                match hits.first() {
                    Some(h) if h.score >= FORGET_SCORE => h.item.id,
                    _ => return Err(format!("nothing kept matches {what:?}")),
                }
            }
        };
        let item = m.get(id).map_err(|e| e.to_string())?;
        match (item, m.forget(id).map_err(|e| e.to_string())?) {
            (Some(item), true) => Ok(format!("Forgot: {}", item.text)),
            _ => Err(format!("there is no memory {id}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_note_is_refused_before_the_store_is_touched() {
        // The store is not needed to refuse: a notebook over a store that cannot embed would
        // fail otherwise, so the refusal must come first.
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::memory::MemoryConfig {
            path: dir.path().join("m.sqlite").display().to_string(),
            ..Default::default()
        };
        let m = Memory::open_at(&cfg.file(), &cfg, None).unwrap();
        let nb = MemoryNotebook::new(Arc::new(Mutex::new(m)));
        assert!(nb.remember("  ").unwrap_err().contains("nothing"));
        assert!(nb.forget("#41").unwrap_err().contains("41"));
    }
}
