//! The shapes demonstrator's captioned scenes, drawn deterministically from a seed.
//!
//! A bit-for-bit port of `scripts/demonstrator/scenes.py`: the same SplitMix64 draws in the
//! same order (`below(n) = next_u64() % n`), the same float64 geometry evaluated in the same
//! operation order, and the same captions, so both sides draw the same pixels and caption for
//! a seed. Geometry is defined on a 64-pixel canvas and scaled by `size / 64`.

use crate::runtime::rng::SplitMix64;

/// The six object colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Colour {
    /// `red`, (230, 25, 25).
    Red,
    /// `orange`, (245, 130, 20).
    Orange,
    /// `yellow`, (245, 220, 30).
    Yellow,
    /// `green`, (40, 180, 50).
    Green,
    /// `blue`, (30, 70, 230).
    Blue,
    /// `purple`, (140, 40, 200).
    Purple,
}

impl Colour {
    /// Every colour, in the generator's draw order.
    pub const ALL: [Colour; 6] = [
        Colour::Red,
        Colour::Orange,
        Colour::Yellow,
        Colour::Green,
        Colour::Blue,
        Colour::Purple,
    ];

    /// The caption word.
    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Orange => "orange",
            Colour::Yellow => "yellow",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Purple => "purple",
        }
    }

    /// The rendered sRGB colour.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [230, 25, 25],
            Colour::Orange => [245, 130, 20],
            Colour::Yellow => [245, 220, 30],
            Colour::Green => [40, 180, 50],
            Colour::Blue => [30, 70, 230],
            Colour::Purple => [140, 40, 200],
        }
    }

    /// The colour a (lower-case) caption word names.
    pub fn from_name(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == word)
    }
}

/// The four object shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// A disc of radius `r`.
    Circle,
    /// An axis-aligned square of half-side `r`.
    Square,
    /// A triangle, apex up, base `2r` wide and `2r` high.
    Triangle,
    /// A five-pointed star, point up, outer radius `r`.
    Star,
}

impl Shape {
    /// Every shape, in the generator's draw order.
    pub const ALL: [Shape; 4] = [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Star];

    /// The caption word.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Star => "star",
        }
    }

    /// The shape a (lower-case) caption word names.
    pub fn from_name(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == word)
    }
}

/// The three object sizes; the middle one is not spoken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Size {
    /// `small`: radius 7 on a 64-pixel canvas.
    Small,
    /// Unspoken: radius 9.
    Medium,
    /// `large`: radius 12.
    Large,
}

impl Size {
    /// Every size, in the generator's draw order.
    pub const ALL: [Size; 3] = [Size::Small, Size::Medium, Size::Large];

    /// The caption word; `None` for the unspoken middle size.
    pub fn word(self) -> Option<&'static str> {
        match self {
            Size::Small => Some("small"),
            Size::Medium => None,
            Size::Large => Some("large"),
        }
    }

    /// Half the bounding box on a 64-pixel canvas.
    pub fn radius(self) -> f64 {
        match self {
            Size::Small => 7.0,
            Size::Medium => 9.0,
            Size::Large => 12.0,
        }
    }

    /// The size a spoken (lower-case) caption word names.
    pub fn from_word(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.word() == Some(word))
    }
}

/// The five object positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    /// `on the left`, centred at (16, 32).
    Left,
    /// `on the right`, centred at (48, 32).
    Right,
    /// `at the top`, centred at (32, 16).
    Top,
    /// `at the bottom`, centred at (32, 48).
    Bottom,
    /// `in the center`, centred at (32, 32).
    Center,
}

impl Position {
    /// Every position, in the generator's draw order.
    pub const ALL: [Position; 5] = [
        Position::Left,
        Position::Right,
        Position::Top,
        Position::Bottom,
        Position::Center,
    ];

