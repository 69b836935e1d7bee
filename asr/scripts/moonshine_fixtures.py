"""Golden fixtures for the candle Moonshine streaming port (asr/src/models/moonshine_streaming.rs).

Builds small random-initialised `MoonshineStreamingForConditionalGeneration` models with the
reference implementation (PyPI transformers 5.23, models/moonshine_streaming/), saves each as a
checkpoint directory (config.json + model.safetensors + tokenizer.json), and records, for a few
corpus clips, the reference encoder output, decoder logits (teacher-forced and during cached greedy
generation) and the greedy token ids into goldens.safetensors + goldens.json.

Run through moonshine_fixtures.sh (creates/reuses the venv). Output is deterministic for a given
torch version (fixed seeds); CI never runs this, it only reads the committed fixtures.
"""

import json
import math
import os
import sys
import wave

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import MoonshineStreamingConfig, MoonshineStreamingForConditionalGeneration
from transformers.models.moonshine_streaming.modeling_moonshine_streaming import MoonshineStreamingEncoderModelOutput

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "moonshine")
CORPUS = os.environ.get("VOICERELAY_CORPUS", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "corpus"))

# Short clips (<= 5 s keeps the goldens small). The second is not a multiple of 80 samples, so the
# processor-style zero padding + attention mask path (a masked trailing 5 ms frame) is covered.
CLIPS = ["ls_1089-134691-0000", "lj_LJ002-0020", "ps_cards_001"]

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]
CHARS = list("abcdefghijklmnopqrstuvwxyz'") + ["\u2581"]


