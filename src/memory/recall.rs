//! Memories for the language model: a question in, short lines with relative times out ("about
//! 12 minutes ago the camera showed: a coffee mug on a desk"); and what the camera shows in, a
//! "seen" memory out when the scene changed.

use image::RgbImage;
use rusqlite::OptionalExtension;

use super::db::{from_blob, sql_err};
use super::{time, Item, Kind, Memory, MemoryError};
use crate::stages::embed::cosine;

/// A scene this similar to the last one remembered (cosine) is the same scene.
pub const SAME_SCENE: f32 = 0.9;

/// One memory as a line for the model, its age seen at `now` (unix seconds).
pub fn recall_line(item: &Item, now: i64) -> String {
    let ago = time::ago(item.at, now);
    let text = item.text.trim();
    match item.kind {
        Kind::Seen => format!("{ago} the camera showed: {text}"),
        Kind::Said => format!("{ago} the user said: {text}"),
        Kind::Note => format!("a note kept {ago}: {text}"),
    }
}

impl Memory {
    /// The lines to put in the model's context for `question`: the `top_k` memories nearest
    /// it with at least `min_score` similarity, best first. Empty when nothing relevant is
    /// kept: the caller then tells the model so, and it says it has not seen something rather
    /// than inventing it.
    pub fn recall_context(&mut self, question: &str, now: i64) -> Result<Vec<String>, MemoryError> {
        let (k, min) = (self.cfg.top_k, self.cfg.min_score);
        if k == 0 || question.trim().is_empty() {
            return Ok(Vec::new());
        }
        // What the user said before (mostly questions) is no fact to answer from, and a small
        // model reads an earlier "Did you see an elephant?" as having seen one, or an earlier
        // "What time is it?" as the question answered (it then made up the time instead of
        // asking the clock): recalled are what was seen and the notes kept; what was said
        // stays searchable (`seesay memory search`, the recall tool).
        Ok(self
            .search(question, k * 4)?
            .into_iter()
            .filter(|h| f64::from(h.score) >= min && h.item.kind != Kind::Said)
            .take(k)
            .map(|h| recall_line(&h.item, now))
            .collect())
    }

    /// Remembers what the camera shows (`description`, with `frame` as a thumbnail) unless the
    /// newest "seen" memory is the same scene ([`SAME_SCENE`]). Returns the new id, or `None`
    /// when the scene had not changed.
    pub fn remember_scene(
        &mut self,
        description: &str,
        frame: Option<&RgbImage>,
        source: &str,
    ) -> Result<Option<i64>, MemoryError> {
        if description.trim().is_empty() {
            return Ok(None);
        }
        let vector = self.embedder()?.embed_one(description.trim())?;
        let last: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT embedding FROM items WHERE kind = 'seen' ORDER BY at DESC, id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql_err(&self.path))?;
        if last.is_some_and(|b| cosine(&from_blob(&b), &vector) >= SAME_SCENE) {
            return Ok(None);
        }
        let id = self.add_embedded(
            Kind::Seen,
            description.trim(),
            vector,
            frame,
            time::now(),
            source,
        )?;
        Ok(Some(id))
    }
}
