//! Kubernetes' CEL libraries over values CEL already has: quantities
//! (`quantity("1Gi").isGreaterThan(quantity("500Mi"))`), URLs
//! (`url(self.endpoint).getScheme() == "https"`) and IP addresses and
//! CIDRs (`cidr("10.0.0.0/8").containsIP(self.ip)`). Each is carried as
//! its validated string, so it compares, prints and converts as upstream's
//! types do in rules; its functions parse it again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use cel::extractors::This;
use cel::{Context, ExecutionError, FunctionContext, Value};

type Result<T> = std::result::Result<T, ExecutionError>;

fn fail(function: &str, why: impl ToString) -> ExecutionError {
    ExecutionError::function_error(function, why.to_string())
}

fn text(s: impl Into<String>) -> Value {
    Value::String(Arc::new(s.into()))
}

/// Registers the three libraries.
pub fn register(c: &mut Context<'static, 'static>) -> std::result::Result<(), String> {
    let err = |e: cel::DeclarationError| e.to_string();
    // Quantities.
    c.add_function("quantity", |s: Arc<String>| -> Result<Value> {
        nanos(&s).ok_or_else(|| fail("quantity", format!("invalid quantity {s:?}")))?;
        Ok(text(s.as_str()))
    })
    .map_err(err)?;
    c.add_function("isQuantity", |s: Arc<String>| nanos(&s).is_some())
        .map_err(err)?;
    c.add_function(
        "isLessThan",
        |This(a): This<Arc<String>>, b: Arc<String>| {
            Ok::<_, ExecutionError>(quantity(&a)? < quantity(&b)?)
        },
    )
    .map_err(err)?;
    c.add_function(
        "isGreaterThan",
        |This(a): This<Arc<String>>, b: Arc<String>| {
            Ok::<_, ExecutionError>(quantity(&a)? > quantity(&b)?)
        },
    )
    .map_err(err)?;
    c.add_function("compareTo", |This(a): This<Arc<String>>, b: Arc<String>| {
        Ok::<_, ExecutionError>(quantity(&a)?.cmp(&quantity(&b)?) as i64)
    })
    .map_err(err)?;
    c.add_function("sign", |This(a): This<Arc<String>>| {
        Ok::<_, ExecutionError>(quantity(&a)?.signum() as i64)
    })
    .map_err(err)?;
    c.add_function("isInteger", |This(a): This<Arc<String>>| {
        let n = quantity(&a)?;
        Ok::<_, ExecutionError>(n % NANO == 0 && i64::try_from(n / NANO).is_ok())
    })
    .map_err(err)?;
    c.add_function("asInteger", |This(a): This<Arc<String>>| -> Result<i64> {
        let n = quantity(&a)?;
        if n % NANO != 0 {
            return Err(fail("asInteger", format!("{a} is not an integer")));
        }
        i64::try_from(n / NANO).map_err(|_| fail("asInteger", format!("{a} overflows an int")))
    })
    .map_err(err)?;
    c.add_function("asApproximateFloat", |This(a): This<Arc<String>>| {
        Ok::<_, ExecutionError>(quantity(&a)? as f64 / NANO as f64)
    })
    .map_err(err)?;
    c.add_function("add", |This(a): This<Arc<String>>, b: Value| {
        Ok::<_, ExecutionError>(text(format_nanos(quantity(&a)? + operand("add", &b)?)))
    })
    .map_err(err)?;
    c.add_function("sub", |This(a): This<Arc<String>>, b: Value| {
        Ok::<_, ExecutionError>(text(format_nanos(quantity(&a)? - operand("sub", &b)?)))
    })
    .map_err(err)?;
    // URLs.
    c.add_function("url", |s: Arc<String>| -> Result<Value> {
        parse_url(&s)?;
        Ok(text(s.as_str()))
    })
    .map_err(err)?;
    c.add_function("isURL", |s: Arc<String>| parse_url(&s).is_ok())
        .map_err(err)?;
    c.add_function("getScheme", |This(u): This<Arc<String>>| {
        Ok::<_, ExecutionError>(text(parse_url(&u)?.scheme()))
    })
    .map_err(err)?;
    c.add_function("getHost", |This(u): This<Arc<String>>| {
        let u = parse_url(&u)?;
        let host = match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => String::new(),
        };
        Ok::<_, ExecutionError>(text(host))
    })
    .map_err(err)?;
    c.add_function("getHostname", |This(u): This<Arc<String>>| {
        let u = parse_url(&u)?;
        let host = u.host_str().unwrap_or_default();
        Ok::<_, ExecutionError>(text(host.trim_start_matches('[').trim_end_matches(']')))
    })
    .map_err(err)?;
    c.add_function("getPort", |This(u): This<Arc<String>>| {
        let port = parse_url(&u)?.port().map(|p| p.to_string());
        Ok::<_, ExecutionError>(text(port.unwrap_or_default()))
    })
    .map_err(err)?;
    c.add_function("getEscapedPath", |This(u): This<Arc<String>>| {
        Ok::<_, ExecutionError>(text(parse_url(&u)?.path()))
    })
    .map_err(err)?;
    c.add_function("getQuery", |This(u): This<Arc<String>>| {
        let mut query: HashMap<String, Vec<Value>> = HashMap::new();
        for (k, v) in parse_url(&u)?.query_pairs() {
            query.entry(k.into_owned()).or_default().push(text(v));
        }
        let map: HashMap<cel::objects::Key, Value> = query
            .into_iter()
            .map(|(k, v)| (k.into(), Value::List(Arc::new(v))))
            .collect();
        Ok::<_, ExecutionError>(Value::Map(map.into()))
    })
    .map_err(err)?;
    // IP addresses and CIDRs. `ip` is both `ip("10.0.0.1")` and a CIDR's
    // `cidr("10.0.0.0/8").ip()`.
    c.add_function(
        "ip",
        |ftx: &FunctionContext, This(s): This<Arc<String>>| -> Result<Value> {
            if ftx.this.is_some() {
                return Ok(text(parse_cidr(&s)?.0.to_string()));
            }
            parse_ip(&s)?;
            Ok(text(s.as_str()))
        },
    )
    .map_err(err)?;
    c.add_function("isIP", |s: Arc<String>| parse_ip(&s).is_ok())
        .map_err(err)?;
    c.add_function("family", |This(s): This<Arc<String>>| {
        Ok::<_, ExecutionError>(if parse_ip(&s)?.is_ipv4() { 4i64 } else { 6 })
    })
    .map_err(err)?;
    c.add_function("isUnspecified", |This(s): This<Arc<String>>| {
        Ok::<_, ExecutionError>(parse_ip(&s)?.is_unspecified())
    })
    .map_err(err)?;
    c.add_function("isLoopback", |This(s): This<Arc<String>>| {
        Ok::<_, ExecutionError>(parse_ip(&s)?.is_loopback())
    })
    .map_err(err)?;
    c.add_function("isLinkLocalMulticast", |This(s): This<Arc<String>>| {
        Ok::<_, ExecutionError>(match parse_ip(&s)? {
            IpAddr::V4(a) => a.octets()[..3] == [224, 0, 0],
            IpAddr::V6(a) => a.segments()[0] & 0xff0f == 0xff02,
        })
    })
    .map_err(err)?;
    c.add_function("isLinkLocalUnicast", |This(s): This<Arc<String>>| {
        Ok::<_, ExecutionError>(match parse_ip(&s)? {
            IpAddr::V4(a) => a.is_link_local(),
            IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
        })
    })
    .map_err(err)?;
    c.add_function("isGlobalUnicast", |This(s): This<Arc<String>>| {
        let ip = parse_ip(&s)?;
        let global = match ip {
            IpAddr::V4(a) => {
                !(a.is_unspecified()
                    || a.is_loopback()
                    || a.is_link_local()
                    || a.is_multicast()
                    || a.is_broadcast())
            }
            IpAddr::V6(a) => {
                !(a.is_unspecified()
                    || a.is_loopback()
                    || a.is_multicast()
                    || a.segments()[0] & 0xffc0 == 0xfe80)
            }
        };
        Ok::<_, ExecutionError>(global)
    })
    .map_err(err)?;
    c.add_function("cidr", |s: Arc<String>| -> Result<Value> {
        parse_cidr(&s)?;
        Ok(text(s.as_str()))
    })
    .map_err(err)?;
    c.add_function("isCIDR", |s: Arc<String>| parse_cidr(&s).is_ok())
        .map_err(err)?;
    c.add_function("prefixLength", |This(s): This<Arc<String>>| {
        Ok::<_, ExecutionError>(i64::from(parse_cidr(&s)?.1))
    })
    .map_err(err)?;
    c.add_function("masked", |This(s): This<Arc<String>>| {
        let (ip, len) = parse_cidr(&s)?;
        Ok::<_, ExecutionError>(text(format!("{}/{len}", mask(ip, len))))
    })
    .map_err(err)?;
    c.add_function(
        "containsIP",
        |This(s): This<Arc<String>>, other: Arc<String>| {
            let (net, len) = parse_cidr(&s)?;
            let ip = parse_ip(&other)?;
            Ok::<_, ExecutionError>(same_family(net, ip) && mask(ip, len) == mask(net, len))
        },
    )
    .map_err(err)?;
    c.add_function(
        "containsCIDR",
        |This(s): This<Arc<String>>, other: Arc<String>| {
            let (net, len) = parse_cidr(&s)?;
            let (inner, inner_len) = parse_cidr(&other)?;
            Ok::<_, ExecutionError>(
                same_family(net, inner) && inner_len >= len && mask(inner, len) == mask(net, len),
            )
        },
    )
    .map_err(err)?;
    Ok(())
}

