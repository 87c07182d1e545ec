//! `flowgate sign-webhook`: a ready-to-paste signed `curl` for a `who = "webhook"`
//! trigger, signed with the trigger's current secret from its vault as its sender would.
//! The secret itself is never printed.

use std::path::PathBuf;
use std::process::ExitCode;

/// `flowgate sign-webhook` options.
#[derive(Debug, clap::Args)]
pub struct SignWebhookArgs {
    /// The policy naming the trigger and the vault of its secret.
    #[arg(long, short, default_value = "config/demo.toml")]
    pub config: PathBuf,
    /// The trigger's scheme: standard, github, stripe, slack or shopify.
    #[arg(long, default_value = "standard")]
    pub scheme: String,
    /// The body to sign and send.
    #[arg(long, default_value = r#"{"type":"demo.event","hello":"flowgate"}"#)]
    pub body: String,
    /// The CA bundle curl should trust.
    #[arg(long, default_value = "certs/dev-ca.crt")]
    pub cacert: PathBuf,
    /// The trigger's URL, for example <https://127.0.0.1:8443/demo/webhook>.
    pub url: String,
}

/// Prints the signed `curl` for `args.url` under `policy`, stamped `now` (Unix seconds).
pub(super) async fn sign_webhook(args: &SignWebhookArgs, policy: &crate::policy::Policy, now: u64) -> ExitCode {
    match signed_curl(args, policy, now).await {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("flowgate sign-webhook: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn signed_curl(args: &SignWebhookArgs, policy: &crate::policy::Policy, now: u64) -> Result<String, String> {
    let url = url::Url::parse(&args.url).map_err(|e| format!("{}: {e}", args.url))?;
    let path = crate::policy::normalize_path(url.path()).map_err(|e| format!("{}: {e}", url.path()))?;
    let found = policy
        .routes
        .find(url.host_str(), &path, &http::Method::POST)
        .map_err(|_| format!("no trigger answers POST {}", url.path()))?;
    let trigger = &found.trigger;
    let rule =
        trigger.webhook.as_ref().ok_or_else(|| format!("trigger {:?} is not who = \"webhook\"", trigger.name))?;
    if rule.scheme.name() != args.scheme {
        return Err(format!("trigger {:?} uses scheme {}, not {}", trigger.name, rule.scheme.name(), args.scheme));
    }
    let reference = rule.secrets.first().ok_or("the trigger has no signing secret")?;
    let store = crate::secrets::SecretStore::new();
    let secret = store.lookup(reference, &policy.vaults).await.map_err(|e| e.to_string())?;
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let headers = crate::webhook::sign::sign(&rule.scheme, secret.expose_secret(), args.body.as_bytes(), now, &id)
        .map_err(|e| e.to_string())?;
    let quote = |text: &str| format!("'{}'", text.replace('\'', r"'\''"));
    let mut line = format!("curl --cacert {} -X POST {}", args.cacert.display(), quote(url.as_str()));
    for (name, value) in headers {
        line.push_str(&format!(" -H {}", quote(&format!("{name}: {value}"))));
    }
    line.push_str(&format!(" -H 'content-type: application/json' --data-raw {}", quote(&args.body)));
    Ok(line)
}
