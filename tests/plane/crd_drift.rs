//! `crds/` is what users apply; it must be exactly what the Rust types generate.

#[test]
fn the_chart_ships_the_same_crd() {
    let root = env!("CARGO_MANIFEST_DIR");
    let chart = std::fs::read_to_string(format!(
        "{root}/charts/whatsapp-operator/crds/whatsappsessions.whatsapp-operator.dev.yaml"
    ))
    .expect("the chart holds the CRD");
    assert!(
        chart == whatsapp_operator::k8s::crd::crd_yaml(),
        "charts/whatsapp-operator/crds/ drifted from src/k8s/crd.rs; copy crds/ there again"
    );
}

#[test]
fn crds_directory_matches_the_generated_crd() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/whatsappsessions.whatsapp-operator.dev.yaml"
    );
    let on_disk = std::fs::read_to_string(path).expect("crds/ holds the CRD");
    assert!(
        on_disk == whatsapp_operator::k8s::crd::crd_yaml(),
        "crds/ drifted from src/k8s/crd.rs; regenerate it: cargo run -- crd > {path}"
    );
}
