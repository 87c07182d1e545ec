//! `handle` driven without sockets: an in-memory request against a compiled policy.

use super::*;
use crate::config::SourceFile;
use crate::gateway::Gateway;
use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::Empty;
use std::sync::Arc;

/// A gateway running `triggers` (with a signed-URL key, so `who = "anyone"` compiles).
fn gateway(dir: &std::path::Path, triggers: &str) -> Arc<Gateway> {
    std::fs::write(dir.join("url.key"), "k".repeat(48)).unwrap();
    let text = format!(
        "[server]\nplain_http_listen = \"127.0.0.1:0\"\n\n[signed_urls]\nkeys = {{ k1 = \"file:url.key\" }}\nprimary = \"k1\"\n\n{triggers}"
    );
    let source = SourceFile { name: "p.toml".into(), base_dir: dir.to_path_buf(), text };
    let (raw, source) = crate::policy::load_str(source).unwrap();
    let policy = crate::policy::compile(&raw, &source).unwrap();
    Gateway::new(policy, None).unwrap()
}

/// One `who = "anyone"` trigger at `/t` whose upstream is never reached.
const ANYONE_AT_T: &str =
    "[[trigger]]\nname = \"t\"\npath = \"/t\"\nupstream = \"http://127.0.0.1:1\"\nwho = \"anyone\"\n";

async fn call(gateway: &Arc<Gateway>, path: &str) -> Response<CallBody> {
    let connection = Arc::new(Connection::new("127.0.0.1:40000".parse().unwrap(), true, 1));
    let request = Request::post(path).header(header::HOST, "gw.example").body(Empty::<Bytes>::new()).unwrap();
    let Ok(response) = handle(gateway.clone(), connection, request).await;
    response
}

#[tokio::test]
async fn an_unknown_path_is_a_404_with_a_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path(), ANYONE_AT_T);
    let response = call(&gateway, "/nope").await;
    assert_eq!(response.status(), 404);
    // Never indexed on h2: each id is new (see `handle`).
    assert!(response.headers()[REQUEST_ID].is_sensitive());
}

#[tokio::test]
async fn a_trigger_called_without_credentials_is_a_401() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(dir.path(), ANYONE_AT_T);
    let response = call(&gateway, "/t").await;
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key(REQUEST_ID));
}
