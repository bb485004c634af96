//! Integration tests: every test runs the real `poolparty` binary through [`harness::Test`]
//! (except `house`, which reads the sources for DESIGN.md's import rules).
//! One test binary (autotests = false) so it links once.

mod harness;

mod auto_bundling;
mod commands;
mod examples;
mod fake_schedulers;
mod faults;
mod fuzz;
mod graph;
mod house;
mod local;
mod manifest_errors;
mod python;
mod quoting;
mod readme;
mod report;
mod reruns;
mod results;
mod scale;
mod schema;
mod sge;
mod signals;
mod slurm;
mod values;
