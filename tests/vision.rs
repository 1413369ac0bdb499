//! Seeing: the offline captioner on a real photo, an image question answered by the default
//! language model, the remote vision backend against a fake server, and bad images.

mod common;

use std::io::Write;
use std::path::Path;

use common::*;

fn chelsea() -> String {
    model_path("sample-chelsea").display().to_string()
}

#[test]
fn describe_sees_the_cat() {
    let out = ok(seesay(&["describe", &chelsea()]));
    assert!(words(&out).contains(&"cat".to_string()), "{out}");
}

#[test]
fn chat_with_an_image_answers_cat() {
    let out = ok(seesay(&[
        "chat",
        "--image",
        &chelsea(),
        "What animal is this?",
    ]));
    assert!(out.to_lowercase().contains("cat"), "{out}");
}

/// A small PNG file whose header claims `w` x `h` pixels: IHDR, a few bytes of IDAT, IEND.
fn png_header_only(path: &Path, w: u32, h: u32) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(b"\x89PNG\r\n\x1a\n").unwrap();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        let mut body = kind.to_vec();
        body.extend(data);
        f.write_all(&(data.len() as u32).to_be_bytes()).unwrap();
        f.write_all(&body).unwrap();
        f.write_all(&crc32fast::hash(&body).to_be_bytes()).unwrap();
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0, 0, 0, 0]);
    chunk(b"IEND", &[]);
}

#[test]
fn bad_images_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).display().to_string();
    std::fs::write(d("notes.png"), "just some text, not a picture").unwrap();
    assert_clear_error(&["describe", &d("notes.png")], &[], "not an image");

    let png = std::fs::read(chelsea()).unwrap();
    std::fs::write(d("half.png"), &png[..png.len() / 2]).unwrap();
    assert_clear_error(&["describe", &d("half.png")], &[], "truncated or corrupt");

    // 20000 x 20000 RGB would be 1.2 GB of pixels. Under a 1 GB address-space limit the command
    // must still end with the size error: the header is read, the pixels never allocated.
    png_header_only(&dir.path().join("huge.png"), 20000, 20000);
    let script = format!(
        "ulimit -v 1000000; exec {} describe {}",
        env!("CARGO_BIN_EXE_seesay"),
        d("huge.png")
    );
    let o = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is 20000x20000 pixels; the limit is 8192x8192"),
        "{err}"
    );

    assert_clear_error(&["describe", &d("missing.png")], &[], "missing.png");
    assert_clear_error(
        &["chat", "--image", &d("notes.png"), "What is this?"],
        &[],
        "not an image",
    );
}

#[test]
fn remote_vision_sends_an_image_url_part() {
    let (tx, rx) = std::sync::mpsc::channel();
    let url = fake_server(move |sock, body| {
        tx.send(body).unwrap();
        let reply =
            r#"{"choices":[{"message":{"role":"assistant","content":"A tabby cat on a rug."}}]}"#;
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            reply.len()
        );
        sock.write_all((head + reply).as_bytes()).unwrap();
    });
    let out = ok(seesay_env(
        &["describe", "--backend", "openai", &chelsea()],
        &[
            ("SEESAY_VISION_BASE_URL", &url),
            ("SEESAY_VISION_MODEL", "llava"),
        ],
        None,
        std::time::Duration::from_secs(60),
    ));
    assert_eq!(out.trim(), "A tabby cat on a rug.");
    let sent: serde_json::Value = serde_json::from_str(&rx.recv().unwrap()).unwrap();
    assert_eq!(sent["model"], "llava");
    let parts = &sent["messages"][0]["content"];
    assert_eq!(parts[0]["type"], "text");
    assert_eq!(parts[1]["type"], "image_url");
    let data = parts[1]["image_url"]["url"].as_str().unwrap();
    assert!(
        data.starts_with("data:image/jpeg;base64,/9j/"),
        "{}",
        &data[..40]
    );

    // A server that fails is a clear error, not a caption.
    let url = fake_server(|sock, _| {
        let body = r#"{"error":{"message":"no vision support"}}"#;
        let head = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        sock.write_all((head + body).as_bytes()).unwrap();
    });
    assert_clear_error(
        &["describe", "--backend", "openai", &chelsea()],
        &[("SEESAY_VISION_BASE_URL", &url)],
        "HTTP 400: no vision support",
    );
}
