//! `proto/drip.proto` as every other toolchain sees it: the standard
//! `protoc` (Debian's protobuf-compiler, the compiler Go, Python, Java, C++
//! and Node clients use) compiles it, every RPC is `Foo(FooRequest) returns
//! (FooResponse)` with no message named like a method, and `buf lint` (buf's
//! default rules, `proto/buf.yaml`) passes.
//!
//! The build itself uses protox, which accepted a method shadowing its
//! message; these tests are what catches that. Without `protoc` or `buf`
//! they skip locally, but fail when `CI` is set (`.ci/run` installs both).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;
use prost_types::FileDescriptorSet;

fn proto_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("proto")
}

/// The tool's path, or `None` (a skip) when it is missing outside CI.
fn tool(name: &str, env: &str) -> Option<PathBuf> {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(name));
    let found = Command::new(&path).arg("--version").output().is_ok();
    if found {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{name} is not installed (or {env} is not set): CI must run this test; .ci/run installs it"
    );
    eprintln!("skipping: {name} is not installed (set {env} to its path)");
    None
}

/// Compiles the proto with `protoc` and returns its descriptor set.
fn protoc_descriptors() -> Option<FileDescriptorSet> {
    let protoc = tool("protoc", "PROTOC")?;
    let out = std::env::temp_dir().join(format!("drip-proto-lint-{}.bin", std::process::id()));
    let run = Command::new(protoc)
        .arg("-I")
        .arg(proto_dir())
        .arg(format!("--descriptor_set_out={}", out.display()))
        .arg("drip.proto")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "protoc refused drip.proto:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let bytes = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    Some(FileDescriptorSet::decode(bytes.as_slice()).unwrap())
}

#[test]
fn protoc_compiles_the_proto() {
    let Some(set) = protoc_descriptors() else {
        return;
    };
    let file = &set.file[0];
    assert_eq!(file.package(), "drip.v1");
    assert_eq!(file.service[0].name(), "RateLimiterService");
}

#[test]
fn every_rpc_takes_its_own_request_and_response() {
    let Some(set) = protoc_descriptors() else {
        return;
    };
    let file = &set.file[0];
    let messages: HashSet<&str> = file.message_type.iter().map(|m| m.name()).collect();
    let mut seen = HashSet::new();
    for service in &file.service {
        assert!(!service.method.is_empty());
        for m in &service.method {
            let name = m.name();
            assert_eq!(
                m.input_type(),
                format!(".drip.v1.{name}Request"),
                "rpc {name}"
            );
            assert_eq!(
                m.output_type(),
                format!(".drip.v1.{name}Response"),
                "rpc {name}"
            );
            assert!(
                !messages.contains(name),
                "message {name} shares the name of an rpc"
            );
            // No two RPCs share a message (buf's RPC_REQUEST_RESPONSE_UNIQUE).
            assert!(seen.insert(m.input_type().to_owned()));
            assert!(seen.insert(m.output_type().to_owned()));
        }
    }
}

#[test]
fn buf_lint_passes() {
    let Some(buf) = tool("buf", "BUF") else {
        return;
    };
    let run = Command::new(buf)
        .arg("lint")
        .current_dir(proto_dir())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "buf lint:\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}
