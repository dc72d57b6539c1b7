//! Static checks of the Dockerfile and the chart's Deployment (no Docker engine or helm binary is
//! needed): the image runs the binary Cargo builds, as a numeric non-root user, from a locked
//! build without the sandbox (no emulator in production); the chart passes every operator flag
//! the binary has.

use std::path::Path;
use std::process::Command;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Dockerfile instructions as (KEYWORD, arguments), continuation lines joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(body) = t.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(t);
        let (kw, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push((kw.to_uppercase(), args.trim().to_string()));
        current.clear();
    }
    out
}

/// The final stage's instructions (after the last FROM).
fn final_stage(ins: &[(String, String)]) -> &[(String, String)] {
    let last_from = ins
        .iter()
        .rposition(|(k, _)| k == "FROM")
        .expect("Dockerfile has a FROM");
    &ins[last_from..]
}

#[test]
fn dockerfile_builds_the_locked_binary_and_runs_it_as_non_root() {
    let ins = instructions(&read("Dockerfile"));
    let package = read("Cargo.toml");
    // the binary: the root package's name (src/main.rs, no [[bin]] override)
    assert!(
        package.contains("\nname = \"okms-operator\"\n"),
        "root package is not okms-operator"
    );
    assert!(
        !package.contains("[[bin]]"),
        "a [[bin]] section changes the binary name: update this test"
    );
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/main.rs")
            .exists()
    );
    assert_eq!(
        env!("CARGO_BIN_EXE_okms-operator").rsplit('/').next(),
        Some("okms-operator")
    );

    let builds: Vec<&String> = ins
        .iter()
        .filter(|(k, a)| k == "RUN" && a.contains("cargo build"))
        .map(|(_, a)| a)
        .collect();
    assert_eq!(builds.len(), 1, "exactly one cargo build");
    let build = builds[0];
    // without the default `sandbox` feature: no emulator in the production image
    for flag in [
        "--locked",
        "--release",
        "--no-default-features",
        "--bin okms-operator",
    ] {
        assert!(build.contains(flag), "cargo build lacks {flag}: {build}");
    }
    assert!(
        !build.contains("--features") && !build.contains("--all-features"),
        "the image build turns features back on: {build}"
    );
    assert!(
        package.contains("\n[features]\ndefault = [\"sandbox\"]\n"),
        "the `sandbox` feature is no longer the only default one: check what the image leaves out"
    );
    for emulator in ["okms-emulator", "kube-emulator"] {
        assert!(
            package.contains(&format!(
                "\n{emulator} = {{ path = \"crates/{emulator}\", optional = true }}\n"
            )),
            "{emulator} is not an optional dependency: the image would carry it"
        );
    }

    let stage = final_stage(&ins);
    let from = &stage[0].1;
    assert!(
        from.starts_with("gcr.io/distroless/"),
        "runtime image is not distroless: {from}"
    );
    assert!(
        from.ends_with(":nonroot"),
        "runtime image is not the nonroot variant: {from}"
    );

    let user = stage
        .iter()
        .rev()
        .find(|(k, _)| k == "USER")
        .map(|(_, a)| a.clone())
        .expect("final stage sets USER");
    let (uid, gid) = user.split_once(':').unwrap_or((&user, "0"));
    let uid: u32 = uid
        .parse()
        .unwrap_or_else(|_| panic!("USER must be numeric (runAsNonRoot checks it): {user}"));
    let gid: u32 = gid
        .parse()
        .unwrap_or_else(|_| panic!("USER group must be numeric: {user}"));
    assert!(uid != 0 && gid != 0, "USER must not be root: {user}");
    assert_eq!(uid, 65532, "USER must match the chart's runAsUser");

    let entry = stage
        .iter()
        .rev()
        .find(|(k, _)| k == "ENTRYPOINT")
        .map(|(_, a)| a.clone())
        .expect("ENTRYPOINT");
    let entry: Vec<String> = serde_json::from_str(&entry).expect("ENTRYPOINT in exec (JSON) form");
    assert_eq!(entry, ["/okms-operator"]);
    let copied = stage
        .iter()
        .any(|(k, a)| k == "COPY" && a.starts_with("--from=") && a.ends_with(" /okms-operator"));
    assert!(
        copied,
        "final stage does not COPY the binary to /okms-operator"
    );
    let cmd = stage
        .iter()
        .rev()
        .find(|(k, _)| k == "CMD")
        .map(|(_, a)| a.clone())
        .expect("CMD");
    let cmd: Vec<String> = serde_json::from_str(&cmd).expect("CMD in exec (JSON) form");
    assert_eq!(cmd, ["run"]);

    let ignore = read(".dockerignore");
    for entry in ["target/", ".git/", ".sandbox/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == entry),
            ".dockerignore lacks {entry}"
        );
    }
    for needed in ["src", "crates", "Cargo.toml", "Cargo.lock"] {
        assert!(
            !ignore
                .lines()
                .any(|l| l.trim().trim_end_matches('/') == needed),
            ".dockerignore excludes {needed}, the build needs it"
        );
    }
}

