//! Integration tests: every test runs the real `poolparty` binary through [`harness::Test`].
//! One test binary (autotests = false) so it links once.

mod harness;

mod examples;
mod local;
mod quoting;
mod readme;
mod schema;
