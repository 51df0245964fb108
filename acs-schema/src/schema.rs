//! Arrow schema v1 and the Hugging Face features metadata that goes with it.

use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};

/// Columns added to schema v1 after its first release (all nullable): shards written before
/// them lack them, and readers take them as null.
pub const ADDED_COLUMNS: [&str; 21] = [
    "q16_unsafe",
    "q16_safe",
    "sd_safety_checker_unsafe",
    "sd_safety_checker_safe",
    "change_mask",
    "change_mask_latent",
    "trajectory_steps",
    "trajectory_timesteps",
    "trajectory_latents",
    "trajectory_eps_unsafe",
    "trajectory_eps_safe",
    "kernel_path",
    "shapes_unsafe",
    "shapes_safe",
    "alignment_settings",
    "blend_mask",
    "clip_direction",
    "clip_image",
    "clip_unsafe",
    "clip_safe",
    "blend_mask_image",
];

/// Whether `fields` are schema v1's: the fields of [`arrow_schema`] in order, where a column of
/// [`ADDED_COLUMNS`] may be absent (a shard written before it was added).
pub fn is_schema_v1(fields: &Fields) -> bool {
    let schema = arrow_schema();
    let expected: Vec<&FieldRef> = schema
        .fields()
        .iter()
        .filter(|f| !ADDED_COLUMNS.contains(&f.name().as_str()) || fields.find(f.name()).is_some())
        .collect();
    expected.len() == fields.len() && expected.iter().zip(fields.iter()).all(|(a, b)| *a == b)
}

/// Column names of schema v1, in file order.
pub const COLUMNS: [&str; 55] = [
    "pair_id",
    "split",
    "category",
    "concepts",
    "unsafe_prompt",
    "safe_prompt",
    "negative_prompt",
    "token_edit_distance",
    "seed",
    "x_t_sha256",
    "model_id",
    "model_sha256",
    "scheduler",
    "alignment_mode",
    "steps",
    "switch_step",
    "height",
    "width",
    "guidance_scale",
    "unsafe_image",
    "safe_image",
    "latent_shape",
    "unsafe_latent",
    "safe_latent",
    "ssim",
    "psnr",
    "changed_area",
    "changed_box",
    "latent_cosine",
    "nudenet_unsafe",
    "nudenet_safe",
    "q16_unsafe",
    "q16_safe",
    "sd_safety_checker_unsafe",
    "sd_safety_checker_safe",
    "change_mask",
    "change_mask_latent",
    "trajectory_steps",
    "trajectory_timesteps",
    "trajectory_latents",
    "trajectory_eps_unsafe",
    "trajectory_eps_safe",
    "valid",
    "reject_reasons",
    "acs_version",
    "kernel_path",
    "shapes_unsafe",
    "shapes_safe",
    "alignment_settings",
    "blend_mask",
    "clip_direction",
    "clip_image",
    "clip_unsafe",
    "clip_safe",
    "blend_mask_image",
];

/// The columns holding Hugging Face `Image` values (`struct<bytes: binary, path: string>`).
pub const IMAGE_COLUMNS: [&str; 4] = [
    "unsafe_image",
    "safe_image",
    "change_mask",
    "blend_mask_image",
];

/// Parquet key-value metadata key holding [`huggingface_metadata`].
pub const HUGGINGFACE_METADATA_KEY: &str = "huggingface";

/// Parquet key-value metadata key holding the schema version (`"1"`).
pub const SCHEMA_VERSION_METADATA_KEY: &str = "acs_schema_version";

/// The Hugging Face features JSON: only the image columns are declared, `datasets` infers the
/// others from the Arrow types. Written as a literal so that its bytes never depend on
/// `serde_json` features.
const HUGGINGFACE_FEATURES: &str = r#"{"info":{"features":{"unsafe_image":{"_type":"Image"},"safe_image":{"_type":"Image"},"change_mask":{"_type":"Image"},"blend_mask_image":{"_type":"Image"}}}}"#;

/// The list element field used by schema v1 list columns: named `item`, non-null.
pub(crate) fn list_item(data_type: DataType) -> FieldRef {
    Arc::new(Field::new("item", data_type, false))
}

/// `struct<bytes: binary, path: string>`, the Hugging Face `Image` storage type.
///
/// `bytes` and the struct itself are declared nullable although schema v1 never stores a null
/// there: `datasets` only decodes a column as `Image` when its Arrow field equals the `Image`
/// feature's storage field exactly, nullability included, and that field is all-nullable.
pub(crate) fn image_type() -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]))
}

