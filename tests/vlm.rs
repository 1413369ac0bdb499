//! The llama.cpp vision route (`vision.backend = "llama.cpp"`), end to end on a tiny random-weight
//! vision-language model that the test writes (`tiny_vlm.py`, with the `gguf` package of the
//! pinned llama.cpp source): seesay's supervised llama-server loads the model and its projector,
//! takes an image, and answers tokens; a bad projector is a clear error. No registry ships a
//! vision-language model, so what it says is garbage: these tests check the plumbing.

mod common;

use std::path::{Path, PathBuf};

use common::server::python;
use common::*;
use seesay::stages::caption::llama::LlamaCaptioner;
use seesay::stages::caption::{Captioner, VisionConfig};
use seesay::stages::llm::server::{Files, LlamaServer};
use seesay::stages::llm::LlmConfig;

/// The `gguf-py` folder of the llama.cpp source that scripts/setup built llama-server from.
fn gguf_py() -> PathBuf {
    let version = seesay::stages::llm::llama::LLAMA_CPP_SOURCE
        .split_once("==")
        .unwrap()
        .1;
    seesay::host::cache_root()
        .join("llama.cpp")
        .join(format!("llama_cpp_python-{version}"))
        .join("vendor/llama.cpp/gguf-py")
}

/// Writes the tiny model and its projector in `dir`: (model, mmproj).
fn tiny_vlm(dir: &Path) -> (PathBuf, PathBuf) {
    let gguf = gguf_py();
    assert!(
        gguf.is_dir(),
        "{} is missing: run scripts/setup",
        gguf.display()
    );
    python(
        include_str!("tiny_vlm.py"),
        &[gguf.to_str().unwrap(), dir.to_str().unwrap()],
    );
    (dir.join("tiny-vlm.gguf"), dir.join("tiny-vlm-mmproj.gguf"))
}

/// Writes `dir`/config.toml: the model and its projector in `[section]` (vision or llm), then
/// `rest` (more of that section, then other sections).
fn config_file(dir: &Path, section: &str, model: &Path, mmproj: &Path, rest: &str) -> PathBuf {
    let cfg = dir.join("config.toml");
    let toml = format!(
        "[{section}]\nmodel = {:?}\nmmproj = {:?}\n{rest}",
        model.display().to_string(),
        mmproj.display().to_string()
    );
    std::fs::write(&cfg, toml).unwrap();
    cfg
}

fn vision_config(model: &Path, mmproj: &Path) -> VisionConfig {
    VisionConfig {
        backend: "llama.cpp".into(),
        model: model.display().to_string(),
        mmproj: mmproj.display().to_string(),
        max_tokens: 8,
        ..VisionConfig::default()
    }
}

/// The prompt tokens the server counted for one chat request (with or without an image part).
fn prompt_tokens(server: &LlamaServer, image: Option<&str>) -> u64 {
    let mut content = vec![serde_json::json!({"type": "text", "text": "What is this?"})];
    if let Some(url) = image {
        content.push(serde_json::json!({"type": "image_url", "image_url": {"url": url}}));
    }
    let body = serde_json::json!({
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 4,
    });
    let reply = ureq::post(&format!("{}/v1/chat/completions", server.base_url()))
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
        .unwrap()
        .into_string()
        .unwrap();
    let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
    reply["usage"]["prompt_tokens"].as_u64().unwrap()
}

#[test]
fn a_vision_language_model_takes_the_image_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (model, mmproj) = tiny_vlm(dir.path());
    let photo = image::open(model_path("sample-chelsea")).unwrap().to_rgb8();

    // seesay's captioner: the server starts with the projector, and the frame is answered.
    let cfg = vision_config(&model, &mmproj);
    let store = seesay::store::Store::from_config(&Default::default()).unwrap();
    let mut captioner = LlamaCaptioner::start(&cfg, &store).unwrap();
    let said = captioner.caption(&photo).unwrap();
    assert!(!said.trim().is_empty());
    assert!(captioner.describe().contains("tiny-vlm.gguf"));

    // The image became tokens of the prompt (the projector ran), on a server seesay supervises.
    let files = Files {
        mmproj: Some(mmproj.clone()),
        ..Files::model(model.clone())
    };
    let server = LlamaServer::start(&LlmConfig::default(), &files, 1).unwrap();
    let uri = seesay::media::image::jpeg_data_uri(&photo).unwrap();
    let (without, with) = (
        prompt_tokens(&server, None),
        prompt_tokens(&server, Some(&uri)),
    );
    assert!(
        with > without + 8,
        "{without} prompt tokens without the image, {with} with it"
    );
}

#[test]
fn describe_runs_the_configured_vision_language_model() {
    let dir = tempfile::tempdir().unwrap();
    let (model, mmproj) = tiny_vlm(dir.path());
    let rest = "backend = \"llama.cpp\"\nmax_tokens = 8\n[read]\nenabled = false\n";
    let cfg = config_file(dir.path(), "vision", &model, &mmproj, rest);
    let photo = model_path("sample-chelsea");
    let o = seesay_env(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "describe",
            photo.to_str().unwrap(),
        ],
        &[("RUST_LOG", "seesay=info,seesay::llama_server=debug")],
        None,
        std::time::Duration::from_secs(120),
    );
    let log = stderr(&o);
    assert!(log.contains("loaded multimodal model"), "{log}");
    let said = ok(o);
    assert!(!said.trim().is_empty(), "{log}");
}

