//! The offline captioner: EfficientNet-Lite0 (ImageNet-1k) in candle. An RGB frame in, the top
//! ImageNet labels out, turned into a short description ("a photo that looks like a cat (a tabby)").
//!
//! The weights use the EfficientNet-PyTorch names (`_conv_stem`, `_blocks.N._expand_conv`, ...);
//! Lite0 is B0 without squeeze-and-excitation, with ReLU6 and TensorFlow's "same" padding.

use std::path::Path;

use candle_core::{DType, Device, Module, ModuleT, Tensor, D};
use candle_nn::{BatchNorm, Conv2d, Conv2dConfig, Linear, VarBuilder};
use image::RgbImage;

use super::captioner::{CaptionError, Captioner};

/// Input side in pixels.
pub const IMAGE_SIZE: u32 = 224;
const BN_EPS: f64 = 1e-3;

/// (repeats, kernel, stride, expand ratio, in channels, out channels) of each stage of B0/Lite0.
const STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

fn relu6(x: &Tensor) -> candle_core::Result<Tensor> {
    x.clamp(0f32, 6f32)
}

/// A convolution with TensorFlow "same" padding (extra pixel on the bottom/right) and batch norm.
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
    kernel: usize,
    stride: usize,
    depthwise: bool,
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    fn new(
        vb: &VarBuilder,
        conv: &str,
        bn: &str,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        groups: usize,
    ) -> candle_core::Result<ConvBn> {
        let cfg = Conv2dConfig {
            stride,
            groups,
            ..Default::default()
        };
        let conv = candle_nn::conv2d_no_bias(cin, cout, kernel, cfg, vb.pp(conv))?;
        let bn = candle_nn::batch_norm(cout, BN_EPS, vb.pp(bn))?;
        Ok(ConvBn {
            conv,
            bn,
            kernel,
            stride,
            depthwise: groups > 1 && groups == cin,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let pad = |n: usize| {
            let out = n.div_ceil(self.stride);
            ((out - 1) * self.stride + self.kernel).saturating_sub(n)
        };
        let (ph, pw) = (pad(h), pad(w));
        let x = if ph > 0 || pw > 0 {
            x.pad_with_zeros(2, ph / 2, ph - ph / 2)?
                .pad_with_zeros(3, pw / 2, pw - pw / 2)?
        } else {
            x.clone()
        };
        let y = if self.depthwise {
            depthwise(&x, self.conv.weight(), self.stride)?
        } else {
            self.conv.forward(&x)?
        };
        self.bn.forward_t(&y, false)
    }
}

/// A depthwise convolution (one kxk filter per channel, no padding) as k² shifted multiply-adds.
/// candle runs a grouped convolution as one convolution per group, which for 1,152 channels made a
/// frame take ~570 ms; this takes a fraction of that.
fn depthwise(x: &Tensor, weight: &Tensor, stride: usize) -> candle_core::Result<Tensor> {
    use candle_core::IndexOp;
    let (_, c, h, w) = x.dims4()?;
    let k = weight.dim(2)?;
    let (oh, ow) = ((h - k) / stride + 1, (w - k) / stride + 1);
    // Room for the stride-sized reshape below; the extra zeros are never selected.
    let x = if stride > 1 {
        x.pad_with_zeros(2, 0, stride - 1)?
            .pad_with_zeros(3, 0, stride - 1)?
    } else {
        x.clone()
    };
    let mut acc: Option<Tensor> = None;
    for dy in 0..k {
        for dx in 0..k {
            let mut patch = x.narrow(2, dy, stride * oh)?.narrow(3, dx, stride * ow)?;
            if stride > 1 {
                patch = patch
                    .contiguous()?
                    .reshape((1, c, oh, stride, ow, stride))?
                    .i((.., .., .., 0, .., 0))?;
            }
            let wk = weight.i((.., 0, dy, dx))?.reshape((1, c, 1, 1))?;
            let term = patch.broadcast_mul(&wk)?;
            acc = Some(match acc {
                None => term,
                Some(a) => (a + term)?,
            });
        }
    }
    acc.ok_or_else(|| candle_core::Error::Msg("empty kernel".into()))
}

impl ConvBn {}

/// Mobile inverted bottleneck: expand (1x1) → depthwise (kxk) → project (1x1), residual when the
/// shape is kept.
struct Block {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
}

impl Block {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        if let Some(e) = &self.expand {
            h = relu6(&e.forward(&h)?)?;
        }
        h = relu6(&self.depthwise.forward(&h)?)?;
        h = self.project.forward(&h)?;
        if self.residual {
            h = (h + x)?;
        }
        Ok(h)
    }
}

