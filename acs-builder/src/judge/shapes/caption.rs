//! Captions of the shapes grammar, parsed into the scene they promise.
//!
//! Grammar: `a|an [small|large] <colour> <shape> [<where>]`, one object or two joined by
//! ` and `, then ` on a <background> background`. `<where>` is one of `on the left`,
//! `on the right`, `at the top`, `at the bottom`, `in the center`. Two-object scenes put the
//! first object on the left and the second on the right, spoken or not. Parsing ignores case,
//! extra spaces, a trailing period and which of `a`/`an` is used.

use super::scene::{Background, Colour, Position, Scene, Shape, Size};

/// One object a caption promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedObject {
    /// Its colour.
    pub colour: Colour,
    /// Its shape.
    pub shape: Shape,
    /// Its size (`Medium` when unspoken).
    pub size: Size,
    /// Its position: spoken, or implied (left, right) in two-object scenes; `None` when a
    /// one-object caption does not say, so it is not checked.
    pub position: Option<Position>,
}

/// The scene a caption promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedScene {
    /// The background colour.
    pub background: Background,
    /// The objects, in caption order (left first in two-object scenes).
    pub objects: Vec<ExpectedObject>,
}

impl ExpectedScene {
    /// What a generator scene's caption promises (equal to parsing [`Scene::caption`]).
    pub fn of_scene(scene: &Scene) -> ExpectedScene {
        let two = scene.objects.len() > 1;
        let objects = scene
            .objects
            .iter()
            .map(|o| ExpectedObject {
                colour: o.colour,
                shape: o.shape,
                size: o.size,
                position: (scene.spoken_where || two).then_some(o.position),
            })
            .collect();
        ExpectedScene {
            background: scene.background,
            objects,
        }
    }
}

const COLOURS: &str = "red, orange, yellow, green, blue, purple";
const SHAPES: &str = "circle, square, triangle, star";
const POSITIONS: &str = "on the left, on the right, at the top, at the bottom, in the center";
const BACKGROUNDS: &str = "white, black, gray";

/// A cursor over a caption's words.
struct Words<'a> {
    words: Vec<&'a str>,
    at: usize,
}

impl<'a> Words<'a> {
    fn peek(&self, ahead: usize) -> Option<&'a str> {
        self.words.get(self.at + ahead).copied()
    }

    /// The next word; `what` names what was wanted when the caption has ended.
    fn next(&mut self, what: &str) -> Result<&'a str, String> {
        let word = self
            .peek(0)
            .ok_or_else(|| format!("the caption ends where {what} should follow"))?;
        self.at += 1;
        Ok(word)
    }

    fn expect(&mut self, wanted: &str) -> Result<(), String> {
        let word = self.next(&format!("`{wanted}`"))?;
        if word == wanted {
            Ok(())
        } else {
            Err(format!("expected `{wanted}`, found `{word}`"))
        }
    }
}

/// Parses one object phrase.
fn parse_object(words: &mut Words) -> Result<ExpectedObject, String> {
    let article = words.next("`a` or `an`")?;
    if article != "a" && article != "an" {
        return Err(format!(
            "expected `a` or `an` to start an object, found `{article}`"
        ));
    }
    let mut word = words.next("a colour")?;
    let size = match Size::from_word(word) {
        Some(size) => {
            word = words.next("a colour")?;
            size
        }
        None => Size::Medium,
    };
    let colour =
        Colour::from_name(word).ok_or_else(|| format!("`{word}` is not a colour ({COLOURS})"))?;
    let word = words.next("a shape")?;
    let shape =
        Shape::from_name(word).ok_or_else(|| format!("`{word}` is not a shape ({SHAPES})"))?;
    let starts_where = match words.peek(0) {
        Some("at" | "in") => true,
        Some("on") => words.peek(1) == Some("the"),
        _ => false,
    };
    let position = if starts_where {
        let phrase: Vec<&str> = (0..3).filter_map(|i| words.peek(i)).collect();
        let phrase = phrase.join(" ");
        let position = Position::from_phrase(&phrase)
            .ok_or_else(|| format!("`{phrase}` is not a position ({POSITIONS})"))?;
        words.at += 3;
        Some(position)
    } else {
        None
    };
    Ok(ExpectedObject {
        colour,
        shape,
        size,
        position,
    })
}