#[test]
fn a_bad_projector_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (model, mmproj) = tiny_vlm(dir.path());
    let photo = model_path("sample-chelsea");
    let describe = |toml: String, expect: &str| {
        let cfg = dir.path().join("bad.toml");
        std::fs::write(&cfg, format!("[read]\nenabled = false\n[vision]\n{toml}")).unwrap();
        assert_clear_error(
            &[
                "--config",
                cfg.to_str().unwrap(),
                "describe",
                photo.to_str().unwrap(),
            ],
            &[],
            expect,
        );
    };
    let line = |k: &str, p: &Path| format!("{k} = {:?}\n", p.display().to_string());
    let backend = "backend = \"llama.cpp\"\n";

    // Damaged: the projector cut to half its size. llama.cpp's own reason is named.
    let half = dir.path().join("half-mmproj.gguf");
    let bytes = std::fs::read(&mmproj).unwrap();
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    describe(
        format!(
            "{backend}{}{}",
            line("model", &model),
            line("mmproj", &half)
        ),
        "failed to load model",
    );
    // Not GGUF at all, missing, or not set.
    let text = dir.path().join("notes.gguf");
    std::fs::write(&text, "not a model").unwrap();
    describe(
        format!(
            "{backend}{}{}",
            line("model", &model),
            line("mmproj", &text)
        ),
        "not a GGUF file",
    );
    describe(
        format!(
            "{backend}{}{}",
            line("model", &model),
            line("mmproj", &dir.path().join("no.gguf"))
        ),
        "no.gguf",
    );
    describe(
        format!("{backend}{}", line("model", &model)),
        "vision.mmproj",
    );
}

#[test]
fn a_language_model_with_a_projector_also_describes_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let (model, mmproj) = tiny_vlm(dir.path());
    let rest = "max_tokens = 8\n[vision]\nbackend = \"llama.cpp\"\nmodel = \"\"\nmax_tokens = 8\n\
                [read]\nenabled = false\n";
    let cfg = config_file(dir.path(), "llm", &model, &mmproj, rest);
    let photo = model_path("sample-chelsea");
    let o = seesay_env(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "chat",
            "--no-memory",
            "--image",
            photo.to_str().unwrap(),
            "What is this?",
        ],
        &[("RUST_LOG", "seesay=info,seesay::llama_server=debug")],
        None,
        std::time::Duration::from_secs(120),
    );
    let log = stderr(&o);
    // One server, started once with the projector, described the image and answered.
    assert_eq!(log.matches("llama-server is ready").count(), 1, "{log}");
    assert!(log.contains("loaded multimodal model"), "{log}");
    assert!(!ok(o).trim().is_empty(), "{log}");

    // Without a projector, an empty vision.model is refused with the reason.
    let bare = dir.path().join("bare.toml");
    let toml = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &bare,
        toml.replace(
            &format!("mmproj = {:?}\n", mmproj.display().to_string()),
            "",
        ),
    )
    .unwrap();
    assert_clear_error(
        &[
            "--config",
            bare.to_str().unwrap(),
            "describe",
            photo.to_str().unwrap(),
        ],
        &[],
        "llm.mmproj",
    );
}

#[test]
fn the_picture_comes_with_the_question_to_a_model_that_takes_images() {
    use seesay::stages::llm::{Conversation, Engine};
    use seesay::stages::Cancel;
    let dir = tempfile::tempdir().unwrap();
    let (model, mmproj) = tiny_vlm(dir.path());
    let cfg = LlmConfig {
        model: model.display().to_string(),
        mmproj: mmproj.display().to_string(),
        max_tokens: 4,
        ..LlmConfig::default()
    };
    let store = seesay::store::Store::from_config(&Default::default()).unwrap();
    let engine = Engine::load(&cfg, &store, 1).unwrap();
    assert!(engine.takes_images());
    let mut llm = engine.chat(&cfg).unwrap();
    let mut conv = Conversation::new(&cfg);
    // The prompt tokens the server counted for the question, as the conversation asks it.
    let mut ask = |conv: &mut Conversation| {
        let msgs = conv.prompt_for(llm.as_mut(), "What is this?").unwrap();
        llm.generate(&msgs, &Cancel::new(), &mut |_| {}).unwrap();
        llm.stats().unwrap().prompt_tokens
    };
    let without = ask(&mut conv);
    let photo = image::open(model_path("sample-chelsea")).unwrap().to_rgb8();
    let uri = seesay::media::image::jpeg_data_uri(&photo).unwrap();
    conv.set_picture(Some(uri.into()));
    let with = ask(&mut conv);
    // The tiny projector makes 16 tokens of a picture.
    assert!(
        with >= without + 16,
        "{without} prompt tokens without the picture, {with} with it"
    );
}

#[test]
fn a_screenshot_goes_to_the_vision_language_model_for_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let (model, mmproj) = tiny_vlm(dir.path());
    let cfg = config_file(
        dir.path(),
        "vision",
        &model,
        &mmproj,
        "backend = \"llama.cpp\"\n",
    );
    let page = model_path("sample-page");
    let said = ok(seesay(&[
        "--config",
        cfg.to_str().unwrap(),
        "describe",
        "--as",
        "html",
        page.to_str().unwrap(),
    ]));
    // What the random model wrote, not the layout of the text read (which starts with a doctype).
    assert!(!said.trim().is_empty());
    assert!(!said.contains("<!doctype"), "{said}");
}
