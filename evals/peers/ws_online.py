"""whisper_streaming peer: drives whisper_online.py's OnlineASRProcessor (LocalAgreement-2 over
faster-whisper) over each corpus clip in real-time simulation, as whisper_online.py's own
simulation does: wait until --min-chunk-size seconds of new audio have arrived on the wall clock,
insert everything that has arrived, call process_iter(); after the clip, finish(). Every commit
becomes a "partial" event (cumulative committed text) stamped with the wall clock since the clip
started; finish() gives the "final" (whole text, at_end_of_stream). Writes a trace file."""
import argparse
import importlib.util
import io
import sys
import time

import faster_whisper
from faster_whisper import WhisperModel

import common


def load_whisper_online(path):
    spec = importlib.util.spec_from_file_location("whisper_online", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_asr(wo, model_dir, threads):
    class CpuGreedyASR(wo.FasterWhisperASR):
        """The reference backend loads on CUDA with beam 5; this one uses the CPU and the model
        cache directory, and greedy decoding like every other system in the comparison."""

        def load_model(self, modelsize=None, cache_dir=None, model_dir=None):
            return WhisperModel(common.model_dir_with_vocabulary(model_dir), device="cpu",
                                compute_type="float32", cpu_threads=threads)

        def transcribe(self, audio, init_prompt=""):
            segments, _ = self.model.transcribe(
                audio, language=self.original_language, initial_prompt=init_prompt,
                beam_size=1, word_timestamps=True, condition_on_previous_text=True,
                **self.transcribe_kargs)
            return list(segments)

    return CpuGreedyASR("en", model_dir=model_dir, logfile=io.StringIO())


def run_clip(wo, asr, audio, min_chunk):
    online = wo.OnlineASRProcessor(asr, logfile=io.StringIO())
    duration = len(audio) / 16000
    events, steps, committed = [], [], []
    compute = 0.0
    start = time.perf_counter()
    fed = 0.0
    while fed < duration:
        now = time.perf_counter() - start
        if now < fed + min_chunk:
            time.sleep(fed + min_chunk - now)
        end = min(time.perf_counter() - start, duration)
        online.insert_audio_chunk(audio[int(fed * 16000):int(end * 16000)])
        fed = end
        t0 = time.perf_counter()
        beg, _, text = online.process_iter()
        dt = time.perf_counter() - t0
        compute += dt
        steps.append({"position_s": fed, "compute_s": dt})
        if beg is not None and text.strip():
            committed.append(text.strip())
            events.append(common.event(time.perf_counter() - start, "partial", " ".join(committed)))
    t0 = time.perf_counter()
    beg, _, text = online.finish()
    dt = time.perf_counter() - t0
    compute += dt
    if beg is not None and text.strip():
        committed.append(text.strip())
    events.append(common.event(time.perf_counter() - start, "final", " ".join(committed), True))
    return {"fed_s": duration, "compute_s": compute, "events": events, "steps": steps}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--whisper-online", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--model-name", default="tiny.en")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--min-chunk-size", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    wo = load_whisper_online(a.whisper_online)
    asr = make_asr(wo, a.model, a.threads)
    rows = common.corpus_rows(a.corpus, a.split, a.limit)
    # Warm-up so the first clip does not pay for initialisation.
    asr.transcribe(common.read_wav(f"{a.corpus}/{rows[0]['wav']}")[:32000])
    cpu0, wall0 = common.cpu_seconds(), time.perf_counter()
    utts, complete = [], True
    try:
        for r in rows:
            audio = common.read_wav(f"{a.corpus}/{r['wav']}")
            c0 = common.cpu_seconds()
            u = run_clip(wo, asr, audio, a.min_chunk_size)
            u["id"] = r["id"]
            u["cpu_s"] = common.cpu_seconds() - c0
            utts.append(u)
            print(f"{r['id']:<28} | {u['events'][-1]['text']}", flush=True)
    except KeyboardInterrupt:
        complete = False
        print("interrupted: writing the partial trace", file=sys.stderr)
    common.write_trace(
        a.out, system="whisper_streaming", engine="whisper", model=a.model_name,
        version=f"whisper_online.py (LocalAgreement-2) over faster-whisper {faster_whisper.__version__}",
        mode="realtime",
        settings={"min_chunk_size_s": a.min_chunk_size, "beam_size": 1,
                  "buffer_trimming": "segment 15 s (default)", "compute_type": "float32",
                  "cpu_threads": a.threads, "vad": False},
        complete=complete, wall_s=time.perf_counter() - wall0, cpu_s=common.cpu_seconds() - cpu0,
        utterances=utts)


if __name__ == "__main__":
    main()
