//! The store's operations: text (and a picture) in, rows written in one transaction each; a
//! query in, the nearest memories by cosine similarity out; listing, forgetting and counting.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;
use rusqlite::{params, OptionalExtension, Row};

use super::db::{self, from_blob, sql_err, to_blob};
use super::{time, Hit, Item, Kind, Memory, MemoryConfig, MemoryError, Stats, Vectors};
use crate::stages::embed::{cosine, Embedder};

const ITEM_COLUMNS: &str = "id, kind, text, at, source, thumbnail IS NOT NULL";

fn item_of(r: &Row) -> rusqlite::Result<Item> {
    let kind: String = r.get(1)?;
    Ok(Item {
        id: r.get(0)?,
        kind: kind.parse().unwrap_or(Kind::Note),
        text: r.get(2)?,
        at: r.get(3)?,
        source: r.get(4)?,
        thumbnail: r.get(5)?,
    })
}

impl Memory {
    /// Opens the default store (`cfg.file()`) for adding and searching with `embedder`.
    pub fn open(cfg: &MemoryConfig, embedder: Arc<Embedder>) -> Result<Memory, MemoryError> {
        Memory::open_at(&cfg.file(), cfg, Some(embedder))
    }

    /// Opens the store at `path`; without an embedder it can list, count and forget, not add or
    /// search. Fails with `Disabled` when `cfg.enabled` is false: a turned-off memory creates no
    /// file and stores nothing.
    pub fn open_at(
        path: &Path,
        cfg: &MemoryConfig,
        embedder: Option<Arc<Embedder>>,
    ) -> Result<Memory, MemoryError> {
        if !cfg.enabled {
            return Err(MemoryError::Disabled);
        }
        let conn = db::open(path)?;
        let memory = Memory {
            conn,
            path: path.to_path_buf(),
            cfg: cfg.clone(),
            embedder,
            vectors: None,
        };
        memory.check_model()?;
        Ok(memory)
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The settings it was opened with.
    pub fn config(&self) -> &MemoryConfig {
        &self.cfg
    }

    /// Vectors from different models cannot be compared: a store remembers its model.
    fn check_model(&self) -> Result<(), MemoryError> {
        let Some(e) = &self.embedder else {
            return Ok(());
        };
        let now = format!("{} ({} dims)", e.name(), e.dims());
        let stored = db::get_meta(&self.conn, "embed_model").map_err(sql_err(&self.path))?;
        match stored {
            Some(stored) if stored != now => Err(MemoryError::ModelChanged {
                path: self.path.clone(),
                stored,
                now,
            }),
            Some(_) => Ok(()),
            None => db::set_meta(&self.conn, "embed_model", &now).map_err(sql_err(&self.path)),
        }
    }

    pub(super) fn embedder(&self) -> Result<&Embedder, MemoryError> {
        self.embedder.as_deref().ok_or(MemoryError::NoModel)
    }

    /// Remembers `text` now; returns its id. `thumbnail` (for what the camera showed) is kept as
    /// a small JPEG.
    pub fn add(
        &mut self,
        kind: Kind,
        text: &str,
        thumbnail: Option<&RgbImage>,
    ) -> Result<i64, MemoryError> {
        self.add_at(kind, text, thumbnail, time::now(), "")
    }

    /// Remembers `text` as of `at` (unix seconds), from `source`; then applies retention.
    pub fn add_at(
        &mut self,
        kind: Kind,
        text: &str,
        thumbnail: Option<&RgbImage>,
        at: i64,
        source: &str,
    ) -> Result<i64, MemoryError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(MemoryError::Empty);
        }
        let vector = self.embedder()?.embed_one(text)?;
        self.add_embedded(kind, text, vector, thumbnail, at, source)
    }

    /// Remembers `text` with its vector already made (unit length, by the store's model), and
    /// applies retention, in one transaction.
    pub fn add_embedded(
        &mut self,
        kind: Kind,
        text: &str,
        vector: Vec<f32>,
        thumbnail: Option<&RgbImage>,
        at: i64,
        source: &str,
    ) -> Result<i64, MemoryError> {
        let jpeg = match (thumbnail, self.cfg.thumbnail_side) {
            (Some(img), side) if side > 0 => Some(thumbnail_jpeg(img, side)?),
            _ => None,
        };
        let sql = sql_err(&self.path);
        let tx = self.conn.transaction().map_err(&sql)?;
        tx.execute(
            "INSERT INTO items (kind, text, at, embedding, thumbnail, source)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![kind.as_str(), text, at, to_blob(&vector), jpeg, source],
        )
        .map_err(&sql)?;
        let id = tx.last_insert_rowid();
        let dropped = retain(&tx, &self.cfg, time::now()).map_err(&sql)?;
        tx.commit().map_err(&sql)?;
        match &mut self.vectors {
            Some(v) if dropped == 0 => v.rows.push((id, vector)),
            _ => self.vectors = None,
        }
        Ok(id)
    }

    /// The `limit` memories most similar to `query`, best first.
    pub fn search(&mut self, query: &str, limit: usize) -> Result<Vec<Hit>, MemoryError> {
        let q = self.embedder()?.embed_one(query)?;
        self.search_vector(&q, limit)
    }

    /// The `limit` memories most similar to the unit vector `q`, best first.
    pub fn search_vector(&mut self, q: &[f32], limit: usize) -> Result<Vec<Hit>, MemoryError> {
        self.load_vectors()?;
        let rows = &self.vectors.as_ref().expect("loaded").rows;
        let mut scored: Vec<(f32, i64)> = rows.iter().map(|(id, v)| (cosine(q, v), *id)).collect();
        let by_score = |a: &(f32, i64), b: &(f32, i64)| b.0.total_cmp(&a.0);
        if scored.len() > limit && limit > 0 {
            scored.select_nth_unstable_by(limit - 1, by_score);
        }
        scored.truncate(limit);
        scored.sort_by(by_score);
        let mut hits = Vec::with_capacity(scored.len());
        for (score, id) in scored {
            // Forgotten by another process since the vectors were read: skipped.
            if let Some(item) = self.get(id)? {
                hits.push(Hit { item, score });
            }
        }
        Ok(hits)
    }

    /// Reads every vector once, and again after another connection changed the store.
    fn load_vectors(&mut self) -> Result<(), MemoryError> {
        let sql = sql_err(&self.path);
        let version: i64 = self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(&sql)?;
        if self.vectors.as_ref().is_some_and(|v| v.version == version) {
            return Ok(());
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, embedding FROM items")
            .map_err(&sql)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)?, from_blob(&r.get::<_, Vec<u8>>(1)?)))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(&sql)?;
        self.vectors = Some(Vectors { version, rows });
        Ok(())
    }

    /// One memory by id.
    pub fn get(&self, id: i64) -> Result<Option<Item>, MemoryError> {
        self.conn
            .prepare_cached(&format!("SELECT {ITEM_COLUMNS} FROM items WHERE id = ?1"))
            .and_then(|mut s| s.query_row([id], item_of).optional())
            .map_err(sql_err(&self.path))
    }

    /// The newest `limit` memories, newest first.
    pub fn list(&self, limit: usize) -> Result<Vec<Item>, MemoryError> {
        let sql = format!("SELECT {ITEM_COLUMNS} FROM items ORDER BY at DESC, id DESC LIMIT ?1");
        self.conn
            .prepare(&sql)
            .and_then(|mut s| s.query_map([limit as i64], item_of)?.collect())
            .map_err(sql_err(&self.path))
    }

    /// The JPEG kept with a memory, if any.
    pub fn thumbnail(&self, id: i64) -> Result<Option<Vec<u8>>, MemoryError> {
        self.conn
            .query_row("SELECT thumbnail FROM items WHERE id = ?1", [id], |r| {
                r.get::<_, Option<Vec<u8>>>(0)
            })
            .optional()
            .map(Option::flatten)
            .map_err(sql_err(&self.path))
    }

    /// Forgets one memory; false when there was none with that id.
    pub fn forget(&mut self, id: i64) -> Result<bool, MemoryError> {
        let n = self.delete("DELETE FROM items WHERE id = ?1", id)?;
        Ok(n > 0)
    }

    /// Forgets everything; returns how many memories went.
    pub fn forget_all(&mut self) -> Result<usize, MemoryError> {
        self.delete("DELETE FROM items WHERE ?1 = ?1", 0)
    }

    /// Forgets what is older than `at` (unix seconds); returns how many went.
    pub fn forget_before(&mut self, at: i64) -> Result<usize, MemoryError> {
        self.delete("DELETE FROM items WHERE at < ?1", at)
    }

    fn delete(&mut self, sql_text: &str, arg: i64) -> Result<usize, MemoryError> {
        let n = self
            .conn
            .execute(sql_text, [arg])
            .map_err(sql_err(&self.path))?;
        self.vectors = None;
        Ok(n)
    }

    /// What the store holds.
    pub fn stats(&self) -> Result<Stats, MemoryError> {
        let sql = sql_err(&self.path);
        let count = |kind: &str| -> Result<usize, MemoryError> {
            self.conn
                .query_row(
                    "SELECT count(*) FROM items WHERE kind = ?1 OR ?1 = ''",
                    [kind],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n as usize)
                .map_err(&sql)
        };
        let (oldest, newest) = self
            .conn
            .query_row("SELECT min(at), max(at) FROM items", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(&sql)?;
        let size = |p: PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
        let wal = PathBuf::from(format!("{}-wal", self.path.display()));
        Ok(Stats {
            path: self.path.clone(),
            items: count("")?,
            seen: count("seen")?,
            said: count("said")?,
            notes: count("note")?,
            oldest,
            newest,
            bytes: size(self.path.clone()) + size(wal),
            schema_version: db::SCHEMA_VERSION,
        })
    }
}