/// EfficientNet-Lite0: image tensor (1, 3, 224, 224) in, 1,000 class logits out.
pub struct EfficientNetLite0 {
    stem: ConvBn,
    blocks: Vec<Block>,
    head: ConvBn,
    fc: Linear,
}

impl EfficientNetLite0 {
    pub fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        let stem = ConvBn::new(&vb, "_conv_stem", "_bn0", 3, 32, 3, 2, 1)?;
        let mut blocks = Vec::new();
        for &(repeats, k, stride, expand, cin, cout) in &STAGES {
            for r in 0..repeats {
                let (cin, stride) = if r == 0 { (cin, stride) } else { (cout, 1) };
                let vb = vb.pp(format!("_blocks.{}", blocks.len()));
                let mid = cin * expand;
                let expand_conv = if expand != 1 {
                    Some(ConvBn::new(&vb, "_expand_conv", "_bn0", cin, mid, 1, 1, 1)?)
                } else {
                    None
                };
                blocks.push(Block {
                    expand: expand_conv,
                    depthwise: ConvBn::new(
                        &vb,
                        "_depthwise_conv",
                        "_bn1",
                        mid,
                        mid,
                        k,
                        stride,
                        mid,
                    )?,
                    project: ConvBn::new(&vb, "_project_conv", "_bn2", mid, cout, 1, 1, 1)?,
                    residual: stride == 1 && cin == cout,
                });
            }
        }
        let head = ConvBn::new(&vb, "_conv_head", "_bn1", 320, 1280, 1, 1, 1)?;
        let fc = candle_nn::linear(1280, 1000, vb.pp("_fc"))?;
        Ok(EfficientNetLite0 {
            stem,
            blocks,
            head,
            fc,
        })
    }

    /// Class probabilities for one image tensor of shape (1, 3, 224, 224).
    pub fn probabilities(&self, x: &Tensor) -> candle_core::Result<Vec<f32>> {
        let mut h = relu6(&self.stem.forward(x)?)?;
        for b in &self.blocks {
            h = b.forward(&h)?;
        }
        h = relu6(&self.head.forward(&h)?)?;
        let pooled = h.mean(D::Minus1)?.mean(D::Minus1)?;
        let logits = self.fc.forward(&pooled)?;
        candle_nn::ops::softmax(&logits, D::Minus1)?
            .squeeze(0)?
            .to_vec1::<f32>()
    }
}

/// Center crop of 87.5 % of the shorter side (the usual ImageNet evaluation crop), resized to
/// 224x224, scaled to [-1, 1] as the TensorFlow Lite models were trained.
pub fn preprocess(img: &RgbImage, device: &Device) -> candle_core::Result<Tensor> {
    let (w, h) = img.dimensions();
    let side = ((w.min(h) as f32) * 0.875).round().max(1.0) as u32;
    let (x0, y0) = ((w - side) / 2, (h - side) / 2);
    let crop = image::imageops::crop_imm(img, x0, y0, side, side).to_image();
    let small = image::imageops::resize(
        &crop,
        IMAGE_SIZE,
        IMAGE_SIZE,
        image::imageops::FilterType::Triangle,
    );
    let data: Vec<f32> = small
        .into_raw()
        .into_iter()
        .map(|v| (v as f32 - 127.5) / 127.5)
        .collect();
    let s = IMAGE_SIZE as usize;
    Tensor::from_vec(data, (s, s, 3), device)?
        .permute((2, 0, 1))?
        .unsqueeze(0)
}

