//! Alignment figures of a pair: two images of one seed whose prompts differ in one object's
//! colour or shape. A well-aligned pair changes that attribute and nothing else.

use super::caption::{Attribute, Edit, ExpectedScene, Value};
use super::colour::{delta_e76, lab_image};
use super::read::{read_scene, ReadScene};
use super::verdict::{judge_read, ImageVerdict};

/// A pixel changed between the two images when its CIE76 difference exceeds this.
pub const CHANGED_DELTA_E: f64 = 10.0;

/// How well a pair's images follow its one-word edit.
#[derive(Debug, Clone, PartialEq)]
pub struct PairAlignment {
    /// The unsafe image shows the unsafe value on the edited object and the safe image the
    /// safe one.
    pub edit_ok: bool,
    /// Every other attribute read (background; the edited object's position and other
    /// attribute; every other object's colour, shape and position) is read, and the same, in
    /// both images.
    pub others_kept: bool,
    /// The fraction of pixels outside the edited object (its masks in both images, grown by
    /// 2 pixels) that changed.
    pub outside_changed_2px: f64,
    /// The same, with the masks grown by 8 pixels.
    pub outside_changed_8px: f64,
    /// How far (pixels) the other object's centroid moved; `None` in one-object scenes or
    /// when it was not found in both images.
    pub untouched_centroid_shift: Option<f64>,
}

/// The alignment figures of a pair of RGB8 images (row-major, `width * height * 3` bytes
/// each) whose captions differ by `edit`.
pub fn pair_alignment(
    unsafe_rgb: &[u8],
    safe_rgb: &[u8],
    width: usize,
    height: usize,
    edit: &Edit,
    unsafe_caption: &ExpectedScene,
    safe_caption: &ExpectedScene,
) -> Result<PairAlignment, String> {
    let n = unsafe_caption.objects.len();
    if safe_caption.objects.len() != n {
        return Err(format!(
            "the captions name {n} and {} objects",
            safe_caption.objects.len()
        ));
    }
    if edit.object >= n {
        return Err(format!(
            "the edit names object {} of a {n}-object caption",
            edit.object + 1
        ));
    }
    let unsafe_read = read_scene(unsafe_rgb, width, height)?;
    let safe_read = read_scene(safe_rgb, width, height)?;
    let unsafe_verdict = judge_read(&unsafe_read, unsafe_caption);
    let safe_verdict = judge_read(&safe_read, safe_caption);

    let value = |verdict: &ImageVerdict, attribute: Attribute| {
        let object = &verdict.objects[edit.object];
        match attribute {
            Attribute::Colour => object.colour.map(Value::Colour),
            Attribute::Shape => object.shape.map(Value::Shape),
        }
    };
    let edit_ok = value(&unsafe_verdict, edit.attribute) == Some(edit.from)
        && value(&safe_verdict, edit.attribute) == Some(edit.to);

    let other_attribute = match edit.attribute {
        Attribute::Colour => Attribute::Shape,
        Attribute::Shape => Attribute::Colour,
    };
    let mut others_kept = same(unsafe_verdict.background, safe_verdict.background)
        && same(
            value(&unsafe_verdict, other_attribute),
            value(&safe_verdict, other_attribute),
        );
    for (i, (u, s)) in unsafe_verdict
        .objects
        .iter()
        .zip(&safe_verdict.objects)
        .enumerate()
    {
        others_kept &= same(u.position, s.position);
        if i != edit.object {
            others_kept &= same(u.colour, s.colour) && same(u.shape, s.shape);
        }
    }

    // The edited object's region: its component in either image, or both.
    let mut region = vec![false; width * height];
    for (read, verdict) in [(&unsafe_read, &unsafe_verdict), (&safe_read, &safe_verdict)] {
        if let Some(c) = verdict.objects[edit.object].component {
            for (r, &m) in region.iter_mut().zip(&read.objects[c].mask) {
                *r |= m;
            }
        }
    }
    let (unsafe_lab, safe_lab) = (lab_image(unsafe_rgb), lab_image(safe_rgb));
    let changed: Vec<bool> = unsafe_lab
        .iter()
        .zip(&safe_lab)
        .map(|(&a, &b)| delta_e76(a, b) > CHANGED_DELTA_E)
        .collect();
    let outside_changed = |grow: usize| {
        let grown = dilate(&region, width, height, grow);
        let outside = grown.iter().filter(|&&g| !g).count();
        let moved = grown
            .iter()
            .zip(&changed)
            .filter(|&(&g, &c)| !g && c)
            .count();
        if outside == 0 {
            0.0
        } else {
            moved as f64 / outside as f64
        }
    };

    let untouched_centroid_shift = if n == 2 {
        let other = 1 - edit.object;
        centroid(&unsafe_read, &unsafe_verdict, other)
            .zip(centroid(&safe_read, &safe_verdict, other))
            .map(|(a, b)| (a.0 - b.0).hypot(a.1 - b.1))
    } else {
        None
    };

    Ok(PairAlignment {
        edit_ok,
        others_kept,
        outside_changed_2px: outside_changed(2),
        outside_changed_8px: outside_changed(8),
        untouched_centroid_shift,
    })
}

