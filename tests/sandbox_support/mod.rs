//! The real `okms-operator sandbox` binary in a test: free ports passed explicitly (tests run in
//! parallel; the defaults are for people), a guard that kills the process even when the test
//! panics, Ctrl-C with a deadline, clients from its files, and a runner for documented shell
//! commands (the README's Quickstart, the examples' headers) with their documented output.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use okms_operator::okms::{Auth, ClientConfig, OkmsClient, RetryPolicy};

pub const DEADLINE: Duration = Duration::from_secs(90);
/// The defaults the README's commands use, replaced by a test's own ports.
pub const DEFAULT_PORTS: [u16; 3] = [
    okms_operator::sandbox::DEFAULT_OKMS_PORT,
    okms_operator::sandbox::DEFAULT_KUBE_PORT,
    okms_operator::sandbox::DEFAULT_ADMIN_PORT,
];

/// Ports for one sandbox, each free when chosen.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub okms: u16,
    pub kube: u16,
    pub admin: u16,
}

impl Ports {
    pub fn free() -> Self {
        // held together, so the three differ
        let held: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
            .collect();
        let port = |i: usize| held[i].local_addr().expect("local addr").port();
        Ports {
            okms: port(0),
            kube: port(1),
            admin: port(2),
        }
    }

    pub fn args(&self) -> Vec<String> {
        [
            ("--okms-port", self.okms),
            ("--kube-port", self.kube),
            ("--admin-port", self.admin),
        ]
        .iter()
        .flat_map(|(f, p)| [f.to_string(), p.to_string()])
        .collect()
    }

    /// `text` with the default ports (`127.0.0.1:19443` …) replaced by these.
    pub fn substitute(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (default, mine) in DEFAULT_PORTS.iter().zip([self.okms, self.kube, self.admin]) {
            out = out.replace(
                &format!("127.0.0.1:{default}"),
                &format!("127.0.0.1:{mine}"),
            );
        }
        out
    }
}

/// A running sandbox; killed when dropped (also when the test panics).
pub struct Sandbox {
    child: Option<Child>,
    /// The working directory it runs in; its state is `cwd/.sandbox`.
    pub cwd: PathBuf,
    pub ports: Ports,
    pub metrics_url: String,
    stderr: PathBuf,
    lines: mpsc::Receiver<String>,
}

fn spawn(cwd: &Path, args: &[String], stderr: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_okms-operator"))
        .arg("sandbox")
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).expect("stderr file"))
        .spawn()
        .expect("spawn okms-operator sandbox")
}

impl Sandbox {
    /// Starts `okms-operator sandbox <ports> <extra>` in `cwd` and waits for its instructions.
    pub fn start(cwd: &Path, ports: Ports, extra: &[&str]) -> Sandbox {
        let mut args = ports.args();
        args.extend(extra.iter().map(|s| s.to_string()));
        let n = std::fs::read_dir(cwd).map(|d| d.count()).unwrap_or(0);
        let stderr = cwd.join(format!("sandbox-{n}.stderr"));
        let mut child = spawn(cwd, &args, &stderr);
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // keep draining after the test stopped listening: a closed pipe would break the
                // sandbox's own stdout
                let _ = tx.send(line);
            }
        });
        let mut sandbox = Sandbox {
            child: Some(child),
            cwd: cwd.to_path_buf(),
            ports,
            metrics_url: String::new(),
            stderr,
            lines,
        };
        let start = Instant::now();
        sandbox.metrics_url = loop {
            let remaining = DEADLINE.saturating_sub(start.elapsed());
            match sandbox.lines.recv_timeout(remaining) {
                Ok(line) => {
                    if let Some(url) = line.split_whitespace().find(|w| w.ends_with("/metrics")) {
                        break url.to_string();
                    }
                }
                Err(_) => panic!(
                    "the sandbox printed no instructions in time; exit: {:?}\nstderr:\n{}",
                    sandbox.child.as_mut().map(|c| c.try_wait()),
                    sandbox.stderr_text()
                ),
            }
        };
        sandbox
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.cwd.join(".sandbox/kubeconfig")
    }

    pub fn okms_dir(&self) -> PathBuf {
        self.cwd.join(".sandbox/okms")
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends SIGINT (Ctrl-C) and waits for a clean exit.
    pub fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("kill -INT");
        assert!(status.success());
        let status = wait_exit(&mut child, DEADLINE).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("the sandbox did not stop after Ctrl-C");
        });
        assert!(
            status.success(),
            "the sandbox exited with {status} after Ctrl-C; stderr:\n{}",
            self.stderr_text()
        );
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for a child to exit, up to `deadline`.
pub fn wait_exit(child: &mut Child, deadline: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return Some(status);
        }
        if start.elapsed() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50)); // allowed: poll interval of a deadline wait
    }
}

