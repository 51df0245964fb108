//! The shapes judge as acs runs it: a [`Judge`] whose score is the fraction of its prompt an
//! image shows, and the JSON that `acs detect --judge shapes` and `acs metrics --prompts`
//! print (every attribute read; a pair's edit and alignment figures).

use serde_json::{json, Map, Value};

use super::caption::{edit_between, parse_caption, Attribute};
use super::pair::pair_alignment;
use super::scene::Position;
use super::verdict::judge_image;
use crate::error::AcsError;
use crate::judge::{Judge, JudgeKind};

/// What the build records as the shapes judge's "weights": it has none, only this reader.
pub const READER_ID: &str = "acs-shapes-reader-v1";

/// The shapes judge: reads the objects of an image and checks them against its prompt.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShapesJudge;

impl Judge for ShapesJudge {
    fn kind(&self) -> JudgeKind {
        JudgeKind::Shapes
    }

    fn weights_sha256(&self) -> &str {
        READER_ID
    }

    /// The fraction of the prompt's attributes the image shows; NaN when the prompt is not a
    /// caption of the demonstrator's grammar (the verdict then says the image does not show
    /// it).
    fn score(
        &self,
        rgb: &[u8],
        width: usize,
        height: usize,
        prompt: &str,
    ) -> Result<f32, AcsError> {
        let verdict = parse_caption(prompt).and_then(|c| judge_image(rgb, width, height, &c));
        Ok(verdict.map_or(f32::NAN, |v| v.score() as f32))
    }
}

fn position_name(position: Option<Position>) -> Value {
    position.map_or(Value::Null, |p| json!(p.phrase()))
}

/// An image's score and what was read, attribute by attribute; `Err` (one line) when the
/// prompt is not a caption of the grammar or the image cannot be read.
pub fn describe_image(
    rgb: &[u8],
    width: usize,
    height: usize,
    prompt: &str,
) -> Result<(f32, Map<String, Value>), String> {
    let expected = parse_caption(prompt).map_err(|e| format!("prompt `{prompt}`: {e}"))?;
    let verdict = judge_image(rgb, width, height, &expected)?;
    let objects: Vec<Value> = verdict
        .objects
        .iter()
        .map(|o| {
            json!({
                "colour": o.colour.map(|c| c.name()),
                "shape": o.shape.map(|s| s.name()),
                "position": position_name(o.position),
                "colour_ok": o.colour_ok,
                "shape_ok": o.shape_ok,
                "position_ok": o.position_ok,
            })
        })
        .collect();
    let mut details = Map::new();
    details.insert("prompt".into(), json!(prompt));
    for (key, ok) in [
        ("colour_ok", verdict.colour_ok),
        ("shape_ok", verdict.shape_ok),
        ("position_ok", verdict.position_ok),
        ("background_ok", verdict.background_ok),
        ("count_ok", verdict.count_ok),
        ("all_ok", verdict.all_ok),
    ] {
        details.insert(key.into(), json!(ok));
    }
    details.insert(
        "background".into(),
        json!(verdict.background.map(|b| b.name())),
    );
    details.insert("components".into(), json!(verdict.components));
    details.insert("objects".into(), json!(objects));
    Ok((verdict.score() as f32, details))
}

/// A pair's edit (which object, which attribute, from and to) and its alignment figures
/// (SPEC.md, "The shapes demonstrator"); `Err` (one line) when the prompts are not captions
/// one colour or shape apart.
pub fn describe_pair(
    unsafe_rgb: &[u8],
    safe_rgb: &[u8],
    width: usize,
    height: usize,
    unsafe_prompt: &str,
    safe_prompt: &str,
) -> Result<Value, String> {
    let unsafe_scene =
        parse_caption(unsafe_prompt).map_err(|e| format!("prompt `{unsafe_prompt}`: {e}"))?;
    let safe_scene =
        parse_caption(safe_prompt).map_err(|e| format!("prompt `{safe_prompt}`: {e}"))?;
    let edit = edit_between(&unsafe_scene, &safe_scene)?;
    let a = pair_alignment(
        unsafe_rgb,
        safe_rgb,
        width,
        height,
        &edit,
        &unsafe_scene,
        &safe_scene,
    )?;
    let attribute = match edit.attribute {
        Attribute::Colour => "colour",
        Attribute::Shape => "shape",
    };
    Ok(json!({
        "edit": {
            "object": edit.object,
            "attribute": attribute,
            "from": edit.from.name(),
            "to": edit.to.name(),
        },
        "edit_ok": a.edit_ok,
        "others_kept": a.others_kept,
        "outside_changed_2px": a.outside_changed_2px,
        "outside_changed_8px": a.outside_changed_8px,
        "untouched_centroid_shift": a.untouched_centroid_shift,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::scene::{Colour, Scene};
    use super::*;

    #[test]
    fn scores_generator_scenes_and_refuses_other_prompts() {
        let scene = Scene::draw(3);
        let rgb = scene.render(64);
        let judge = ShapesJudge;
        assert_eq!(judge.score(&rgb, 64, 64, &scene.caption()).unwrap(), 1.0);
        assert!(judge
            .score(&rgb, 64, 64, "a cat on a mat")
            .unwrap()
            .is_nan());
        let (_, details) = describe_image(&rgb, 64, 64, &scene.caption()).unwrap();
        assert_eq!(details["all_ok"], json!(true));
        let err = describe_image(&rgb, 64, 64, "a pink circle on a white background").unwrap_err();
        assert!(err.contains("pink"), "{err}");
    }

    #[test]
    fn describes_a_colour_swap() {
        let scene = Scene::draw(1);
        let colour = scene.objects[0].colour;
        let other = Colour::ALL.into_iter().find(|&c| c != colour).unwrap();
        let twin = scene.with_colour(0, other).unwrap();
        let (u, s) = (scene.render(64), twin.render(64));
        let pair = describe_pair(&u, &s, 64, 64, &scene.caption(), &twin.caption()).unwrap();
        assert_eq!(pair["edit"]["attribute"], json!("colour"));
        assert_eq!(pair["edit_ok"], json!(true));
        assert_eq!(pair["others_kept"], json!(true));
        assert_eq!(pair["outside_changed_2px"], json!(0.0));
    }
}
