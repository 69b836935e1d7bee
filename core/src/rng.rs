//! SplitMix64 (Steele, Lea, Flood 2014): a small, fast, seedable generator for the places that
//! need reproducible randomness — weight initialisation, fuzz inputs, simulated packet loss — so
//! a failing run is replayed from its seed. Not cryptographic.

#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, from the top 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Marsaglia's xorshift32 (13, 17, 5): the noise source of test signals (white or filtered
/// noise bursts for the echo canceller, the VAD bench, `devices --check`'s test sound). Kept beside
/// [`SplitMix64`] because those signals' figures were measured on its sequences.
#[derive(Clone, Debug)]
pub struct Xorshift32(u32);

impl Xorshift32 {
    /// `seed` must not be 0 (the generator would stay at 0); 0 is replaced by a fixed constant.
    pub fn new(seed: u32) -> Xorshift32 {
        Xorshift32(if seed == 0 { 0x9E37_79B9 } else { seed })
    }

    pub fn next_u32(&mut self) -> u32 {
        let mut s = self.0;
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        self.0 = s;
        s
    }

    /// Uniform in `[-0.5, 0.5]`.
    pub fn next_centred(&mut self) -> f32 {
        self.next_u32() as f32 / u32::MAX as f32 - 0.5
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference sequence for seed 0 (the C reference implementation's first outputs).
    #[test]
    fn matches_the_reference_sequence() {
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(r.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn xorshift32_follows_marsaglias_sequence() {
        let mut r = Xorshift32::new(1);
        assert_eq!(r.next_u32(), 270_369);
        assert_eq!(r.next_u32(), 67_634_689);
        assert!(Xorshift32::new(0).next_u32() != 0);
    }
}