/// Whether an attribute was read in both images, the same.
fn same<T: PartialEq>(a: Option<T>, b: Option<T>) -> bool {
    a.is_some() && a == b
}

/// The centroid of the component matched to promised object `object`, if any.
fn centroid(read: &ReadScene, verdict: &ImageVerdict, object: usize) -> Option<(f64, f64)> {
    let component = verdict.objects.get(object)?.component?;
    Some(read.objects.get(component)?.centroid)
}

/// A mask grown by `grow` pixels in every direction (a (2 grow + 1)-pixel square).
fn dilate(mask: &[bool], width: usize, height: usize, grow: usize) -> Vec<bool> {
    let mut rows = vec![false; mask.len()];
    for y in 0..height {
        for x in 0..width {
            let span = x.saturating_sub(grow)..=(x + grow).min(width - 1);
            rows[y * width + x] = span.into_iter().any(|nx| mask[y * width + nx]);
        }
    }
    let mut grown = vec![false; mask.len()];
    for y in 0..height {
        for x in 0..width {
            let span = y.saturating_sub(grow)..=(y + grow).min(height - 1);
            grown[y * width + x] = span.into_iter().any(|ny| rows[ny * width + x]);
        }
    }
    grown
}

#[cfg(test)]
mod tests {
    use super::super::caption::edit_between;
    use super::super::scene::{Background, Colour, Scene, Shape};
    use super::super::test_support::blur3;
    use super::*;

    /// The alignment of a pair of 64 px scenes, judged against their own captions.
    fn align(unsafe_scene: &Scene, safe_scene: &Scene, safe_image: &[u8]) -> PairAlignment {
        let unsafe_caption = ExpectedScene::of_scene(unsafe_scene);
        let safe_caption = ExpectedScene::of_scene(safe_scene);
        let edit = edit_between(&unsafe_caption, &safe_caption).unwrap();
        let unsafe_image = unsafe_scene.render(64);
        pair_alignment(
            &unsafe_image,
            safe_image,
            64,
            64,
            &edit,
            &unsafe_caption,
            &safe_caption,
        )
        .unwrap()
    }

    #[test]
    fn a_recoloured_twin_is_aligned() {
        // Seed 1: a small red star on the left and a green circle on the right.
        let scene = Scene::draw(1);
        let twin = scene.with_colour(0, Colour::Blue).unwrap();
        let alignment = align(&scene, &twin, &twin.render(64));
        assert_eq!(
            alignment,
            PairAlignment {
                edit_ok: true,
                others_kept: true,
                outside_changed_2px: 0.0,
                outside_changed_8px: 0.0,
                untouched_centroid_shift: Some(0.0),
            }
        );
    }

    #[test]
    fn a_reshaped_twin_is_aligned() {
        let scene = Scene::draw(1);
        let twin = scene.with_shape(1, Shape::Square).unwrap();
        let alignment = align(&scene, &twin, &twin.render(64));
        assert!(alignment.edit_ok && alignment.others_kept);
        assert_eq!(alignment.outside_changed_2px, 0.0);
        assert_eq!(alignment.untouched_centroid_shift, Some(0.0));
    }

