#!/usr/bin/env python3
"""Write configs/traces/lte-like.csv: a SYNTHETIC LTE-shaped bandwidth trace, deterministic.

Not a recording. Shape: a 3-state Markov chain (good ~3 Mbit/s, fair ~1.2 Mbit/s, cell edge
~0.4 Mbit/s; each 500 ms step stays with p = 0.9, else moves to a neighbouring state), with
multiplicative fading noise (+-35 %) on each 500 ms step, clamped to 150..6000 kbit/s; 60 s.
The PRNG is SplitMix64 with a fixed seed (the same generator as vr_core::rng), so the output is
identical on every machine and Python version.

usage: python3 configs/traces/gen_lte_like.py > configs/traces/lte-like.csv
"""

MASK = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def next_f64(self):
        return (self.next_u64() >> 11) / float(1 << 53)


def main():
    rng = SplitMix64(14)
    means = [400.0, 1200.0, 3000.0]
    state = 2
    step_ms, duration_ms = 500, 60_000
    print("# lte-like: SYNTHETIC LTE-shaped trace (not a recording), written by gen_lte_like.py")
    print("# 3-state Markov chain (0.4 / 1.2 / 3 Mbit/s, p(stay) = 0.9 per 500 ms) with +-35 %")
    print("# fading per step, clamped to 150..6000 kbit/s, SplitMix64 seed 14; 60 s.")
    print("time_ms,kbps")
    for t in range(0, duration_ms, step_ms):
        if t > 0 and rng.next_f64() >= 0.9:
            state = max(0, state - 1) if rng.next_f64() < 0.5 else min(2, state + 1)
        fade = 1.0 + 0.35 * (2.0 * rng.next_f64() - 1.0)
        kbps = min(6000.0, max(150.0, means[state] * fade))
        print(f"{t},{kbps:.0f}")
    print(f"{duration_ms},end")


if __name__ == "__main__":
    main()
