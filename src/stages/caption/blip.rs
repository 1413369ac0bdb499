//! BLIP image captioning (candle-transformers `blip`) from a user's own weights folder: an RGB
//! image in, a caption out, greedy decoding from the `[DEC]` token to `[SEP]`.
//!
//! No registry ships BLIP weights; the folder layout is that of Salesforce/blip-image-captioning-
//! base or -large: `config.json`, `model.safetensors`, `tokenizer.json`.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::blip;
use image::RgbImage;
use serde_json::{json, Value};

use super::captioner::{CaptionError, Captioner};

const MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// The defaults of transformers' BlipConfig, for fields a config.json leaves out.
fn defaults() -> Value {
    json!({
        "projection_dim": 512,
        "image_text_hidden_size": 256,
        "text_config": {
            "vocab_size": 30524, "hidden_size": 768, "encoder_hidden_size": 768,
            "intermediate_size": 3072, "projection_dim": 768, "num_hidden_layers": 12,
            "num_attention_heads": 8, "max_position_embeddings": 512, "hidden_act": "gelu",
            "layer_norm_eps": 1e-12, "is_decoder": true, "bos_token_id": 30522, "sep_token_id": 102,
        },
        "vision_config": {
            "hidden_size": 768, "intermediate_size": 3072, "projection_dim": 512,
            "num_hidden_layers": 12, "num_attention_heads": 12, "image_size": 384, "patch_size": 16,
            "hidden_act": "gelu", "layer_norm_eps": 1e-5,
        },
    })
}

/// Fills what `user` lacks from `base`, recursively.
fn merge(base: &mut Value, user: Value) {
    match (base, user) {
        (Value::Object(b), Value::Object(u)) => {
            for (k, v) in u {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) if !v.is_null() => *slot = v,
        _ => {}
    }
}

pub struct BlipCaptioner {
    model: blip::BlipForConditionalGeneration,
    tokenizer: tokenizers::Tokenizer,
    device: Device,
    image_size: usize,
    bos: u32,
    sep: u32,
    max_tokens: usize,
    name: String,
}

impl BlipCaptioner {
    pub fn load(dir: &Path, max_tokens: usize) -> Result<BlipCaptioner, CaptionError> {
        let err = |detail: String| CaptionError::Load {
            path: dir.display().to_string(),
            detail,
        };
        if dir.as_os_str().is_empty() {
            return Err(err(
                "vision.blip_dir is not set: point it at a folder with config.json, model.safetensors and tokenizer.json".into(),
            ));
        }
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            if !dir.join(f).is_file() {
                return Err(err(format!(
                    "{f} is missing (a BLIP folder holds config.json, model.safetensors and tokenizer.json)"
                )));
            }
        }
        let text =
            std::fs::read_to_string(dir.join("config.json")).map_err(|e| err(e.to_string()))?;
        let user: Value =
            serde_json::from_str(&text).map_err(|e| err(format!("config.json: {e}")))?;
        let mut cfg_json = defaults();
        merge(&mut cfg_json, user);
        let cfg: blip::Config = serde_json::from_value(cfg_json.clone())
            .map_err(|e| err(format!("config.json is not a BLIP config: {e}")))?;
        let token = |key: &str| cfg_json["text_config"][key].as_u64().map(|v| v as u32);
        let (bos, sep) = (
            token("bos_token_id").unwrap_or(30522),
            token("sep_token_id").unwrap_or(102),
        );
        let device = crate::host::compute_device().map_err(|e| err(e.to_string()))?;
        let weights = dir.join("model.safetensors");
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device) }
            .map_err(|e| err(e.to_string()))?;
        let model = blip::BlipForConditionalGeneration::new(&cfg, vb)
            .map_err(|e| err(format!("model.safetensors does not fit config.json: {e}")))?;
        let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| err(format!("tokenizer.json: {e}")))?;
        Ok(BlipCaptioner {
            model,
            tokenizer,
            device,
            image_size: cfg.vision_config.image_size,
            bos,
            sep,
            max_tokens: max_tokens.max(1),
            name: format!("BLIP ({})", dir.display()),
        })
    }

    /// Resized to the model's square input, normalised with CLIP's mean and deviation.
    fn preprocess(&self, img: &RgbImage) -> candle_core::Result<Tensor> {
        let s = self.image_size as u32;
        let small = image::imageops::resize(img, s, s, image::imageops::FilterType::CatmullRom);
        let data: Vec<f32> = small
            .into_raw()
            .chunks_exact(3)
            .flat_map(|px| (0..3).map(move |c| (px[c] as f32 / 255.0 - MEAN[c]) / STD[c]))
            .collect();
        Tensor::from_vec(data, (s as usize, s as usize, 3), &self.device)?
            .permute((2, 0, 1))?
            .unsqueeze(0)
    }

    /// Greedy decoding; returns the caption's token ids (without `[DEC]` and `[SEP]`).
    pub fn generate(&mut self, img: &RgbImage) -> candle_core::Result<Vec<u32>> {
        self.model.reset_kv_cache();
        let pixels = self.preprocess(img)?;
        let image_embeds = self.model.vision_model().forward(&pixels)?;
        let mut ids = vec![self.bos];
        for step in 0..self.max_tokens {
            let start = if step == 0 { 0 } else { ids.len() - 1 };
            let input = Tensor::new(&ids[start..], &self.device)?.unsqueeze(0)?;
            let logits = self.model.text_decoder().forward(&input, &image_embeds)?;
            let logits = logits.squeeze(0)?;
            let last = logits.get(logits.dim(0)? - 1)?;
            let next = last.argmax(D::Minus1)?.to_scalar::<u32>()?;
            if next == self.sep {
                break;
            }
            ids.push(next);
        }
        Ok(ids[1..].to_vec())
    }
}

