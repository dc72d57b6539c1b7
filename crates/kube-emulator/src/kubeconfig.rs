//! The kubeconfig written for kubectl and kube-rs.

/// A kubeconfig whose cluster, user and context are all named `kube-emulator`.
pub fn render(url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: kube-emulator
  cluster:
    server: {url}
users:
- name: kube-emulator
  user: {{}}
contexts:
- name: kube-emulator
  context:
    cluster: kube-emulator
    user: kube-emulator
    namespace: default
current-context: kube-emulator
preferences: {{}}
"
    )
}

/// Writes it atomically (temporary file then rename).
pub fn write(path: &std::path::Path, url: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, render(url))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn kubeconfig_parses_as_yaml_with_the_url() {
        let text = super::render("http://127.0.0.1:1234");
        let v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(
            v["clusters"][0]["cluster"]["server"].as_str(),
            Some("http://127.0.0.1:1234")
        );
        assert_eq!(v["current-context"].as_str(), Some("kube-emulator"));
    }
}
