//! The real `okms-emulator` binary: starts on port 0, writes `endpoint`, serves mTLS (and curl).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_writes_endpoint_and_serves_secret_config() {
    let dir = tempfile::tempdir().unwrap();
    let id = "5b1c6a3e-8f2d-4c1e-9a7b-0d3e4f5a6b7c";
    let _child = Child(
        Command::new(env!("CARGO_BIN_EXE_okms-emulator"))
            .args(["--listen", "127.0.0.1:0", "--state-dir"])
            .arg(dir.path())
            .args(["--okms-id", id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let endpoint_file = dir.path().join("endpoint");
    let deadline = Instant::now() + Duration::from_secs(30);
    let endpoint = loop {
        if let Ok(s) = std::fs::read_to_string(&endpoint_file)
            && s.starts_with("https://127.0.0.1:")
        {
            break s.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "endpoint file never appeared");
        // Poll the condition (the file appears once the server listens).
        tokio::time::sleep(Duration::from_millis(10)).await; // allowed: poll interval of a deadline wait
    };
    let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
    let client = common::client(
        &read("ca.pem"),
        Some((&read("client.pem"), &read("client-key.pem"))),
    );
    let url = format!("{endpoint}/api/{id}/v2/secretConfig");
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["maxVersions"], 10);

    if Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok()
    {
        let p = |n: &str| dir.path().join(n);
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(p("ca.pem"))
            .arg("--cert")
            .arg(p("client.pem"))
            .arg("--key")
            .arg(p("client-key.pem"))
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(body["casRequired"], false);
    }
}
