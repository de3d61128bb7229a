//! A foreign client: `clients/python/drip_client.py` (grpcio, with stubs
//! that grpcio-tools compiles from drip.proto at run time) configures a
//! bucket, sends allows (some refused), reads its status and deletes it
//! against the real `drip` binary. Without Python's grpc it skips locally
//! but fails when `CI` is set (`.ci/run` installs grpcio and grpcio-tools).

mod serve_proc;

use std::path::Path;
use std::process::Command;

use serve_proc::Serve;

fn python_has_grpc() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with grpcio and grpcio-tools is missing: CI must run this test \
             (pip install grpcio grpcio-tools; .ci/run does)"
        );
        eprintln!("skipping: python3 with grpcio and grpcio-tools is not installed");
    }
    ok
}

#[test]
fn python_client_passes_against_drip_serve() {
    if !python_has_grpc() {
        return;
    }
    let drip = Serve::start_with(&["--admin-token", "py-secret"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/python/drip_client.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["--target", &drip.grpc, "--token", "py-secret"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.starts_with("ok: bucket py-"), "{stdout}");
}