/// Reads the ImageNet class names from torchvision's `_meta.py` (`_IMAGENET_CATEGORIES = [...]`).
pub fn read_labels(path: &Path) -> Result<Vec<String>, CaptionError> {
    let bad = |detail: String| CaptionError::Load {
        path: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let start = text
        .find("_IMAGENET_CATEGORIES = [")
        .ok_or_else(|| bad("no _IMAGENET_CATEGORIES list".into()))?;
    let body = &text[start..];
    let end = body
        .find("\n]")
        .ok_or_else(|| bad("unterminated class list".into()))?;
    let labels: Vec<String> = body[..end]
        .lines()
        .skip(1)
        .filter_map(|l| {
            let l = l.trim().trim_end_matches(',');
            l.strip_prefix('"')?.strip_suffix('"').map(str::to_string)
        })
        .collect();
    if labels.len() != 1000 {
        return Err(bad(format!(
            "expected 1000 class names, found {}",
            labels.len()
        )));
    }
    Ok(labels)
}

/// The everyday word for an ImageNet class, where the class name alone would not say it
/// ("tabby" → "cat"). ImageNet-1k orders its classes by WordNet, so animals come in runs.
pub fn everyday_word(index: usize) -> Option<&'static str> {
    Some(match index {
        0..=6 | 389..=397 => "fish",
        7..=24 | 80..=100 | 127..=146 => "bird",
        30..=32 => "frog",
        33..=37 => "turtle",
        38..=48 => "lizard",
        52..=68 => "snake",
        151..=268 => "dog",
        269..=272 => "wolf",
        277..=280 => "fox",
        281..=285 => "cat",
        286..=293 => "wild cat",
        294..=297 => "bear",
        300..=320 => "insect",
        321..=326 => "butterfly",
        330..=332 => "rabbit",
        365..=384 => "monkey",
        385..=386 => "elephant",
        _ => return None,
    })
}

fn article(word: &str) -> &'static str {
    match word.chars().next().map(|c| c.to_ascii_lowercase()) {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

/// One or two sentences from the top classes: (class index, probability), most likely first.
/// Classes that share an everyday word ("tabby", "tiger cat" → cat) pool their probability.
pub fn describe(labels: &[String], top: &[(usize, f32)]) -> String {
    let Some(&(best, _)) = top.first() else {
        return "I cannot tell what the picture shows.".into();
    };
    let word = everyday_word(best);
    let (same, others): (Vec<_>, Vec<_>) = top
        .iter()
        .partition(|&&(i, _)| word.is_some() && everyday_word(i) == word);
    let (same, others) = if same.is_empty() {
        (vec![top[0]], top[1..].to_vec())
    } else {
        (same, others)
    };
    let p: f32 = same.iter().map(|&(_, q)| q).sum();
    let a = |name: &str| format!("{} {name}", article(name));
    let kinds: Vec<String> = same.iter().map(|&(i, _)| a(&labels[i])).collect();
    let thing = match word {
        Some(w) if kinds.len() > 1 => format!("{} ({})", a(w), or_list(&kinds)),
        Some(w) if !labels[best].to_lowercase().contains(w) => format!("{} ({})", a(w), kinds[0]),
        _ => kinds[0].clone(),
    };
    let lead = if p >= 0.5 {
        format!("A photo that looks like {thing}.")
    } else if p >= 0.15 {
        format!("A photo that might show {thing}.")
    } else {
        format!("A photo I am unsure about; perhaps {thing}.")
    };
    let rest: Vec<String> = others
        .iter()
        .filter(|&&(_, q)| q >= 0.05)
        .map(|&(i, _)| a(&labels[i]))
        .collect();
    if rest.is_empty() {
        lead
    } else {
        format!("{lead} It could also be {}.", or_list(&rest))
    }
}

/// "a", "a or b", "a, b or c".
fn or_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// The classifier with its labels, ready to caption frames.
pub struct EffnetCaptioner {
    model: EfficientNetLite0,
    labels: Vec<String>,
    device: Device,
    top_k: usize,
}

impl EffnetCaptioner {
    pub fn load(weights: &Path, labels: &Path, top_k: usize) -> Result<Self, CaptionError> {
        let load_err = |e: &dyn std::fmt::Display| CaptionError::Load {
            path: weights.display().to_string(),
            detail: e.to_string(),
        };
        let device = crate::host::compute_device().map_err(|e| load_err(&e))?;
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &device) }
            .map_err(|e| load_err(&e))?;
        let model = EfficientNetLite0::new(vb).map_err(|e| load_err(&e))?;
        Ok(EffnetCaptioner {
            model,
            labels: read_labels(labels)?,
            device,
            top_k: top_k.max(1),
        })
    }

    /// The most likely classes, (index, probability), best first.
    pub fn classify(&self, img: &RgbImage) -> Result<Vec<(usize, f32)>, CaptionError> {
        let x = preprocess(img, &self.device).map_err(CaptionError::inference)?;
        let probs = self
            .model
            .probabilities(&x)
            .map_err(CaptionError::inference)?;
        let mut order: Vec<(usize, f32)> = probs.into_iter().enumerate().collect();
        order.sort_by(|a, b| b.1.total_cmp(&a.1));
        order.truncate(self.top_k);
        Ok(order)
    }

    pub fn label(&self, index: usize) -> &str {
        &self.labels[index]
    }
}

