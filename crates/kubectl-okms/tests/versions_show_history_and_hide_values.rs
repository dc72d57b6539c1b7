//! `kubectl okms versions`: the OKMS version history of an OkmsSecret's path with the current,
//! mirrored and last-written marks, in a table, JSON and YAML; values only with --show-values.

mod support;

use serde_json::{Value, json};
use support::{Env, parse_table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_mark_current_mirrored_and_written_versions() {
    let env = Env::start().await;
    env.versions("team/db", "pw", 4).await;
    env.deactivate("team/db", 2).await;
    env.okms_secret("apps", "db", "team/db", json!({})).await;
    // as the operator would have recorded it: version 1 written, 3 mirrored
    env.set_status(
        "apps",
        "db",
        json!({"path": "team/db", "currentVersion": 4, "syncedVersion": 3, "lastWrittenVersion": 1}),
    )
    .await;

    // the namespace comes from the kubeconfig context `apps`
    let run = env
        .run(&["--context", "apps", "versions", "db"], None)
        .await
        .ok();
    let rows = parse_table(&run.stdout);
    let ids: Vec<&str> = rows.iter().map(|r| r["VERSION"].as_str()).collect();
    assert_eq!(ids, ["4", "3", "2", "1"], "{}", run.stdout);
    let marks = |r: &std::collections::BTreeMap<String, String>| {
        (
            r["STATE"].clone(),
            r["CURRENT"].clone(),
            r["MIRRORED"].clone(),
            r["WRITTEN"].clone(),
        )
    };
    let want = [
        ("active", "*", "", ""),
        ("active", "", "*", ""),
        ("deactivated", "", "", ""),
        ("active", "", "", "*"),
    ];
    for (row, (state, current, mirrored, written)) in rows.iter().zip(want) {
        assert_eq!(
            marks(row),
            (
                state.to_string(),
                current.to_string(),
                mirrored.to_string(),
                written.to_string()
            ),
            "{}",
            run.stdout
        );
        assert!(row["CREATED"].ends_with('Z'), "{}", run.stdout);
    }
    assert_eq!(rows[0]["DEACTIVATED"], "<none>");
    assert!(rows[2]["DEACTIVATED"].ends_with('Z'), "{}", run.stdout);
    assert!(run.stderr.is_empty(), "{run:#?}");

    // -o json, -n, the default context otherwise: the same, as data
    let run = env
        .run(&["versions", "db", "-n", "apps", "-o", "json"], None)
        .await
        .ok();
    let json = run.json();
    assert_eq!(json["path"], "team/db");
    assert_eq!(json["mode"], "mirror");
    assert_eq!(json["currentVersion"], 4);
    assert_eq!(json["syncedVersion"], 3);
    assert_eq!(json["lastWrittenVersion"], 1);
    let versions = json["versions"].as_array().expect("versions");
    let summary: Vec<(u64, &str, bool, bool, bool)> = versions
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap_or_default(),
                v["state"].as_str().unwrap_or_default(),
                v["current"] == true,
                v["mirrored"] == true,
                v["lastWritten"] == true,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (4, "active", true, false, false),
            (3, "active", false, true, false),
            (2, "deactivated", false, false, false),
            (1, "active", false, false, true),
        ]
    );
    assert!(versions[2]["deactivatedAt"].is_string());
    assert!(versions[0]["deactivatedAt"].is_null());
    assert!(versions.iter().all(|v| v.get("data").is_none()));

    // -o yaml carries the same document
    let run = env
        .run(&["versions", "db", "-n", "apps", "-o", "yaml"], None)
        .await
        .ok();
    let yaml: Value = serde_yaml::from_str(&run.stdout).expect("YAML");
    assert_eq!(yaml, json);

    // an object that does not exist: one clear line, exit 1
    let run = env.run(&["versions", "nope", "-n", "apps"], None).await;
    assert_eq!(run.error_line(), "error: OkmsSecret apps/nope not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_printed_only_with_show_values() {
    let env = Env::start().await;
    let canary = "canary-5c1e9a";
    env.versions("team/api", canary, 3).await;
    env.deactivate("team/api", 1).await;
    env.okms_secret(
        "apps",
        "api",
        "team/api",
        json!({"source": {"inline": {"k": "v"}}}),
    )
    .await;
    env.set_status(
        "apps",
        "api",
        json!({"syncedVersion": 3, "lastWrittenVersion": 3}),
    )
    .await;

    for format in [None, Some("json"), Some("yaml")] {
        let mut args = vec!["-n", "apps", "versions", "api"];
        if let Some(f) = format {
            args.extend(["-o", f]);
        }
        let run = env.run(&args, None).await.ok();
        // positive control: the command ran and listed the versions
        assert!(run.stdout.contains("active"), "{run:#?}");
        assert!(!run.all().contains(canary), "a value was printed: {run:#?}");
        env.assert_no_credentials(&run.all());
    }

    let run = env
        .run(&["-n", "apps", "versions", "api", "--show-values"], None)
        .await
        .ok();
    let rows = parse_table(&run.stdout);
    assert_eq!(rows[0]["DATA"], format!(r#"{{"password":"{canary}-3"}}"#));
    assert_eq!(rows[1]["DATA"], format!(r#"{{"password":"{canary}-2"}}"#));
    assert_eq!(rows[2]["DATA"], "<deactivated: not readable>");
    env.assert_no_credentials(&run.all());

    let run = env
        .run(
            &[
                "-n",
                "apps",
                "versions",
                "api",
                "--show-values",
                "-o",
                "json",
            ],
            None,
        )
        .await
        .ok();
    let json = run.json();
    assert_eq!(json["mode"], "push");
    assert_eq!(
        json["versions"][0]["data"]["password"],
        format!("{canary}-3")
    );
    assert!(json["versions"][2].get("data").is_none());
}
