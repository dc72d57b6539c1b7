//! The user's Kubernetes access, as kubectl builds it: `--kubeconfig` (else `$KUBECONFIG`,
//! else `~/.kube/config`), `--context` (else the current context), and the namespace from `-n`,
//! else the context's, else `default`.

use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use okms_operator::crd::OkmsSecret;

use crate::cli::Global;
use crate::error::{Error, Result, kube_error};

/// A Kubernetes client with the user's credentials, and the namespace commands act in.
pub struct Cluster {
    pub client: kube::Client,
    pub namespace: String,
}

impl Cluster {
    pub async fn connect(global: &Global) -> Result<Cluster> {
        let options = KubeConfigOptions {
            context: global.context.clone(),
            ..Default::default()
        };
        let config = match &global.kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path).map_err(|e| {
                    Error::new(format!("cannot read kubeconfig {}: {e}", path.display()))
                })?;
                kube::Config::from_custom_kubeconfig(file, &options).await
            }
            None => kube::Config::from_kubeconfig(&options).await,
        }
        .map_err(|e| Error::new(format!("cannot load the kubeconfig: {e}")))?;
        let namespace = global
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config)
            .map_err(|e| Error::new(format!("cannot build a Kubernetes client: {e}")))?;
        Ok(Cluster { client, namespace })
    }

    /// The OkmsSecret `name` of the namespace.
    pub async fn okms_secret(&self, name: &str) -> Result<OkmsSecret> {
        Api::<OkmsSecret>::namespaced(self.client.clone(), &self.namespace)
            .get(name)
            .await
            .map_err(|e| kube_error(&self.display(name), "get", &e))
    }

    /// `OkmsSecret ns/name`, for messages.
    pub fn display(&self, name: &str) -> String {
        format!("OkmsSecret {}/{name}", self.namespace)
    }
}