impl Captioner for EffnetCaptioner {
    fn caption(&mut self, img: &RgbImage) -> Result<String, CaptionError> {
        let top = self.classify(img)?;
        tracing::debug!(
            top = ?top.iter().map(|&(i, p)| format!("{} {:.2}", self.labels[i], p)).collect::<Vec<_>>(),
            "efficientnet"
        );
        Ok(describe(&self.labels, &top))
    }

    fn describe(&self) -> String {
        "EfficientNet-Lite0 ImageNet classifier".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        (0..1000).map(|i| format!("class {i}")).collect()
    }

    #[test]
    fn descriptions_name_the_everyday_word_and_hedge_by_confidence() {
        let mut l = labels();
        l[281] = "tabby".into();
        l[282] = "tiger cat".into();
        l[285] = "Egyptian cat".into();
        // Three kinds of cat pool into one confident "cat".
        let d = describe(&l, &[(282, 0.41), (285, 0.34), (281, 0.17)]);
        assert_eq!(
            d,
            "A photo that looks like a cat (a tiger cat, an Egyptian cat or a tabby)."
        );
        let d = describe(&l, &[(281, 0.7), (500, 0.2), (501, 0.01)]);
        assert_eq!(
            d,
            "A photo that looks like a cat (a tabby). It could also be a class 500."
        );
        let d = describe(&l, &[(282, 0.3)]);
        assert_eq!(d, "A photo that might show a tiger cat.");
        let d = describe(&l, &[(500, 0.05)]);
        assert_eq!(d, "A photo I am unsure about; perhaps a class 500.");
    }

    #[test]
    fn depthwise_matches_grouped_convolution() {
        let dev = Device::Cpu;
        for (k, stride, side) in [(3, 1, 9), (3, 2, 10), (5, 2, 11), (5, 1, 7)] {
            let x = Tensor::randn(0f32, 1., (1, 6, side, side), &dev).unwrap();
            let w = Tensor::randn(0f32, 1., (6, 1, k, k), &dev).unwrap();
            let want = x.conv2d(&w, 0, stride, 1, 6).unwrap();
            let got = depthwise(&x, &w, stride).unwrap();
            assert_eq!(got.dims(), want.dims());
            let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-4, "k{k} s{stride}");
        }
    }

    #[test]
    fn same_padding_matches_tensorflow() {
        // 224 wide, kernel 3, stride 2: TensorFlow pads 0 before and 1 after, giving 112.
        let dev = Device::Cpu;
        let vb = VarBuilder::zeros(DType::F32, &dev);
        let c = ConvBn::new(&vb, "c", "b", 3, 4, 3, 2, 1).unwrap();
        let x = Tensor::zeros((1, 3, 224, 224), DType::F32, &dev).unwrap();
        assert_eq!(c.forward(&x).unwrap().dims4().unwrap(), (1, 4, 112, 112));
    }
}
