//! dereference: the reads of a sync. What the OkmsSecret references (its connection, checked for
//! isolation before any OKMS call; its source Secret; its target Secret) and what the plan asks
//! to know from OKMS ([`okms`]). Nothing here writes.

use std::collections::BTreeMap;

use chrono::Utc;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

use crate::controller::connection::{self, Fetched};
use crate::controller::context::Context;
use crate::controller::plan::{self, Answer, Desired, Facts, Inputs, Read, Remote};
use crate::controller::reverse_index::{RefKey, TARGET};
use crate::crd::{ConnectionKind, InlineData, OkmsSecret, Source};
use crate::error::{Error, Result};
use crate::hmac::HmacKey;
use crate::okms::{OkmsClient, SecretData};
use crate::render;

/// What an OkmsSecret references, for the reverse index: its connection, its source Secret, and
/// its target by name — not only by our labels: a foreign Secret in the way, a target whose
/// labels were stripped, or a Merge target created later still wakes its owner. A target named
/// like its OkmsSecret (the default) is found from the OkmsSecret cache, without an index entry
/// (10 000 of them cost 3 MiB).
pub fn references(obj: &OkmsSecret) -> Vec<RefKey> {
    let ns = obj.namespace().unwrap_or_default();
    let kind = obj.spec.connection_ref.kind.unwrap_or_default();
    let (kind_name, conn_ns) = match kind {
        ConnectionKind::OkmsConnection => ("OkmsConnection", ns.clone()),
        ConnectionKind::ClusterOkmsConnection => ("ClusterOkmsConnection", String::new()),
    };
    let mut refs = vec![(kind_name, conn_ns, obj.spec.connection_ref.name.clone())];
    if let Some(Source {
        secret_ref: Some(r),
        ..
    }) = &obj.spec.source
    {
        refs.push(("Secret", ns.clone(), r.name.clone()));
    }
    let target = obj.target_name();
    if target != obj.name_any() {
        refs.push((TARGET, ns, target.to_string()));
    }
    refs
}

/// The object's connection, after the isolation checks (namespace, path) that come before any
/// OKMS call.
pub async fn connection(ctx: &Context, obj: &OkmsSecret) -> Result<Fetched> {
    let ns = obj.namespace().unwrap_or_default();
    let r = &obj.spec.connection_ref;
    let conn = connection::fetch(ctx, r.kind.unwrap_or_default(), &ns, &r.name).await?;
    conn.check_allowed(ctx, &ns, &obj.spec.path).await?;
    Ok(conn)
}

/// The OKMS client of a connection (its credentials read when they changed).
pub async fn client(ctx: &Context, conn: &Fetched) -> Result<OkmsClient> {
    Ok(connection::client_for(ctx, conn).await?.client)
}

/// The desired data of a `secretRef` or `inline` source, canonical (64 KB at most), with its
/// HMAC under the object's key. `None` for a mirror-only object and for generated values.
pub async fn desired(ctx: &Context, obj: &OkmsSecret, hmac: &HmacKey) -> Result<Option<Desired>> {
    let Some(source) = &obj.spec.source else {
        return Ok(None);
    };
    if source.generate.is_some() {
        return Ok(None);
    }
    let data = source_data(ctx, &obj.namespace().unwrap_or_default(), source).await?;
    let text = render::checked_canonical(&data)?;
    Ok(Some(Desired {
        hmac: hmac.digest(text.as_bytes()),
        data: SecretData(data),
    }))
}

/// Desired data of a source, as a JSON object.
async fn source_data(
    ctx: &Context,
    ns: &str,
    source: &Source,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    match &source.inline {
        Some(InlineData::Object(map)) => return Ok(map.clone()),
        Some(InlineData::Invalid(why)) => return Err(Error::InvalidSpec(why.clone())),
        None => {}
    }
    let Some(r) = &source.secret_ref else {
        return Err(Error::InvalidSpec(
            "spec.source needs secretRef or inline".into(),
        ));
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret = api
        .get_opt(&r.name)
        .await?
        .ok_or_else(|| Error::SourceNotFound {
            namespace: ns.to_string(),
            name: r.name.clone(),
        })?;
    render::desired_from_secret(
        &secret_bytes(&secret),
        r.keys.as_deref(),
        r.encoding.unwrap_or_default(),
        &r.name,
    )
}

/// The target Secret as it is, if it exists. A target the Secret watch proves absent needs no
/// read (most first syncs).
pub async fn target(ctx: &Context, obj: &OkmsSecret) -> Result<Option<Secret>> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.target_name();
    if ctx
        .secret_names
        .surely_absent(&ns, name, obj.resource_version().as_deref())
    {
        return Ok(None);
    }
    Ok(Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .get_opt(name)
        .await?)
}

/// Whether some connection reads credentials (or its CA) from this Secret. Unknown until the
/// connection watches have started: then every Secret counts as one.
pub fn is_credential_secret(ctx: &Context, ns: &str, name: &str) -> bool {
    let stores = ctx.connection_stores.read();
    let Some(stores) = stores.as_ref() else {
        return true;
    };
    let namespaced = stores.namespaced.state().into_iter().any(|c| {
        c.metadata.namespace.as_deref() == Some(ns)
            && c.spec
                .connection
                .secret_refs()
                .iter()
                .any(|(_, n)| *n == name)
    });
    namespaced
        || stores.cluster.state().into_iter().any(|c| {
            c.spec
                .connection
                .secret_refs()
                .iter()
                .any(|(n_ns, n)| *n_ns == Some(ns) && *n == name)
        })
}

/// A Secret's data as bytes (`stringData` is folded in by the API server).
pub fn secret_bytes(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// Makes the OKMS read the plan asks for and records its answer.
pub async fn okms(
    client: &OkmsClient,
    inputs: &Inputs<'_>,
    read: &Read,
    facts: &mut Facts,
) -> Result<()> {
    let path = inputs.obj.spec.path.as_str();
    let found = |s| Answer::Remote(Remote::Found(Box::new(s)));
    let answer = match read {
        Read::Remote { version } => client.get_secret(path, *version, false).await.map(found),
        Read::DomainConfig | Read::DomainConfigAgain => {
            client.get_secret_config().await.map(Answer::Config)
        }
        Read::Clock => Ok(Answer::Clock(client.server_now().unwrap_or_else(Utc::now))),
        Read::CurrentVersion { version } => client
            .get_version(path, *version, true)
            .await
            .map(Answer::Version),
        Read::Reread => client.get_secret(path, None, false).await.map(found),
        Read::Versions => client.list_all_versions(path).await.map(Answer::Versions),
        Read::VersionData { version } => client
            .get_secret(path, Some(*version), true)
            .await
            .map(found),
    };
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => Answer::Remote(plan::read_failed(read, e)?),
    };
    facts.read(read, answer);
    Ok(())
}
