//! Host-side seeded random numbers compatible with PyTorch's CPU generator.
//!
//! `torch.randn(n, generator=torch.Generator("cpu").manual_seed(seed))` draws from an mt19937
//! engine seeded with the low 32 bits of the seed. For float32 tensors with at least 16 elements
//! torch first fills the buffer with uniforms `(x & 0xFFFFFF) * 2^-24` and then runs Box-Muller
//! over blocks of 16 (`u1 = 1 - d[j]`, `u2 = d[j + 8]`); a tail that is not a multiple of 16 is
//! re-drawn as the last 16 elements. Smaller tensors use the scalar double-precision path.
//! candle's own CPU RNG cannot be seeded, so every reproducible draw in acs comes from here.

use serde::{Deserialize, Serialize};

/// The generators an initial latent can be drawn from, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RngKind {
    /// [`Mt19937`]: `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))`.
    #[default]
    #[serde(rename = "torch-cpu")]
    TorchCpu,
}

impl std::fmt::Display for RngKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.serialize(f)
    }
}

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

/// torch's `normal_fill_16_AVX2`: 16 uniforms in, 16 standard normals out, with the Cephes
/// polynomials of `avx_mathfun.h` (not libm) and the fused multiply-adds GCC contracts them
/// into, so that the values are bit-identical to torch's on x86-64 builds with AVX2.
fn box_muller_16(block: &mut [f32]) {
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    for j in 0..8 {
        let u1 = 1.0 - block[j];
        let u2 = block[j + 8];
        let radius = (-2.0 * cephes_log(u1)).sqrt();
        let (sin, cos) = cephes_sincos(two_pi * u2);
        block[j] = radius * cos;
        block[j + 8] = radius * sin;
    }
}

/// `log256_ps` of avx_mathfun.h for one lane (inputs in (0, 1] here). Constants are written
/// as C does: decimal -> double -> float.
fn cephes_log(x: f32) -> f32 {
    const SQRTHF: f32 = 0.707_106_781_186_547_5_f64 as f32;
    const P: [f32; 9] = [
        7.037_683_629_2e-2_f64 as f32,
        -1.151_461_031_0e-1_f64 as f32,
        1.167_699_874_0e-1_f64 as f32,
        -1.242_014_084_6e-1_f64 as f32,
        1.424_932_278_7e-1_f64 as f32,
        -1.666_805_766_5e-1_f64 as f32,
        2.000_071_476_5e-1_f64 as f32,
        -2.499_999_399_3e-1_f64 as f32,
        3.333_333_117_4e-1_f64 as f32,
    ];
    const Q1: f32 = -2.121_944_40e-4_f64 as f32;
    const Q2: f32 = 0.693_359_375_f64 as f32;
    let x = x.max(f32::MIN_POSITIVE);
    let bits = x.to_bits();
    let mut e = ((bits >> 23) as i32 - 0x7f) as f32;
    let mut x = f32::from_bits((bits & !0x7f80_0000) | 0x3f00_0000);
    e += 1.0;
    let below = x < SQRTHF;
    let tmp = if below { x } else { 0.0 };
    x -= 1.0;
    e -= if below { 1.0 } else { 0.0 };
    x += tmp;
    let z = x * x;
    let mut y = P[0];
    for p in &P[1..] {
        y = y.mul_add(x, *p);
    }
    y *= x;
    y = y.mul_add(z, e * Q1);
    y = (-z).mul_add(0.5, y);
    let x = x + y;
    e.mul_add(Q2, x)
}

/// `sincos256_ps` of avx_mathfun.h for one lane: (sin, cos).
// The constants are spelled as in avx_mathfun.h, so the conversion matches C's.
#[allow(clippy::excessive_precision)]
fn cephes_sincos(x: f32) -> (f32, f32) {
    const FOPI: f32 = 1.273_239_544_735_16_f64 as f32;
    const DP1: f32 = -0.785_156_25_f64 as f32;
    const DP2: f32 = -2.418_756_484_985_351_562_5e-4_f64 as f32;
    const DP3: f32 = -3.774_894_977_445_941_08e-8_f64 as f32;
    let sign_sin = x.to_bits() & 0x8000_0000;
    let mut x = x.abs();
    let mut j = (x * FOPI) as i32;
    j = (j + 1) & !1;
    let y = j as f32;
    let swap_sign_sin = ((j & 4) as u32) << 29;
    let use_sine_poly = j & 2 == 0;
    x = y.mul_add(DP1, x);
    x = y.mul_add(DP2, x);
    x = y.mul_add(DP3, x);
    let sign_cos = ((!(j - 2) & 4) as u32) << 29;
    let sign_sin = sign_sin ^ swap_sign_sin;
    let z = x * x;
    let mut cos_poly =
        (2.443_315_711_809_948e-5_f64 as f32).mul_add(z, -1.388_731_625_493_765e-3_f64 as f32);
    cos_poly = cos_poly.mul_add(z, 4.166_664_568_298_827e-2_f64 as f32);
    cos_poly *= z;
    cos_poly = cos_poly.mul_add(z, -(z * 0.5));
    cos_poly += 1.0;
    let mut sin_poly = (-1.951_529_589_1e-4_f64 as f32).mul_add(z, 8.332_160_873_6e-3_f64 as f32);
    sin_poly = sin_poly.mul_add(z, -1.666_665_461_1e-1_f64 as f32);
    sin_poly *= z;
    sin_poly = sin_poly.mul_add(x, x);
    let (sin, cos) = if use_sine_poly {
        (sin_poly, cos_poly)
    } else {
        (cos_poly, sin_poly)
    };
    (
        f32::from_bits(sin.to_bits() ^ sign_sin),
        f32::from_bits(cos.to_bits() ^ sign_cos),
    )
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
    fn cephes_functions_are_accurate() {
        for i in 1..=1000 {
            let x = i as f32 / 1000.0;
            assert!((cephes_log(x) - x.ln()).abs() < 1e-6, "log {x}");
            let theta = x * std::f32::consts::TAU;
            let (s, c) = cephes_sincos(theta);
            assert!(
                (s - theta.sin()).abs() < 1e-6 && (c - theta.cos()).abs() < 1e-6,
                "sincos {theta}"
            );
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