/// Kills a child when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a sandbox that must fail to start: its exit status and stderr.
pub fn run_failing(cwd: &Path, args: &[String], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let stderr = cwd.join("failing.stderr");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_okms-operator"));
    cmd.arg("sandbox")
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut guard = KillOnDrop(cmd.spawn().expect("spawn okms-operator sandbox"));
    let status = wait_exit(&mut guard.0, DEADLINE).expect("the sandbox exits on its own");
    (
        status.code(),
        std::fs::read_to_string(&stderr).unwrap_or_default(),
    )
}

pub async fn kube_client(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kubeconfig config");
    kube::Client::try_from(config).expect("client")
}

/// A direct OKMS client with the sandbox's access certificate.
pub fn okms_client(sandbox: &Sandbox) -> OkmsClient {
    let dir = sandbox.okms_dir();
    let read = |f: &str| std::fs::read(dir.join(f)).expect("read an OKMS certificate file");
    let mut config = ClientConfig::new(
        format!("https://127.0.0.1:{}", sandbox.ports.okms)
            .parse()
            .expect("URL"),
        okms_operator::sandbox::OKMS_ID,
        Auth::Mtls {
            cert_pem: read("client.pem"),
            key_pem: read("client-key.pem").into(),
        },
    );
    config.extra_roots_pem = Some(read("ca.pem"));
    config.retry = RetryPolicy::none();
    OkmsClient::new(config).expect("OKMS client")
}

/// Polls `check` until it gives `Some`, failing after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await; // allowed: poll interval of a deadline wait
    }
}

pub fn http_get(url: &str) -> String {
    let out = Command::new("curl").args(["-sf", url]).output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => panic!("GET {url} failed: {}", o.status),
        Err(e) => panic!("curl is needed for this test: {e}"),
    }
}

// ---- documented commands ----------------------------------------------------------------------

/// One documented shell command and the output shown under it (empty: not shown).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub command: String,
    pub output: Vec<String>,
}

/// Reads documented shell lines: a line that is not a comment is a command (`\` continues it
/// on the next line); the `#` lines right under a command are its output as shown (`#` alone
/// for an empty line); a `#` line after an empty line, or before any command, is prose.
pub fn steps(lines: &[&str]) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    let mut in_output = false;
    let mut pending = String::new();
    for line in lines {
        let line = line.trim_end();
        if !pending.is_empty() {
            match line.strip_suffix('\\') {
                Some(more) => pending.push_str(more.trim_start()),
                None => {
                    pending.push_str(line.trim_start());
                    out.push(Step {
                        command: std::mem::take(&mut pending),
                        output: Vec::new(),
                    });
                    in_output = true;
                }
            }
            continue;
        }
        if line.trim().is_empty() {
            in_output = false;
            continue;
        }
        if let Some(comment) = line.trim_start().strip_prefix('#') {
            if in_output && let Some(step) = out.last_mut() {
                step.output
                    .push(comment.strip_prefix(' ').unwrap_or(comment).to_string());
            }
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => pending = start.to_string(),
            None => {
                out.push(Step {
                    command: line.trim().to_string(),
                    output: Vec::new(),
                });
                in_output = true;
            }
        }
    }
    out
}

/// Whether an `AGE` cell (`5s`, `3m12s`, `2d`) stands here.
fn is_age(token: &str) -> bool {
    let mut digits = false;
    let mut units = false;
    for c in token.chars() {
        match c {
            '0'..='9' => digits = true,
            's' | 'm' | 'h' | 'd' | 'y' if digits => units = true,
            _ => return false,
        }
    }
    digits && units && token.chars().last().is_some_and(|c| !c.is_ascii_digit())
}

