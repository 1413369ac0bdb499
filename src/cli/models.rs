//! `seesay models list | fetch | verify | import | path`: the model store from the command line.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Subcommand;

use seesay::config::Config;
use seesay::store::ggml::Quantize;
use seesay::store::import_ct2::convert_ct2_dir;
use seesay::store::{FileState, Store};

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List the models seesay knows, and which are present.
    List,
    /// Download, convert and verify models (default: the default set).
    Fetch {
        /// Model names; none means every default model.
        names: Vec<String>,
        /// Fetch every model in the manifest.
        #[arg(long)]
        all: bool,
    },
    /// Check present models against their sha256 (every file is read and hashed).
    Verify {
        /// Model names; none means every model that is present.
        names: Vec<String>,
        /// Trust the hash remembered for a file whose size and modification time are unchanged.
        #[arg(long)]
        fast: bool,
    },
    /// Convert your own CTranslate2 / faster-whisper Whisper folder to a whisper.cpp ggml file.
    Import {
        /// Folder with model.bin (or model.bin.part1..N) and vocabulary.txt/json.
        dir: PathBuf,
        /// Output file.
        #[arg(long, short)]
        output: PathBuf,
        /// Weight precision: f16 or q8_0.
        #[arg(long, default_value = "q8_0")]
        quantize: String,
    },
    /// Print where a model's file is.
    Path { name: String },
}

pub fn models(cfg: &Config, cmd: ModelsCommand) -> Result<()> {
    let store = Store::from_config(&cfg.models)?;
    match cmd {
        ModelsCommand::List => {
            outln!("models folder: {}", store.dir.display());
            outln!("download cache: {}", store.downloads.display());
            for m in &store.manifest.model {
                let present = m.outputs.iter().all(|o| store.dir.join(&o.file).is_file());
                outln!(
                    "{:<18} {:<8} {:<8} {:<8} {}",
                    m.name,
                    m.kind,
                    if m.default { "default" } else { "" },
                    if present { "present" } else { "missing" },
                    m.about
                );
            }
            Ok(())
        }
        ModelsCommand::Fetch { names, all } => {
            let names: Vec<String> = if all {
                store
                    .manifest
                    .model
                    .iter()
                    .map(|m| m.name.clone())
                    .collect()
            } else if names.is_empty() {
                store
                    .manifest
                    .defaults()
                    .iter()
                    .map(|m| m.name.clone())
                    .collect()
            } else {
                names
            };
            store.fetch(&names, &mut |line| eprintln!("{line}"))?;
            Ok(())
        }
        ModelsCommand::Verify { names, fast } => {
            let entries: Vec<_> = if names.is_empty() {
                store.manifest.model.iter().collect()
            } else {
                names
                    .iter()
                    .map(|n| store.manifest.get(n))
                    .collect::<Result<_, _>>()?
            };
            let mut bad = 0;
            for e in entries {
                for (path, state) in store.verify(e, fast)? {
                    let word = match &state {
                        FileState::Ok => "ok".to_string(),
                        FileState::Missing if names.is_empty() => continue,
                        FileState::Missing => "MISSING".to_string(),
                        FileState::Corrupt { actual } => format!("CORRUPT (sha256 {actual})"),
                    };
                    if state != FileState::Ok {
                        bad += 1;
                    }
                    outln!("{:<18} {word:<8} {}", e.name, path.display());
                }
            }
            if bad > 0 {
                bail!("{bad} model files failed verification: run `seesay models fetch` to repair them");
            }
            Ok(())
        }
        ModelsCommand::Import {
            dir,
            output,
            quantize,
        } => {
            let q: Quantize = quantize.parse()?;
            let mel = store.path_of("whisper-assets")?;
            let h = convert_ct2_dir(&dir, &mel, q, &output)?;
            eprintln!(
                "wrote {} ({} encoder / {} decoder layers, width {}, {q})",
                output.display(),
                h.n_audio_layer,
                h.n_text_layer,
                h.n_audio_state
            );
            Ok(())
        }
        ModelsCommand::Path { name } => {
            outln!("{}", store.resolve(&name)?.display());
            Ok(())
        }
    }
}