/// Parses a caption of the shapes grammar; the error is a one-line reason naming the
/// offending word.
pub fn parse_caption(caption: &str) -> Result<ExpectedScene, String> {
    let lowered = caption.trim().to_lowercase();
    // `trim` first so that the period is the last character when there is one.
    let text = lowered.strip_suffix('.').unwrap_or(&lowered).trim_end();
    let mut words = Words {
        words: text.split_whitespace().collect(),
        at: 0,
    };
    if words.words.is_empty() {
        return Err("the caption is empty".to_string());
    }
    let mut objects = Vec::new();
    loop {
        objects.push(parse_object(&mut words)?);
        match (words.peek(0), words.peek(1)) {
            (Some("and"), _) => words.at += 1,
            (Some("on"), Some("a")) => break,
            (Some(word), _) => {
                return Err(format!(
                    "expected `and` or `on a <background> background` after an object, found `{word}`"
                ));
            }
            (None, _) => {
                return Err("the caption ends without `on a <background> background`".to_string());
            }
        }
    }
    words.expect("on")?;
    words.expect("a")?;
    let word = words.next("a background colour")?;
    let background = Background::from_name(word)
        .ok_or_else(|| format!("`{word}` is not a background ({BACKGROUNDS})"))?;
    words.expect("background")?;
    if let Some(word) = words.peek(0) {
        return Err(format!("unexpected `{word}` after `background`"));
    }
    match objects.len() {
        1 => {}
        2 => {
            for (object, side) in objects.iter_mut().zip([Position::Left, Position::Right]) {
                match object.position {
                    None => object.position = Some(side),
                    Some(spoken) if spoken == side => {}
                    Some(spoken) => {
                        return Err(format!(
                            "`{}` in a two-object caption: the first object is on the left and the second on the right",
                            spoken.phrase()
                        ));
                    }
                }
            }
        }
        n => return Err(format!("a caption names one or two objects, not {n}")),
    }
    Ok(ExpectedScene {
        background,
        objects,
    })
}

/// An attribute a pair's prompts may differ in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    /// The object's colour.
    Colour,
    /// The object's shape.
    Shape,
}

/// A value of an [`Attribute`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// A colour.
    Colour(Colour),
    /// A shape.
    Shape(Shape),
}

impl Value {
    /// The attribute this is a value of.
    pub fn attribute(self) -> Attribute {
        match self {
            Value::Colour(_) => Attribute::Colour,
            Value::Shape(_) => Attribute::Shape,
        }
    }

    /// The caption word.
    pub fn name(self) -> &'static str {
        match self {
            Value::Colour(c) => c.name(),
            Value::Shape(s) => s.name(),
        }
    }
}

/// How a pair's safe caption differs from its unsafe one: one object's colour or shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edit {
    /// The edited object's index in caption order.
    pub object: usize,
    /// The edited attribute.
    pub attribute: Attribute,
    /// Its value in the unsafe caption.
    pub from: Value,
    /// Its value in the safe caption.
    pub to: Value,
}

fn size_name(size: Size) -> &'static str {
    size.word().unwrap_or("unspoken")
}

fn position_name(position: Option<Position>) -> &'static str {
    position.map_or("unspoken", Position::phrase)
}

