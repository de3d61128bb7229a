//! The RLS part of `drip status`: the loaded rules and their policies.

use std::io::Write;

use anyhow::{Context, Result};

use super::http::RlsView;

/// Fetches `GET /v1/rls` from the server at `url`.
pub async fn fetch(url: &str) -> Result<RlsView> {
    let endpoint = format!("{}/v1/rls", url.trim_end_matches('/'));
    reqwest::get(&endpoint)
        .await
        .with_context(|| format!("could not reach {endpoint}"))?
        .error_for_status()?
        .json()
        .await
        .with_context(|| format!("{endpoint} did not answer the RLS rules"))
}

/// Writes the rules as a table: domain, key, limit, window kind, flags.
pub fn render(v: &RlsView, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "rls: {} rules from {} files{}",
        v.rules.len(),
        v.files.len(),
        if v.shadow_mode {
            ", global shadow mode"
        } else {
            ""
        }
    )?;
    let w = |f: fn(&super::http::RuleView) -> usize, title: &str| {
        v.rules.iter().map(f).max().unwrap_or(0).max(title.len())
    };
    let (dw, kw) = (w(|r| r.domain.len(), "domain"), w(|r| r.key.len(), "key"));
    writeln!(
        out,
        "{:<dw$}  {:<kw$}  {:>16}  {:<11}  flags",
        "domain", "key", "limit", "window"
    )?;
    for r in &v.rules {
        let limit = match (r.requests_per_unit, &r.unit) {
            (Some(n), Some(u)) => format!("{n}/{u}"),
            _ => "unlimited".to_owned(),
        };
        let mut flags = Vec::new();
        if r.shadow_mode {
            flags.push("shadow".to_owned());
        }
        if let Some(name) = &r.name {
            flags.push(format!("name={name}"));
        }
        if !r.replaces.is_empty() {
            flags.push(format!("replaces={}", r.replaces.join(",")));
        }
        writeln!(
            out,
            "{:<dw$}  {:<kw$}  {:>16}  {:<11}  {}",
            r.domain,
            r.key,
            limit,
            r.window,
            flags.join(" ")
        )?;
    }
    Ok(())
}