const NANO: i128 = 1_000_000_000;

/// A quantity in billionths of a unit.
fn nanos(q: &str) -> Option<i128> {
    crate::quantity::parse_scaled(q, 9)
}

fn quantity(q: &str) -> Result<i128> {
    nanos(q).ok_or_else(|| fail("quantity", format!("invalid quantity {q:?}")))
}

/// The other side of `add` or `sub`: a quantity or an integer.
fn operand(function: &str, v: &Value) -> Result<i128> {
    match v {
        Value::String(s) => quantity(s),
        Value::Int(n) => Ok(i128::from(*n) * NANO),
        other => Err(fail(
            function,
            format!("cannot add {other:?} to a quantity"),
        )),
    }
}

/// Billionths of a unit as the shortest exact quantity.
fn format_nanos(n: i128) -> String {
    match n {
        n if n % NANO == 0 => (n / NANO).to_string(),
        n if n % 1_000_000 == 0 => format!("{}m", n / 1_000_000),
        n if n % 1_000 == 0 => format!("{}u", n / 1_000),
        n => format!("{n}n"),
    }
}

fn parse_url(s: &str) -> Result<url::Url> {
    url::Url::parse(s).map_err(|e| fail("url", format!("{s:?} is not a URL: {e}")))
}

/// An address as upstream's `ip()` takes it: no zone, no IPv4-mapped
/// IPv6 form.
fn parse_ip(s: &str) -> Result<IpAddr> {
    let ip: IpAddr = s
        .parse()
        .map_err(|_| fail("ip", format!("{s:?} is not an IP address")))?;
    if let IpAddr::V6(v6) = ip {
        if v6.to_ipv4_mapped().is_some() {
            return Err(fail(
                "ip",
                format!("{s:?}: IPv4-mapped IPv6 addresses are not allowed"),
            ));
        }
    }
    Ok(ip)
}

