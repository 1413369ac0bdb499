"""Write a tiny random-weight vision-language model as two GGUF files.

    python tests/tiny_vlm.py GGUF_PY_DIR OUT_DIR

writes OUT_DIR/tiny-vlm.gguf (text model) and OUT_DIR/tiny-vlm-mmproj.gguf
(vision projector) and prints both paths.  GGUF_PY_DIR is the `gguf-py`
folder of the pinned llama.cpp checkout; its `gguf` package is imported from
there so that the files match what that llama.cpp reads.

No registry ships a vision model small enough for a test, so this builds one
from scratch (seeded, deterministic, well under 1 MB, well under a second) to
exercise the llama.cpp vision route end to end: `llama-server --model ...
--mmproj ... --jinja` loads both files, decodes an image (JPEG or PNG) from a
data URI, runs it through the projector (libmtmd) and feeds the resulting
image tokens to the text model.  The output is garbage text.

Text model: arch "llama", 1 block, n_embd 64, SPM ("llama") vocabulary of
<unk> <s> </s>, the 256 byte tokens, "▁" and the 94 printable ASCII
characters, and a plain `role: content` Jinja chat template.  Residual
dimension 0 is held constant (1.0 in every token embedding, and no layer
writes to it), so column 0 of the output matrix acts as a per-token logit
bias: printable ASCII characters are favoured and everything else (EOS,
bytes, the space piece) is pushed down by about 20 logits, so a reply is
always a non-empty run of visible characters.

Projector: type "mlp" (LLaVA-1.5 style): 32x32 px images, 8 px patches
(16 image tokens), a 1-block ViT of width 32 and a two-layer MLP projecting
to the text model's n_embd.
"""

import sys
from pathlib import Path

import numpy as np

N_EMBD, N_FF, N_HEAD = 64, 128, 4                        # text model
V_EMBD, V_FF, V_HEAD, IMG, PATCH = 32, 64, 2, 32, 8      # vision tower
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def main(gguf_py_dir: str, out_dir: str) -> None:
    sys.path.insert(0, gguf_py_dir)
    import gguf

    rng = np.random.default_rng(1234)

    def rand(*shape, std=0.05):
        # numpy shape is (out, in); gguf-py reverses it into ggml's ne order
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def ones(n):
        return np.ones(n, dtype=np.float32)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text_path, mmproj_path = out / "tiny-vlm.gguf", out / "tiny-vlm-mmproj.gguf"

    # ---- vocabulary: specials, byte fallback tokens, "▁", printable ASCII ----
    T = gguf.TokenType
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [T.UNKNOWN, T.CONTROL, T.CONTROL] + [T.BYTE] * 256
    tokens.append("\u2581")
    types.append(T.NORMAL)
    first_char = len(tokens)
    tokens += [chr(c) for c in range(0x21, 0x7F)]
    types += [T.NORMAL] * (len(tokens) - first_char)
    n_vocab = len(tokens)

    # ---- text model ----
    w = gguf.GGUFWriter(str(text_path), "llama")
    w.add_name("tiny-vlm")
    w.add_context_length(2048)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(1)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * n_vocab)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    tok_embd = rand(n_vocab, N_EMBD)
    tok_embd[:, 0] = 1.0                     # constant residual dimension 0
    output = rand(n_vocab, N_EMBD)
    output[:, 0] = -5.0                      # logit bias: down with everything ...
    output[first_char:, 0] = 0.5             # ... but printable ASCII
    attn_out, ffn_down = rand(N_EMBD, N_EMBD), rand(N_EMBD, N_FF)
    attn_out[0, :] = 0.0                     # no block writes to dimension 0
    ffn_down[0, :] = 0.0
    for name, t in [
        ("token_embd.weight", tok_embd),
        ("output_norm.weight", ones(N_EMBD)),
        ("output.weight", output),
        ("blk.0.attn_norm.weight", ones(N_EMBD)),
        ("blk.0.attn_q.weight", rand(N_EMBD, N_EMBD)),
        ("blk.0.attn_k.weight", rand(N_EMBD, N_EMBD)),
        ("blk.0.attn_v.weight", rand(N_EMBD, N_EMBD)),
        ("blk.0.attn_output.weight", attn_out),
        ("blk.0.ffn_norm.weight", ones(N_EMBD)),
        ("blk.0.ffn_gate.weight", rand(N_FF, N_EMBD)),
        ("blk.0.ffn_up.weight", rand(N_FF, N_EMBD)),
        ("blk.0.ffn_down.weight", ffn_down),
    ]:
        w.add_tensor(name, t)
    write(w)

    # ---- vision projector (clip.cpp, projector type "mlp") ----
    n_patches = (IMG // PATCH) ** 2
    w = gguf.GGUFWriter(str(mmproj_path), "clip")
    w.add_name("tiny-vlm-mmproj")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_string("clip.projector_type", "mlp")
    w.add_uint32("clip.vision.image_size", IMG)
    w.add_uint32("clip.vision.patch_size", PATCH)
    w.add_uint32("clip.vision.embedding_length", V_EMBD)
    w.add_uint32("clip.vision.feed_forward_length", V_FF)
    w.add_uint32("clip.vision.block_count", 1)
    w.add_uint32("clip.vision.attention.head_count", V_HEAD)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    w.add_uint32("clip.vision.projection_dim", N_EMBD)
    w.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    w.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    # take features after the block (LLaVA's default, the second-to-last
    # layer, would skip the only block)
    w.add_array("clip.vision.feature_layer", [1])
    for name, t in [
        ("v.patch_embd.weight", rand(V_EMBD, 3, PATCH, PATCH)),
        ("v.position_embd.weight", rand(n_patches, V_EMBD)),
        ("v.blk.0.ln1.weight", ones(V_EMBD)),
        ("v.blk.0.attn_q.weight", rand(V_EMBD, V_EMBD)),
        ("v.blk.0.attn_k.weight", rand(V_EMBD, V_EMBD)),
        ("v.blk.0.attn_v.weight", rand(V_EMBD, V_EMBD)),
        ("v.blk.0.attn_out.weight", rand(V_EMBD, V_EMBD)),
        ("v.blk.0.ln2.weight", ones(V_EMBD)),
        ("v.blk.0.ffn_up.weight", rand(V_FF, V_EMBD)),
        ("v.blk.0.ffn_down.weight", rand(V_EMBD, V_FF)),
        ("mm.0.weight", rand(N_EMBD, V_EMBD)),
        ("mm.0.bias", rand(N_EMBD)),
        ("mm.2.weight", rand(N_EMBD, N_EMBD)),  # ne[1] = n_embd of the text model
        ("mm.2.bias", rand(N_EMBD)),
    ]:
        w.add_tensor(name, t)
    write(w)

    print(text_path)
    print(mmproj_path)


def write(w) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} GGUF_PY_DIR OUT_DIR")
    main(sys.argv[1], sys.argv[2])