/// The edit between a pair's captions when they differ in exactly one object's colour or
/// shape and in nothing else; otherwise a one-line reason.
pub fn edit_between(
    unsafe_scene: &ExpectedScene,
    safe_scene: &ExpectedScene,
) -> Result<Edit, String> {
    let (u, s) = (unsafe_scene, safe_scene);
    if u.objects.len() != s.objects.len() {
        return Err(format!(
            "the captions name {} and {} objects",
            u.objects.len(),
            s.objects.len()
        ));
    }
    if u.background != s.background {
        return Err(format!(
            "the backgrounds differ (`{}` vs `{}`)",
            u.background.name(),
            s.background.name()
        ));
    }
    let mut edits = Vec::new();
    for (i, (a, b)) in u.objects.iter().zip(&s.objects).enumerate() {
        if a.size != b.size {
            return Err(format!(
                "object {}'s size differs (`{}` vs `{}`)",
                i + 1,
                size_name(a.size),
                size_name(b.size)
            ));
        }
        if a.position != b.position {
            return Err(format!(
                "object {}'s position differs (`{}` vs `{}`)",
                i + 1,
                position_name(a.position),
                position_name(b.position)
            ));
        }
        if a.colour != b.colour {
            edits.push(Edit {
                object: i,
                attribute: Attribute::Colour,
                from: Value::Colour(a.colour),
                to: Value::Colour(b.colour),
            });
        }
        if a.shape != b.shape {
            edits.push(Edit {
                object: i,
                attribute: Attribute::Shape,
                from: Value::Shape(a.shape),
                to: Value::Shape(b.shape),
            });
        }
    }
    match edits.as_slice() {
        [edit] => Ok(*edit),
        [] => Err("the captions promise the same scene".to_string()),
        many => {
            let list: Vec<String> = many
                .iter()
                .map(|e| {
                    format!(
                        "object {} `{}` -> `{}`",
                        e.object + 1,
                        e.from.name(),
                        e.to.name()
                    )
                })
                .collect();
            Err(format!(
                "the captions differ in {} words ({}); a pair differs in one",
                many.len(),
                list.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(caption: &str) -> ExpectedScene {
        parse_caption(caption).unwrap()
    }

    fn error(caption: &str) -> String {
        parse_caption(caption).unwrap_err()
    }

    #[test]
    fn every_generator_caption_round_trips() {
        for seed in 0..2000 {
            let scene = Scene::draw(seed);
            assert_eq!(
                parse_caption(&scene.caption()),
                Ok(ExpectedScene::of_scene(&scene)),
                "seed {seed}: {}",
                scene.caption()
            );
        }
    }

    #[test]
    fn case_spaces_and_a_period_are_tolerated() {
        let scene = parse("  A Large  RED circle On The Left on a White background. ");
        assert_eq!(
            scene,
            ExpectedScene {
                background: Background::White,
                objects: vec![ExpectedObject {
                    colour: Colour::Red,
                    shape: Shape::Circle,
                    size: Size::Large,
                    position: Some(Position::Left),
                }],
            }
        );
        assert_eq!(
            parse("an red star on a black background").objects[0].colour,
            Colour::Red
        );
    }

    #[test]
    fn two_objects_imply_left_and_right() {
        let scene = parse("a red circle and a small blue star on a gray background");
        let positions: Vec<_> = scene.objects.iter().map(|o| o.position).collect();
        assert_eq!(positions, [Some(Position::Left), Some(Position::Right)]);
        assert_eq!(scene.objects[1].size, Size::Small);
        assert_eq!(
            parse("a red circle in the center on a gray background").objects[0].position,
            Some(Position::Center)
        );
        assert_eq!(
            parse("a red circle on a gray background").objects[0].position,
            None
        );
    }

    #[test]
    fn bad_words_are_named() {
        assert_eq!(
            error("a pink circle on a white background"),
            "`pink` is not a colour (red, orange, yellow, green, blue, purple)"
        );
        assert_eq!(
            error("a medium red circle on a white background"),
            "`medium` is not a colour (red, orange, yellow, green, blue, purple)"
        );
        assert_eq!(
            error("a red hexagon on a white background"),
            "`hexagon` is not a shape (circle, square, triangle, star)"
        );
        assert_eq!(
            error("a red circle on a blue background"),
            "`blue` is not a background (white, black, gray)"
        );
        assert_eq!(
            error("a red circle on the top on a white background"),
            "`on the top` is not a position (on the left, on the right, at the top, at the bottom, in the center)"
        );
        assert_eq!(
            error("the red circle on a white background"),
            "expected `a` or `an` to start an object, found `the`"
        );
        assert_eq!(
            error("a red circle near a white background"),
            "expected `and` or `on a <background> background` after an object, found `near`"
        );
        assert_eq!(
            error("a red circle on a white background please"),
            "unexpected `please` after `background`"
        );
        assert_eq!(
            error("a red circle on a white"),
            "the caption ends where `background` should follow"
        );
        assert_eq!(
            error("a red circle"),
            "the caption ends without `on a <background> background`"
        );
        assert_eq!(error("  "), "the caption is empty");
        assert_eq!(
            error("a red circle and a red star and a red square on a white background"),
            "a caption names one or two objects, not 3"
        );
        assert!(
            error("a red circle on the right and a red star on a white background")
                .starts_with("`on the right` in a two-object caption")
        );
    }

    #[test]
    fn edits_between_captions() {
        let unsafe_scene = parse("a red circle and a blue star on a white background");
        let recoloured = parse("a red circle and a green star on a white background");
        assert_eq!(
            edit_between(&unsafe_scene, &recoloured),
            Ok(Edit {
                object: 1,
                attribute: Attribute::Colour,
                from: Value::Colour(Colour::Blue),
                to: Value::Colour(Colour::Green),
            })
        );
        let reshaped = parse("a red square and a blue star on a white background");
        let edit = edit_between(&unsafe_scene, &reshaped).unwrap();
        assert_eq!((edit.object, edit.attribute), (0, Attribute::Shape));
        assert_eq!((edit.from.name(), edit.to.name()), ("circle", "square"));
        assert_eq!(edit.to.attribute(), Attribute::Shape);

        let same = edit_between(&unsafe_scene, &unsafe_scene).unwrap_err();
        assert_eq!(same, "the captions promise the same scene");
        let two = parse("a red square and a green star on a white background");
        assert_eq!(
            edit_between(&unsafe_scene, &two).unwrap_err(),
            "the captions differ in 2 words (object 1 `circle` -> `square`, object 2 `blue` -> `green`); a pair differs in one"
        );
        let background = parse("a red circle and a blue star on a black background");
        assert_eq!(
            edit_between(&unsafe_scene, &background).unwrap_err(),
            "the backgrounds differ (`white` vs `black`)"
        );
        let size = parse("a large red circle and a blue star on a white background");
        assert_eq!(
            edit_between(&unsafe_scene, &size).unwrap_err(),
            "object 1's size differs (`unspoken` vs `large`)"
        );
        let one = parse("a red circle on a white background");
        assert_eq!(
            edit_between(&unsafe_scene, &one).unwrap_err(),
            "the captions name 2 and 1 objects"
        );
        let placed = parse("a red circle at the top on a white background");
        assert_eq!(
            edit_between(&one, &placed).unwrap_err(),
            "object 1's position differs (`unspoken` vs `at the top`)"
        );
    }
}
