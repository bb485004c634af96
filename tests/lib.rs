//! Integration tests: every test runs the real `poolparty` binary through [`harness::Test`].
//! One test binary (autotests = false) so it links once.

mod harness;

mod local;
mod quoting;
mod examples;
mod schema;