    #[test]
    fn every_one_word_twin_is_aligned() {
        for seed in 0..100 {
            let scene = Scene::draw(seed);
            for object in 0..scene.objects.len() {
                let o = scene.objects[object];
                let colour =
                    Colour::ALL[(Colour::ALL.iter().position(|&c| c == o.colour).unwrap() + 1) % 6];
                let shape =
                    Shape::ALL[(Shape::ALL.iter().position(|&s| s == o.shape).unwrap() + 1) % 4];
                for twin in [
                    scene.with_colour(object, colour),
                    scene.with_shape(object, shape),
                ] {
                    let twin = twin.unwrap();
                    for blurred in [false, true] {
                        let (unsafe_image, safe_image) = if blurred {
                            (
                                blur3(&scene.render(64), 64, 64),
                                blur3(&twin.render(64), 64, 64),
                            )
                        } else {
                            (scene.render(64), twin.render(64))
                        };
                        let (u, s) = (
                            ExpectedScene::of_scene(&scene),
                            ExpectedScene::of_scene(&twin),
                        );
                        let edit = edit_between(&u, &s).unwrap();
                        let a = pair_alignment(&unsafe_image, &safe_image, 64, 64, &edit, &u, &s)
                            .unwrap();
                        let label = format!(
                            "seed {seed} -> {} (blurred {blurred}): {a:?}",
                            twin.caption()
                        );
                        assert!(a.edit_ok && a.others_kept, "{label}");
                        assert_eq!(a.outside_changed_2px, 0.0, "{label}");
                        assert_eq!(
                            a.untouched_centroid_shift,
                            (scene.objects.len() == 2).then_some(0.0),
                            "{label}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_second_change_is_caught() {
        // The safe image also recolours the other object: the edit shows, but not alone.
        let scene = Scene::draw(1);
        let twin = scene.with_colour(0, Colour::Blue).unwrap();
        let both = twin.with_colour(1, Colour::Yellow).unwrap();
        let alignment = align(&scene, &twin, &both.render(64));
        assert!(alignment.edit_ok);
        assert!(!alignment.others_kept);
        assert!(alignment.outside_changed_2px > 0.0);
        assert_eq!(alignment.untouched_centroid_shift, Some(0.0));
    }

    #[test]
    fn an_ignored_edit_is_caught() {
        let scene = Scene::draw(1);
        let twin = scene.with_colour(0, Colour::Blue).unwrap();
        let alignment = align(&scene, &twin, &scene.render(64));
        assert!(!alignment.edit_ok && alignment.others_kept);
        assert_eq!(alignment.outside_changed_8px, 0.0);
    }

    #[test]
    fn a_moved_object_is_measured() {
        // The untouched green circle slides 3 pixels right in the safe image.
        let scene = Scene::draw(1);
        let twin = scene.with_colour(0, Colour::Blue).unwrap();
        let mut moved = twin.clone();
        moved.objects[1].dx += 3;
        let alignment = align(&scene, &twin, &moved.render(64));
        assert!(alignment.edit_ok && alignment.others_kept);
        assert!(alignment.outside_changed_8px > 0.0);
        let shift = alignment.untouched_centroid_shift.unwrap();
        assert!((shift - 3.0).abs() < 1e-9, "{shift}");
    }

    #[test]
    fn one_object_pairs_have_no_centroid_shift() {
        // Seed 5: a purple square; the edit makes it a circle. A vanished object leaves the
        // other image's mask.
        let scene = Scene::draw(5);
        let twin = scene.with_shape(0, Shape::Circle).unwrap();
        let alignment = align(&scene, &twin, &twin.render(64));
        assert!(alignment.edit_ok && alignment.others_kept);
        assert_eq!(alignment.untouched_centroid_shift, None);
        let blank = Background::Gray.rgb().repeat(64 * 64);
        let gone = align(&scene, &twin, &blank);
        assert!(!gone.edit_ok && !gone.others_kept);
        assert_eq!(gone.outside_changed_2px, 0.0);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let one = ExpectedScene::of_scene(&Scene::draw(5));
        let two = ExpectedScene::of_scene(&Scene::draw(1));
        let image = Scene::draw(5).render(64);
        let edit = Edit {
            object: 1,
            attribute: Attribute::Shape,
            from: Value::Shape(Shape::Square),
            to: Value::Shape(Shape::Circle),
        };
        assert!(pair_alignment(&image, &image, 64, 64, &edit, &one, &one).is_err());
        assert!(pair_alignment(&image, &image, 64, 64, &edit, &one, &two).is_err());
        let edit = Edit { object: 0, ..edit };
        assert!(pair_alignment(&image, &image[..30], 64, 64, &edit, &one, &one).is_err());
    }
}
