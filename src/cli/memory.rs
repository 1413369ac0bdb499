//! `seesay memory add | search | list | forget | stats`: what seesay remembers, seen, searched and
//! deleted from the command line; text or `--json` (a list of objects with `id`, `kind`, `text`,
//! `at`, and `score` for search) out.

use std::sync::Arc;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use seesay::config::Config;
use seesay::memory::time::{self, parse_time, rfc3339};
use seesay::memory::{Item, Kind, Memory};
use seesay::stages::embed::Embedder;
use seesay::store::Store;

#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// Use the store called NAME (NAME.sqlite beside the default one, as `memory=NAME` on the
    /// server) instead of memory.path.
    #[arg(long, global = true, value_name = "NAME")]
    pub name: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: MemoryCommand,
}

#[derive(Debug, Subcommand)]
pub enum MemoryCommand {
    /// Keep a note (or another kind of memory).
    Add {
        /// The text to remember.
        #[arg(required = true)]
        text: Vec<String>,
        /// note, said or seen.
        #[arg(long, default_value = "note")]
        kind: String,
    },
    /// The memories most similar in meaning to QUERY, best first, with their similarity.
    Search {
        #[arg(required = true)]
        query: Vec<String>,
        /// How many results.
        #[arg(long, short, default_value_t = 5)]
        limit: usize,
    },
    /// The newest memories, newest first.
    List {
        /// How many.
        #[arg(long, short, default_value_t = 20)]
        limit: usize,
    },
    /// Forget one memory by id, everything (--all), or what is older than a time (--before).
    Forget {
        /// The id `list` or `search` shows.
        #[arg(required_unless_present_any = ["all", "before"], conflicts_with_all = ["all", "before"])]
        id: Option<i64>,
        /// Forget everything.
        #[arg(long, conflicts_with = "before")]
        all: bool,
        /// Forget what is older than TIME: RFC 3339, a date (2026-12-01), unix seconds, or an
        /// age (30m, 12h, 7d).
        #[arg(long, value_name = "TIME")]
        before: Option<String>,
    },
    /// How many memories there are, of which kinds, from when, and the file's size.
    Stats,
}

/// Opens the store the arguments name; with the embedding model when `model` is set.
fn open(cfg: &Config, a: &MemoryArgs, model: bool) -> Result<Memory> {
    let path = match &a.name {
        Some(n) => cfg.memory.named_file(n)?,
        None => cfg.memory.file(),
    };
    if !cfg.memory.enabled {
        return Err(seesay::memory::MemoryError::Disabled.into());
    }
    let embedder = if model {
        let store = Store::from_config(&cfg.models)?;
        Some(Arc::new(Embedder::open(&cfg.embed, &store)?))
    } else {
        None
    };
    Ok(Memory::open_at(&path, &cfg.memory, embedder)?)
}

pub fn memory(cfg: &Config, a: MemoryArgs) -> Result<()> {
    let json = a.json;
    match &a.command {
        MemoryCommand::Add { text, kind } => {
            let kind: Kind = kind.parse()?;
            let mut m = open(cfg, &a, true)?;
            let id = m.add_at(kind, &text.join(" "), None, time::now(), "cli")?;
            let item = m.get(id)?.into_iter().collect::<Vec<_>>();
            print_items(&item, json)
        }
        MemoryCommand::Search { query, limit } => {
            let mut m = open(cfg, &a, true)?;
            let hits = m.search(&query.join(" "), *limit)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&hits)?);
            } else {
                for h in &hits {
                    outln!("{:.3}  {}", h.score, item_line(&h.item));
                }
            }
            Ok(())
        }
        MemoryCommand::List { limit } => print_items(&open(cfg, &a, false)?.list(*limit)?, json),
        MemoryCommand::Forget { id, all, before } => {
            let n = forget(&mut open(cfg, &a, false)?, *id, *all, before.as_deref())?;
            if json {
                outln!("{}", serde_json::json!({ "forgotten": n }));
            } else {
                outln!("forgot {n} memor{}", if n == 1 { "y" } else { "ies" });
            }
            Ok(())
        }
        MemoryCommand::Stats => stats(&open(cfg, &a, false)?, json),
    }
}

/// Forgets one memory, all, or those older than `before`; returns how many went.
fn forget(m: &mut Memory, id: Option<i64>, all: bool, before: Option<&str>) -> Result<usize> {
    Ok(match (id, all, before) {
        (Some(id), _, _) => {
            if !m.forget(id)? {
                bail!("no memory with id {id}: `seesay memory list` shows the ids");
            }
            1
        }
        (None, true, _) => m.forget_all()?,
        (None, false, Some(t)) => m.forget_before(parse_time(t, time::now())?)?,
        (None, false, None) => bail!("say which: an ID, --all or --before TIME"),
    })
}

fn stats(m: &Memory, json: bool) -> Result<()> {
    let s = m.stats()?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    let when = |t: Option<i64>| t.map_or_else(|| "-".into(), rfc3339);
    outln!("store:   {}", s.path.display());
    outln!(
        "items:   {} ({} seen, {} said, {} notes)",
        s.items,
        s.seen,
        s.said,
        s.notes
    );
    outln!("oldest:  {}", when(s.oldest));
    outln!("newest:  {}", when(s.newest));
    outln!("size:    {:.1} kB", s.bytes as f64 / 1000.0);
    Ok(())
}

fn item_line(i: &Item) -> String {
    format!(
        "{:>5}  {:<4}  {}  {}",
        i.id,
        i.kind.as_str(),
        rfc3339(i.at),
        i.text
    )
}

fn print_items(items: &[Item], json: bool) -> Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(items)?);
    } else {
        for i in items {
            outln!("{}", item_line(i));
        }
    }
    Ok(())
}
