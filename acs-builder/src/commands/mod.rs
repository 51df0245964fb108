//! The commands of the `acs` binary, one module each; each returns a report that prints
//! itself as text (`Display`) or JSON (`Serialize`).

pub mod build;
pub mod detect;
pub mod draw;
pub mod init;
pub mod interrupt;
pub mod judges;
pub mod merge;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod plot_backend;
pub mod preview;
pub mod process;
pub mod progress;
pub mod repair;
pub mod replay;
pub mod stats;
pub mod validate;
