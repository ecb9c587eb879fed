//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the same entry points
//! the cargo-fuzz targets call, on stable, in every test run: inputs that once crashed a target
//! stay fixed, and every target has a corpus.

use std::path::PathBuf;

#[test]
fn every_corpus_input_returns_without_panicking() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut replayed = 0;
    for (name, target) in pullgate::fuzz::TARGETS {
        let dir = corpus.join(name);
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{name} has no corpus");
        for input in inputs {
            let data = std::fs::read(&input).unwrap();
            // A panic names the input that caused it.
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: {} panicked", input.display());
            replayed += 1;
        }
    }
    assert!(replayed >= pullgate::fuzz::TARGETS.len());
}

#[test]
fn deep_nesting_and_large_inputs_are_refused_without_overflowing_the_stack() {
    // A million levels of JSON arrays and objects, and YAML flow sequences: parsers with a
    // recursion limit refuse them; one without would overflow the stack and abort this test.
    let deep_json = format!("{}{}", "[".repeat(1_000_000), "]".repeat(1_000_000));
    let deep_object = "{\"a\":".repeat(200_000) + "1" + &"}".repeat(200_000);
    let deep_yaml = format!("spec: {}{}", "[".repeat(100_000), "]".repeat(100_000));
    let wide = format!("[{}1]", "1,".repeat(2_000_000));
    for (_, target) in pullgate::fuzz::TARGETS {
        for input in [&deep_json, &deep_object, &deep_yaml, &wide] {
            target(input.as_bytes());
        }
    }
}
