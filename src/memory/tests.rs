//! The store's plumbing, with hand-made unit vectors instead of the model (the model's own
//! behaviour is tested in tests/memory.rs).

use super::db::SCHEMA_VERSION;
use super::recall::recall_line;
use super::*;

fn cfg() -> MemoryConfig {
    MemoryConfig {
        max_age_days: 0.0,
        ..MemoryConfig::default()
    }
}

/// A unit vector pointing mostly along axis `i` of 4.
fn v(i: usize, tilt: f32) -> Vec<f32> {
    let mut x = [tilt; 4];
    x[i] = 1.0;
    let n = x.iter().map(|a| a * a).sum::<f32>().sqrt();
    x.iter().map(|a| a / n).collect()
}

fn open(path: &Path, cfg: &MemoryConfig) -> Memory {
    Memory::open_at(path, cfg, None).unwrap()
}

fn put(m: &mut Memory, kind: Kind, text: &str, vector: Vec<f32>, at: i64) -> i64 {
    m.add_embedded(kind, text, vector, None, at, "test")
        .unwrap()
}

#[test]
fn search_ranks_by_cosine_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/m.sqlite");
    let now = time::now();
    {
        let mut m = open(&path, &cfg());
        put(&mut m, Kind::Note, "axis zero", v(0, 0.0), now - 10);
        put(&mut m, Kind::Seen, "axis one", v(1, 0.0), now - 5);
        put(&mut m, Kind::Said, "near one", v(1, 0.3), now);
    }
    let mut m = open(&path, &cfg());
    let hits = m.search_vector(&v(1, 0.0), 2).unwrap();
    let texts: Vec<_> = hits.iter().map(|h| h.item.text.as_str()).collect();
    assert_eq!(texts, ["axis one", "near one"]);
    assert!((hits[0].score - 1.0).abs() < 1e-5);
    assert!(hits[1].score < hits[0].score);
    assert_eq!(m.search_vector(&v(0, 0.0), 10).unwrap().len(), 3);
    let listed: Vec<_> = m.list(10).unwrap().into_iter().map(|i| i.text).collect();
    assert_eq!(
        listed,
        ["near one", "axis one", "axis zero"],
        "newest first"
    );
    assert!(matches!(m.search("anything", 1), Err(MemoryError::NoModel)));
}

#[test]
fn retention_keeps_the_newest_and_drops_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let now = time::now();
    let c = MemoryConfig {
        max_items: 3,
        max_age_days: 1.0,
        ..MemoryConfig::default()
    };
    let mut m = open(&dir.path().join("m.sqlite"), &c);
    put(
        &mut m,
        Kind::Note,
        "two days old",
        v(0, 0.0),
        now - 2 * 86_400,
    );
    assert_eq!(m.stats().unwrap().items, 0, "too old to keep at all");
    for i in 0..5 {
        put(
            &mut m,
            Kind::Note,
            &format!("n{i}"),
            v(i % 4, 0.0),
            now - 100 + i as i64,
        );
    }
    let left: Vec<_> = m.list(10).unwrap().into_iter().map(|i| i.text).collect();
    assert_eq!(left, ["n4", "n3", "n2"]);
    // The cached vectors follow what was dropped.
    assert_eq!(m.search_vector(&v(0, 0.0), 10).unwrap().len(), 3);
}

#[test]
fn forgetting_by_id_time_and_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = open(&dir.path().join("m.sqlite"), &cfg());
    let a = put(&mut m, Kind::Note, "old", v(0, 0.0), 1_000);
    put(&mut m, Kind::Note, "middle", v(1, 0.0), 2_000);
    put(&mut m, Kind::Note, "new", v(2, 0.0), 3_000);
    assert_eq!(m.search_vector(&v(0, 0.0), 5).unwrap().len(), 3);
    assert!(m.forget(a).unwrap());
    assert!(!m.forget(a).unwrap(), "already gone");
    assert_eq!(m.forget_before(2_500).unwrap(), 1);
    assert_eq!(m.search_vector(&v(0, 0.0), 5).unwrap().len(), 1);
    assert_eq!(m.forget_all().unwrap(), 1);
    assert!(m.list(10).unwrap().is_empty());
    assert!(m.search_vector(&v(0, 0.0), 5).unwrap().is_empty());
    let s = m.stats().unwrap();
    assert_eq!((s.items, s.oldest), (0, None));
}

