//! Every relative link in the repository's markdown files resolves inside the repository (issue
//! 18): the target file or folder exists, and an anchor into a markdown file names one of its
//! headings. No markdown file points at a path outside the repository, linked or not.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Markdown files of the repository (build output, VCS data and the sandbox's state left out).
fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !(name.starts_with('.') || name == "target" || name == "node_modules") {
                markdown_files(&path, out);
            }
        } else if name.ends_with(".md") {
            out.push(path);
        }
    }
}

/// Lines outside fenced code blocks, with inline code spans blanked (a link shown as code is
/// not a link), as (line number, text).
fn prose_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut prose = String::with_capacity(line.len());
        for (j, part) in line.split('`').enumerate() {
            prose.push_str(if j % 2 == 0 { part } else { "code" });
        }
        out.push((i + 1, prose));
    }
    out
}

/// Link destinations: inline `[text](dest "title")` (images too) and reference definitions
/// `[label]: dest`.
fn links(text: &str) -> Vec<(usize, String)> {
    let inline = regex::Regex::new(r#"\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)"#).unwrap();
    let reference = regex::Regex::new(r"^\s{0,3}\[[^\]]+\]:\s+<?([^\s>]+)>?").unwrap();
    let mut out = Vec::new();
    for (n, line) in prose_lines(text) {
        for c in inline.captures_iter(&line) {
            out.push((n, c[1].to_string()));
        }
        if let Some(c) = reference.captures(&line) {
            out.push((n, c[1].to_string()));
        }
    }
    out
}

/// GitHub's anchors of a markdown file's headings: lower case, punctuation dropped, spaces as
/// `-`, a repeated anchor numbered `-1`, `-2` ….
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let Some(heading) = line
            .strip_prefix('#')
            .map(|h| h.trim_start_matches('#'))
            .filter(|h| h.starts_with(' '))
        else {
            continue;
        };
        let slug: String = heading
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let mut candidate = slug.clone();
        let mut n = 0;
        while seen.contains(&candidate) {
            n += 1;
            candidate = format!("{slug}-{n}");
        }
        seen.insert(candidate);
    }
    seen
}

/// `path` without `.` and `..` components, or `None` if it climbs above the filesystem root.
fn normalise(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What is wrong with one link of `file`, if anything.
fn check_link(root: &Path, file: &Path, text: &str, dest: &str) -> Option<String> {
    let lower = dest.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("mailto:")
    {
        return None;
    }
    if lower.contains("://") {
        return Some(format!("{dest}: a link with another scheme"));
    }
    if dest.starts_with('/') {
        return Some(format!("{dest}: an absolute path, outside the repository"));
    }
    let (path, anchor) = match dest.split_once('#') {
        Some((p, a)) => (percent_decode(p), Some(a.to_string())),
        None => (percent_decode(dest), None),
    };
    let (target, target_text) = if path.is_empty() {
        (file.to_path_buf(), Some(text.to_string()))
    } else {
        let joined = file.parent().unwrap_or(root).join(&path);
        let Some(target) = normalise(&joined).filter(|t| t.starts_with(root)) else {
            return Some(format!("{dest}: leaves the repository"));
        };
        if !target.exists() {
            return Some(format!("{dest}: {} does not exist", target.display()));
        }
        let text = (target.extension().is_some_and(|e| e == "md"))
            .then(|| std::fs::read_to_string(&target).unwrap_or_default());
        (target, text)
    };
    match (anchor, target_text) {
        (Some(anchor), Some(target_text)) if !anchors(&target_text).contains(&anchor) => Some(
            format!("{dest}: {} has no heading #{anchor}", target.display()),
        ),
        _ => None,
    }
}

#[test]
fn relative_links_in_markdown_resolve_inside_the_repository() {
    let root = root();
    let mut files = Vec::new();
    markdown_files(&root, &mut files);
    files.sort();
    assert!(
        files.iter().any(|f| f.ends_with("README.md"))
            && files
                .iter()
                .any(|f| f.ends_with("crates/okms-emulator/README.md")),
        "the walk found {files:?}"
    );
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read a markdown file");
        let rel = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        for (line, dest) in links(&text) {
            checked += 1;
            if let Some(problem) = check_link(&root, file, &text, &dest) {
                problems.push(format!("{rel}:{line}: {problem}"));
            }
        }
        // the design folder the documents were written beside is no reference for a reader,
        // linked or not (the API notes it held are in docs/)
        for (n, line) in text.lines().enumerate() {
            if line.contains("/work/shared") {
                problems.push(format!(
                    "{rel}:{}: names a document outside the repository: {line}",
                    n + 1
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "broken links in markdown files:\n{}",
        problems.join("\n")
    );
    assert!(
        checked > 30,
        "only {checked} links found: the scan is broken"
    );
}

#[test]
fn the_link_checker_finds_what_is_broken() {
    let root = root();
    let readme = root.join("README.md");
    let text = "# Top\n\n## Two words\n";
    for (dest, broken) in [
        ("examples/quickstart.yaml", false),
        ("charts/okms-operator", false),
        ("#two-words", false),
        ("README.md#development", false),
        ("README.md#metrics-and-health", false),
        ("https://example.com/x", false),
        ("examples/missing.yaml", true),
        ("#no-such-heading", true),
        ("../outside.md", true),
        ("/work/shared/okms/API.md", true),
        ("docs/okms/API.md#no-such-section", true),
    ] {
        assert_eq!(
            check_link(&root, &readme, text, dest).is_some(),
            broken,
            "{dest}"
        );
    }
    let sample = "see [a](x.md) and `[b](y.md)`\n```\n[c](z.md)\n```\n[ref]: w.md\n";
    let found: Vec<String> = links(sample).into_iter().map(|(_, d)| d).collect();
    assert_eq!(found, ["x.md", "w.md"]);
}
