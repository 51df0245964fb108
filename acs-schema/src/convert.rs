//! Conversion between [`PairRecord`]s and Arrow record batches of schema v1.

use std::path::Path;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float32Array, Int32Array, ListArray, StringArray,
    StructArray, UInt64Array,
};
use arrow_buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Fields};

use crate::batch_reader::Ctx;
use crate::error::SchemaError;
use crate::record::{ImageBlob, PairRecord};
use crate::schema::{arrow_schema, image_type, list_item};

/// Converts records to one Arrow batch of schema v1 ([`arrow_schema`]).
///
/// Fails (instead of panicking) when a binary, string or list column of the batch would hold
/// more than `i32::MAX` bytes or items; split large inputs into several batches.
pub fn records_to_batch(records: &[PairRecord]) -> Result<RecordBatch, SchemaError> {
    let r = records;
    let columns: Vec<ArrayRef> = vec![
        strings(r, "pair_id", |x| &x.pair_id)?,
        strings(r, "split", |x| &x.split)?,
        strings(r, "category", |x| &x.category)?,
        string_lists(r, "concepts", |x| &x.concepts)?,
        strings(r, "unsafe_prompt", |x| &x.unsafe_prompt)?,
        strings(r, "safe_prompt", |x| &x.safe_prompt)?,
        strings(r, "negative_prompt", |x| &x.negative_prompt)?,
        Arc::new(Int32Array::from_iter_values(
            r.iter().map(|x| x.token_edit_distance),
        )),
        Arc::new(UInt64Array::from_iter_values(r.iter().map(|x| x.seed))),
        strings(r, "x_t_sha256", |x| &x.x_t_sha256)?,
        strings(r, "model_id", |x| &x.model_id)?,
        strings(r, "model_sha256", |x| &x.model_sha256)?,
        strings(r, "scheduler", |x| &x.scheduler)?,
        strings(r, "alignment_mode", |x| &x.alignment_mode)?,
        Arc::new(Int32Array::from_iter_values(r.iter().map(|x| x.steps))),
        Arc::new(Int32Array::from_iter_values(
            r.iter().map(|x| x.switch_step),
        )),
        Arc::new(Int32Array::from_iter_values(r.iter().map(|x| x.height))),
        Arc::new(Int32Array::from_iter_values(r.iter().map(|x| x.width))),
        Arc::new(Float32Array::from_iter_values(
            r.iter().map(|x| x.guidance_scale),
        )),
        images(r, "unsafe_image", |x| &x.unsafe_image)?,
        images(r, "safe_image", |x| &x.safe_image)?,
        int_lists(r, "latent_shape", |x| &x.latent_shape)?,
        optional_binaries(r, "unsafe_latent", |x| x.unsafe_latent.as_deref())?,
        optional_binaries(r, "safe_latent", |x| x.safe_latent.as_deref())?,
        Arc::new(Float32Array::from_iter_values(r.iter().map(|x| x.ssim))),
        Arc::new(Float32Array::from_iter_values(r.iter().map(|x| x.psnr))),
        Arc::new(Float32Array::from_iter_values(
            r.iter().map(|x| x.changed_area),
        )),
        optional_int_lists(r, "changed_box", |x| x.changed_box.as_ref())?,
        Arc::new(Float32Array::from_iter_values(
            r.iter().map(|x| x.latent_cosine),
        )),
        Arc::new(Float32Array::from_iter(r.iter().map(|x| x.nudenet_unsafe))),
        Arc::new(Float32Array::from_iter(r.iter().map(|x| x.nudenet_safe))),
        Arc::new(Float32Array::from_iter(r.iter().map(|x| x.q16_unsafe))),
        Arc::new(Float32Array::from_iter(r.iter().map(|x| x.q16_safe))),
        Arc::new(Float32Array::from_iter(
            r.iter().map(|x| x.sd_safety_checker_unsafe),
        )),
        Arc::new(Float32Array::from_iter(
            r.iter().map(|x| x.sd_safety_checker_safe),
        )),
        optional_images(r, "change_mask", |x| x.change_mask.as_ref())?,
        optional_binaries(r, "change_mask_latent", |x| x.change_mask_latent.as_deref())?,
        optional_int_lists(r, "trajectory_steps", |x| x.trajectory_steps.as_ref())?,
        optional_int_lists(r, "trajectory_timesteps", |x| {
            x.trajectory_timesteps.as_ref()
        })?,
        optional_binaries(r, "trajectory_latents", |x| x.trajectory_latents.as_deref())?,
        optional_binaries(r, "trajectory_eps_unsafe", |x| {
            x.trajectory_eps_unsafe.as_deref()
        })?,
        optional_binaries(r, "trajectory_eps_safe", |x| {
            x.trajectory_eps_safe.as_deref()
        })?,
        Arc::new(BooleanArray::from_iter(r.iter().map(|x| Some(x.valid)))),
        string_lists(r, "reject_reasons", |x| &x.reject_reasons)?,
        strings(r, "acs_version", |x| &x.acs_version)?,
        optional_strings(r, "kernel_path", |x| x.kernel_path.as_deref())?,
        Arc::new(Float32Array::from_iter(r.iter().map(|x| x.shapes_unsafe))),
        Arc::new(Float32Array::from_iter(r.iter().map(|x| x.shapes_safe))),
        optional_strings(r, "alignment_settings", |x| x.alignment_settings.as_deref())?,
        optional_binaries(r, "blend_mask", |x| x.blend_mask.as_deref())?,
        Arc::new(Float32Array::from_iter(r.iter().map(|x| x.clip_direction))),
        Arc::new(Float32Array::from_iter(r.iter().map(|x| x.clip_image))),
        Arc::new(Float32Array::from_iter(r.iter().map(|x| x.clip_unsafe))),
        Arc::new(Float32Array::from_iter(r.iter().map(|x| x.clip_safe))),
        optional_images(r, "blend_mask_image", |x| x.blend_mask_image.as_ref())?,
    ];
    RecordBatch::try_new(arrow_schema(), columns).map_err(|e| SchemaError::Record {
        index: 0,
        field: "*".into(),
        detail: format!("cannot assemble the record batch: {e}"),
    })
}

