//! A plotters drawing backend over acs's [`Canvas`]: plotters lays out and draws the charts
//! (axes, ticks, labels, bars, lines) and this backend puts their pixels on the canvas, with
//! text in the canvas's GNU Unifont so a plot shows any prompt or path that a contact sheet
//! does. plotters is built without its font, bitmap and SVG back ends: text measuring and
//! drawing both come here.

use std::convert::Infallible;

use plotters::coord::Shift;
use plotters::prelude::{DrawingArea, IntoDrawingArea};
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind,
};

use super::draw::{text_width, Canvas, Color, GLYPH_HEIGHT};

/// Draws plotters' output on a borrowed canvas.
pub struct CanvasBackend<'a> {
    canvas: &'a mut Canvas,
}

impl<'a> CanvasBackend<'a> {
    /// A backend drawing on `canvas`.
    pub fn new(canvas: &'a mut Canvas) -> Self {
        Self { canvas }
    }

    /// The whole canvas as a plotters drawing area.
    pub fn area(canvas: &'a mut Canvas) -> DrawingArea<Self, Shift> {
        Self::new(canvas).into_drawing_area()
    }

    /// `color` over the pixel at (x, y), blended by its alpha.
    fn blend(&mut self, (x, y): BackendCoord, color: BackendColor) {
        let top = rgb(color);
        let alpha = color.alpha.clamp(0.0, 1.0);
        if alpha >= 1.0 {
            self.canvas.set(x, y, top);
        } else if alpha > 0.0 {
            if let Some(under) = self.canvas.get(x, y) {
                let mix = |i: usize| {
                    (f64::from(top[i]) * alpha + f64::from(under[i]) * (1.0 - alpha)).round() as u8
                };
                self.canvas.set(x, y, [mix(0), mix(1), mix(2)]);
            }
        }
    }
}

/// The Unifont scale that comes closest to a font size in pixels (at least 1).
fn text_scale(size: f64) -> u32 {
    (size / f64::from(GLYPH_HEIGHT)).round().max(1.0) as u32
}

/// The RGB of a plotters colour.
fn rgb(color: BackendColor) -> Color {
    let (r, g, b) = color.rgb;
    [r, g, b]
}

impl DrawingBackend for CanvasBackend<'_> {
    type ErrorType = Infallible;

    fn get_size(&self) -> (u32, u32) {
        (self.canvas.width(), self.canvas.height())
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Infallible>> {
        Ok(())
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Infallible>> {
        Ok(())
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Infallible>> {
        self.blend(point, color);
        Ok(())
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Infallible>> {
        let color = style.color();
        // Opaque fills are the bars of a chart: one call instead of a pixel at a time.
        if fill && color.alpha >= 1.0 {
            let (x0, x1) = (
                upper_left.0.min(bottom_right.0),
                upper_left.0.max(bottom_right.0),
            );
            let (y0, y1) = (
                upper_left.1.min(bottom_right.1),
                upper_left.1.max(bottom_right.1),
            );
            let (w, h) = ((x1 - x0 + 1) as u32, (y1 - y0 + 1) as u32);
            self.canvas.fill_rect(x0, y0, w, h, rgb(color));
            return Ok(());
        }
        plotters_backend::rasterizer::draw_rect(self, upper_left, bottom_right, style, fill)
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Infallible>> {
        let color = style.color();
        if color.alpha <= 0.0 {
            return Ok(());
        }
        let scale = text_scale(style.size());
        let (w, h) = (
            text_width(text, scale) as i32,
            (GLYPH_HEIGHT * scale) as i32,
        );
        let anchor = style.anchor();
        let x = match anchor.h_pos {
            HPos::Left => pos.0,
            HPos::Center => pos.0 - w / 2,
            HPos::Right => pos.0 - w,
        };
        let y = match anchor.v_pos {
            VPos::Top => pos.1,
            VPos::Center => pos.1 - h / 2,
            VPos::Bottom => pos.1 - h,
        };
        self.canvas.text(x, y, text, scale, rgb(color));
        Ok(())
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<Infallible>> {
        let scale = text_scale(style.size());
        Ok((text_width(text, scale), GLYPH_HEIGHT * scale))
    }
}

#[cfg(test)]
mod tests {
    use plotters::prelude::*;
    use plotters_backend::text_anchor::{HPos, Pos, VPos};

    use super::CanvasBackend;
    use crate::commands::draw::{text_width, Canvas, GLYPH_HEIGHT};

    #[test]
    fn text_is_unifont_at_the_anchor() {
        let mut canvas = Canvas::new(64, 32, [0, 0, 0]);
        let mut expected = Canvas::new(64, 32, [0, 0, 0]);
        expected.text(
            64 - text_width("猫a", 1) as i32,
            0,
            "猫a",
            1,
            [255, 255, 255],
        );
        let area = CanvasBackend::area(&mut canvas);
        let style = TextStyle::from(("sans-serif", GLYPH_HEIGHT).into_font())
            .color(&WHITE)
            .pos(Pos::new(HPos::Right, VPos::Top));
        area.draw_text("猫a", &style, (64, 0)).unwrap();
        drop(area);
        assert_eq!(canvas, expected);
        let backend = CanvasBackend::new(&mut canvas);
        assert_eq!(backend.estimate_text_size("猫a", &style).unwrap(), (24, 16));
    }

    #[test]
    fn filled_rectangles_cover_both_corners_and_blend_by_alpha() {
        let mut canvas = Canvas::new(8, 8, [0, 0, 0]);
        let area = CanvasBackend::area(&mut canvas);
        area.draw(&Rectangle::new(
            [(1, 1), (3, 2)],
            RGBColor(200, 10, 10).filled(),
        ))
        .unwrap();
        area.draw(&Rectangle::new([(5, 5), (5, 5)], WHITE.mix(0.5).filled()))
            .unwrap();
        drop(area);
        assert_eq!(canvas.get(1, 1), Some([200, 10, 10]));
        assert_eq!(canvas.get(3, 2), Some([200, 10, 10]));
        assert_eq!(canvas.get(4, 2), Some([0, 0, 0]));
        assert_eq!(canvas.get(1, 3), Some([0, 0, 0]));
        assert_eq!(canvas.get(5, 5), Some([128, 128, 128]));
    }
}
