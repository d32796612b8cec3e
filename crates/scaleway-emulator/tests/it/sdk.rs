//! The official Scaleway Python SDK (PyPI `scaleway`) against the emulator: every answer must
//! unmarshal into the SDK's typed models with nothing missing, unknown or mistyped
//! (`tests/sdk_contract.py` says what it covers).

use crate::harness::{Emu, ORG, PROJECT, TOKEN, command};

#[test]
fn the_official_python_sdk_runs_a_whole_job_lifecycle() {
    let probe = command("python3")
        .args(["-c", "import scaleway, scaleway_core"])
        .output()
        .expect("python3 runs");
    assert!(
        probe.status.success(),
        "the Scaleway Python SDK is not importable ({}); scripts/install-deps.sh installs it \
         (pip install scaleway)",
        String::from_utf8_lossy(&probe.stderr).trim()
    );
    // The script expects 409 right after poweron: the boot must outlast a loaded machine's stalls.
    let emu = Emu::start(&["--secret-key", TOKEN, "--boot-delay", "1500ms"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk_contract.py");
    let out = command("python3")
        .args([script, &emu.base, TOKEN, PROJECT, ORG])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the SDK contract failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(summary["responses"].as_u64().unwrap() >= 70, "{summary}");
    // What the SDK sent, as the emulator saw it.
    let log = emu.requests();
    let seen = |method: &str, suffix: &str, status: u16| {
        log.iter().any(|r| {
            r["method"] == method
                && r["path"].as_str().unwrap().ends_with(suffix)
                && r["status"] == status
        })
    };
    assert!(seen("PATCH", "/user_data/cloud-init", 204));
    assert!(seen("POST", "/action", 202));
    assert!(seen("POST", "/iam/v1alpha1/api-keys", 200));
    assert!(
        log.iter()
            .any(|r| r["path"] == "/instance/v1/zones/fr-par-1/servers"
                && r["query"].as_str().unwrap().contains("per_page=2"))
    );
    assert!(log.iter().all(|r| r["status"] != 500));
    assert_eq!(emu.resources()["count"], 0);
}
