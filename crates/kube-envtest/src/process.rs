//! A started program, supervised by a small shell so that it dies with the test process.
//!
//! The shell runs the program in the background and waits for it; a second background shell
//! reads the supervisor's stdin, a pipe whose only writer is this process. When the pipe closes,
//! because [`Process::stop`] dropped it or because the test process died (even by SIGKILL), the
//! reader kills the program. So no etcd or kube-apiserver outlives its test.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

const SUPERVISOR: &str = r#"exec 3<&0
"$@" </dev/null &
pid=$!
( read -r line <&3; kill -9 "$pid" 2>/dev/null ) &
wait "$pid""#;

pub(crate) struct Process {
    pub name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    log: PathBuf,
}

impl Process {
    /// Starts `program args…` with stdout and stderr appended to `<dir>/<name>.log`.
    pub fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        dir: &Path,
    ) -> std::io::Result<Process> {
        let log = dir.join(format!("{name}.log"));
        // appended: a restarted program keeps its predecessor's log
        let out = File::options().create(true).append(true).open(&log)?;
        let err = out.try_clone()?;
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg(name)
            .arg(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()?;
        let stdin = child.stdin.take();
        Ok(Process {
            name,
            child,
            stdin,
            log,
        })
    }

    /// The exit status, if the program has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(s)) => Some(s.to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log, 40)
    }

    /// Kills the program and waits for it (a few seconds at most).
    pub fn stop(&mut self) {
        drop(self.stdin.take());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10)); // poll interval of a deadline wait
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes a folder when dropped or when the test process dies (the same stdin-pipe signal).
pub(crate) struct Janitor {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Janitor {
    pub fn new(dir: &Path) -> std::io::Result<Janitor> {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(r#"read -r line; sleep 1; rm -rf "$1" 2>/dev/null || { sleep 2; rm -rf "$1"; }"#)
            .arg("janitor")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = child.stdin.take();
        Ok(Janitor { child, stdin })
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        // The processes are already stopped and TempDir removes the folder: no need to wait.
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `lines` lines of a file.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut text = String::new();
    let _ = f.read_to_string(&mut text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