    /// The caption phrase, e.g. `on the left`.
    pub fn phrase(self) -> &'static str {
        match self {
            Position::Left => "on the left",
            Position::Right => "on the right",
            Position::Top => "at the top",
            Position::Bottom => "at the bottom",
            Position::Center => "in the center",
        }
    }

    /// The object's nominal centre on a 64-pixel canvas.
    pub fn centre(self) -> (f64, f64) {
        match self {
            Position::Left => (16.0, 32.0),
            Position::Right => (48.0, 32.0),
            Position::Top => (32.0, 16.0),
            Position::Bottom => (32.0, 48.0),
            Position::Center => (32.0, 32.0),
        }
    }

    /// The position a (lower-case, single-spaced) caption phrase names.
    pub fn from_phrase(phrase: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.phrase() == phrase)
    }
}

/// The three background colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Background {
    /// `white`, (255, 255, 255).
    White,
    /// `black`, (0, 0, 0).
    Black,
    /// `gray`, (128, 128, 128).
    Gray,
}

impl Background {
    /// Every background, in the generator's draw order.
    pub const ALL: [Background; 3] = [Background::White, Background::Black, Background::Gray];

    /// The caption word.
    pub fn name(self) -> &'static str {
        match self {
            Background::White => "white",
            Background::Black => "black",
            Background::Gray => "gray",
        }
    }

    /// The rendered sRGB colour.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Background::White => [255, 255, 255],
            Background::Black => [0, 0, 0],
            Background::Gray => [128, 128, 128],
        }
    }

    /// The background a (lower-case) caption word names.
    pub fn from_name(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == word)
    }
}

/// A regular five-pointed star, point up, inner radius 0.382 of the outer one (unit outer
/// radius); the same constants as scenes.py.
const STAR: [(f64, f64); 10] = [
    (0.0, -1.0),
    (0.224534, -0.309044),
    (0.951057, -0.309017),
    (0.363304, 0.118044),
    (0.587785, 0.809017),
    (0.0, 0.382),
    (-0.587785, 0.809017),
    (-0.363304, 0.118044),
    (-0.951057, -0.309017),
    (-0.224534, -0.309044),
];

/// (colour, shape, position) combinations that never appear in training scenes.
pub const HELD_OUT: [(Colour, Shape, Position); 6] = [
    (Colour::Red, Shape::Triangle, Position::Right),
    (Colour::Orange, Shape::Circle, Position::Left),
    (Colour::Yellow, Shape::Star, Position::Top),
    (Colour::Green, Shape::Square, Position::Right),
    (Colour::Blue, Shape::Star, Position::Left),
    (Colour::Purple, Shape::Circle, Position::Bottom),
];

/// One object of a scene.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SceneObject {
    /// Its colour.
    pub colour: Colour,
    /// Its shape.
    pub shape: Shape,
    /// Its size.
    pub size: Size,
    /// Its nominal position.
    pub position: Position,
    /// Horizontal jitter of its centre, -2..=2 pixels on a 64-pixel canvas.
    pub dx: i64,
    /// Vertical jitter of its centre, -2..=2 pixels on a 64-pixel canvas.
    pub dy: i64,
}

