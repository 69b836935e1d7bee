"""Golden Silero VAD v6 speech probabilities for the candle port's parity test.

Runs the ONNX model shipped in PyPI `silero-vad` 6.2.3 (`silero_vad/data/silero_vad.onnx`) in ONNX
Runtime, 512-sample chunks at 16 kHz with the previous chunk's last 64 samples prepended (the
model's streaming contract), over a few corpus files, and writes one probability per whole chunk
(a trailing partial chunk is left out: the streaming VAD only scores whole chunks).

Run through `silero_golden.sh`, which creates the venv. Usage:
    asr/scripts/silero_golden.sh [--corpus DIR] [--out FILE]
"""

import argparse
import hashlib
import json
import os
import wave
import importlib.util

import numpy as np
import onnxruntime as ort

# Speech-dense read speech, noisy historic speech, a short command with pauses, and a 1 s clip that
# is mostly silence around one word.
FILES = [
    "ls_1089-134686-0000",
    "jfk_inaugural",
    "ps_goforward",
    "speechcommands_bed_0ea0e2f4_nohash_1",
]
CHUNK = 512
CONTEXT = 64
RATE = 16000


def read_wav(path):
    with wave.open(path, "rb") as w:
        if w.getnchannels() != 1 or w.getframerate() != RATE or w.getsampwidth() != 2:
            raise SystemExit(f"{path}: expected 16 kHz mono 16-bit PCM")
        raw = w.readframes(w.getnframes())
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


def probabilities(session, samples):
    state = np.zeros((2, 1, 128), dtype=np.float32)
    context = np.zeros(CONTEXT, dtype=np.float32)
    sr = np.array(RATE, dtype=np.int64)
    out = []
    for i in range(len(samples) // CHUNK):
        chunk = samples[i * CHUNK : (i + 1) * CHUNK]
        x = np.concatenate([context, chunk])[None, :]
        prob, state = session.run(None, {"input": x, "state": state, "sr": sr})
        out.append(float(prob[0, 0]))
        context = chunk[-CONTEXT:]
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--corpus",
        default=os.environ.get("VOICERELAY_CORPUS")
        or os.path.join(here, "..", "..", "..", "shared", "corpus"),
    )
    ap.add_argument(
        "--out", default=os.path.join(here, "..", "tests", "fixtures", "silero_golden.json")
    )
    args = ap.parse_args()

    # Located without importing the package: its __init__ imports torch, which is not needed.
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("silero-vad is not installed in this venv")
    pkg_dir = list(spec.submodule_search_locations)[0]
    model_path = os.path.join(pkg_dir, "data", "silero_vad.onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(model_path, sess_options=opts, providers=["CPUExecutionProvider"])
    with open(model_path, "rb") as f:
        model_sha = hashlib.sha256(f.read()).hexdigest()

    files = []
    for fid in FILES:
        path = os.path.join(args.corpus, "wav", fid + ".wav")
        samples = read_wav(path)
        probs = probabilities(session, samples)
        files.append(
            {
                "id": fid,
                "samples": int(len(samples)),
                "probs": [round(p, 6) for p in probs],
            }
        )
        print(f"{fid}: {len(probs)} chunks, max {max(probs):.3f}, mean {np.mean(probs):.3f}")

    doc = {
        "model": "silero-vad 6.2.3 silero_vad/data/silero_vad.onnx",
        "model_sha256": model_sha,
        "onnxruntime": ort.__version__,
        "chunk": CHUNK,
        "context": CONTEXT,
        "files": files,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
