//! Every example says whether it runs in the sandbox; those that do run there exactly as their
//! header's "In the sandbox" commands say (run with `sh`, in order, against one sandbox, each
//! succeeding and printing the output shown under it), with the connections the sandbox
//! prepares: `default/sandbox` and `shop/okms`.

mod sandbox_support;

use std::path::{Path, PathBuf};

use sandbox_support::{Ports, Sandbox, Step, run_step, steps};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// The leading comment of an example.
fn header(text: &str) -> Vec<&str> {
    text.lines().take_while(|l| l.starts_with('#')).collect()
}

/// The commands of the header's "In the sandbox" block: the `#   ` lines after its first line.
fn sandbox_steps(header: &[&str]) -> Option<Vec<Step>> {
    let start = header
        .iter()
        .position(|l| l.starts_with("# In the sandbox"))?;
    let block: Vec<&str> = header[start..]
        .iter()
        .skip_while(|l| !l.starts_with("#   "))
        .take_while(|l| l.starts_with("#   "))
        .map(|l| &l[4..])
        .collect();
    Some(steps(&block))
}

#[test]
fn every_example_says_whether_it_runs_in_the_sandbox() {
    let mut runnable = 0;
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let header = header(&text);
        match sandbox_steps(&header) {
            Some(steps) => {
                assert!(
                    !steps.is_empty(),
                    "{}: an \"In the sandbox\" block without commands",
                    path.display()
                );
                runnable += 1;
            }
            None => assert!(
                header
                    .iter()
                    .any(|l| l.contains("Not runnable in the sandbox")),
                "{}: the header says neither how to run it in the sandbox (\"# In the sandbox\") nor \"Not runnable in the sandbox\" and why",
                path.display()
            ),
        }
    }
    assert!(runnable >= 8, "only {runnable} examples run in the sandbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runnable_examples_run_in_the_sandbox_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    // the commands are written for a clone of the repository: `examples/…` and `.sandbox/…`
    std::os::unix::fs::symlink(examples_dir(), dir.path().join("examples")).unwrap();
    let ports = Ports::free();
    let sandbox = Sandbox::start(dir.path(), ports, &[]);
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut ran = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let Some(steps) = sandbox_steps(&header(&text)) else {
            continue;
        };
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for step in &steps {
            eprintln!("{name}: {}", step.command);
            run_step(step, dir.path(), &ports, &|| {
                format!("(while running {name})\n{}", sandbox.stderr_text())
            });
        }
        ran.push(name);
    }
    assert!(
        ran.iter().any(|n| n == "database-template.yaml")
            && ran.iter().any(|n| n == "image-pull-secret.yaml"),
        "{ran:?}"
    );
    sandbox.stop();
}