impl SceneObject {
    /// The object's caption phrase, e.g. `a small red star on the left`.
    pub fn phrase(&self, spoken_where: bool) -> String {
        let words: Vec<&str> = [
            self.size.word(),
            Some(self.colour.name()),
            Some(self.shape.name()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let vowel = words
            .first()
            .is_some_and(|w| w.starts_with(['a', 'e', 'i', 'o', 'u']));
        let article = if vowel { "an" } else { "a" };
        let text = format!("{article} {}", words.join(" "));
        if spoken_where {
            format!("{text} {}", self.position.phrase())
        } else {
            text
        }
    }

    /// The object's (colour, shape, position) combination, as listed in [`HELD_OUT`].
    pub fn combination(&self) -> (Colour, Shape, Position) {
        (self.colour, self.shape, self.position)
    }
}

/// A captioned scene: one or two objects on a plain background.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scene {
    /// The background colour.
    pub background: Background,
    /// The objects, drawn in this order (the first on the left in two-object scenes).
    pub objects: Vec<SceneObject>,
    /// Whether the caption speaks the objects' positions.
    pub spoken_where: bool,
}

/// The generator's `below(n)`: a draw in `0..n` (modulo, as scenes.py does).
fn below(rng: &mut SplitMix64, n: u64) -> u64 {
    rng.next_u64() % n
}

impl Scene {
    /// The scene of a seed, drawn exactly as scenes.py's `draw_scene` draws it.
    pub fn draw(seed: u64) -> Scene {
        let mut rng = SplitMix64::new(seed);
        let background = Background::ALL[below(&mut rng, 3) as usize];
        let count = 1 + below(&mut rng, 2);
        let mut drawn = Vec::new();
        for _ in 0..count {
            let colour = Colour::ALL[below(&mut rng, 6) as usize];
            let shape = Shape::ALL[below(&mut rng, 4) as usize];
            let size = Size::ALL[below(&mut rng, 3) as usize];
            let dx = below(&mut rng, 5) as i64 - 2;
            let dy = below(&mut rng, 5) as i64 - 2;
            drawn.push((colour, shape, size, dx, dy));
        }
        let (positions, spoken_where) = if count == 1 {
            let position = Position::ALL[below(&mut rng, 5) as usize];
            (vec![position], below(&mut rng, 4) != 0)
        } else {
            (
                vec![Position::Left, Position::Right],
                below(&mut rng, 2) == 0,
            )
        };
        let objects = drawn
            .into_iter()
            .zip(positions)
            .map(|((colour, shape, size, dx, dy), position)| SceneObject {
                colour,
                shape,
                size,
                position,
                dx,
                dy,
            })
            .collect();
        Scene {
            background,
            objects,
            spoken_where,
        }
    }

    /// The caption, e.g. `a small red star on the left and a green circle on the right on a
    /// gray background`.
    pub fn caption(&self) -> String {
        let phrases: Vec<String> = self
            .objects
            .iter()
            .map(|o| o.phrase(self.spoken_where))
            .collect();
        format!(
            "{} on a {} background",
            phrases.join(" and "),
            self.background.name()
        )
    }

    /// Whether any object is a [`HELD_OUT`] combination.
    pub fn is_held_out(&self) -> bool {
        self.objects
            .iter()
            .any(|o| HELD_OUT.contains(&o.combination()))
    }

    /// The scene rendered as RGB8, row-major, `size` x `size`.
    pub fn render(&self, size: usize) -> Vec<u8> {
        let mut image = self.background.rgb().repeat(size * size);
        for obj in &self.objects {
            let rgb = obj.colour.rgb();
            for (pixel, inside) in image.chunks_exact_mut(3).zip(object_mask(obj, size)) {
                if inside {
                    pixel.copy_from_slice(&rgb);
                }
            }
        }
        image
    }

    /// The same scene with object `object` recoloured; `None` if there is no such object.
    pub fn with_colour(&self, object: usize, colour: Colour) -> Option<Scene> {
        let mut twin = self.clone();
        twin.objects.get_mut(object)?.colour = colour;
        Some(twin)
    }

