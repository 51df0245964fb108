//! The end-to-end tests of acs: one test binary (a change to the library links one executable,
//! not one per file), a module per area. Most run the real `acs` binary (`util::ACS`) in
//! temporary folders; `llm` drives the rewriter in-process; `fuzz_corpus` replays the fuzz
//! corpora; `layout` and `smoke_hashes` guard the code layout and the smoke build's bytes.
//!
//! Every test runs in parallel with the others in this one process: tests keep their files in
//! their own temporary folders (or their module's folder under `util::scratch()`), give every
//! `acs` run its own environment through `util::isolate`, and never change the process's
//! working directory. The one process-wide change is the LLM tests' key variable (see `llm`).

mod util;

mod attention;
mod bad_input;
mod cli;
mod demonstrator;
mod distributed;
mod fetch;
mod fuzz_corpus;
mod kernel_paths;
mod layout;
mod llm;
mod object_store;
mod preview;
mod resume;
mod selection;
mod smoke_hashes;
mod sources;
mod training;
mod validate;