impl Captioner for BlipCaptioner {
    fn caption(&mut self, img: &RgbImage) -> Result<String, CaptionError> {
        let ids = self.generate(img).map_err(CaptionError::inference)?;
        let text = self
            .tokenizer
            .decode(&ids, true)
            .map_err(CaptionError::inference)?;
        Ok(text.trim().to_string())
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    /// Writes a BLIP folder with tiny random weights, a word-level tokenizer and a config.json that
    /// leaves most fields to the defaults, as real ones do.
    fn tiny_blip(dir: &Path, vocab: usize) {
        let config = json!({
            "text_config": {
                "vocab_size": vocab, "hidden_size": 16, "encoder_hidden_size": 16,
                "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                "max_position_embeddings": 64, "bos_token_id": vocab - 2, "sep_token_id": vocab - 1,
            },
            "vision_config": {
                "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                "num_attention_heads": 2, "image_size": 32, "patch_size": 16,
            },
        });
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let mut merged = defaults();
        merge(&mut merged, config);
        let cfg: blip::Config = serde_json::from_value(merged).unwrap();
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        blip::BlipForConditionalGeneration::new(&cfg, vb).unwrap();
        varmap.save(dir.join("model.safetensors")).unwrap();
        let words: serde_json::Map<String, Value> =
            (0..vocab).map(|i| (format!("w{i}"), json!(i))).collect();
        let tok = json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": words, "unk_token": "w0"},
        });
        std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    }

    #[test]
    fn loads_a_blip_folder_and_generates_from_random_weights() {
        let dir = tempfile::tempdir().unwrap();
        tiny_blip(dir.path(), 40);
        let mut c = BlipCaptioner::load(dir.path(), 6).unwrap();
        let img = RgbImage::from_fn(50, 40, |x, y| image::Rgb([x as u8 * 5, y as u8 * 6, 90]));
        let ids = c.generate(&img).unwrap();
        assert!(ids.len() <= 6 && ids.iter().all(|&i| i < 39), "{ids:?}");
        let text = c.caption(&img).unwrap();
        // The same image gives the same caption: the KV cache is reset between frames.
        assert_eq!(c.caption(&img).unwrap(), text);
        let words: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(words.len(), ids.len(), "{text}");
        assert!(words.iter().all(|w| w.starts_with('w')), "{text}");
    }

    #[test]
    fn a_folder_without_weights_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let e = BlipCaptioner::load(dir.path(), 5)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("model.safetensors is missing"), "{e}");
        let e = BlipCaptioner::load(Path::new(""), 5)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("vision.blip_dir is not set"), "{e}");
    }
}