    /// The same scene with object `object` reshaped; `None` if there is no such object.
    pub fn with_shape(&self, object: usize, shape: Shape) -> Option<Scene> {
        let mut twin = self.clone();
        twin.objects.get_mut(object)?.shape = shape;
        Some(twin)
    }
}

/// The pixels of a `size` x `size` canvas (row-major) whose centres lie inside the object.
pub fn object_mask(obj: &SceneObject, size: usize) -> Vec<bool> {
    let scale = size as f64 / 64.0;
    let (cx, cy) = obj.position.centre();
    let cx = (cx + obj.dx as f64) * scale;
    let cy = (cy + obj.dy as f64) * scale;
    let r = obj.size.radius() * scale;
    let vertices = STAR.map(|(vx, vy)| (cx + vx * r, cy + vy * r));
    let mut mask = Vec::with_capacity(size * size);
    for y in 0..size {
        let py = y as f64 + 0.5;
        for x in 0..size {
            let px = x as f64 + 0.5;
            let inside = match obj.shape {
                Shape::Circle => (px - cx) * (px - cx) + (py - cy) * (py - cy) <= r * r,
                Shape::Square => (px - cx).abs() <= r && (py - cy).abs() <= r,
                Shape::Triangle => {
                    let top = cy - r;
                    py >= top && py <= cy + r && (px - cx).abs() <= (py - top) / (2.0 * r) * r
                }
                Shape::Star => {
                    let mut inside = false;
                    for i in 0..vertices.len() {
                        let (xi, yi) = vertices[i];
                        // scenes.py pairs vertex i with vertex i - 1, wrapping to the last.
                        let (xj, yj) = vertices[(i + vertices.len() - 1) % vertices.len()];
                        if (yi > py) != (yj > py) && px < (xj - xi) * (py - yi) / (yj - yi) + xi {
                            inside = !inside;
                        }
                    }
                    inside
                }
            };
            mask.push(inside);
        }
    }
    mask
}

/// Every word a caption may use, sorted.
pub fn vocabulary() -> Vec<&'static str> {
    let mut words = vec!["a", "an", "and", "on", "the", "at", "in", "background"];
    words.extend(Colour::ALL.map(Colour::name));
    words.extend(Shape::ALL.map(Shape::name));
    words.extend(Background::ALL.map(Background::name));
    words.extend(Size::ALL.into_iter().filter_map(Size::word));
    for p in Position::ALL {
        words.extend(p.phrase().split(' '));
    }
    words.sort_unstable();
    words.dedup();
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a 64 of a byte string.
    fn fnv1a(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }

    /// (seed, FNV-1a of render(64), FNV-1a of render(128), held out, caption), printed by
    /// scripts/demonstrator/scenes.py:
    ///
    /// ```python
    /// def fnv1a(b):
    ///     h = 0xcbf29ce484222325
    ///     for x in b:
    ///         h = ((h ^ x) * 0x100000001b3) & ((1 << 64) - 1)
    ///     return h
    /// s = draw_scene(seed)
    /// print(seed, fnv1a(s.render(64).tobytes()), fnv1a(s.render(128).tobytes()),
    ///       s.is_held_out(), s.caption())
    /// ```
    ///
    /// (Seeds 0..2000 all matched when this port was written.)
    const PYTHON: [(u64, u64, u64, bool, &str); 21] = [
        (
            0,
            0x13ab98ac7e275b95,
            0x7245b3da5c940f29,
            true,
            "an orange circle on the left on a black background",
        ),
        (
            1,
            0xe3a799a038811389,
            0x7e928ac4f9aefea1,
            false,
            "a small red star on the left and a green circle on the right on a gray background",
        ),
        (
            2,
            0xb25239a69b8b2a65,
            0xf561b9e3e8a641a5,
            false,
            "a green circle on the left on a black background",
        ),
        (
            3,
            0xa0de5cd53d39e97d,
            0x44699bc8b97baf33,
            false,
            "a small green star on the left and a small blue triangle on the right on a white background",
        ),
        (
            4,
            0x2dd3ab653916d845,
            0x9bd5292969624885,
            false,
            "a green triangle on the right on a black background",
        ),
        (
            5,
            0x3d42a91ba15d2635,
            0x51ea149fb1df8265,
            false,
            "a purple square on a gray background",
        ),
        (
            6,
            0x21ef58515594eb5d,
            0x095cdbbf32bbf445,
            false,
            "a small red circle on the left and a red star on the right on a gray background",
        ),
        (
            7,
            0x6d411dbbf00f04c5,
            0x7a60e6d1ec05821d,
            false,
            "a red star at the top on a white background",
        ),
        (
            8,
            0xc698a3d7bd0a4a75,
            0xbd50effed035dc19,
            true,
            "an orange circle and a red star on a black background",
        ),
        (
            9,
            0x105a8a236ed400e5,
            0xb720fe7f993ae70d,
            false,
            "a large red circle on the left on a black background",
        ),
        (
            10,
            0x8f9f6fdfe97faa65,
            0x36ba5e32b6ca41a5,
            false,
            "a green circle on a black background",
        ),
        (
            11,
            0xfeb0653b74ae2af1,
            0xd31c5b167197a8e1,
            false,
            "a large green circle and a yellow triangle on a white background",
        ),
        (
            12,
            0x51cb4ec052ba840f,
            0x29fba2f437752395,
            false,
            "a yellow square and a small green triangle on a white background",
        ),
        (
            13,
            0xd42c24236befc5b5,
            0x690c1617fb116db1,
            false,
            "a small red star on the left and a yellow square on the right on a black background",
        ),
        (
            14,
            0xeba5ae48361e5565,
            0xeea76c4c68b7ff25,
            true,
            "a large red triangle on the right on a gray background",
        ),
        (
            15,
            0x491fa5185a2d6625,
            0xff752c5ed394c225,
            false,
            "a purple star on the right on a gray background",
        ),
        (
            20,
            0xa0363b2edb5842e5,
            0xf17203251d19f7c5,
            true,
            "an orange circle on the left and an orange circle on the right on a white background",
        ),
        (
            29,
            0x371f3acb94fae795,
            0x616ff05a98349269,
            true,
            "an orange circle on a gray background",
        ),
        (
            1999,
            0x2288d9fd0cd4dde5,
            0x4e12ba53561ef1a5,
            false,
            "a small green square on the left on a gray background",
        ),
        (
            9223372036854775808,
            0xa7d44184364de545,
            0xd8af159d668932a5,
            false,
            "a blue square on a black background",
        ),
        (
            18446744073709551615,
            0x616160b1f15d44e3,
            0xef79aa29353f0a51,
            false,
            "a small orange triangle and a yellow circle on a gray background",
        ),
    ];