/// Checks that the lengths add up to at most `i32::MAX` and returns the Arrow offsets.
fn offsets(
    field: &str,
    lengths: impl Iterator<Item = usize>,
) -> Result<OffsetBuffer<i32>, SchemaError> {
    let mut out = vec![0i32];
    let mut total: i32 = 0;
    for (index, len) in lengths.enumerate() {
        total = i32::try_from(len)
            .ok()
            .and_then(|len| total.checked_add(len))
            .ok_or_else(|| SchemaError::Record {
                index,
                field: field.to_string(),
                detail: "the column exceeds 2 GiB (i32 offsets) in one batch; write fewer records per batch".into(),
            })?;
        out.push(total);
    }
    Ok(OffsetBuffer::new(ScalarBuffer::from(out)))
}

fn strings<'a>(
    records: &'a [PairRecord],
    field: &str,
    get: impl Fn(&'a PairRecord) -> &'a String,
) -> Result<ArrayRef, SchemaError> {
    offsets(field, records.iter().map(|r| get(r).len()))?;
    Ok(Arc::new(StringArray::from_iter_values(
        records.iter().map(get),
    )))
}

fn optional_strings<'a>(
    records: &'a [PairRecord],
    field: &str,
    get: impl Fn(&'a PairRecord) -> Option<&'a str>,
) -> Result<ArrayRef, SchemaError> {
    offsets(field, records.iter().map(|r| get(r).map_or(0, str::len)))?;
    Ok(Arc::new(StringArray::from_iter(records.iter().map(get))))
}

fn optional_binaries<'a>(
    records: &'a [PairRecord],
    field: &str,
    get: impl Fn(&'a PairRecord) -> Option<&'a [u8]>,
) -> Result<ArrayRef, SchemaError> {
    offsets(field, records.iter().map(|r| get(r).map_or(0, <[u8]>::len)))?;
    Ok(Arc::new(BinaryArray::from_iter(records.iter().map(get))))
}

