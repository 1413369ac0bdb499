//! The memory store's file: a path in, an open SQLite connection (WAL, migrated to this build's
//! schema) out. A file that is not a seesay store is an error and is left exactly as it was.

use std::io::Read;
use std::path::Path;

use rusqlite::{Connection, ErrorCode, OptionalExtension};

use super::MemoryError;

/// The schema, one step per version: `MIGRATIONS[i]` takes a store from version `i` to `i + 1`.
/// Steps are only ever appended.
const MIGRATIONS: &[&str] = &["CREATE TABLE items (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('seen', 'said', 'note')),
        text TEXT NOT NULL,
        at INTEGER NOT NULL,
        embedding BLOB NOT NULL,
        thumbnail BLOB,
        source TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX items_at ON items (at);"];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Opens (creating where needed) the store at `path` and brings its schema up to date.
pub fn open(path: &Path) -> Result<Connection, MemoryError> {
    check_header(path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| MemoryError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let sql = sql_err(path);
    let conn = Connection::open(path).map_err(&sql)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(&sql)?;
    // Read before anything is written: a damaged file fails here, untouched.
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(&sql)?;
    if !tables.is_empty() && !tables.iter().any(|t| t == "meta") {
        return Err(MemoryError::NotAStore {
            path: path.to_path_buf(),
            detail: "a SQLite database of something else".into(),
        });
    }
    // WAL: a crash mid-write leaves the last committed state; readers never block the writer.
    conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
        .map_err(&sql)?;
    conn.execute_batch("PRAGMA synchronous = NORMAL;")
        .map_err(&sql)?;
    migrate(conn, path)
}

/// The first bytes of an existing, non-empty file must be SQLite's: anything else is refused
/// before SQLite opens (and might write to) it.
fn check_header(path: &Path) -> Result<(), MemoryError> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return Ok(());
    };
    let mut head = Vec::with_capacity(16);
    let n = (&mut f)
        .take(16)
        .read_to_end(&mut head)
        .map_err(|source| MemoryError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if n > 0 && head.as_slice() != SQLITE_MAGIC {
        return Err(MemoryError::NotAStore {
            path: path.to_path_buf(),
            detail: "not a SQLite file".into(),
        });
    }
    Ok(())
}

fn migrate(mut conn: Connection, path: &Path) -> Result<Connection, MemoryError> {
    let sql = sql_err(path);
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    )
    .map_err(&sql)?;
    let version: i64 = get_meta(&conn, "schema_version")
        .map_err(&sql)?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if version > SCHEMA_VERSION {
        return Err(MemoryError::Newer {
            path: path.to_path_buf(),
            version,
            known: SCHEMA_VERSION,
        });
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction().map_err(&sql)?;
        tx.execute_batch(step).map_err(&sql)?;
        set_meta(&tx, "schema_version", &(i as i64 + 1).to_string()).map_err(&sql)?;
        tx.commit().map_err(&sql)?;
        tracing::debug!(path = %path.display(), version = i + 1, "memory store migrated");
    }
    Ok(conn)
}

pub fn get_meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

pub fn set_meta(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [key, value],
    )
    .map(|_| ())
}

/// Turns a SQLite error on `path` into a `MemoryError`; damage is told as such.
pub fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> MemoryError + '_ {
    move |source| match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => MemoryError::NotAStore {
            path: path.to_path_buf(),
            detail: source.to_string(),
        },
        _ => MemoryError::Sqlite {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// A vector as the bytes stored in a BLOB (f32, little-endian).
pub fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A stored BLOB back as a vector.
pub fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