    #[test]
    fn draws_and_renders_like_python() {
        for (seed, hash64, hash128, held_out, caption) in PYTHON {
            let scene = Scene::draw(seed);
            assert_eq!(scene.caption(), caption, "seed {seed}");
            assert_eq!(scene.is_held_out(), held_out, "seed {seed}");
            assert_eq!(fnv1a(&scene.render(64)), hash64, "seed {seed} at 64 px");
            assert_eq!(fnv1a(&scene.render(128)), hash128, "seed {seed} at 128 px");
        }
    }

    #[test]
    fn vocabulary_is_python_s() {
        let python = "a an and at background black blue bottom center circle gray green in \
                      large left on orange purple red right small square star the top triangle \
                      white yellow";
        assert_eq!(vocabulary(), python.split_whitespace().collect::<Vec<_>>());
    }

    #[test]
    fn phrases_and_names_round_trip() {
        for c in Colour::ALL {
            assert_eq!(Colour::from_name(c.name()), Some(c));
        }
        for s in Shape::ALL {
            assert_eq!(Shape::from_name(s.name()), Some(s));
        }
        for p in Position::ALL {
            assert_eq!(Position::from_phrase(p.phrase()), Some(p));
        }
        for b in Background::ALL {
            assert_eq!(Background::from_name(b.name()), Some(b));
        }
        assert_eq!(Size::from_word("large"), Some(Size::Large));
        assert_eq!(Size::from_word("medium"), None);
    }

    #[test]
    fn twins_change_one_object() {
        let scene = Scene::draw(1);
        let twin = scene.with_colour(0, Colour::Blue).unwrap();
        assert_eq!(
            twin.caption(),
            "a small blue star on the left and a green circle on the right on a gray background"
        );
        let twin = scene.with_shape(1, Shape::Square).unwrap();
        assert_eq!(twin.objects[0], scene.objects[0]);
        assert_eq!(twin.objects[1].shape, Shape::Square);
        assert!(scene.with_colour(2, Colour::Red).is_none());
        assert!(scene.with_shape(2, Shape::Star).is_none());
    }

    #[test]
    fn masks_are_painted_in_the_render() {
        let scene = Scene::draw(3);
        let image = scene.render(64);
        for obj in &scene.objects {
            let mask = object_mask(obj, 64);
            assert!(mask.iter().filter(|&&m| m).count() > 40);
            for (pixel, _) in image.chunks_exact(3).zip(&mask).filter(|(_, m)| **m) {
                assert_eq!(pixel, obj.colour.rgb());
            }
        }
    }
}