fn build_schema() -> Schema {
    let metadata: std::collections::HashMap<String, String> = [
        (HUGGINGFACE_METADATA_KEY.to_string(), huggingface_metadata()),
        (
            SCHEMA_VERSION_METADATA_KEY.to_string(),
            crate::SCHEMA_VERSION.to_string(),
        ),
    ]
    .into_iter()
    .collect();
    let utf8 = |name: &str| Field::new(name, DataType::Utf8, false);
    let int32 = |name: &str| Field::new(name, DataType::Int32, false);
    let float32 = |name: &str| Field::new(name, DataType::Float32, false);
    let string_list =
        |name: &str| Field::new(name, DataType::List(list_item(DataType::Utf8)), false);
    Schema::new(vec![
        utf8("pair_id"),
        utf8("split"),
        utf8("category"),
        string_list("concepts"),
        utf8("unsafe_prompt"),
        utf8("safe_prompt"),
        utf8("negative_prompt"),
        int32("token_edit_distance"),
        Field::new("seed", DataType::UInt64, false),
        utf8("x_t_sha256"),
        utf8("model_id"),
        utf8("model_sha256"),
        utf8("scheduler"),
        utf8("alignment_mode"),
        int32("steps"),
        int32("switch_step"),
        int32("height"),
        int32("width"),
        float32("guidance_scale"),
        Field::new("unsafe_image", image_type(), true),
        Field::new("safe_image", image_type(), true),
        Field::new(
            "latent_shape",
            DataType::List(list_item(DataType::Int32)),
            false,
        ),
        Field::new("unsafe_latent", DataType::Binary, true),
        Field::new("safe_latent", DataType::Binary, true),
        float32("ssim"),
        float32("psnr"),
        float32("changed_area"),
        Field::new(
            "changed_box",
            DataType::List(list_item(DataType::Int32)),
            true,
        ),
        float32("latent_cosine"),
        Field::new("nudenet_unsafe", DataType::Float32, true),
        Field::new("nudenet_safe", DataType::Float32, true),
        Field::new("q16_unsafe", DataType::Float32, true),
        Field::new("q16_safe", DataType::Float32, true),
        Field::new("sd_safety_checker_unsafe", DataType::Float32, true),
        Field::new("sd_safety_checker_safe", DataType::Float32, true),
        Field::new("change_mask", image_type(), true),
        Field::new("change_mask_latent", DataType::Binary, true),
        Field::new(
            "trajectory_steps",
            DataType::List(list_item(DataType::Int32)),
            true,
        ),
        Field::new(
            "trajectory_timesteps",
            DataType::List(list_item(DataType::Int32)),
            true,
        ),
        Field::new("trajectory_latents", DataType::Binary, true),
        Field::new("trajectory_eps_unsafe", DataType::Binary, true),
        Field::new("trajectory_eps_safe", DataType::Binary, true),
        Field::new("valid", DataType::Boolean, false),
        string_list("reject_reasons"),
        utf8("acs_version"),
        Field::new("kernel_path", DataType::Utf8, true),
        Field::new("shapes_unsafe", DataType::Float32, true),
        Field::new("shapes_safe", DataType::Float32, true),
        Field::new("alignment_settings", DataType::Utf8, true),
        Field::new("blend_mask", DataType::Binary, true),
        Field::new("clip_direction", DataType::Float32, true),
        Field::new("clip_image", DataType::Float32, true),
        Field::new("clip_unsafe", DataType::Float32, true),
        Field::new("clip_safe", DataType::Float32, true),
        Field::new("blend_mask_image", image_type(), true),
    ])
    .with_metadata(metadata)
}

/// Arrow schema v1: the columns of the spec's "Schema v1" table, in that order.
///
/// Nullable: `unsafe_latent`, `safe_latent`, `changed_box`, the judge scores (`nudenet_*`,
/// `q16_*`, `sd_safety_checker_*`), the training outputs (`change_mask*`, `trajectory_*`),
/// `kernel_path` (null in rows written before it was recorded), the shapes judge's scores
/// (`shapes_*`), the attention-control settings and blend mask (`alignment_settings`,
/// `blend_mask`), the CLIP similarities (`clip_*`), and (for Hugging Face `Image` compatibility, see below) the image structs and their `bytes`/`path`
/// children; everything else is non-null. List element fields are named `item` and non-null.
///
/// The schema metadata holds `huggingface` ([`huggingface_metadata`]) and `acs_schema_version`
/// (`"1"`): pyarrow (and so `datasets`) takes a Parquet file's schema metadata from the embedded
/// `ARROW:schema`, not from the file's plain key-value entries, so the keys must be here too.
///
/// Deviation kept on purpose: the readers of this crate still reject a null image or null
/// image bytes, but the Arrow fields are nullable because `datasets` decodes a column as `Image`
/// only when its field equals the feature's all-nullable storage field.
pub fn arrow_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA.get_or_init(|| Arc::new(build_schema())).clone()
}