fn string_lists<'a>(
    records: &'a [PairRecord],
    field: &str,
    get: impl Fn(&'a PairRecord) -> &'a Vec<String>,
) -> Result<ArrayRef, SchemaError> {
    let list_offsets = offsets(field, records.iter().map(|r| get(r).len()))?;
    let lengths = records.iter().flat_map(|r| get(r).iter().map(String::len));
    offsets(field, lengths)?;
    let values = StringArray::from_iter_values(records.iter().flat_map(|r| get(r).iter()));
    list(field, DataType::Utf8, list_offsets, Arc::new(values))
}

fn int_lists<'a>(
    records: &'a [PairRecord],
    field: &str,
    get: impl Fn(&'a PairRecord) -> &'a Vec<i32>,
) -> Result<ArrayRef, SchemaError> {
    let list_offsets = offsets(field, records.iter().map(|r| get(r).len()))?;
    let values = Int32Array::from_iter_values(records.iter().flat_map(|r| get(r).iter().copied()));
    list(field, DataType::Int32, list_offsets, Arc::new(values))
}

fn optional_int_lists<'a>(
    records: &'a [PairRecord],
    field: &str,
    get: impl Fn(&'a PairRecord) -> Option<&'a Vec<i32>>,
) -> Result<ArrayRef, SchemaError> {
    let list_offsets = offsets(field, records.iter().map(|r| get(r).map_or(0, Vec::len)))?;
    let values = Int32Array::from_iter_values(
        records
            .iter()
            .flat_map(|r| get(r).into_iter().flatten().copied()),
    );
    let nulls = NullBuffer::from_iter(records.iter().map(|r| get(r).is_some()));
    let array = ListArray::try_new(
        list_item(DataType::Int32),
        list_offsets,
        Arc::new(values),
        Some(nulls),
    )
    .map_err(|e| SchemaError::Record {
        index: 0,
        field: field.to_string(),
        detail: e.to_string(),
    })?;
    Ok(Arc::new(array))
}

fn list(
    field: &str,
    item: DataType,
    offsets: OffsetBuffer<i32>,
    values: ArrayRef,
) -> Result<ArrayRef, SchemaError> {
    let array = ListArray::try_new(list_item(item), offsets, values, None).map_err(|e| {
        SchemaError::Record {
            index: 0,
            field: field.to_string(),
            detail: e.to_string(),
        }
    })?;
    Ok(Arc::new(array))
}

fn images<'a>(
    records: &'a [PairRecord],
    field: &str,
    get: impl Fn(&'a PairRecord) -> &'a ImageBlob,
) -> Result<ArrayRef, SchemaError> {
    optional_images(records, field, |r| Some(get(r)))
}

/// An image column; a record whose image is `None` gets a null struct (and null children).
fn optional_images<'a>(
    records: &'a [PairRecord],
    field: &str,
    get: impl Fn(&'a PairRecord) -> Option<&'a ImageBlob>,
) -> Result<ArrayRef, SchemaError> {
    offsets(
        field,
        records.iter().map(|r| get(r).map_or(0, |i| i.bytes.len())),
    )?;
    offsets(
        field,
        records
            .iter()
            .map(|r| get(r).and_then(|i| i.path.as_ref()).map_or(0, String::len)),
    )?;
    let bytes = BinaryArray::from_iter(records.iter().map(|r| get(r).map(|i| &i.bytes)));
    let paths = StringArray::from_iter(
        records
            .iter()
            .map(|r| get(r).and_then(|i| i.path.as_deref())),
    );
    let fields = match image_type() {
        DataType::Struct(fields) => fields,
        _ => Fields::empty(),
    };
    let nulls = records
        .iter()
        .any(|r| get(r).is_none())
        .then(|| NullBuffer::from_iter(records.iter().map(|r| get(r).is_some())));
    let array = StructArray::try_new(fields, vec![Arc::new(bytes), Arc::new(paths)], nulls)
        .map_err(|e| SchemaError::Record {
            index: 0,
            field: field.to_string(),
            detail: e.to_string(),
        })?;
    Ok(Arc::new(array))
}

/// Converts an Arrow batch of schema v1 back to records.
///
/// Columns are matched by name (any order); every schema v1 column must be present with the
/// expected type (list element names and nested nullability are not compared) and no other
/// column may be present. `file` and `first_row` (the file row index of the batch's first row)
/// only serve error messages, which name the file, the row and the column.
pub fn batch_to_records(
    batch: &RecordBatch,
    file: &Path,
    first_row: usize,
) -> Result<Vec<PairRecord>, SchemaError> {
    let ctx = Ctx { file, first_row };
    ctx.check_schema(batch)?;
    let columns = Columns::of(&ctx, batch)?;
    (0..batch.num_rows())
        .map(|i| columns.record(&ctx, i))
        .collect()
}

