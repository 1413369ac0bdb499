//! Zeroconf (mDNS / DNS-SD): the Wyoming port announced as `_wyoming._tcp.local.`, as Home
//! Assistant's Wyoming integration looks for it, so that seesay is discovered by itself
//! (`server.zeroconf`, off by default). Withdrawn (a goodbye packet) when the server stops.

use std::net::SocketAddr;

use mdns_sd::{ServiceDaemon, ServiceInfo};

/// The DNS-SD service type Home Assistant browses for.
pub const SERVICE: &str = "_wyoming._tcp.local.";

/// A service being announced; withdrawn when dropped.
pub struct Announcement {
    daemon: ServiceDaemon,
    fullname: String,
}

/// Wyoming's usual port: a server on it is announced without a port in its name.
const USUAL_PORT: u16 = 10300;

/// Announces Wyoming at `addr`'s port as `seesay-HOSTNAME` (`seesay-HOSTNAME-PORT` off the
/// usual port, so that two servers on one machine have names of their own), on every
/// interface's addresses.
pub fn announce(addr: SocketAddr) -> Result<Announcement, mdns_sd::Error> {
    let host = hostname();
    let instance = match addr.port() {
        USUAL_PORT => format!("seesay-{host}"),
        port => format!("seesay-{host}-{port}"),
    };
    let info = ServiceInfo::new(
        SERVICE,
        &instance,
        &format!("{host}.local."),
        "",
        addr.port(),
        &[("name", "seesay"), ("version", env!("CARGO_PKG_VERSION"))][..],
    )?
    .enable_addr_auto();
    let fullname = info.get_fullname().to_string();
    let daemon = ServiceDaemon::new()?;
    daemon.register(info)?;
    if addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "server.zeroconf: Wyoming listens on the loopback address only; Home Assistant on another machine finds it but cannot connect (set server.wyoming_listen to 0.0.0.0:{})",
            addr.port()
        );
    }
    tracing::info!(service = %fullname, port = addr.port(), "Wyoming announced over zeroconf");
    Ok(Announcement { daemon, fullname })
}

impl Drop for Announcement {
    fn drop(&mut self) {
        // Goodbye packets, so that browsers forget seesay now rather than when the record expires.
        if let Ok(done) = self.daemon.unregister(&self.fullname) {
            let _ = done.recv_timeout(std::time::Duration::from_secs(1));
        }
        let _ = self.daemon.shutdown();
    }
}

/// This machine's host name, as a DNS label (letters, digits and hyphens).
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let label: String = raw
        .trim()
        .split('.')
        .next()
        .unwrap_or("")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    match label.trim_matches('-') {
        "" => "seesay".into(),
        l => l.to_string(),
    }
}
