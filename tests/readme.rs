//! Every manifest shown in README.md is valid: each ```toml block that starts a `[workflow]`
//! is written out and checked with `poolparty validate`.

use crate::harness::Test;

#[test]
fn readme_manifests_validate() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut checked = 0;
    for block in readme.split("```toml\n").skip(1) {
        let body = block.split("```").next().unwrap();
        if !body.contains("[workflow]") {
            continue;
        }
        let t = Test::new().manifest(body);
        t.run(&["validate"]).code(0).stdout_has("valid");
        checked += 1;
    }
    assert!(checked >= 1, "README.md has no manifest blocks");
}
