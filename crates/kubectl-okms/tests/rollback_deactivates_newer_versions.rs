//! `kubectl okms rollback NAME --to N`: deactivates exactly the active versions newer than N,
//! asks first unless --yes (and anything but a yes changes nothing), refuses an N that is not
//! active, and tells a push object's user that the source still wins.

mod support;

use okms_operator::okms::VersionState::{Active, Deactivated};
use serde_json::json;
use support::Env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_asks_then_deactivates_only_newer_active_versions() {
    let env = Env::start().await;
    let canary = "canary-0b7d2f";
    env.versions("team/api", canary, 5).await;
    env.deactivate("team/api", 4).await;
    env.okms_secret("apps", "api", "team/api", json!({})).await;
    let before = env.states("team/api").await;
    assert_eq!(
        before,
        [
            (1, Active),
            (2, Active),
            (3, Active),
            (4, Deactivated),
            (5, Active)
        ]
    );

    // a "n", or no answer at all (stdin closed): nothing changes
    for stdin in [Some("n\n"), None] {
        let run = env
            .run(&["-n", "apps", "rollback", "api", "--to", "2"], stdin)
            .await;
        assert_eq!(run.code, Some(1), "{run:#?}");
        assert!(
            run.stderr
                .contains("deactivate versions 5 and 3 of OKMS secret \"team/api\""),
            "the question names what would change: {run:#?}"
        );
        assert!(
            run.stderr
                .contains("error: rollback cancelled: nothing was changed"),
            "{run:#?}"
        );
        assert!(run.stdout.is_empty(), "{run:#?}");
        assert_eq!(env.states("team/api").await, before);
    }

    // a "y": versions 5 and 3 are deactivated, nothing else is touched
    let updates = env.okms.stats().count("version.update");
    let run = env
        .run(&["-n", "apps", "rollback", "api", "--to", "2"], Some("y\n"))
        .await
        .ok();
    assert_eq!(
        env.states("team/api").await,
        [
            (1, Active),
            (2, Active),
            (3, Deactivated),
            (4, Deactivated),
            (5, Deactivated)
        ]
    );
    assert_eq!(
        env.okms.stats().count("version.update") - updates,
        2,
        "one state update per deactivated version"
    );
    assert!(
        run.stdout
            .starts_with("version 5 deactivated\nversion 3 deactivated\nversion 2 is now the newest active version"),
        "{run:#?}"
    );
    // a mirror-only object gets no note about a source
    assert!(!run.stderr.contains("source"), "{run:#?}");
    assert!(!run.all().contains(canary), "{run:#?}");
    env.assert_no_credentials(&run.all());

    // already there: nothing to do, nothing asked
    let run = env
        .run(&["-n", "apps", "rollback", "api", "--to", "2"], None)
        .await
        .ok();
    assert!(run.stdout.contains("nothing to deactivate"), "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_of_a_push_object_says_the_source_still_wins() {
    let env = Env::start().await;
    env.versions("team/pushed", "pw", 3).await;
    env.okms_secret(
        "apps",
        "pushed",
        "team/pushed",
        json!({"source": {"secretRef": {"name": "pushed-src"}}}),
    )
    .await;
    let run = env
        .run(
            &[
                "rollback", "pushed", "--to", "1", "--yes", "-n", "apps", "-o", "json",
            ],
            None,
        )
        .await
        .ok();
    assert!(
        run.stderr.contains("pushes spec.source") && run.stderr.contains("the source wins"),
        "{run:#?}"
    );
    // --yes asks nothing
    assert!(!run.stderr.contains("[y/N]"), "{run:#?}");
    let json = run.json();
    assert_eq!(json["to"], 1);
    assert_eq!(json["deactivated"], json!([3, 2]));
    assert_eq!(
        env.states("team/pushed").await,
        [(1, Active), (2, Deactivated), (3, Deactivated)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_refuses_a_version_that_is_not_active() {
    let env = Env::start().await;
    env.versions("team/db", "pw", 3).await;
    env.deactivate("team/db", 2).await;
    env.okms_secret("apps", "db", "team/db", json!({})).await;
    let before = env.states("team/db").await;
    let updates = env.okms.stats().count("version.update");

    let run = env
        .run(
            &["-n", "apps", "rollback", "db", "--to", "2", "--yes"],
            None,
        )
        .await;
    let line = run.error_line();
    assert!(
        line.contains("version 2 of OKMS secret \"team/db\" is deactivated, not active"),
        "{line}"
    );
    let run = env
        .run(
            &["-n", "apps", "rollback", "db", "--to", "9", "--yes"],
            None,
        )
        .await;
    assert!(
        run.error_line()
            .contains("has no version 9 (versions: 1, 2 and 3)"),
        "{run:#?}"
    );
    assert_eq!(env.states("team/db").await, before);
    assert_eq!(env.okms.stats().count("version.update"), updates);

    // positive control: the same object rolls back to an active version
    env.run(
        &["-n", "apps", "rollback", "db", "--to", "1", "--yes"],
        None,
    )
    .await
    .ok();
    assert_eq!(
        env.states("team/db").await,
        [(1, Active), (2, Deactivated), (3, Deactivated)]
    );
}
