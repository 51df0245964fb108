//! Host-side seeded random numbers compatible with PyTorch's CPU generator.
//!
//! `torch.randn(n, generator=torch.Generator("cpu").manual_seed(seed))` draws from an mt19937
//! engine seeded with the low 32 bits of the seed. For float32 tensors with at least 16 elements
//! torch first fills the buffer with uniforms `(x & 0xFFFFFF) * 2^-24` and then runs Box-Muller
//! over blocks of 16 (`u1 = 1 - d[j]`, `u2 = d[j + 8]`); a tail that is not a multiple of 16 is
//! re-drawn as the last 16 elements. Smaller tensors use the scalar double-precision path.
//! candle's own CPU RNG cannot be seeded, so every reproducible draw in acs comes from here.

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// The 32-bit Mersenne Twister, seeded the way torch and numpy's legacy `RandomState` seed it.
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; N],
    index: usize,
    /// torch's generator caches the second Box-Muller value of the scalar double path.
    cached_normal: Option<f64>,
}

impl Mt19937 {
    /// A generator seeded like `torch.Generator("cpu").manual_seed(seed)`.
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; N];
        state[0] = seed as u32;
        for i in 1..N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Self {
            state,
            index: N,
            cached_normal: None,
        }
    }

    fn twist(&mut self) {
        for i in 0..N {
            let y = (self.state[i] & UPPER_MASK) | (self.state[(i + 1) % N] & LOWER_MASK);
            let mut next = self.state[(i + M) % N] ^ (y >> 1);
            if y & 1 != 0 {
                next ^= MATRIX_A;
            }
            self.state[i] = next;
        }
        self.index = 0;
    }

    /// The next raw 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// torch's `random64()`: two 32-bit draws, the first one high.
    fn next_u64(&mut self) -> u64 {
        let hi = self.next_u32() as u64;
        let lo = self.next_u32() as u64;
        (hi << 32) | lo
    }

    /// A float32 uniform in [0, 1) as torch's `uniform_real_distribution<float>` makes it.
    pub fn uniform_f32(&mut self) -> f32 {
        (self.next_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
    }

    /// A float64 uniform in [0, 1) as torch's `uniform_real_distribution<double>` makes it.
    fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() & ((1u64 << 53) - 1)) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// One standard normal from torch's scalar `normal_distribution<double>`.
    fn normal_f64(&mut self) -> f64 {
        if let Some(cached) = self.cached_normal.take() {
            return cached;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.cached_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// `torch.randn(n)` for a float32 tensor of `n` elements from this generator.
    pub fn randn_f32(&mut self, n: usize) -> Vec<f32> {
        if n < 16 {
            return (0..n).map(|_| self.normal_f64() as f32).collect();
        }
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        for block in data.chunks_exact_mut(16) {
            box_muller_16(block);
        }
        if !n.is_multiple_of(16) {
            let tail = &mut data[n - 16..];
            for value in tail.iter_mut() {
                *value = self.uniform_f32();
            }
            box_muller_16(tail);
        }
        data
    }
}

/// torch's `normal_fill_16`: 16 uniforms in, 16 standard normals out.
fn box_muller_16(block: &mut [f32]) {
    for j in 0..8 {
        let u1 = 1.0 - block[j];
        let u2 = block[j + 8];
        let radius = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f32::consts::PI * u2;
        block[j] = radius * theta.cos();
        block[j + 8] = radius * theta.sin();
    }
}

/// Deterministic standard normals for purposes that need no torch parity (e.g. the tiny
/// model's weights): a SplitMix64 stream and Box-Muller in f64.
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A stream from a 64-bit seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// A standard normal.
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_reference_sequence() {
        // First outputs of mt19937 seeded with 5489 (the C++ std::mt19937 default).
        let mut rng = Mt19937::new(5489);
        let first: Vec<u32> = (0..3).map(|_| rng.next_u32()).collect();
        assert_eq!(first, vec![3_499_211_612, 581_869_302, 3_890_346_734]);
        let mut rng = Mt19937::new(5489);
        let ten_thousandth = (0..10_000).map(|_| rng.next_u32()).last();
        assert_eq!(ten_thousandth, Some(4_123_659_995));
    }

    #[test]
    fn matches_torch_printed_values() {
        // torch.manual_seed(0); torch.randn(2, 3)  (scalar double path, n < 16)
        let small = Mt19937::new(0).randn_f32(6);
        let expected_small = [1.5410, -0.2934, -2.1788, 0.5684, -1.0845, -1.3986];
        for (got, want) in small.iter().zip(expected_small) {
            assert!((got - want).abs() < 1e-4, "{small:?}");
        }
        // torch.manual_seed(0); torch.randn(4, 4)  (vectorised path, blocks of 16)
        let block = Mt19937::new(0).randn_f32(16);
        let expected_block = [
            -1.1258, -1.1524, -0.2506, -0.4339, 0.8487, 0.6920, -0.3160, -2.1152, 0.3223, -1.2633,
            0.3500, 0.3081, 0.1198, 1.2377, 1.1168, -0.2473,
        ];
        for (got, want) in block.iter().zip(expected_block) {
            assert!((got - want).abs() < 1e-4, "{block:?}");
        }
    }

    #[test]
    fn seeds_alias_modulo_two_to_the_32() {
        let a = Mt19937::new(7).randn_f32(64);
        let b = Mt19937::new(7 + (1u64 << 32)).randn_f32(64);
        assert_eq!(a, b);
    }

    #[test]
    fn randn_is_standard_normal_and_handles_tails() {
        for n in [1usize, 5, 15, 16, 17, 100, 256, 4099] {
            let values = Mt19937::new(42).randn_f32(n);
            assert_eq!(values.len(), n);
            assert!(values.iter().all(|v| v.is_finite()));
        }
        let values = Mt19937::new(0).randn_f32(100_000);
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64;
        let var = values
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / 1e5;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
    }
}
