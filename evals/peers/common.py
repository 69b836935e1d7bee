"""Shared by the peer programs: corpus reading, the model directory faster-whisper needs, resource
readings and the trace file (schema: evals/src/schema.rs `RunTrace`, schema_version 1)."""
import json
import os
import resource
import tempfile
import wave

import numpy as np

SCHEMA_VERSION = 1


def read_wav(path):
    with wave.open(path, "rb") as w:
        if not (w.getsampwidth() == 2 and w.getnchannels() == 1 and w.getframerate() == 16000):
            raise SystemExit(f"{path}: expected 16 kHz mono 16-bit PCM")
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0


def corpus_rows(corpus, split, limit=None):
    rows = [json.loads(l) for l in open(os.path.join(corpus, "manifest.jsonl")) if l.strip()]
    rows = [r for r in rows if split == "all" or r["split"] == split]
    return rows[:limit] if limit else rows


def model_dir_with_vocabulary(src):
    """CTranslate2 wants vocabulary.json beside model.bin; the model cache holds only
    tokenizer.json. Builds a temporary directory of symlinks plus a vocabulary (tokens by id)."""
    if any(os.path.exists(os.path.join(src, f)) for f in ("vocabulary.json", "vocabulary.txt")):
        return src
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


def cpu_seconds():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_trace(path, *, system, engine, model, version, mode, settings, complete, wall_s, cpu_s,
                utterances):
    doc = {
        "schema_version": SCHEMA_VERSION,
        "system": system,
        "engine": engine,
        "model": model,
        "version": version,
        "mode": mode,
        "settings": settings,
        "complete": complete,
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "peak_rss_mb": peak_rss_mb(),
        "utterances": utterances,
    }
    with open(path, "w") as f:
        json.dump(doc, f)


def event(t_s, kind, text, at_end_of_stream=False):
    return {"t_s": t_s, "kind": kind, "text": text, "at_end_of_stream": at_end_of_stream}
