//! `seesay serve`: the server on the configured (or given) addresses until SIGINT or SIGTERM.

use anyhow::Result;
use clap::Args;

use seesay::config::Config;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// HTTP address (default: server.listen, 127.0.0.1:8000).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Wyoming address (default: server.wyoming_listen, 127.0.0.1:10300); "off" turns it off.
    #[arg(long, value_name = "ADDR")]
    pub wyoming: Option<String>,
}

pub fn serve(mut cfg: Config, a: ServeArgs) -> Result<()> {
    if let Some(l) = a.listen {
        cfg.server.listen = l;
    }
    if let Some(w) = a.wyoming {
        cfg.server.wyoming_listen = if w == "off" { String::new() } else { w };
    }
    seesay::server::serve(cfg, |at| {
        eprintln!(
            "seesay serving http://{} (open it in a browser to talk; the API is under /v1)",
            at.http
        );
        if let Some(w) = at.wyoming {
            eprintln!("seesay serving Wyoming on tcp://{w}");
        }
    })?;
    Ok(())
}
