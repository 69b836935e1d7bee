"""Decode one corpus split with faster-whisper (greedy, beam 1) and write one JSON line per
utterance: {"id", "text", "decode_s", "audio_s"}. Prints the total decode speed (RTF)."""
import argparse
import json
import os
import time
import wave

import numpy as np
from faster_whisper import WhisperModel


def read_wav(path):
    with wave.open(path, "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1 and w.getframerate() == 16000, path
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0


def model_dir_with_vocabulary(src):
    """CTranslate2 wants vocabulary.json beside model.bin; the cache holds only tokenizer.json.
    Build a temporary directory of symlinks plus a vocabulary (tokens ordered by id)."""
    if any(os.path.exists(os.path.join(src, f)) for f in ("vocabulary.json", "vocabulary.txt")):
        return src
    import tempfile
    d = tempfile.mkdtemp(prefix="fw-model-")
    for f in ("model.bin", "config.json", "tokenizer.json"):
        os.symlink(os.path.join(os.path.abspath(src), f), os.path.join(d, f))
    tok = json.load(open(os.path.join(src, "tokenizer.json")))
    vocab = dict(tok["model"]["vocab"])
    for a in tok.get("added_tokens", []):
        vocab[a["content"]] = a["id"]
    ordered = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    # Timestamp tokens follow <|notimestamps|> but are not in tokenizer.json: 1501 of them.
    ordered += [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    json.dump(ordered, open(os.path.join(d, "vocabulary.json"), "w"))
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    model = WhisperModel(model_dir_with_vocabulary(a.model), device="cpu", compute_type="float32", cpu_threads=2)
    rows = [json.loads(l) for l in open(os.path.join(a.corpus, "manifest.jsonl")) if l.strip()]
    rows = [r for r in rows if r["split"] == a.split]
    # Warm-up so the first clip does not pay for initialisation.
    model.transcribe(np.zeros(16000, dtype=np.float32), beam_size=1, language="en")
    total_t = total_a = 0.0
    with open(a.out, "w") as out:
        for r in rows:
            audio = read_wav(os.path.join(a.corpus, r["wav"]))
            t0 = time.perf_counter()
            segs, _ = model.transcribe(audio, beam_size=1, language="en", temperature=0.0,
                                       condition_on_previous_text=False, vad_filter=False)
            text = " ".join(s.text.strip() for s in segs)
            dt = time.perf_counter() - t0
            total_t += dt
            total_a += len(audio) / 16000
            out.write(json.dumps({"id": r["id"], "text": text, "decode_s": dt,
                                  "audio_s": len(audio) / 16000}) + "\n")
    print(f"faster-whisper tiny.en greedy: {len(rows)} clips, {total_a:.1f} s audio, "
          f"decode {total_t:.2f} s, RTF {total_t / total_a:.3f}")


if __name__ == "__main__":
    main()
