//! `seesay serve`: the server on the configured (or given) addresses until SIGINT or SIGTERM.

use anyhow::{Context, Result};
use clap::Args;

use seesay::config::Config;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// HTTP address (default: server.listen, 127.0.0.1:8000).
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["host", "port"])]
    pub listen: Option<String>,
    /// HTTP host to listen on (with the port of server.listen unless --port is given), e.g.
    /// 0.0.0.0 for every interface.
    #[arg(long)]
    pub host: Option<String>,
    /// HTTP port (with the host of server.listen unless --host is given).
    #[arg(long)]
    pub port: Option<u16>,
    /// Wyoming address (default: server.wyoming_listen, 127.0.0.1:10300); "off" turns it off.
    #[arg(long, value_name = "ADDR")]
    pub wyoming: Option<String>,
    /// Announce Wyoming over zeroconf (mDNS `_wyoming._tcp`) so that Home Assistant discovers
    /// it (default: server.zeroconf, off).
    #[arg(long)]
    pub zeroconf: bool,
}

pub fn serve(mut cfg: Config, a: ServeArgs) -> Result<()> {
    if let Some(l) = a.listen {
        cfg.server.listen = l;
    }
    if a.host.is_some() || a.port.is_some() {
        cfg.server.listen = host_port(&cfg.server.listen, a.host, a.port)?;
    }
    if let Some(w) = a.wyoming {
        cfg.server.wyoming_listen = if w == "off" { String::new() } else { w };
    }
    cfg.server.zeroconf |= a.zeroconf;
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

/// `listen` with its host and/or port replaced (an IPv6 host is bracketed).
fn host_port(listen: &str, host: Option<String>, port: Option<u16>) -> Result<String> {
    let (old_host, old_port) = listen
        .rsplit_once(':')
        .with_context(|| format!("server.listen {listen:?} is not HOST:PORT"))?;
    let host = host.unwrap_or_else(|| old_host.trim_matches(['[', ']']).to_string());
    let port = match port {
        Some(p) => p.to_string(),
        None => old_port.to_string(),
    };
    Ok(match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    })
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn host_and_port_replace_their_half_of_the_address() {
        let l = "127.0.0.1:8000";
        assert_eq!(
            host_port(l, Some("0.0.0.0".into()), None).unwrap(),
            "0.0.0.0:8000"
        );
        assert_eq!(host_port(l, None, Some(9000)).unwrap(), "127.0.0.1:9000");
        assert_eq!(
            host_port(l, Some("::1".into()), Some(1)).unwrap(),
            "[::1]:1"
        );
        assert_eq!(host_port("[::1]:80", None, Some(81)).unwrap(), "[::1]:81");
        assert!(host_port("nonsense", None, Some(1)).is_err());
    }
}