/// JSON for the Parquet key-value metadata key `huggingface`: the three image columns
/// (`unsafe_image`, `safe_image`, `change_mask`, `blend_mask_image`) declared as `{"_type":"Image"}`.
pub fn huggingface_metadata() -> String {
    HUGGINGFACE_FEATURES.to_string()
}

/// A short human-readable name of an Arrow type, used in error messages
/// (`struct<bytes, path>`, `list<string>`, `int32`, ...).
pub(crate) fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Utf8 => "string".into(),
        DataType::Binary => "binary".into(),
        DataType::Int32 => "int32".into(),
        DataType::UInt64 => "uint64".into(),
        DataType::Float32 => "float32".into(),
        DataType::Boolean => "bool".into(),
        DataType::List(item) => format!("list<{}>", type_name(item.data_type())),
        DataType::Struct(fields) => {
            let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
            format!("struct<{}>", names.join(", "))
        }
        other => other.to_string(),
    }
}

/// Whether `actual` has the shape of `expected`: same physical types, same struct child names,
/// ignoring list element names and nested nullability (files rewritten by other tools often
/// name list elements `element` and make everything nullable).
pub(crate) fn same_shape(actual: &DataType, expected: &DataType) -> bool {
    match (actual, expected) {
        (DataType::List(a), DataType::List(e)) => same_shape(a.data_type(), e.data_type()),
        (DataType::Struct(a), DataType::Struct(e)) => {
            a.len() == e.len()
                && a.iter().zip(e.iter()).all(|(af, ef)| {
                    af.name() == ef.name() && same_shape(af.data_type(), ef.data_type())
                })
        }
        (a, e) => a == e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_and_nullability() {
        let schema = arrow_schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, COLUMNS);
        assert_eq!(
            schema.metadata().get(HUGGINGFACE_METADATA_KEY),
            Some(&huggingface_metadata())
        );
        assert_eq!(
            schema
                .metadata()
                .get(SCHEMA_VERSION_METADATA_KEY)
                .map(String::as_str),
            Some("1")
        );
        let nullable: Vec<&str> = schema
            .fields()
            .iter()
            .filter(|f| f.is_nullable())
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(
            nullable,
            [
                "unsafe_image",
                "safe_image",
                "unsafe_latent",
                "safe_latent",
                "changed_box",
                "nudenet_unsafe",
                "nudenet_safe",
                "q16_unsafe",
                "q16_safe",
                "sd_safety_checker_unsafe",
                "sd_safety_checker_safe",
                "change_mask",
                "change_mask_latent",
                "trajectory_steps",
                "trajectory_timesteps",
                "trajectory_latents",
                "trajectory_eps_unsafe",
                "trajectory_eps_safe",
                "kernel_path",
                "shapes_unsafe",
                "shapes_safe",
                "alignment_settings",
                "blend_mask",
                "clip_direction",
                "clip_image",
                "clip_unsafe",
                "clip_safe",
                "blend_mask_image"
            ]
        );
        let seed = schema.field_with_name("seed").unwrap();
        assert_eq!(seed.data_type(), &DataType::UInt64);
        let concepts = schema.field_with_name("concepts").unwrap();
        match concepts.data_type() {
            DataType::List(item) => {
                assert_eq!(item.name(), "item");
                assert_eq!(item.data_type(), &DataType::Utf8);
            }
            other => panic!("concepts is {other}"),
        }
        assert_eq!(
            type_name(schema.field_with_name("unsafe_image").unwrap().data_type()),
            "struct<bytes, path>"
        );
    }

    #[test]
    fn huggingface_metadata_declares_every_image_column() {
        let v: serde_json::Value = serde_json::from_str(&huggingface_metadata()).unwrap();
        let features = &v["info"]["features"];
        assert_eq!(features.as_object().unwrap().len(), IMAGE_COLUMNS.len());
        for c in IMAGE_COLUMNS {
            assert_eq!(features[c]["_type"], "Image");
        }
    }

    #[test]
    fn shape_ignores_list_item_names() {
        let a = DataType::List(Arc::new(Field::new("element", DataType::Utf8, true)));
        let e = DataType::List(list_item(DataType::Utf8));
        assert!(same_shape(&a, &e));
        assert!(!same_shape(&DataType::LargeUtf8, &DataType::Utf8));
        assert!(!same_shape(&image_type(), &DataType::Binary));
    }
}