def tokenizer_json(vocab_size):
    """A character-level tokenizer (Metaspace word boundary) filling the vocabulary, so decoded
    random-model output is printable text and the Rust side exercises tokenizer.json loading."""
    vocab = {}
    for tok in SPECIAL + CHARS:
        vocab[tok] = len(vocab)
    i = 0
    while len(vocab) < vocab_size:
        a, b = CHARS[i % 27], CHARS[(i // 27) % 27]
        tok = "\u2581" + a + b if (i % 3 == 0) else a + b
        if tok not in vocab:
            vocab[tok] = len(vocab)
        i += 1
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tk.decoder = decoders.Metaspace()
    tk.add_special_tokens(SPECIAL)
    return tk


def randomise(model, seed):
    """Every parameter random, including the ones default init leaves at 0/1 (gammas, biases,
    norm weights, log_k), so no term of the computation can hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("gamma"):
                v = 0.3 * r
            elif name.endswith("log_k"):
                v = math.log(0.75) + 0.3 * r
            elif name.endswith("bias"):
                v = 0.1 * r
            elif "layernorm" in name or name.endswith("norm.weight"):
                v = 1.0 + 0.2 * r
            elif "embed_tokens" in name or "pos_emb" in name:
                v = 0.5 * r
            elif p.dim() >= 2:
                fan_in = int(np.prod(p.shape[1:]))
                v = r / math.sqrt(fan_in)
            else:
                v = r
            p.copy_(v)


def read_wav(path):
    with wave.open(path, "rb") as w:
        assert w.getnchannels() == 1 and w.getframerate() == 16000 and w.getsampwidth() == 2, path
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def processor_like(audio, frame_len):
    """What MoonshineStreamingProcessor does: zero-pad to a multiple of 80, mask the padding."""
    n = len(audio)
    padded = int(math.ceil(n / frame_len) * frame_len)
    x = np.zeros(padded, dtype=np.float32)
    x[:n] = audio
    mask = np.zeros(padded, dtype=np.int64)
    mask[:n] = 1
    return torch.from_numpy(x)[None], torch.from_numpy(mask)[None]


MODELS = {
    # The published tiny window layout, narrow widths; encoder and decoder widths differ (adapter
    # `proj` present); decoder head_dim 10 -> rotary dim 8.
    "tiny_layout": dict(
        seed=11,
        config=dict(
            vocab_size=96, hidden_size=40, intermediate_size=80, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=320,
            decoder_start_token_id=1,
            encoder_config=dict(
                hidden_size=48, intermediate_size=96, num_hidden_layers=6, num_attention_heads=4,
                num_key_value_heads=4,
                sliding_windows=[[16, 4], [16, 4], [16, 0], [16, 0], [16, 4], [16, 4]],
            ),
        ),
    ),
    # Explicit head dims; decoder head_dim 14 -> int(14 * 0.8) = 11 (odd) -> 6 frequencies over 12
    # dims; equal widths (no adapter proj); irregular windows incl. a right window of 1 (no lookahead).
    "odd_rotary": dict(
        seed=23,
        config=dict(
            vocab_size=80, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, head_dim=14, max_position_embeddings=320,
            decoder_start_token_id=1,
            encoder_config=dict(
                hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                num_key_value_heads=2, head_dim=12,
                sliding_windows=[[8, 2], [4, 1], [6, 3], [3, 0]],
            ),
        ),
    ),
}


def main():
    torch.set_grad_enabled(False)
    os.makedirs(OUT, exist_ok=True)
    for name, spec in MODELS.items():
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        torch.manual_seed(spec["seed"])
        cfg = MoonshineStreamingConfig(**spec["config"])
        model = MoonshineStreamingForConditionalGeneration(cfg).eval()
        randomise(model, spec["seed"])
        model.save_pretrained(d, safe_serialization=True)
        for extra in ("generation_config.json",):
            p = os.path.join(d, extra)
            if os.path.exists(p):
                os.remove(p)
        tk = tokenizer_json(cfg.vocab_size)
        tk.save(os.path.join(d, "tokenizer.json"))

        goldens = {}
        meta = {"model": name, "clips": []}
        frame_len = int(round(cfg.encoder_config.sample_rate * cfg.encoder_config.frame_ms / 1000.0))
        gen = torch.Generator().manual_seed(spec["seed"] + 1)
        for clip in CLIPS:
            audio = read_wav(os.path.join(CORPUS, "wav", clip + ".wav"))
            x, mask = processor_like(audio, frame_len)
            enc_out = model.model.encoder(x, attention_mask=mask)
            enc = enc_out.last_hidden_state.clone()  # the decoder adds pos_emb in place
            enc_mask = enc_out.attention_mask
            assert bool(enc_mask.all()), "all encoder frames valid for single-clip padding"

            # Teacher-forced logits over a fixed random prefix (start token first).
            tf_ids = torch.cat([torch.tensor([[cfg.decoder_start_token_id]]),
                                torch.randint(3, cfg.vocab_size, (1, 9), generator=gen)], dim=1)
            out = model(encoder_outputs=MoonshineStreamingEncoderModelOutput(last_hidden_state=enc.clone(), attention_mask=enc_mask), decoder_input_ids=tf_ids, use_cache=False)
            tf_logits = out.logits[0].clone()

            # Cached greedy generation (the reference decoding path), with per-step logits.
            g = model.generate(
                input_values=x, attention_mask=mask, max_new_tokens=16, do_sample=False, num_beams=1,
                decoder_start_token_id=cfg.decoder_start_token_id, eos_token_id=cfg.eos_token_id,
                pad_token_id=cfg.pad_token_id, return_dict_in_generate=True, output_logits=True,
            )
            seq = g.sequences[0].tolist()
            step_logits = torch.stack([l[0] for l in g.logits])
            greedy_text = tk.decode([t for t in seq if t > 2], skip_special_tokens=True)

            goldens[f"{clip}.encoder"] = enc[0].contiguous().float()
            goldens[f"{clip}.tf_ids"] = tf_ids[0].to(torch.int64).contiguous()
            goldens[f"{clip}.tf_logits"] = tf_logits.contiguous().float()
            goldens[f"{clip}.greedy_ids"] = torch.tensor(seq, dtype=torch.int64)
            goldens[f"{clip}.greedy_logits"] = step_logits.contiguous().float()
            meta["clips"].append({
                "id": clip, "samples": int(len(audio)), "frames": int(enc.shape[1]),
                "greedy_ids": seq, "greedy_text": greedy_text,
            })
            print(f"{name} {clip}: samples={len(audio)} frames={enc.shape[1]} "
                  f"enc|max|={enc.abs().max():.3f} greedy={seq} text={greedy_text!r}")
        save_file(goldens, os.path.join(d, "goldens.safetensors"))
        meta["transformers"] = __import__("transformers").__version__
        meta["torch"] = torch.__version__
        with open(os.path.join(d, "goldens.json"), "w") as f:
            json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
