//! IPv4 ranges such as `10.42.0.0/16`: the cluster's pod range, cut into a
//! /24 per node, and the Service range.

use std::net::Ipv4Addr;

/// Node ranges are this long, as upstream's default for IPv4.
const NODE_PREFIX: u8 = 24;

/// An IPv4 range such as `10.42.0.0/16`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cidr {
    pub base: u32,
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR like 10.42.0.0/16"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{prefix:?} is not a prefix length"))?;
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Ok(Cidr {
            base: u32::from(ip) & mask,
            prefix,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

impl Cidr {
    /// How many addresses the range holds.
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }

    /// The `i`th address of the range, if there is one.
    pub fn nth(&self, i: u64) -> Option<Ipv4Addr> {
        (i < self.size()).then(|| Ipv4Addr::from(self.base + i as u32))
    }

    /// Where `ip` sits in the range, if inside it.
    pub fn offset(&self, ip: Ipv4Addr) -> Option<u64> {
        let i = u64::from(u32::from(ip).wrapping_sub(self.base));
        (u32::from(ip) >= self.base && i < self.size()).then_some(i)
    }

    /// The `i`th /24 inside this range, if there is one.
    pub fn subnet(&self, i: u32) -> Option<Cidr> {
        let count = 1u64 << (NODE_PREFIX.checked_sub(self.prefix)?);
        (u64::from(i) < count).then(|| Cidr {
            base: self.base + (i << (32 - NODE_PREFIX)),
            prefix: NODE_PREFIX,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let c: Cidr = "10.43.7.9/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.43.0.0/16");
        assert_eq!(c.size(), 65536);
        assert_eq!(c.nth(1), Some(Ipv4Addr::new(10, 43, 0, 1)));
        assert_eq!(c.nth(65536), None);
        assert_eq!(c.offset(Ipv4Addr::new(10, 43, 1, 0)), Some(256));
        assert_eq!(c.offset(Ipv4Addr::new(10, 44, 0, 0)), None);
        assert_eq!(c.offset(Ipv4Addr::new(10, 42, 255, 255)), None);
        assert_eq!(c.subnet(2).unwrap().to_string(), "10.43.2.0/24");
        assert!("10.0.0.0".parse::<Cidr>().is_err());
    }
}
