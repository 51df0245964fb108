//! Colour arithmetic of the shapes judge: 8-bit sRGB to CIELAB (D65), the CIE76 colour
//! difference, and HSV hue and saturation.

/// A CIELAB colour `[L*, a*, b*]` under the D65 white point.
pub type Lab = [f64; 3];

/// The D65 reference white in XYZ (Y = 1).
const WHITE: [f64; 3] = [0.950_47, 1.0, 1.088_83];

/// One sRGB channel (0..=255, may be fractional) to linear light in 0..=1.
fn linearise(channel: f64) -> f64 {
    let c = (channel / 255.0).clamp(0.0, 1.0);
    if c <= 0.040_45 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

/// CIELAB's companding function.
fn lab_f(t: f64) -> f64 {
    const DELTA: f64 = 6.0 / 29.0;
    if t > DELTA * DELTA * DELTA {
        t.cbrt()
    } else {
        t / (3.0 * DELTA * DELTA) + 4.0 / 29.0
    }
}

/// An sRGB colour with channels in 0..=255 (fractional values allowed, e.g. a mean) to CIELAB.
pub fn lab(rgb: [f64; 3]) -> Lab {
    lab_of_linear(rgb.map(linearise))
}

/// Linear-light sRGB (0..=1) to CIELAB.
fn lab_of_linear([r, g, b]: [f64; 3]) -> Lab {
    let x = 0.412_456_4 * r + 0.357_576_1 * g + 0.180_437_5 * b;
    let y = 0.212_672_9 * r + 0.715_152_2 * g + 0.072_175_0 * b;
    let z = 0.019_333_9 * r + 0.119_192_0 * g + 0.950_304_1 * b;
    let fx = lab_f(x / WHITE[0]);
    let fy = lab_f(y / WHITE[1]);
    let fz = lab_f(z / WHITE[2]);
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

/// An 8-bit sRGB colour to CIELAB.
pub fn lab8(rgb: [u8; 3]) -> Lab {
    lab(rgb.map(f64::from))
}

/// The CIE76 colour difference: the Euclidean distance between two CIELAB colours.
pub fn delta_e76(a: Lab, b: Lab) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// CIELAB of every pixel of an RGB8 buffer (row-major, 3 bytes a pixel); a trailing partial
/// pixel is ignored.
pub fn lab_image(rgb: &[u8]) -> Vec<Lab> {
    // Linearising through a table keeps this cheap on large images.
    let table: Vec<f64> = (0..=255u8).map(|v| linearise(f64::from(v))).collect();
    rgb.chunks_exact(3)
        .map(|p| {
            lab_of_linear([
                table[usize::from(p[0])],
                table[usize::from(p[1])],
                table[usize::from(p[2])],
            ])
        })
        .collect()
}

/// HSV hue in degrees (0..360; 0 for a grey) and saturation (0..=1) of an sRGB colour with
/// channels in 0..=255.
pub fn hue_saturation(rgb: [f64; 3]) -> (f64, f64) {
    let [r, g, b] = rgb;
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let chroma = max - min;
    if max <= 0.0 || chroma <= 0.0 {
        return (0.0, 0.0);
    }
    let hue = if max == r {
        60.0 * ((g - b) / chroma)
    } else if max == g {
        60.0 * (2.0 + (b - r) / chroma)
    } else {
        60.0 * (4.0 + (r - g) / chroma)
    };
    (hue.rem_euclid(360.0), chroma / max)
}

/// The distance between two hues in degrees, around the circle (0..=180).
pub fn hue_distance(a: f64, b: f64) -> f64 {
    let d = (a - b).rem_euclid(360.0);
    d.min(360.0 - d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_of_reference_colours() {
        let white = lab8([255, 255, 255]);
        assert!((white[0] - 100.0).abs() < 0.01 && white[1].abs() < 0.01 && white[2].abs() < 0.01);
        assert_eq!(lab8([0, 0, 0]), [0.0, 0.0, 0.0]);
        // Published value for sRGB (255, 0, 0): L 53.24, a 80.09, b 67.20.
        let red = lab8([255, 0, 0]);
        assert!((red[0] - 53.24).abs() < 0.02, "{red:?}");
        assert!((red[1] - 80.09).abs() < 0.05, "{red:?}");
        assert!((red[2] - 67.20).abs() < 0.05, "{red:?}");
        let grey = lab8([128, 128, 128]);
        assert!((grey[0] - 53.59).abs() < 0.02, "{grey:?}");
        assert_eq!(lab_image(&[255, 0, 0, 0, 0, 0]), vec![red, [0.0, 0.0, 0.0]]);
    }

    #[test]
    fn delta_e_and_hue() {
        assert_eq!(delta_e76([0.0, 0.0, 0.0], [3.0, 4.0, 0.0]), 5.0);
        let (h, s) = hue_saturation([245.0, 130.0, 20.0]);
        assert!((h - 29.333).abs() < 0.01 && (s - 225.0 / 245.0).abs() < 1e-9);
        assert_eq!(hue_saturation([128.0, 128.0, 128.0]), (0.0, 0.0));
        assert_eq!(hue_distance(350.0, 10.0), 20.0);
        assert_eq!(hue_distance(10.0, 190.0), 180.0);
    }
}
