"""faster-whisper peer (batch): decodes each clip of a corpus split after it has fully arrived
(greedy, beam 1, same tiny.en CTranslate2 weights as VoiceRelay) and writes a trace file
(evals/src/schema.rs `RunTrace`, mode "batch"): the final of each clip is stamped at clip length +
measured decode time. `voicerelay eval ingest` scores it with the project's normaliser and WER."""
import argparse
import time

import faster_whisper
import numpy as np
from faster_whisper import WhisperModel

import common


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="model cache directory, e.g. .../whisper-tiny.en")
    ap.add_argument("--model-name", default="tiny.en")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    model = WhisperModel(common.model_dir_with_vocabulary(a.model), device="cpu",
                         compute_type="float32", cpu_threads=a.threads)
    rows = common.corpus_rows(a.corpus, a.split, a.limit)
    # Warm-up so the first clip does not pay for initialisation.
    list(model.transcribe(np.zeros(16000, dtype=np.float32), beam_size=1, language="en")[0])
    cpu0, wall0 = common.cpu_seconds(), time.perf_counter()
    utts = []
    for r in rows:
        audio = common.read_wav(f"{a.corpus}/{r['wav']}")
        audio_s = len(audio) / 16000
        c0 = common.cpu_seconds()
        t0 = time.perf_counter()
        segs, _ = model.transcribe(audio, beam_size=1, language="en", temperature=0.0,
                                   condition_on_previous_text=False, vad_filter=False)
        text = " ".join(s.text.strip() for s in segs)  # the generator decodes here
        dt = time.perf_counter() - t0
        utts.append({
            "id": r["id"], "fed_s": audio_s, "compute_s": dt,
            "cpu_s": common.cpu_seconds() - c0,
            "events": [common.event(audio_s + dt, "final", text)],
            "steps": [{"position_s": audio_s, "compute_s": dt}],
        })
        print(f"{r['id']:<28} {dt:6.2f} s | {text}", flush=True)
    common.write_trace(
        a.out, system="faster-whisper", engine="whisper", model=a.model_name,
        version=f"faster-whisper {faster_whisper.__version__}", mode="batch",
        settings={"beam_size": 1, "temperature": 0.0, "compute_type": "float32",
                  "cpu_threads": a.threads, "vad_filter": False,
                  "condition_on_previous_text": False},
        complete=True, wall_s=time.perf_counter() - wall0, cpu_s=common.cpu_seconds() - cpu0,
        utterances=utts)


if __name__ == "__main__":
    main()
