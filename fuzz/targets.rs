// The fuzz targets' bodies, one function each: run by libFuzzer (fuzz_targets/*.rs) and, over
// the committed corpus and every crash found (fuzz/corpus, fuzz/regressions), by the test suite
// (tests/fuzz_corpus.rs). Included as source in both, so there is one copy.

/// The audio front door: any bytes an upload may hold, decoded and resampled to 16 kHz.
pub fn audio_decode(data: &[u8]) {
    for name in ["upload.wav", "upload.mp3", "upload.flac", "upload.ogg", "upload"] {
        if let Ok(pcm) = seesay::media::audio::decode_bytes(data.to_vec(), name, 16_000) {
            assert!(pcm.iter().all(|s| s.is_finite()));
        }
    }
}

/// The Wyoming frame reader: a byte stream in, events (and their audio format) out.
pub fn wyoming_event(data: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut r = tokio::io::BufReader::new(data);
        while let Ok(Some(ev)) = seesay::server::wyoming::read_event(&mut r).await {
            if ev.kind == "audio-start" {
                let _ = seesay::server::wyoming::audio_format(&ev.data);
            }
        }
    });
}

/// A conversation's WebSocket messages: text (JSON with a data-URI snapshot) and binary (PCM).
pub fn ws_message(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = seesay::server::client::client_message(text, 64);
    }
    let _ = seesay::media::audio::from_pcm16(data);
}

/// A chat completion request body: JSON, content parts, image data URIs and their images.
pub fn chat_request(data: &[u8]) {
    let Ok(req) = serde_json::from_slice::<seesay::server::openai::ChatRequest>(data) else {
        return;
    };
    if let Ok((_, images)) = seesay::server::openai::chat_messages(&req) {
        for bytes in images {
            let _ = seesay::media::image::decode_image(&bytes, "image", 64);
        }
    }
}

/// A multipart upload as the transcription endpoint reads it (the input's first line is the
/// boundary, the rest the body).
pub fn multipart_form(data: &[u8]) {
    use axum::extract::{FromRequest, Multipart};
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let Ok(boundary) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    let body = data.get(split + 1..).unwrap_or_default().to_vec();
    let Ok(req) = axum::http::Request::builder()
        .method("POST")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(axum::body::Body::from(body))
    else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        if let Ok(form) = Multipart::from_request(req, &()).await {
            let _ = seesay::server::state::read_form(form).await;
        }
    });
}

/// The CTranslate2 (faster-whisper) model reader of the importer.
pub fn ct2_model(data: &[u8]) {
    if let Ok(tensors) = seesay::store::import_ct2::read_ct2(data) {
        let _ = seesay::store::import_ct2::hparams(&tensors);
    }
}

/// The GGUF reader of the importer (metadata and every tensor).
pub fn gguf_model(data: &[u8]) {
    let mut r = std::io::Cursor::new(data);
    let _ = seesay::store::ggml::read_gguf(&mut r, std::path::Path::new("fuzz.gguf"));
}

/// The legacy PyTorch checkpoint reader of the importer (pickle, storages, strides).
pub fn pth_model(data: &[u8]) {
    let _ = seesay::store::import_pth::read_legacy_pth_from(data, std::path::Path::new("fuzz.pth"));
}

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target by name.
pub const TARGETS: [(&str, Target); 8] = [
    ("audio_decode", audio_decode),
    ("wyoming_event", wyoming_event),
    ("ws_message", ws_message),
    ("chat_request", chat_request),
    ("multipart_form", multipart_form),
    ("ct2_model", ct2_model),
    ("gguf_model", gguf_model),
    ("pth_model", pth_model),
];
