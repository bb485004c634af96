//! `poolparty schema`: prints the manifest's JSON Schema.

use std::io::Write;

use crate::error::{EXIT_SUCCESS, Result};
use crate::manifest;

/// `poolparty schema`: writes the JSON Schema of the manifest to `stdout`.
///
/// # Errors
/// None today; the signature is every command's.
pub(crate) fn run(stdout: &mut impl Write) -> Result<u8> {
    let _ = stdout.write_all(manifest::json_schema().as_bytes());
    Ok(EXIT_SUCCESS)
}
