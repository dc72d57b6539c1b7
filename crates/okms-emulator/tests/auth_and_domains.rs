//! Authentication: access certificates (domain-bound), bearer tokens, and the 401 error body.

mod common;

use common::{okms_error, send, start, start_with};
use serde_json::json;

const AUTH: u64 = 50_475_011;

#[tokio::test]
async fn unauthenticated_request_gets_401_with_okms_body() {
    let env = start().await;
    let anon = env.anonymous();
    for url in [env.v2("secretConfig"), env.kv("data/x"), env.admin("stats")] {
        let (s, b) = send(anon.get(&url)).await;
        assert_eq!(s, 401, "{url}");
        okms_error(&b, AUTH);
    }
    // No token configured: a bearer is not enough.
    let (s, _) = send(anon.get(env.v2("secretConfig")).bearer_auth("anything")).await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn token_accepted_as_bearer_and_vault_token_on_both_surfaces() {
    let env = start_with(|c| c.token = Some("s3cret-token".into())).await;
    let anon = env.anonymous();
    let (s, _) = send(anon.get(env.v2("secretConfig")).bearer_auth("s3cret-token")).await;
    assert_eq!(s, 200);
    let (s, _) = send(
        anon.get(env.v2("secretConfig"))
            .header("X-Vault-Token", "s3cret-token"),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = send(
        anon.get(env.kv("config"))
            .header("X-Vault-Token", "s3cret-token"),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = send(anon.get(env.kv("config")).bearer_auth("s3cret-token")).await;
    assert_eq!(s, 200);
    let (s, b) = send(anon.get(env.kv("config")).header("X-Vault-Token", "wrong")).await;
    assert_eq!(s, 401);
    okms_error(&b, AUTH);
    // Unknown domain in the URL.
    let url = format!(
        "{}/api/00000000-0000-4000-8000-000000000000/v2/secretConfig",
        env.emu.endpoint()
    );
    let (s, b) = send(anon.get(&url).bearer_auth("s3cret-token")).await;
    assert_eq!(s, 404);
    okms_error(&b, 16_994_305);
}

#[tokio::test]
async fn certificate_is_bound_to_its_domain() {
    let env = start().await;
    let other = env.client_for("11111111-2222-4333-8444-555555555555");
    let (s, b) = send(other.get(env.v2("secretConfig"))).await;
    assert_eq!(s, 401);
    okms_error(&b, AUTH);

    let star = env.client_for("*");
    let (s, _) = send(star.get(env.v2("secretConfig"))).await;
    assert_eq!(s, 200);

    // Our certificate used against another domain id in the URL.
    let url = format!(
        "{}/api/00000000-0000-4000-8000-000000000000/v2/secretConfig",
        env.emu.endpoint()
    );
    let (s, _) = send(env.client.get(&url)).await;
    assert_eq!(s, 401);

    // A certificate from a foreign CA fails the TLS handshake.
    let dir = tempfile::tempdir().unwrap();
    let foreign = okms_emulator::start(okms_emulator::Config::new(dir.path()))
        .await
        .unwrap();
    let (c, k) = foreign.issue_client_cert(env.emu.okms_id());
    let client = common::client(&env.ca_pem(), Some((&c, &k)));
    assert!(client.get(env.v2("secretConfig")).send().await.is_err());
    foreign.shutdown().await;

    let (s, _) = send(env.client.put(env.v2("secretConfig")).json(&json!({}))).await;
    assert_eq!(s, 200);
}
