//! The command line refuses bad values before anything starts, naming the flag.

use std::process::Command;

#[test]
fn worker_threads_out_of_range_is_refused_with_the_flag_named() {
    for bad in ["0", "257", "many"] {
        let out = Command::new(env!("CARGO_BIN_EXE_okms-operator"))
            .args(["run", "--worker-threads", bad])
            // no cluster: the run would fail later anyway, the point is that it never starts
            .env("KUBECONFIG", "/nonexistent")
            .output()
            .expect("spawn okms-operator");
        assert_eq!(out.status.code(), Some(2), "--worker-threads {bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--worker-threads"),
            "the error names the flag: {stderr}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_okms-operator"))
        .args(["run", "--help"])
        .output()
        .expect("spawn okms-operator");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("OKMS_OPERATOR_WORKER_THREADS") && help.contains("[default: 1]"),
        "{help}"
    );
}
