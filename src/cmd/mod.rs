//! One file per command, each with a `run` that `lib.rs` dispatches to in one line.
//!
//! Commands read the manifest through `crate::load` and the store through `store`; none of
//! them imports another.

pub(crate) mod completions;
pub(crate) mod init;
pub(crate) mod logs;
pub(crate) mod report;
pub(crate) mod templates;