/// The typed columns of a schema v1 batch.
struct Columns<'a> {
    pair_id: &'a StringArray,
    split: &'a StringArray,
    category: &'a StringArray,
    concepts: &'a ListArray,
    unsafe_prompt: &'a StringArray,
    safe_prompt: &'a StringArray,
    negative_prompt: &'a StringArray,
    token_edit_distance: &'a Int32Array,
    seed: &'a UInt64Array,
    x_t_sha256: &'a StringArray,
    model_id: &'a StringArray,
    model_sha256: &'a StringArray,
    scheduler: &'a StringArray,
    alignment_mode: &'a StringArray,
    steps: &'a Int32Array,
    switch_step: &'a Int32Array,
    height: &'a Int32Array,
    width: &'a Int32Array,
    guidance_scale: &'a Float32Array,
    unsafe_image: &'a StructArray,
    safe_image: &'a StructArray,
    latent_shape: &'a ListArray,
    unsafe_latent: &'a BinaryArray,
    safe_latent: &'a BinaryArray,
    ssim: &'a Float32Array,
    psnr: &'a Float32Array,
    changed_area: &'a Float32Array,
    changed_box: &'a ListArray,
    latent_cosine: &'a Float32Array,
    nudenet_unsafe: &'a Float32Array,
    nudenet_safe: &'a Float32Array,
    q16_unsafe: Option<&'a Float32Array>,
    q16_safe: Option<&'a Float32Array>,
    sd_safety_checker_unsafe: Option<&'a Float32Array>,
    sd_safety_checker_safe: Option<&'a Float32Array>,
    change_mask: Option<&'a StructArray>,
    change_mask_latent: Option<&'a BinaryArray>,
    trajectory_steps: Option<&'a ListArray>,
    trajectory_timesteps: Option<&'a ListArray>,
    trajectory_latents: Option<&'a BinaryArray>,
    trajectory_eps_unsafe: Option<&'a BinaryArray>,
    trajectory_eps_safe: Option<&'a BinaryArray>,
    valid: &'a BooleanArray,
    reject_reasons: &'a ListArray,
    acs_version: &'a StringArray,
    kernel_path: Option<&'a StringArray>,
    shapes_unsafe: Option<&'a Float32Array>,
    shapes_safe: Option<&'a Float32Array>,
    alignment_settings: Option<&'a StringArray>,
    blend_mask: Option<&'a BinaryArray>,
    clip_direction: Option<&'a Float32Array>,
    clip_image: Option<&'a Float32Array>,
    clip_unsafe: Option<&'a Float32Array>,
    clip_safe: Option<&'a Float32Array>,
    blend_mask_image: Option<&'a StructArray>,
}

