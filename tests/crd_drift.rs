//! `crds/` is what users apply; it must be exactly what the Rust types generate.

#[test]
fn crds_directory_matches_the_generated_crd() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/whatsappsessions.whatsapp-operator.dev.yaml"
    );
    let on_disk = std::fs::read_to_string(path).expect("crds/ holds the CRD");
    assert!(
        on_disk == whatsapp_operator::crd::crd_yaml(),
        "crds/ drifted from src/crd.rs; regenerate it: cargo run -- crd > {path}"
    );
}
