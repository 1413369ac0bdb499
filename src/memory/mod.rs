//! What seesay remembers: things seen (camera descriptions, with a small thumbnail), said (the
//! user's words) and noted in, each with its embedding, kept in a SQLite file; the memories
//! nearest a question out, as items with scores or as lines for the language model's context.
//!
//! One file per store (`[memory] path`); WAL and one transaction per change, so a crash leaves
//! the last committed state. Retention (`max_items`, `max_age_days`) is applied on every add.

mod db;
mod ops;
pub mod recall;
pub mod time;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::host;
use crate::stages::embed::{EmbedError, Embedder};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryError {
    #[error("memory is turned off (memory.enabled = false): nothing is stored or searched; set memory.enabled = true to use it")]
    Disabled,
    #[error("{path} is not a seesay memory store ({detail}); it was left as it is: move it away, or set memory.path to another file")]
    NotAStore { path: PathBuf, detail: String },
    #[error("memory store {path} has schema version {version}, newer than this seesay knows ({known}): update seesay")]
    Newer {
        path: PathBuf,
        version: i64,
        known: i64,
    },
    #[error("memory store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error("memory store {path} was made with the embedding model {stored}, not {now}: set embed.model = \"{stored}\", or use another memory.path")]
    ModelChanged {
        path: PathBuf,
        stored: String,
        now: String,
    },
    #[error("this needs the embedding model, but the store was opened without it")]
    NoModel,
    #[error("memory name {0:?}: use 1 to 64 letters, digits, '-' or '_'")]
    BadName(String),
    #[error("cannot read the time {0:?}: use RFC 3339 (2026-12-05T10:00:00Z), a date (2026-12-05), unix seconds, or an age such as 30m, 12h or 7d")]
    BadTime(String),
    #[error("unknown memory kind {0:?}: use seen, said or note")]
    BadKind(String),
    #[error("nothing to remember: the text is empty")]
    Empty,
    #[error("cannot make the thumbnail: {0}")]
    Thumbnail(String),
}

/// Memory settings (`[memory]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Keep and recall memories at all. false: nothing is stored, searched or recalled.
    pub enabled: bool,
    /// The store's file. Empty: `memory.sqlite` in the data folder (`$SEESAY_DATA_DIR`, else
    /// `$XDG_DATA_HOME/seesay`, else `~/.local/share/seesay`). Named server stores
    /// (`memory=NAME`) are `NAME.sqlite` beside it.
    pub path: String,
    /// Most memories kept; the oldest go first (0: no limit).
    pub max_items: usize,
    /// Memories older than this many days are forgotten (0: kept until the count limit).
    pub max_age_days: f64,
    /// Most memories recalled into the language model's context for one question.
    pub top_k: usize,
    /// Least cosine similarity (-1 to 1) between a question and a memory for it to be recalled.
    pub min_score: f64,
    /// Longest side in pixels of the JPEG thumbnail kept with what the camera showed (0: none).
    pub thumbnail_side: u32,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            enabled: true,
            path: String::new(),
            max_items: 20_000,
            max_age_days: 365.0,
            top_k: 4,
            min_score: 0.35,
            thumbnail_side: 96,
        }
    }
}

impl MemoryConfig {
    /// The default store's file.
    pub fn file(&self) -> PathBuf {
        if self.path.is_empty() {
            host::data_root().join("memory.sqlite")
        } else {
            host::expand_home(&self.path)
        }
    }

    /// The file of the store called `name` (beside the default one), after checking the name.
    pub fn named_file(&self, name: &str) -> Result<PathBuf, MemoryError> {
        let ok = (1..=64).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(MemoryError::BadName(name.to_string()));
        }
        let file = self.file();
        let dir = file.parent().map_or_else(PathBuf::new, Path::to_path_buf);
        Ok(dir.join(format!("{name}.sqlite")))
    }
}

/// What a memory is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// What the camera showed (a description, maybe with text read).
    Seen,
    /// What the user said.
    Said,
    /// Something the user asked to keep.
    Note,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Seen => "seen",
            Kind::Said => "said",
            Kind::Note => "note",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = MemoryError;
    fn from_str(s: &str) -> Result<Kind, MemoryError> {
        match s {
            "seen" => Ok(Kind::Seen),
            "said" => Ok(Kind::Said),
            "note" => Ok(Kind::Note),
            other => Err(MemoryError::BadKind(other.to_string())),
        }
    }
}

/// One memory, as listed and searched (JSON: `at` in RFC 3339 UTC).
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub id: i64,
    pub kind: Kind,
    pub text: String,
    /// When, in unix seconds.
    #[serde(serialize_with = "time::serialize_rfc3339")]
    pub at: i64,
    /// Where it came from ("cli", "chat", "run", "http", a camera), free text.
    pub source: String,
    /// Whether a thumbnail is kept (`Memory::thumbnail`).
    pub thumbnail: bool,
}

/// A search result: the memory and its cosine similarity to the query.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    #[serde(flatten)]
    pub item: Item,
    pub score: f32,
}

/// What a store holds.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub path: PathBuf,
    pub items: usize,
    pub seen: usize,
    pub said: usize,
    pub notes: usize,
    /// Unix seconds of the oldest and newest memory.
    pub oldest: Option<i64>,
    pub newest: Option<i64>,
    /// The file's size with its write-ahead log, in bytes.
    pub bytes: u64,
    pub schema_version: i64,
}

/// The vectors of every memory, kept between searches.
struct Vectors {
    /// SQLite's `data_version` when loaded: it changes when another connection (another seesay)
    /// commits, and then the vectors are read again.
    version: i64,
    rows: Vec<(i64, Vec<f32>)>,
}

/// An open memory store.
pub struct Memory {
    conn: Connection,
    path: PathBuf,
    cfg: MemoryConfig,
    embedder: Option<Arc<Embedder>>,
    vectors: Option<Vectors>,
}

#[cfg(test)]
mod tests;