impl<'a> Columns<'a> {
    /// Every column of `batch`, with the type schema v1 gives it.
    fn of(ctx: &Ctx, batch: &'a RecordBatch) -> Result<Self, SchemaError> {
        Ok(Self {
            pair_id: ctx.column(batch, "pair_id")?,
            split: ctx.column(batch, "split")?,
            category: ctx.column(batch, "category")?,
            concepts: ctx.column(batch, "concepts")?,
            unsafe_prompt: ctx.column(batch, "unsafe_prompt")?,
            safe_prompt: ctx.column(batch, "safe_prompt")?,
            negative_prompt: ctx.column(batch, "negative_prompt")?,
            token_edit_distance: ctx.column(batch, "token_edit_distance")?,
            seed: ctx.column(batch, "seed")?,
            x_t_sha256: ctx.column(batch, "x_t_sha256")?,
            model_id: ctx.column(batch, "model_id")?,
            model_sha256: ctx.column(batch, "model_sha256")?,
            scheduler: ctx.column(batch, "scheduler")?,
            alignment_mode: ctx.column(batch, "alignment_mode")?,
            steps: ctx.column(batch, "steps")?,
            switch_step: ctx.column(batch, "switch_step")?,
            height: ctx.column(batch, "height")?,
            width: ctx.column(batch, "width")?,
            guidance_scale: ctx.column(batch, "guidance_scale")?,
            unsafe_image: ctx.column(batch, "unsafe_image")?,
            safe_image: ctx.column(batch, "safe_image")?,
            latent_shape: ctx.column(batch, "latent_shape")?,
            unsafe_latent: ctx.column(batch, "unsafe_latent")?,
            safe_latent: ctx.column(batch, "safe_latent")?,
            ssim: ctx.column(batch, "ssim")?,
            psnr: ctx.column(batch, "psnr")?,
            changed_area: ctx.column(batch, "changed_area")?,
            changed_box: ctx.column(batch, "changed_box")?,
            latent_cosine: ctx.column(batch, "latent_cosine")?,
            nudenet_unsafe: ctx.column(batch, "nudenet_unsafe")?,
            nudenet_safe: ctx.column(batch, "nudenet_safe")?,
            q16_unsafe: ctx.added_column(batch, "q16_unsafe")?,
            q16_safe: ctx.added_column(batch, "q16_safe")?,
            sd_safety_checker_unsafe: ctx.added_column(batch, "sd_safety_checker_unsafe")?,
            sd_safety_checker_safe: ctx.added_column(batch, "sd_safety_checker_safe")?,
            change_mask: ctx.added_column(batch, "change_mask")?,
            change_mask_latent: ctx.added_column(batch, "change_mask_latent")?,
            trajectory_steps: ctx.added_column(batch, "trajectory_steps")?,
            trajectory_timesteps: ctx.added_column(batch, "trajectory_timesteps")?,
            trajectory_latents: ctx.added_column(batch, "trajectory_latents")?,
            trajectory_eps_unsafe: ctx.added_column(batch, "trajectory_eps_unsafe")?,
            trajectory_eps_safe: ctx.added_column(batch, "trajectory_eps_safe")?,
            valid: ctx.column(batch, "valid")?,
            reject_reasons: ctx.column(batch, "reject_reasons")?,
            acs_version: ctx.column(batch, "acs_version")?,
            kernel_path: ctx.added_column(batch, "kernel_path")?,
            shapes_unsafe: ctx.added_column(batch, "shapes_unsafe")?,
            shapes_safe: ctx.added_column(batch, "shapes_safe")?,
            alignment_settings: ctx.added_column(batch, "alignment_settings")?,
            blend_mask: ctx.added_column(batch, "blend_mask")?,
            clip_direction: ctx.added_column(batch, "clip_direction")?,
            clip_image: ctx.added_column(batch, "clip_image")?,
            clip_unsafe: ctx.added_column(batch, "clip_unsafe")?,
            clip_safe: ctx.added_column(batch, "clip_safe")?,
            blend_mask_image: ctx.added_column(batch, "blend_mask_image")?,
        })
    }

