//! The README's Quickstart is true: its shell blocks, read from README.md and run in order with
//! `sh` (the sandbox started where it says `cargo run --release -- sandbox`, stopped with Ctrl-C
//! before the next one), each succeed and print the output shown under them — the push object
//! writing the source back over a version written in OKMS, the mirror-only object following a
//! new version and rolling back when it is deactivated, a restart keeping everything, `--fresh`
//! starting clean. And every `sandbox` flag is in the README's command line section.

mod sandbox_support;

use std::path::Path;

use sandbox_support::{Ports, Sandbox, run_step, steps};

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md")
}

/// The text from `## <heading>` to the next `## ` heading.
fn section(text: &str, heading: &str) -> String {
    let start = text
        .find(&format!("\n## {heading}"))
        .unwrap_or_else(|| panic!("README has no section {heading}"));
    let body = &text[start + 1..];
    let end = body[3..].find("\n## ").map_or(body.len(), |i| i + 3);
    body[..end].to_string()
}

/// The contents of the ```sh blocks, in order.
fn sh_blocks(text: &str) -> Vec<Vec<&str>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap_or_default()),
            (Some(block), l) => block.push(l),
            (None, _) => {}
        }
    }
    blocks
}

const START: &str = "cargo run --release -- sandbox";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_runs_as_written() {
    let text = readme();
    let quickstart = section(&text, "Quickstart: the sandbox");
    let all: Vec<_> = sh_blocks(&quickstart)
        .iter()
        .flat_map(|b| steps(b))
        .collect();
    assert!(
        all.first().is_some_and(|s| s.command == START),
        "the Quickstart starts with `{START}`"
    );
    for needle in ["-X PUT", "-X POST", r#""state":"deactivated""#] {
        assert!(
            all.iter().any(|s| s.command.contains(needle)),
            "the Quickstart writes and deactivates versions in OKMS ({needle})"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let mut sandbox: Option<Sandbox> = None;
    let mut starts = 0;
    for step in &all {
        if let Some(args) = step.command.strip_prefix(START) {
            // Ctrl-C in the sandbox's terminal, then the command as written (with our ports)
            if let Some(running) = sandbox.take() {
                running.stop();
            }
            let args: Vec<&str> = args.split_whitespace().collect();
            sandbox = Some(Sandbox::start(dir.path(), ports, &args));
            starts += 1;
            continue;
        }
        let running = sandbox
            .as_ref()
            .expect("the Quickstart starts the sandbox before using it");
        eprintln!("$ {}", step.command);
        run_step(step, dir.path(), &ports, &|| running.stderr_text());
    }
    assert!(starts >= 3, "start, restart and --fresh: {starts} starts");
    if let Some(running) = sandbox {
        running.stop();
    }
}

#[test]
fn every_sandbox_flag_is_documented() {
    let main = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/main.rs"))
        .expect("src/main.rs");
    let start = main
        .find("struct SandboxArgs {")
        .expect("SandboxArgs in src/main.rs");
    let body = &main[start..];
    let body = &body[..body.find("\n}").expect("end of SandboxArgs")];
    let flags: Vec<String> = body
        .lines()
        .filter_map(|l| {
            let (field, _) = l.trim().split_once(": ")?;
            field
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_')
                .then(|| format!("--{}", field.replace('_', "-")))
        })
        .collect();
    assert!(flags.len() >= 6, "parsed flags {flags:?}");
    let cli = section(&readme(), "Command line");
    for flag in flags {
        assert!(
            cli.contains(&format!("`{flag}`")),
            "README's command line section lacks the sandbox flag {flag}"
        );
    }
}