/// Applies the age and count limits inside `tx`; returns how many memories went.
fn retain(tx: &rusqlite::Transaction, cfg: &MemoryConfig, now: i64) -> rusqlite::Result<usize> {
    let mut n = 0;
    if cfg.max_age_days > 0.0 {
        let cutoff = now - (cfg.max_age_days * 86_400.0) as i64;
        n += tx.execute("DELETE FROM items WHERE at < ?1", [cutoff])?;
    }
    let count = |tx: &rusqlite::Transaction| {
        tx.query_row("SELECT count(*) FROM items", [], |r| r.get::<_, i64>(0))
    };
    if cfg.max_items > 0 && count(tx)? > cfg.max_items as i64 {
        n += tx.execute(
            "DELETE FROM items WHERE id IN
             (SELECT id FROM items ORDER BY at DESC, id DESC LIMIT -1 OFFSET ?1)",
            [cfg.max_items as i64],
        )?;
    }
    Ok(n)
}

/// `img` shrunk to at most `side` pixels a side, as a JPEG.
fn thumbnail_jpeg(img: &RgbImage, side: u32) -> Result<Vec<u8>, MemoryError> {
    let (w, h) = img.dimensions();
    let scale = (side as f32 / w.max(h).max(1) as f32).min(1.0);
    let size = |n: u32| ((n as f32 * scale).round() as u32).max(1);
    let small = image::imageops::thumbnail(img, size(w), size(h));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 75)
        .encode_image(&small)
        .map_err(|e| MemoryError::Thumbnail(e.to_string()))?;
    Ok(out)
}
