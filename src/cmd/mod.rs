//! One module per subcommand that needs more than a few lines of dispatch; `lib.rs` calls each
//! with one line.

pub mod report;
