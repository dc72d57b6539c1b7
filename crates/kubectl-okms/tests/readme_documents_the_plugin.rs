//! The README's "kubectl plugin" section cannot drift from the plugin: every command and flag
//! is there, its example tables are what the code prints, and the forbidden message is the one
//! a user gets.

use clap::CommandFactory;
use kubectl_okms::cli::Cli;
use kubectl_okms::status;
use kubectl_okms::versions::{self, Report, Row};
use okms_operator::okms::VersionState;

fn section() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read README: {e}"));
    let start = text
        .find("\n## kubectl plugin\n")
        .expect("README has a section `## kubectl plugin`");
    let body = &text[start + 1..];
    let end = body[3..].find("\n## ").map_or(body.len(), |i| i + 3);
    body[..end].to_string()
}

/// The lines of the first example block after `marker`, without their `# ` prefix.
fn example(section: &str, marker: &str) -> Vec<String> {
    let at = section
        .find(marker)
        .unwrap_or_else(|| panic!("the section shows `{marker}`"));
    section[at..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("# "))
        .map(|l| l[2..].to_string())
        .collect()
}

#[test]
fn every_command_and_flag_is_documented() {
    let section = section();
    let cli = Cli::command();
    let undocumented = |cmd: &clap::Command| -> Vec<String> {
        let mut missing = Vec::new();
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long()
                && !["help", "version"].contains(&long)
                && !section.contains(&format!("`--{long}`"))
                && !section.contains(&format!("--{long} "))
                && !section.contains(&format!("[--{long}]"))
            {
                missing.push(format!("{} --{long}", cmd.get_name()));
            }
            if let Some(short) = arg.get_short()
                && !['h', 'V', 'y'].contains(&short)
                && !section.contains(&format!("`-{short}`"))
            {
                missing.push(format!("{} -{short}", cmd.get_name()));
            }
        }
        missing
    };
    let mut missing = undocumented(&cli);
    for sub in cli.get_subcommands() {
        if !section.contains(&format!("`kubectl okms {}", sub.get_name())) {
            missing.push(format!("the command {}", sub.get_name()));
        }
        missing.extend(undocumented(sub));
    }
    assert!(
        missing.is_empty(),
        "README's kubectl plugin section lacks {missing:?}"
    );
    let flat = section.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("forbidden; kubectl okms needs read access to the connection's credentials"),
        "the forbidden message as the plugin prints it"
    );
    for install in ["cargo install --path crates/kubectl-okms", "kind: Role"] {
        assert!(section.contains(install), "{install}");
    }
}

#[test]
fn the_example_tables_are_what_the_plugin_prints() {
    let section = section();
    let shown = example(&section, "kubectl okms versions db -n shop");
    let row = |version, state, created: &str, deactivated: Option<&str>, marks: [bool; 3]| Row {
        version,
        state,
        created_at: Some(created.into()),
        deactivated_at: deactivated.map(Into::into),
        current: marks[0],
        mirrored: marks[1],
        last_written: marks[2],
        data: None,
    };
    let report = Report {
        namespace: "shop".into(),
        name: "db".into(),
        path: "team/db".into(),
        mode: "mirror",
        current_version: Some(4),
        synced_version: Some(3),
        last_written_version: Some(1),
        versions: vec![
            row(
                4,
                VersionState::Active,
                "2025-06-02T09:12:40Z",
                None,
                [true, false, false],
            ),
            row(
                3,
                VersionState::Active,
                "2025-06-01T17:03:11Z",
                None,
                [false, true, false],
            ),
            row(
                2,
                VersionState::Deactivated,
                "2025-05-30T08:45:02Z",
                Some("2025-06-01T17:02:55Z"),
                [false; 3],
            ),
            row(
                1,
                VersionState::Active,
                "2025-05-29T10:00:00Z",
                None,
                [false, false, true],
            ),
        ],
    };
    let printed = versions::render(&report, None, false).expect("render");
    assert_eq!(shown, printed.lines().collect::<Vec<_>>());

    let shown = example(&section, "kubectl okms status -A");
    let now = chrono::Utc::now();
    let ago = |s: i64| (now - chrono::Duration::seconds(s)).to_rfc3339();
    let row = |name: &str, path: &str, version, reason: &str, synced: String| status::Row {
        namespace: "default".into(),
        name: name.into(),
        path: path.into(),
        synced_version: Some(version),
        current_version: Some(version),
        ready: Some("True".into()),
        reason: Some(reason.into()),
        message: None,
        last_sync_time: Some(synced),
    };
    let rows = [
        row("api-key", "quickstart/api-key", 1, "Mirrored", ago(300)),
        row("db", "quickstart/db", 2, "VersionWritten", ago(40)),
    ];
    let printed = status::render(&rows, true, None, now).expect("render");
    assert_eq!(shown, printed.lines().collect::<Vec<_>>());
}