fn parse_cidr(s: &str) -> Result<(IpAddr, u8)> {
    let bad = || fail("cidr", format!("{s:?} is not a CIDR"));
    let (ip, len) = s.split_once('/').ok_or_else(bad)?;
    let ip = parse_ip(ip).map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad());
    }
    Ok((ip, len))
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// The address with all but its first `len` bits cleared.
fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a) & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(bits.into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a) & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(bits.into())
        }
    }
}

#[cfg(test)]
mod tests {
    fn eval(expr: &str) -> Result<cel::Value, String> {
        let program = super::super::cel::compile(expr)?;
        program
            .execute(&super::super::cel::context())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn rules_over_quantities_urls_and_addresses_hold() {
        for rule in [
            r#"quantity("1Gi").isGreaterThan(quantity("500Mi"))"#,
            r#"quantity("100m").isLessThan(quantity("1"))"#,
            r#"quantity("1k").compareTo(quantity("1000")) == 0"#,
            r#"quantity("1.5").add(quantity("500m")) == "2""#,
            r#"quantity("1").sub(2) == "-1" && quantity("-1").sign() == -1"#,
            r#"quantity("2Ki").asInteger() == 2048 && quantity("1.5").asApproximateFloat() == 1.5"#,
            r#"!quantity("1.5").isInteger() && isQuantity("5Gi") && !isQuantity("5Gb")"#,
            r#"url("https://example.com:8443/a%20b?x=1&x=2").getScheme() == "https""#,
            r#"url("https://example.com:8443/a%20b").getHost() == "example.com:8443""#,
            r#"url("https://[::1]:80/").getHostname() == "::1""#,
            r#"url("https://example.com:8443/a%20b").getPort() == "8443""#,
            r#"url("https://example.com/a%20b").getEscapedPath() == "/a%20b""#,
            r#"url("https://example.com/?x=1&x=2").getQuery()["x"] == ["1", "2"]"#,
            r#"isURL("https://example.com") && !isURL("not a url")"#,
            r#"ip("10.0.0.1").family() == 4 && ip("::1").family() == 6"#,
            r#"ip("127.0.0.1").isLoopback() && ip("0.0.0.0").isUnspecified()"#,
            r#"ip("169.254.1.1").isLinkLocalUnicast() && ip("224.0.0.1").isLinkLocalMulticast()"#,
            r#"ip("8.8.8.8").isGlobalUnicast() && !ip("127.0.0.1").isGlobalUnicast()"#,
            r#"!isIP("::ffff:1.2.3.4") && !isIP("1.2.3") && isIP("fe80::1")"#,
            r#"cidr("10.0.0.0/8").containsIP("10.1.2.3") && !cidr("10.0.0.0/8").containsIP("11.0.0.1")"#,
            r#"cidr("10.0.0.0/8").containsCIDR("10.1.0.0/16") && !cidr("10.1.0.0/16").containsCIDR("10.0.0.0/8")"#,
            r#"cidr("10.1.2.3/8").masked() == "10.0.0.0/8" && cidr("10.1.2.3/8").ip() == "10.1.2.3""#,
            r#"cidr("fd00::/64").prefixLength() == 64 && !isCIDR("10.0.0.0/33")"#,
        ] {
            assert_eq!(eval(rule), Ok(cel::Value::Bool(true)), "{rule}");
        }
    }

    #[test]
    fn invalid_values_are_errors_not_falsehoods() {
        for rule in [
            r#"quantity("5Gb").isInteger()"#,
            r#"url("no scheme").getHost() == """#,
            r#"ip("300.1.1.1").family() == 4"#,
            r#"quantity("1.5").asInteger() == 1"#,
        ] {
            assert!(eval(rule).is_err(), "{rule}");
        }
    }
}
