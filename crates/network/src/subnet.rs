//! IPv4 subnets (CIDR blocks) of bridge networks.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Why a subnet string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubnetError {
    /// The text is not `A.B.C.D/N`.
    #[error("subnet {text:?}: expected an IPv4 CIDR such as 10.90.1.0/24")]
    Syntax { text: String },
    /// The prefix length leaves no room for a gateway and a container, or is
    /// so short that the network would swallow large parts of the address space.
    #[error("subnet {text:?}: prefix length /{prefix} is outside /8../30")]
    Prefix { text: String, prefix: u8 },
    /// Host bits are set, e.g. 10.90.1.7/24.
    #[error("subnet {text:?}: host bits are set (did you mean {suggestion}?)")]
    HostBits { text: String, suggestion: Ipv4Net },
}

/// An IPv4 network: its network address and prefix length. The host bits of
/// `addr` are always zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    /// The shortest and longest prefixes a bridge network may have.
    pub const MIN_PREFIX: u8 = 8;
    pub const MAX_PREFIX: u8 = 30;

    /// A subnet from its network address and prefix length.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, SubnetError> {
        let text = format!("{addr}/{prefix}");
        if !(Self::MIN_PREFIX..=Self::MAX_PREFIX).contains(&prefix) {
            return Err(SubnetError::Prefix { text, prefix });
        }
        let net = Ipv4Net {
            addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        };
        if net.addr != addr {
            return Err(SubnetError::HostBits {
                text,
                suggestion: net,
            });
        }
        Ok(net)
    }

    /// A subnet of any prefix length (host bits cleared), for routes and
    /// constants; user input goes through [`Ipv4Net::new`].
    pub(crate) fn raw(addr: Ipv4Addr, prefix: u8) -> Self {
        let prefix = prefix.min(32);
        Ipv4Net {
            addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        }
    }

    /// The network address (all host bits zero).
    pub fn network(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The broadcast address (all host bits one).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !mask(self.prefix))
    }

    /// Whether `ip` lies inside this subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }

    /// Whether `ip` can be given to a host: inside, and neither the network
    /// nor the broadcast address.
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && ip != self.addr && ip != self.broadcast()
    }

    /// Whether the two subnets share any address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        let shorter = self.prefix.min(other.prefix);
        u32::from(self.addr) & mask(shorter) == u32::from(other.addr) & mask(shorter)
    }

    /// The `n`th address of the subnet (0 is the network address), if it is a
    /// host address.
    pub fn host(&self, n: u32) -> Option<Ipv4Addr> {
        let ip = Ipv4Addr::from(u32::from(self.addr).checked_add(n)?);
        self.is_host(ip).then_some(ip)
    }
}

/// The netmask of a prefix length as a host-order integer.
fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = SubnetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || SubnetError::Syntax {
            text: text.to_string(),
        };
        let (addr, prefix) = text.split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        let prefix: u8 = prefix.parse().map_err(|_| syntax())?;
        if prefix > 32 {
            return Err(syntax());
        }
        Ipv4Net::new(addr, prefix)
    }
}

impl serde::Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("test fixture")
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(net("10.90.3.0/24").to_string(), "10.90.3.0/24");
        assert_eq!(
            net("10.90.3.0/24").broadcast(),
            Ipv4Addr::new(10, 90, 3, 255)
        );
        assert_eq!(
            net("10.90.3.0/24").host(1),
            Some(Ipv4Addr::new(10, 90, 3, 1))
        );
        assert_eq!(net("10.90.3.0/24").host(255), None);
        assert_eq!(net("10.90.3.0/24").host(0), None);
    }

    #[test]
    fn refuses_bad_text() {
        for bad in [
            "10.90.3.0",
            "10.90.3.0/",
            "10.90.3/24",
            "10.90.3.0/33",
            "x/24",
            "10.90.3.0/+4",
        ] {
            assert!(
                matches!(bad.parse::<Ipv4Net>(), Err(SubnetError::Syntax { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            "10.0.0.0/31".parse::<Ipv4Net>(),
            Err(SubnetError::Prefix { prefix: 31, .. })
        ));
        assert!(matches!(
            "10.90.3.7/24".parse::<Ipv4Net>(),
            Err(SubnetError::HostBits { suggestion, .. }) if suggestion == net("10.90.3.0/24")
        ));
    }

    #[test]
    fn overlap() {
        assert!(net("10.90.0.0/16").overlaps(&net("10.90.7.0/24")));
        assert!(net("10.90.7.0/24").overlaps(&net("10.90.0.0/16")));
        assert!(!net("10.90.7.0/24").overlaps(&net("10.90.8.0/24")));
        assert!(net("10.90.7.0/24").overlaps(&net("10.90.7.0/24")));
        assert!(net("10.90.7.0/24").contains(Ipv4Addr::new(10, 90, 7, 9)));
        assert!(!net("10.90.7.0/24").is_host(Ipv4Addr::new(10, 90, 7, 255)));
    }
}
