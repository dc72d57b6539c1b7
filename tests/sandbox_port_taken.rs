//! The sandbox's ports are fixed (the printed commands keep working) and checked before
//! anything starts: a taken one stops it with one line naming the port and the flag that moves
//! it, exit status 1, no backtrace even with RUST_BACKTRACE=1, and nothing written.

mod sandbox_support;

use std::net::TcpListener;

use okms_operator::sandbox::{DEFAULT_ADMIN_PORT, DEFAULT_KUBE_PORT, DEFAULT_OKMS_PORT};

use sandbox_support::{Ports, run_failing};

/// Runs the sandbox with `args` while something holds `port`; checks the one-line refusal.
fn refused(args: Vec<String>, port: u16, flag: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_failing(dir.path(), &args, &[("RUST_BACKTRACE", "1")]);
    assert_eq!(code, Some(1), "exit status 1; stderr:\n{stderr}");
    let text = stderr.trim();
    assert_eq!(text.lines().count(), 1, "one line:\n{stderr}");
    assert!(
        text.contains(&format!("port {port} ")) && text.contains(flag),
        "names the port and the flag that moves it: {text}"
    );
    assert!(
        !text.to_lowercase().contains("backtrace"),
        "no backtrace: {text}"
    );
    assert!(
        !dir.path().join(".sandbox").exists(),
        "nothing started, nothing written"
    );
}

#[test]
fn a_taken_port_is_named_with_its_flag_before_anything_starts() {
    for flag in ["--okms-port", "--kube-port", "--admin-port"] {
        let holder = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = holder.local_addr().unwrap().port();
        let ports = Ports::free();
        let mut args = ports.args();
        let i = args.iter().position(|a| a == flag).unwrap();
        args[i + 1] = taken.to_string();
        refused(args, taken, flag);
    }
}

#[test]
fn the_default_admin_port_is_checked_too() {
    // the other two are passed explicitly (tests run in parallel); the admin port is the
    // default, held here, or by something else on this machine: taken either way
    let _holder = TcpListener::bind(("127.0.0.1", DEFAULT_ADMIN_PORT));
    let ports = Ports::free();
    let args = vec![
        "--okms-port".to_string(),
        ports.okms.to_string(),
        "--kube-port".to_string(),
        ports.kube.to_string(),
    ];
    refused(args, DEFAULT_ADMIN_PORT, "--admin-port");
}

#[test]
fn the_defaults_are_fixed_and_shown_in_the_help() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_okms-operator"))
        .args(["sandbox", "--help"])
        .output()
        .expect("spawn okms-operator");
    let help = String::from_utf8_lossy(&out.stdout);
    for (flag, port) in [
        ("--okms-port", DEFAULT_OKMS_PORT),
        ("--kube-port", DEFAULT_KUBE_PORT),
        ("--admin-port", DEFAULT_ADMIN_PORT),
    ] {
        let line = help
            .lines()
            .position(|l| l.contains(flag))
            .unwrap_or_else(|| panic!("{flag} in the help:\n{help}"));
        // clap prints the default at the end of the flag's description
        let described: String = help.lines().skip(line).take(3).collect();
        assert!(
            described.contains(&format!("[default: {port}]")),
            "{flag} defaults to {port}:\n{help}"
        );
    }
    assert!(help.contains("--fresh"), "{help}");
}