#[test]
fn instructions_join_continuations_and_skip_comments() {
    let ins = instructions("# c\nFROM a AS b\nRUN x \\\n  && y\nUSER 1:2\n");
    assert_eq!(ins[1], ("RUN".into(), "x  && y".into()));
    assert_eq!(ins.len(), 3);
}

/// Every long flag of `okms-operator run`, from its own --help.
fn run_flags() -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_okms-operator"))
        .args(["run", "--help"])
        .output()
        .expect("run the binary");
    assert!(out.status.success(), "okms-operator run --help failed");
    let help = String::from_utf8_lossy(&out.stdout);
    let mut flags: Vec<String> = help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[' || c == '<')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string()
        })
        .filter(|w| w != "--help" && w != "--version")
        .collect();
    flags.sort();
    flags.dedup();
    flags
}

#[test]
fn chart_passes_every_operator_flag() {
    let flags = run_flags();
    assert!(
        flags.iter().any(|f| f == "--leader-election"),
        "help parsing found no flags: {flags:?}"
    );
    let deployment = read("charts/okms-operator/templates/deployment.yaml");
    let values = read("charts/okms-operator/values.yaml");
    for flag in &flags {
        if flag == "--operator-namespace" {
            // deliberately not a value: the chart sets POD_NAMESPACE (the release namespace),
            // which the Role and the Lease live in
            assert!(
                deployment.contains("name: POD_NAMESPACE"),
                "chart must set POD_NAMESPACE"
            );
            continue;
        }
        assert!(
            deployment.contains(&format!("- {flag}="))
                || deployment.contains(&format!("printf \"{flag}=%s\"")),
            "chart Deployment does not pass {flag}"
        );
    }
    // and the other way: the chart passes no flag the binary would refuse
    let mut passed = 0;
    for line in deployment.lines() {
        let line = line.trim().replace("{{ printf \"", "");
        if let Some(flag) = line.strip_prefix("- --") {
            passed += 1;
            let flag = format!("--{}", flag.split('=').next().unwrap_or_default());
            assert!(
                flags.contains(&flag),
                "chart passes {flag}, which `okms-operator run` does not know"
            );
        }
    }
    assert_eq!(
        passed,
        flags.len() - 1,
        "every flag but --operator-namespace, once"
    );
    for arg in [
        "- run",
        "--metrics-addr=0.0.0.0:{{ .Values.operator.metricsPort }}",
        "path: /healthz",
        "path: /readyz",
        "name: POD_NAME",
    ] {
        assert!(deployment.contains(arg), "chart Deployment lacks {arg}");
    }
    for key in [
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "runAsNonRoot: true",
        "runAsUser: 65532",
        "type: RuntimeDefault",
        "- ALL",
    ] {
        assert!(
            values.contains(key),
            "values.yaml securityContext lacks {key}"
        );
    }
}