/// Whether `actual` fits `shown`, where each `…` in `shown` stands for any text (a timestamp).
fn wildcard(shown: &str, actual: &str) -> bool {
    let parts: Vec<&str> = shown.split('…').collect();
    if parts.len() < 2 {
        return false;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    let Some(mut rest) = actual.strip_prefix(first) else {
        return false;
    };
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Compares output with what the documentation shows (`…` stands for text that varies): line by line, cell by cell (spacing is
/// free), an age shown matches any age.
pub fn same_output(shown: &[String], actual: &str) -> Result<(), String> {
    let actual: Vec<&str> = actual.trim_end().lines().collect();
    let shown: Vec<&str> = shown.iter().map(|s| s.trim_end()).collect();
    let mismatch = || {
        format!(
            "documented output:\n{}\nreal output:\n{}",
            shown.join("\n"),
            actual.join("\n")
        )
    };
    if actual.len() != shown.len() {
        return Err(mismatch());
    }
    for (s, a) in shown.iter().zip(&actual) {
        let (s, a): (Vec<&str>, Vec<&str>) = (
            s.split_whitespace().collect(),
            a.split_whitespace().collect(),
        );
        let same = s.len() == a.len()
            && s.iter()
                .zip(&a)
                .all(|(s, a)| s == a || (is_age(s) && is_age(a)) || wildcard(s, a));
        if !same {
            return Err(mismatch());
        }
    }
    Ok(())
}

/// Runs one documented command with `sh -c` in `cwd` (the default ports replaced by the
/// sandbox's); it must succeed and print what is shown under it.
pub fn run_step(step: &Step, cwd: &Path, ports: &Ports, sandbox_stderr: &dyn Fn() -> String) {
    let command = ports.substitute(&step.command);
    let mut child = KillOnDrop(
        Command::new("sh")
            .args(["-c", &command])
            .current_dir(cwd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sh"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let stderr = child.0.stderr.take().expect("stderr");
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let (out, err) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let status = wait_exit(&mut child.0, DEADLINE)
        .unwrap_or_else(|| panic!("`{command}` did not finish in {DEADLINE:?}"));
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    assert!(
        status.success(),
        "`{command}` failed ({status}):\n{out}{err}\nsandbox stderr:\n{}",
        sandbox_stderr()
    );
    if !step.output.is_empty()
        && let Err(e) = same_output(&step.output, &out)
    {
        panic!("`{command}`: {e}");
    }
}

#[test]
fn documented_commands_are_read_as_written() {
    let text = [
        "# prose before any command",
        "kubectl get x \\",
        "  --all",
        "# NAME   AGE",
        "# a      5s",
        "#",
        "# b      1m2s",
        "",
        "# more prose",
        "echo hi   # a trailing comment is the shell's",
    ];
    assert_eq!(
        steps(&text),
        vec![
            Step {
                command: "kubectl get x --all".into(),
                output: vec![
                    "NAME   AGE".into(),
                    "a      5s".into(),
                    "".into(),
                    "b      1m2s".into()
                ],
            },
            Step {
                command: "echo hi   # a trailing comment is the shell's".into(),
                output: vec![],
            },
        ]
    );
    let shown = steps(&text)[0].output.clone();
    same_output(&shown, "NAME AGE\na    17s\n\nb    3h\n").expect("ages and spacing are free");
    assert!(same_output(&shown, "NAME AGE\na    17s\n\nc    3h\n").is_err());
    assert!(same_output(&shown, "NAME AGE\na    17s\n").is_err());
    assert!(is_age("5s") && is_age("3m12s") && !is_age("5") && !is_age("s") && !is_age("True"));
    let shown = vec![r#"{"at":"…"}"#.to_string()];
    same_output(&shown, r#"{"at":"2026-01-01T00:00:00Z"}"#).expect("… is any text");
    assert!(same_output(&shown, r#"{"by":"2026"}"#).is_err());
}
