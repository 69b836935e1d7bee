#!/usr/bin/env python3
"""Smart Turn v3.2 reference probabilities from pipecat's own code, for the Rust parity test.

Runs pipecat-ai 1.14.0's `LocalSmartTurnAnalyzerV3._predict_endpoint` (its numpy Whisper
features + ONNX Runtime on the bundled `smart-turn-v3.2-cpu.onnx`) on 16 kHz mono WAV clips,
each cut at an optional end time, and prints one JSON object per clip. Pin onnxruntime to the
version in core/models.toml (1.31.1): the model is 8-bit and other versions' fused kernels give
slightly different probabilities (jfk_inaugural: 0.817 with 1.31.1, 0.834 with 1.32.0).

Environment (once):
    python3 -m venv ~/.cache/voicerelay/venvs/smartturn
    ~/.cache/voicerelay/venvs/smartturn/bin/pip install pipecat-ai==1.14.0 onnxruntime==1.31.1 numpy soxr

usage: ~/.cache/voicerelay/venvs/smartturn/bin/python dialog/scripts/smart_turn_reference.py \
           WAV[@END_SECONDS] ...
"""
import json
import sys
import wave

import numpy as np
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3


def read_wav(path):
    with wave.open(path, "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2 or w.getframerate() != 16000:
            raise SystemExit(f"{path}: expected 16 kHz mono 16-bit")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    # pipecat's base_smart_turn converts int16 PCM the same way.
    return pcm.astype(np.float32) / 32768.0


def main():
    analyzer = LocalSmartTurnAnalyzerV3(sample_rate=16000)
    for arg in sys.argv[1:]:
        path, _, end = arg.partition("@")
        audio = read_wav(path)
        if end:
            audio = audio[: int(round(float(end) * 16000))]
        out = analyzer._predict_endpoint(audio)
        print(json.dumps({"clip": arg, "samples": len(audio), "probability": out["probability"]}))


if __name__ == "__main__":
    main()
