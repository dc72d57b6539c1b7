//! `kubectl` against the test's API server (the kube-emulator or the real control plane), for
//! tests of what a user sees. Tests skip, saying so, where no kubectl binary exists.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::backend::Kube;

/// The control plane's kubectl (built by tools/control-plane/build.sh), else one on PATH.
pub fn binary() -> Option<PathBuf> {
    let pinned =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/control-plane/v1.34.4/kubectl");
    [pinned, PathBuf::from("kubectl")].into_iter().find(|k| {
        Command::new(k)
            .args(["version", "--client"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// [`binary`], or `None` after printing `SKIPPED: … <test> did not run`.
pub fn binary_or_skip(test: &str) -> Option<PathBuf> {
    let found = binary();
    if found.is_none() {
        eprintln!(
            "SKIPPED: no kubectl (target/control-plane/v1.34.4/kubectl or on PATH): {test} did not run"
        );
    }
    found
}

/// A kubectl bound to one API server, with its own kubeconfig and discovery cache in `dir`.
pub struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    /// `bin` talking to `kube`'s API server as its administrator.
    pub fn new(bin: PathBuf, kube: &Kube, dir: &Path) -> Kubectl {
        let kubeconfig = match kube.control_plane() {
            Some(cp) => cp.kubeconfig_path().to_path_buf(),
            None => {
                let path = dir.join("kubeconfig");
                let config = format!(
                    "apiVersion: v1\nkind: Config\nclusters:\n- name: e\n  cluster:\n    server: {}\n\
                     contexts:\n- name: e\n  context:\n    cluster: e\n    user: u\n\
                     current-context: e\nusers:\n- name: u\n  user: {{}}\n",
                    kube.api_url()
                );
                std::fs::write(&path, config).expect("write the kubeconfig");
                path
            }
        };
        Kubectl {
            bin,
            kubeconfig,
            cache: dir.join("kubectl-cache"),
        }
    }

    /// Runs `kubectl <args>` and returns its output (whatever its exit status).
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl")
    }
}