#[test]
fn another_connection_sees_new_memories_at_its_next_search() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.sqlite");
    let mut reader = open(&path, &cfg());
    assert!(reader.search_vector(&v(0, 0.0), 5).unwrap().is_empty());
    let mut writer = open(&path, &cfg());
    put(&mut writer, Kind::Note, "from elsewhere", v(0, 0.0), 1);
    let hits = reader.search_vector(&v(0, 0.0), 5).unwrap();
    assert_eq!(hits.len(), 1, "the cached vectors were read again");
    writer.forget_all().unwrap();
    assert!(reader.search_vector(&v(0, 0.0), 5).unwrap().is_empty());
}

#[test]
fn a_file_that_is_not_a_store_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.sqlite");
    let junk = b"these are my tax records, not a database".repeat(200);
    std::fs::write(&path, &junk).unwrap();
    let err = Memory::open_at(&path, &cfg(), None).err().unwrap();
    assert!(matches!(err, MemoryError::NotAStore { .. }), "{err}");
    assert!(err.to_string().contains("left as it is"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), junk);
    assert!(!dir.path().join("m.sqlite-wal").exists());

    // A SQLite header with damage after it.
    let mut damaged = b"SQLite format 3\0".to_vec();
    damaged.extend(std::iter::repeat_n(0xa5u8, 8192));
    std::fs::write(&path, &damaged).unwrap();
    let err = Memory::open_at(&path, &cfg(), None).err().unwrap();
    assert!(matches!(err, MemoryError::NotAStore { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), damaged);

    // Another program's SQLite database.
    let other = dir.path().join("other.sqlite");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE songs (title TEXT);")
        .unwrap();
    let err = Memory::open_at(&other, &cfg(), None).err().unwrap();
    assert!(err.to_string().contains("something else"), "{err}");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.sqlite");
    drop(open(&path, &cfg()));
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
            [(SCHEMA_VERSION + 1).to_string()],
        )
        .unwrap();
    let err = Memory::open_at(&path, &cfg(), None).err().unwrap();
    assert!(matches!(err, MemoryError::Newer { .. }), "{err}");
}

#[test]
fn turned_off_memory_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.sqlite");
    let off = MemoryConfig {
        enabled: false,
        ..cfg()
    };
    let err = Memory::open_at(&path, &off, None).err().unwrap();
    assert!(matches!(err, MemoryError::Disabled));
    assert!(!path.exists());
}

#[test]
fn thumbnails_are_small_jpegs() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = open(&dir.path().join("m.sqlite"), &cfg());
    let img = image::RgbImage::from_pixel(640, 480, image::Rgb([200, 30, 30]));
    let id = m
        .add_embedded(Kind::Seen, "a red wall", v(0, 0.0), Some(&img), 5, "cam")
        .unwrap();
    let jpeg = m.thumbnail(id).unwrap().unwrap();
    let back = image::load_from_memory(&jpeg).unwrap();
    assert_eq!((back.width(), back.height()), (96, 72));
    assert!(m.get(id).unwrap().unwrap().thumbnail);
}

#[test]
fn recall_lines_say_what_and_when() {
    let item = |kind, at| Item {
        id: 1,
        kind,
        text: "a coffee mug on a desk".into(),
        at,
        source: String::new(),
        thumbnail: false,
    };
    let now = 1_000_000;
    assert_eq!(
        recall_line(&item(Kind::Seen, now - 12 * 60), now),
        "about 12 minutes ago the camera showed: a coffee mug on a desk"
    );
    assert_eq!(
        recall_line(&item(Kind::Said, now - 2 * 86_400), now),
        "2 days ago the user said: a coffee mug on a desk"
    );
    assert_eq!(
        recall_line(&item(Kind::Note, now - 3 * 3600), now),
        "a note kept about 3 hours ago: a coffee mug on a desk"
    );
}

#[test]
fn store_names_are_checked() {
    let c = MemoryConfig {
        path: "/data/seesay/memory.sqlite".into(),
        ..cfg()
    };
    assert_eq!(
        c.named_file("kitchen-2").unwrap(),
        PathBuf::from("/data/seesay/kitchen-2.sqlite")
    );
    for bad in ["", "../etc/passwd", "a b", "x.sqlite", &"n".repeat(65)] {
        assert!(
            matches!(c.named_file(bad), Err(MemoryError::BadName(_))),
            "{bad}"
        );
    }
}

#[test]
fn items_serialise_with_rfc3339_times() {
    let hit = Hit {
        item: Item {
            id: 7,
            kind: Kind::Note,
            text: "t".into(),
            at: 0,
            source: "cli".into(),
            thumbnail: false,
        },
        score: 0.5,
    };
    let json = serde_json::to_value(&hit).unwrap();
    assert_eq!(json["at"], "1970-01-01T00:00:00Z");
    assert_eq!(json["kind"], "note");
    assert_eq!(json["id"], 7);
    assert_eq!(json["score"], 0.5);
}
