//! A minimal real `kube::runtime::Controller` against the emulator: a Widget CRD whose
//! reconcile applies an owned ConfigMap; deleting the ConfigMap is repaired; deleting the Widget
//! runs the finalizer's cleanup and garbage-collects the ConfigMap.

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::watcher;
use kube::{CustomResource, Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(CustomResource, Clone, Debug, Serialize, Deserialize)]
#[kube(
    group = "example.com",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus",
    schema = "disabled"
)]
pub struct WidgetSpec {
    size: i64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WidgetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phase: Option<String>,
}

struct Ctx {
    client: kube::Client,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<kube::Error>>),
}

const FINALIZER: &str = "example.com/cleanup";

async fn reconcile(w: Arc<Widget>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = w.namespace().unwrap_or_default();
    let widgets: Api<Widget> = Api::namespaced(ctx.client.clone(), &ns);
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&widgets, FINALIZER, w, |ev| async {
        match ev {
            Event::Apply(w) => {
                let owner = w.controller_owner_ref(&()).expect("a stored object has a uid");
                let cm = json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": format!("{}-cfg", w.name_any()), "ownerReferences": [owner]},
                    "data": {"size": w.spec.size.to_string()},
                });
                cms.patch(
                    &format!("{}-cfg", w.name_any()),
                    &PatchParams::apply("widget-controller").force(),
                    &Patch::Apply(cm),
                )
                .await?;
                Ok(Action::requeue(Duration::from_secs(300)))
            }
            Event::Cleanup(w) => {
                let evidence = json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": format!("{}-cleaned", w.name_any())},
                });
                cms.patch(
                    &format!("{}-cleaned", w.name_any()),
                    &PatchParams::apply("widget-controller").force(),
                    &Patch::Apply(evidence),
                )
                .await?;
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn error_policy(_w: Arc<Widget>, _e: &Error, _ctx: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(200))
}

async fn get_cm(cms: &Api<ConfigMap>, name: &str) -> Option<ConfigMap> {
    cms.get_opt(name).await.ok().flatten()
}

#[tokio::test]
async fn controller_reconciles_repairs_and_cleans_up() {
    let mut server = common::backend().await;
    let client = server.client();
    common::install_widget_crd(&client).await;
    // the ConfigMap's owner is a Widget: the real garbage collector must know the kind
    server.crds_installed().await;
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let ctx = Arc::new(Ctx {
        client: client.clone(),
    });
    let controller = tokio::spawn(
        Controller::new(
            Api::<Widget>::all(client.clone()),
            watcher::Config::default(),
        )
        .owns(
            Api::<ConfigMap>::all(client.clone()),
            watcher::Config::default(),
        )
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move { eprintln!("reconciled: {r:?}") }),
    );

    widgets
        .create(
            &PostParams::default(),
            &Widget::new("w1", WidgetSpec { size: 3 }),
        )
        .await
        .unwrap();
    let cm = common::eventually("the owned ConfigMap is created", 20, || async {
        get_cm(&cms, "w1-cfg").await
    })
    .await;
    assert_eq!(cm.data.unwrap()["size"], "3");
    let owner = &cm.metadata.owner_references.unwrap()[0];
    assert_eq!(owner.kind, "Widget");
    let first_uid = cm.metadata.uid.unwrap();
    let w = widgets.get("w1").await.unwrap();
    assert_eq!(w.finalizers(), [FINALIZER.to_string()]);

    cms.delete("w1-cfg", &DeleteParams::default())
        .await
        .unwrap();
    common::eventually("the deleted ConfigMap is repaired", 20, || async {
        get_cm(&cms, "w1-cfg")
            .await
            .filter(|c| c.metadata.uid.as_deref() != Some(first_uid.as_str()))
    })
    .await;

    widgets
        .delete("w1", &DeleteParams::default())
        .await
        .unwrap();
    common::eventually(
        "cleanup ran, the Widget and its ConfigMap are gone",
        20,
        || async {
            let cleaned = get_cm(&cms, "w1-cleaned").await.is_some();
            let widget_gone = widgets.get_opt("w1").await.ok().flatten().is_none();
            let cm_gone = get_cm(&cms, "w1-cfg").await.is_none();
            (cleaned && widget_gone && cm_gone).then_some(())
        },
    )
    .await;
    controller.abort();
    server.shutdown().await;
}