    /// Row `i` as a record.
    fn record(&self, ctx: &Ctx, i: usize) -> Result<PairRecord, SchemaError> {
        let c = self;
        let int = |a: &Int32Array, name: &str| -> Result<i32, SchemaError> {
            ctx.non_null(a, i, name)?;
            Ok(a.value(i))
        };
        let float = |a: &Float32Array, name: &str| -> Result<f32, SchemaError> {
            ctx.non_null(a, i, name)?;
            Ok(a.value(i))
        };
        let opt_float = |a: &Float32Array| (!a.is_null(i)).then(|| a.value(i));
        let opt_binary = |a: &BinaryArray| (!a.is_null(i)).then(|| a.value(i).to_vec());
        let opt_int_list = |a: Option<&ListArray>, name: &str| match a {
            Some(a) if !a.is_null(i) => ctx.int_list(a, i, name).map(Some),
            _ => Ok(None),
        };
        ctx.non_null(c.seed, i, "seed")?;
        ctx.non_null(c.valid, i, "valid")?;
        Ok(PairRecord {
            pair_id: ctx.string(c.pair_id, i, "pair_id")?,
            split: ctx.string(c.split, i, "split")?,
            category: ctx.string(c.category, i, "category")?,
            concepts: ctx.string_list(c.concepts, i, "concepts")?,
            unsafe_prompt: ctx.string(c.unsafe_prompt, i, "unsafe_prompt")?,
            safe_prompt: ctx.string(c.safe_prompt, i, "safe_prompt")?,
            negative_prompt: ctx.string(c.negative_prompt, i, "negative_prompt")?,
            token_edit_distance: int(c.token_edit_distance, "token_edit_distance")?,
            seed: c.seed.value(i),
            x_t_sha256: ctx.string(c.x_t_sha256, i, "x_t_sha256")?,
            model_id: ctx.string(c.model_id, i, "model_id")?,
            model_sha256: ctx.string(c.model_sha256, i, "model_sha256")?,
            scheduler: ctx.string(c.scheduler, i, "scheduler")?,
            alignment_mode: ctx.string(c.alignment_mode, i, "alignment_mode")?,
            steps: int(c.steps, "steps")?,
            switch_step: int(c.switch_step, "switch_step")?,
            height: int(c.height, "height")?,
            width: int(c.width, "width")?,
            guidance_scale: float(c.guidance_scale, "guidance_scale")?,
            unsafe_image: ctx.image(c.unsafe_image, i, "unsafe_image")?,
            safe_image: ctx.image(c.safe_image, i, "safe_image")?,
            latent_shape: ctx.int_list(c.latent_shape, i, "latent_shape")?,
            unsafe_latent: opt_binary(c.unsafe_latent),
            safe_latent: opt_binary(c.safe_latent),
            ssim: float(c.ssim, "ssim")?,
            psnr: float(c.psnr, "psnr")?,
            changed_area: float(c.changed_area, "changed_area")?,
            changed_box: if c.changed_box.is_null(i) {
                None
            } else {
                Some(ctx.int_list(c.changed_box, i, "changed_box")?)
            },
            latent_cosine: float(c.latent_cosine, "latent_cosine")?,
            nudenet_unsafe: opt_float(c.nudenet_unsafe),
            nudenet_safe: opt_float(c.nudenet_safe),
            q16_unsafe: c.q16_unsafe.and_then(opt_float),
            q16_safe: c.q16_safe.and_then(opt_float),
            sd_safety_checker_unsafe: c.sd_safety_checker_unsafe.and_then(opt_float),
            sd_safety_checker_safe: c.sd_safety_checker_safe.and_then(opt_float),
            change_mask: match c.change_mask {
                Some(a) if !a.is_null(i) => Some(ctx.image(a, i, "change_mask")?),
                _ => None,
            },
            change_mask_latent: c.change_mask_latent.and_then(opt_binary),
            trajectory_steps: opt_int_list(c.trajectory_steps, "trajectory_steps")?,
            trajectory_timesteps: opt_int_list(c.trajectory_timesteps, "trajectory_timesteps")?,
            trajectory_latents: c.trajectory_latents.and_then(opt_binary),
            trajectory_eps_unsafe: c.trajectory_eps_unsafe.and_then(opt_binary),
            trajectory_eps_safe: c.trajectory_eps_safe.and_then(opt_binary),
            valid: c.valid.value(i),
            reject_reasons: ctx.string_list(c.reject_reasons, i, "reject_reasons")?,
            acs_version: ctx.string(c.acs_version, i, "acs_version")?,
            kernel_path: c
                .kernel_path
                .and_then(|a| (!a.is_null(i)).then(|| a.value(i).to_owned())),
            shapes_unsafe: c.shapes_unsafe.and_then(opt_float),
            shapes_safe: c.shapes_safe.and_then(opt_float),
            alignment_settings: c
                .alignment_settings
                .and_then(|a| (!a.is_null(i)).then(|| a.value(i).to_owned())),
            blend_mask: c.blend_mask.and_then(opt_binary),
            clip_direction: c.clip_direction.and_then(opt_float),
            clip_image: c.clip_image.and_then(opt_float),
            clip_unsafe: c.clip_unsafe.and_then(opt_float),
            clip_safe: c.clip_safe.and_then(opt_float),
            blend_mask_image: match c.blend_mask_image {
                Some(a) if !a.is_null(i) => Some(ctx.image(a, i, "blend_mask_image")?),
                _ => None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::fixtures;
    use arrow_schema::{Field, Schema};

    fn sample() -> Vec<PairRecord> {
        vec![fixtures::full(0), fixtures::sparse(1), fixtures::full(2)]
    }

    #[test]
    fn batch_round_trip() {
        let records = sample();
        let batch = records_to_batch(&records).unwrap();
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(batch.schema(), arrow_schema());
        let back = batch_to_records(&batch, Path::new("mem"), 0).unwrap();
        assert_eq!(back, records);
        // Sliced batches (as readers may produce) convert too.
        let back = batch_to_records(&batch.slice(1, 2), Path::new("mem"), 1).unwrap();
        assert_eq!(back, records[1..]);
    }

    #[test]
    fn shards_written_before_the_added_columns_are_read_with_nulls() {
        let records = sample();
        let batch = records_to_batch(&records).unwrap();
        let keep: Vec<usize> = (0..batch.num_columns())
            .filter(|&i| {
                let name = batch.schema().field(i).name().clone();
                !crate::schema::ADDED_COLUMNS.contains(&name.as_str())
            })
            .collect();
        let older = batch.project(&keep).unwrap();
        assert!(crate::schema::is_schema_v1(older.schema().fields()));
        let back = batch_to_records(&older, Path::new("old.parquet"), 0).unwrap();
        for (read, written) in back.iter().zip(&records) {
            assert_eq!(read.q16_unsafe, None);
            assert_eq!(read.sd_safety_checker_safe, None);
            assert_eq!(read.pair_id, written.pair_id);
            assert_eq!(read.nudenet_unsafe, written.nudenet_unsafe);
        }
        // A shard missing a column that was always there is not schema v1.
        let broken = batch.project(&keep[1..]).unwrap();
        assert!(!crate::schema::is_schema_v1(broken.schema().fields()));
    }

    #[test]
    fn empty_batch() {
        let batch = records_to_batch(&[]).unwrap();
        assert_eq!(batch.num_rows(), 0);
        assert!(batch_to_records(&batch, Path::new("mem"), 0)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn wrong_type_names_file_and_column() {
        let batch = records_to_batch(&sample()).unwrap();
        let mut fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut columns = batch.columns().to_vec();
        let idx = 19; // unsafe_image
        fields[idx] = Field::new("unsafe_image", DataType::Binary, true);
        columns[idx] = Arc::new(BinaryArray::from_iter_values([b"a", b"b", b"c"]));
        let bad = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let err = batch_to_records(&bad, Path::new("data/x.parquet"), 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "data/x.parquet: column unsafe_image: expected struct<bytes, path>, found binary"
        );
    }

    #[test]
    fn null_image_names_row_and_column() {
        let batch = records_to_batch(&sample()).unwrap();
        let idx = 20; // safe_image
        let good = batch
            .column(idx)
            .as_any()
            .downcast_ref::<StructArray>()
            .unwrap()
            .clone();
        let (fields, arrays, _) = good.into_parts();
        let nulls = arrow_buffer::NullBuffer::from(vec![true, false, true]);
        let with_null = StructArray::try_new(fields, arrays, Some(nulls)).unwrap();
        let mut columns = batch.columns().to_vec();
        columns[idx] = Arc::new(with_null);
        let bad = RecordBatch::try_new(batch.schema(), columns).unwrap();
        let err = batch_to_records(&bad, Path::new("data/x.parquet"), 10).unwrap_err();
        assert_eq!(
            err.to_string(),
            "data/x.parquet: row 11, column safe_image: null image (expected struct<bytes, path>)"
        );
    }

    #[test]
    fn missing_and_extra_columns_are_rejected() {
        let batch = records_to_batch(&sample()).unwrap();
        let dropped = batch.project(&(1..34).collect::<Vec<_>>()).unwrap();
        let err = batch_to_records(&dropped, Path::new("f"), 0).unwrap_err();
        assert!(err.to_string().contains("column pair_id: missing"), "{err}");

        let mut fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut columns = batch.columns().to_vec();
        fields.push(Field::new("extra", DataType::Int32, false));
        columns.push(Arc::new(Int32Array::from(vec![1, 2, 3])));
        let extra = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let err = batch_to_records(&extra, Path::new("f"), 0).unwrap_err();
        assert_eq!(err.to_string(), "f: column extra: not a schema v1 column");
    }
}
