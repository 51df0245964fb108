//! Attention-controlled alignment (Prompt-to-Prompt, Hertz et al., ICLR 2023; the
//! InstructPix2Pix generator, Brooks et al., CVPR 2023): the safe branch of a pair reads the
//! unsafe branch's attention, so that only the edited words' regions change.
//!
//! The parts:
//!
//! - [`token_map`]: which of the unsafe prompt's token columns each of the safe prompt's token
//!   positions reads (word swap, refinement by global alignment)
//! - [`schedule`]: at which steps each control acts (cross-attention replacement with per-word
//!   ranges, self-attention injection, shared self-attention, local blend) and the per-token
//!   reweighting factors
//! - [`blend`]: the local blend's mask from the edited words' attention maps, and the latent
//!   held equal to the unsafe branch's outside it
//! - [`pair_control`]: a build's settings, and what they mean for one pair
//! - [`controller`]: the hook that the UNet's attention layers ask, per render batch, and the
//!   blend after each scheduler step

pub mod blend;
pub mod controller;
pub mod pair_control;
pub mod schedule;
pub mod token_map;
