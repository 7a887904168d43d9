//! The country of an address, and the shopper country policy.
//!
//! Countries come from the file configured as `OMAMORI_GEOIP`, either a MaxMind-format database
//! (DB-IP Lite, GeoLite2) or a CSV range file, or, with nothing configured, from the registration
//! data built into the `iptocc` crate, so that the policy works on a fresh machine. The file is read
//! once at start-up; a missing or malformed file is an error naming the file (and the line, for CSV),
//! so that start-up stops rather than run with a half-read policy. Lookups never fail: an address nobody can place has no country, and
//! [`country_allowed`] applies `OMAMORI_UNKNOWN_COUNTRY` to it.
//!
//! A configured file is read as MaxMind when its name ends in `.mmdb` or when it is not UTF-8 text
//! (the MaxMind format is binary, and its metadata marker alone is never valid UTF-8); any other file
//! is read as CSV: `start_ip,end_ip,country` per line, inclusive bounds, IPv4 or IPv6, `#` comments
//! and blank lines allowed, fields optionally in double quotes. The country `ZZ` (which DB-IP uses for
//! reserved space) means "covered, but no country".

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::UnknownCountry;

/// Where countries come from: the configured `.mmdb` (MaxMind format, e.g. DB-IP Lite or GeoLite2; read
/// the `country.iso_code` field, falling back to `registered_country.iso_code`) or CSV range file
/// (`start_ip,end_ip,country` per line; `#` comments and blank lines allowed; IPv4 and IPv6; see the
/// module documentation for how the two are told apart), else built-in registration-country data (iptocc).
pub struct GeoIp {
    source: Source,
}

enum Source {
    Builtin,
    Mmdb { path: PathBuf, reader: maxminddb::Reader<Vec<u8>> },
    Csv { path: PathBuf, v4: RangeTable<u32>, v6: RangeTable<u128> },
}

impl fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Builtin => f.write_str("GeoIp(built-in registration data)"),
            Source::Mmdb { path, reader } => {
                write!(f, "GeoIp(MaxMind {} {})", reader.metadata().database_type, path.display())
            }
            Source::Csv { path, v4, v6 } => {
                write!(f, "GeoIp(CSV {}: {} IPv4 and {} IPv6 ranges)", path.display(), v4.len(), v6.len())
            }
        }
    }
}

impl GeoIp {
    /// Loads the configured file, or the built-in data when `path` is None. A missing or malformed file is
    /// an error whose message names the file and the line (for CSV).
    pub fn load(path: Option<&Path>) -> anyhow::Result<GeoIp> {
        let Some(path) = path else { return Ok(GeoIp { source: Source::Builtin }) };
        let bytes = std::fs::read(path).with_context(|| format!("cannot read geoip file {}", path.display()))?;
        let named_mmdb = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("mmdb"));
        let source = match std::str::from_utf8(&bytes) {
            Ok(text) if !named_mmdb => {
                let (v4, v6) = parse_csv(text).map_err(|e| anyhow::anyhow!("geoip file {}: {e}", path.display()))?;
                Source::Csv { path: path.to_path_buf(), v4, v6 }
            }
            _ => {
                let reader = maxminddb::Reader::from_source(bytes).map_err(|e| {
                    let what = if named_mmdb {
                        "not a valid MaxMind database"
                    } else {
                        "neither UTF-8 CSV nor a MaxMind database"
                    };
                    anyhow::anyhow!("geoip file {} is {what}: {e}", path.display())
                })?;
                Source::Mmdb { path: path.to_path_buf(), reader }
            }
        };
        let geoip = GeoIp { source };
        tracing::info!(geoip = ?geoip, "country data loaded");
        Ok(geoip)
    }

    /// Country data from the text of a CSV range file (`start_ip,end_ip,country` per line), as
    /// [`GeoIp::load`] reads one; the fuzz harness feeds it arbitrary text.
    pub fn from_csv_text(text: &str) -> Result<GeoIp, String> {
        let (v4, v6) = parse_csv(text)?;
        Ok(GeoIp { source: Source::Csv { path: PathBuf::from("<text>"), v4, v6 } })
    }

    /// The ISO 3166 alpha-2 country (upper case) of `ip`. The configured database is consulted first; an
    /// address it does not cover that is loopback, unspecified, private (RFC 1918, IPv6 unique local
    /// fc00::/7), link-local (169.254/16, fe80::/10) or shared (100.64.0.0/10, RFC 6598) has no country
    /// (None); with no configured file, public addresses come from the built-in data; with a configured
    /// file, an address it does not cover has no country.
    pub fn country(&self, ip: IpAddr) -> Option<String> {
        // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; every source is keyed by IPv4.
        let ip = ip.to_canonical();
        let code = match &self.source {
            Source::Builtin => {
                if is_non_public(ip) {
                    return None;
                }
                normalise_code(iptocc::country_code(ip)?.as_bytes())?
            }
            Source::Mmdb { path, reader } => mmdb_country(reader, ip).unwrap_or_else(|e| {
                tracing::warn!(%ip, file = %path.display(), error = %e, "geoip lookup failed");
                None
            })?,
            Source::Csv { v4, v6, .. } => match ip {
                IpAddr::V4(a) => v4.get(u32::from(a))?,
                IpAddr::V6(a) => v6.get(u128::from(a))?,
            },
        };
        // ZZ is the user-assigned "unknown" code: covered by the data, but placed nowhere.
        (&code != b"ZZ").then(|| String::from_utf8_lossy(&code).into_owned())
    }
}

/// Whether a shopper from `country` may use shopper routes: allowed if the country is in `allowed`
/// (upper-case codes); an address with no country is allowed only when `unknown` is `UnknownCountry::Allow`.
pub fn country_allowed(country: Option<&str>, allowed: &[String], unknown: UnknownCountry) -> bool {
    match country {
        Some(code) => allowed.iter().any(|a| a.eq_ignore_ascii_case(code)),
        None => unknown == UnknownCountry::Allow,
    }
}

/// Addresses that no registry places in a country.
pub fn is_non_public(ip: IpAddr) -> bool {
    // An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is the IPv4 address it carries.
    match ip.to_canonical() {
        IpAddr::V4(a) => {
            // 100.64.0.0/10, carrier-grade NAT (RFC 6598); `Ipv4Addr::is_shared` is not stable.
            let shared = u32::from(a) & 0xffc0_0000 == 0x6440_0000;
            a.is_loopback() || a.is_unspecified() || a.is_private() || a.is_link_local() || shared
        }
        IpAddr::V6(a) => a.is_loopback() || a.is_unspecified() || a.is_unique_local() || a.is_unicast_link_local(),
    }
}

/// Two ASCII letters, upper-cased; anything else is not a country code.
fn normalise_code(raw: &[u8]) -> Option<[u8; 2]> {
    match raw {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
        }
        _ => None,
    }
}

fn mmdb_country(reader: &maxminddb::Reader<Vec<u8>>, ip: IpAddr) -> Result<Option<[u8; 2]>, maxminddb::MaxMindDbError> {
    // An IPv4-only database holds no IPv6 space: not covered rather than an error.
    if ip.is_ipv6() && reader.metadata().ip_version == 4 {
        return Ok(None);
    }
    let found = reader.lookup(ip)?;
    if !found.has_data() {
        return Ok(None);
    }
    for field in ["country", "registered_country"] {
        let code: Option<String> = found.decode_path(&maxminddb::path![field, "iso_code"])?;
        if let Some(code) = code {
            return Ok(normalise_code(code.as_bytes()));
        }
    }
    Ok(None)
}

/// Inclusive address ranges sorted by start, none overlapping, kept as parallel arrays so that the
/// binary search touches only the starts.
struct RangeTable<T> {
    starts: Vec<T>,
    ends: Vec<T>,
    countries: Vec<[u8; 2]>,
}

impl<T: Addr> RangeTable<T> {
    fn len(&self) -> usize {
        self.starts.len()
    }

    fn get(&self, addr: T) -> Option<[u8; 2]> {
        // The last range starting at or before `addr` is the only one that can contain it.
        let i = self.starts.partition_point(|start| *start <= addr).checked_sub(1)?;
        (addr <= self.ends[i]).then_some(self.countries[i])
    }
}

/// One CSV range before validation, with the line it came from for error messages.
struct Row<T> {
    start: T,
    end: T,
    country: [u8; 2],
    line: usize,
}

/// An address as the integer the range tables are keyed by.
trait Addr: Copy + Ord {
    /// The next address, if any, for merging ranges that touch.
    fn next(self) -> Option<Self>;
    fn show(self) -> String;
}

impl Addr for u32 {
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn show(self) -> String {
        Ipv4Addr::from(self).to_string()
    }
}

impl Addr for u128 {
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn show(self) -> String {
        Ipv6Addr::from(self).to_string()
    }
}

/// Sorts, rejects overlaps (naming both lines), and merges touching ranges of the same country.
fn build_table<T: Addr>(mut rows: Vec<Row<T>>) -> Result<RangeTable<T>, String> {
    rows.sort_by_key(|r| r.start);
    let mut table = RangeTable { starts: Vec::new(), ends: Vec::new(), countries: Vec::new() };
    let mut previous: Option<&Row<T>> = None;
    for row in &rows {
        if let Some(prev) = previous {
            if row.start <= prev.end {
                let (first, second) = if prev.line < row.line { (prev, row) } else { (row, prev) };
                return Err(format!(
                    "line {}: range {}-{} overlaps the range {}-{} on line {}",
                    second.line,
                    second.start.show(),
                    second.end.show(),
                    first.start.show(),
                    first.end.show(),
                    first.line
                ));
            }
            let last = table.len() - 1;
            if prev.end.next() == Some(row.start) && table.countries[last] == row.country {
                table.ends[last] = row.end;
                previous = Some(row);
                continue;
            }
        }
        table.starts.push(row.start);
        table.ends.push(row.end);
        table.countries.push(row.country);
        previous = Some(row);
    }
    Ok(table)
}

/// Parses a CSV range file; an error names the line (the caller adds the file).
fn parse_csv(text: &str) -> Result<(RangeTable<u32>, RangeTable<u128>), String> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let fail = |why: String| format!("line {line}: {why}");
        let fields: Vec<&str> = content.split(',').map(|f| unquote(f.trim())).collect();
        let [start, end, country] = fields[..] else {
            return Err(fail(format!("expected start_ip,end_ip,country, found {} fields", fields.len())));
        };
        let start: IpAddr =
            start.parse().map_err(|_| fail(format!("start {start:?} is not an IPv4 or IPv6 address")))?;
        let end: IpAddr = end.parse().map_err(|_| fail(format!("end {end:?} is not an IPv4 or IPv6 address")))?;
        let code = normalise_code(country.as_bytes())
            .ok_or_else(|| fail(format!("country {country:?} is not an ISO 3166 alpha-2 code such as JP")))?;
        match (start, end) {
            (IpAddr::V4(s), IpAddr::V4(e)) => {
                let (start, end) = (u32::from(s), u32::from(e));
                if start > end {
                    return Err(fail(format!("range {s}-{e} is inverted (start after end)")));
                }
                v4.push(Row { start, end, country: code, line });
            }
            (IpAddr::V6(s), IpAddr::V6(e)) => {
                let (start, end) = (u128::from(s), u128::from(e));
                if start > end {
                    return Err(fail(format!("range {s}-{e} is inverted (start after end)")));
                }
                v6.push(Row { start, end, country: code, line });
            }
            _ => return Err(fail(format!("range {start}-{end} mixes IPv4 and IPv6"))),
        }
    }
    if v4.is_empty() && v6.is_empty() {
        return Err("contains no ranges (expected start_ip,end_ip,country lines)".to_string());
    }
    Ok((build_table(v4)?, build_table(v6)?))
}

fn unquote(field: &str) -> &str {
    field.strip_prefix('"').and_then(|f| f.strip_suffix('"')).unwrap_or(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_are_judged_by_the_address_they_carry() {
        // What a DNS answer may hold: the resolver for merchant endpoints filters with this.
        for internal in
            ["::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:172.16.0.1", "::ffff:100.64.0.1", "::1", "fd00::1"]
        {
            assert!(is_non_public(internal.parse().unwrap()), "{internal}");
        }
        for public in ["::ffff:8.8.8.8", "8.8.8.8", "2001:4860:4860::8888"] {
            assert!(!is_non_public(public.parse().unwrap()), "{public}");
        }
    }

    const TEST_CSV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/geoip-test.csv");

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn country(geo: &GeoIp, addr: &str) -> Option<String> {
        geo.country(ip(addr))
    }

    /// A scratch directory removed when the test ends.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("omamori-geo-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const NON_PUBLIC: &[&str] = &[
        "127.0.0.1",
        "0.0.0.0",
        "10.1.2.3",
        "192.168.0.1",
        "172.16.0.1",
        "100.64.1.1",
        "169.254.1.1",
        "::1",
        "::",
        "fd00::1",
        "fe80::1",
        "::ffff:10.1.2.3",
    ];

    #[test]
    fn geoip_is_shareable_across_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<GeoIp>();
    }

    #[test]
    fn the_test_csv_maps_documentation_blocks() {
        let geo = GeoIp::load(Some(Path::new(TEST_CSV))).unwrap();
        for (addr, want) in [
            ("192.0.2.0", "JP"),
            ("192.0.2.255", "JP"),
            ("::ffff:192.0.2.1", "JP"),
            ("198.51.100.7", "US"),
            ("203.0.113.200", "JP"),
            ("2001:db8::1", "JP"),
            ("2001:db8:1234:5678::1", "JP"),
            ("2001:db8:7fff:ffff:ffff:ffff:ffff:ffff", "JP"),
            ("2001:db8:8000::", "KR"),
            ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "KR"),
        ] {
            assert_eq!(country(&geo, addr).as_deref(), Some(want), "{addr}");
        }
        for addr in NON_PUBLIC {
            assert_eq!(country(&geo, addr), None, "{addr}");
        }
        // Public, but not covered by the configured file: the built-in data is not consulted.
        for addr in ["8.8.8.8", "153.128.0.1", "192.0.3.0", "198.51.99.255", "2001:db9::1", "2001:db7:ffff::1"] {
            assert_eq!(country(&geo, addr), None, "{addr}");
        }
    }

    #[test]
    fn built_in_data_places_public_addresses() {
        let geo = GeoIp::load(None).unwrap();
        // NTT OCN, KDDI au and NTT IPv6 space, all registered in Japan.
        for addr in ["153.128.0.1", "106.130.0.1", "2001:380::1", "::ffff:153.128.0.1"] {
            assert_eq!(country(&geo, addr).as_deref(), Some("JP"), "{addr}");
        }
        for addr in ["8.8.8.8", "2001:4860:4860::8888"] {
            assert_eq!(country(&geo, addr).as_deref(), Some("US"), "{addr}");
        }
        for addr in NON_PUBLIC.iter().chain(&["192.0.2.1", "2001:db8::1"]) {
            assert_eq!(country(&geo, addr), None, "{addr}");
        }
    }

    #[test]
    fn the_configured_file_wins_even_for_private_space() {
        let dir = Scratch::new();
        let path =
            dir.write("private.csv", "10.0.0.0,10.255.255.255,JP\nfd00::,fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff,JP\n");
        let geo = GeoIp::load(Some(&path)).unwrap();
        assert_eq!(country(&geo, "10.1.2.3").as_deref(), Some("JP"));
        assert_eq!(country(&geo, "fd00::1").as_deref(), Some("JP"));
        assert_eq!(country(&geo, "192.168.0.1"), None);
    }

    #[test]
    fn csv_tolerates_quotes_case_bom_and_zz() {
        let dir = Scratch::new();
        let text = "\u{feff}# exported\n\n  \"1.0.0.0\" , \"1.0.0.255\" , \"au\"  \r\n1.0.1.0,1.0.1.255,ZZ\r\n";
        let geo = GeoIp::load(Some(&dir.write("quoted.csv", text))).unwrap();
        assert_eq!(country(&geo, "1.0.0.9").as_deref(), Some("AU"));
        // ZZ covers the range without placing it anywhere.
        assert_eq!(country(&geo, "1.0.1.9"), None);
    }

    #[test]
    fn touching_ranges_of_one_country_are_merged() {
        let (v4, v6) = parse_csv(
            "10.0.1.0,10.0.1.255,JP\n10.0.0.0,10.0.0.255,JP\n10.0.2.0,10.0.2.255,US\n10.0.4.0,10.0.4.255,US\n",
        )
        .unwrap();
        assert_eq!(v4.len(), 3);
        assert_eq!(v6.len(), 0);
        let at = |s: &str| v4.get(u32::from(s.parse::<Ipv4Addr>().unwrap()));
        assert_eq!(at("10.0.0.0"), Some(*b"JP"));
        assert_eq!(at("10.0.1.255"), Some(*b"JP"));
        assert_eq!(at("10.0.2.0"), Some(*b"US"));
        assert_eq!(at("10.0.3.0"), None);
        assert_eq!(at("10.0.4.255"), Some(*b"US"));
        assert_eq!(at("9.255.255.255"), None);
        assert_eq!(at("10.0.5.0"), None);
        // The extremes of the address space are representable.
        let (v4, v6) =
            parse_csv("0.0.0.0,255.255.255.255,JP\n::,ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff,JP\n").unwrap();
        assert_eq!(v4.get(u32::MAX), Some(*b"JP"));
        assert_eq!(v6.get(0), Some(*b"JP"));
        assert_eq!(v6.get(u128::MAX), Some(*b"JP"));
    }

    #[test]
    fn malformed_csv_lines_are_named() {
        let dir = Scratch::new();
        for (bad, why) in [
            ("1.2.3.4,1.2.3.5", "found 2 fields"),
            ("1.2.3.4,1.2.3.5,JP,extra", "found 4 fields"),
            ("1.2.3.4 1.2.3.5 JP", "found 1 fields"),
            ("nope,1.2.3.4,JP", "start \"nope\" is not an IPv4 or IPv6 address"),
            ("1.2.3.4,1.2.3.x,JP", "end \"1.2.3.x\" is not"),
            ("1.2.3.0/24,1.2.3.255,JP", "is not an IPv4 or IPv6 address"),
            ("1.2.3.4,1.2.3.5,JPN", "country \"JPN\" is not an ISO 3166 alpha-2 code"),
            ("1.2.3.4,1.2.3.5,J1", "country \"J1\""),
            ("1.2.3.4,1.2.3.5,", "country \"\""),
            ("1.2.3.5,1.2.3.4,JP", "inverted"),
            ("2001:db8::2,2001:db8::1,JP", "inverted"),
            ("1.2.3.4,::1,JP", "mixes IPv4 and IPv6"),
        ] {
            let path = dir.write("bad.csv", format!("# header\n5.6.7.0,5.6.7.255,JP\n{bad}\n9.9.9.0,9.9.9.255,US\n"));
            let err = GeoIp::load(Some(&path)).unwrap_err().to_string();
            assert!(err.contains(&path.display().to_string()), "{bad:?}: {err}");
            assert!(err.contains("line 3:"), "{bad:?}: {err}");
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn overlapping_ranges_are_rejected() {
        let dir = Scratch::new();
        for (text, lines) in [
            ("192.0.2.0,192.0.2.255,JP\n# gap\n192.0.2.128,192.0.3.0,US\n", ("line 3:", "on line 1")),
            // Reported by line even when the later line sorts first.
            ("192.0.2.128,192.0.3.0,US\n192.0.2.0,192.0.2.128,JP\n", ("line 2:", "on line 1")),
            ("192.0.2.0,192.0.2.255,JP\n192.0.2.0,192.0.2.255,JP\n", ("line 2:", "on line 1")),
            (
                "2001:db8::,2001:db8:ffff::,JP\n10.0.0.0,10.0.0.1,JP\n2001:db8:8000::,2001:db8:8000::1,KR\n",
                ("line 3:", "on line 1"),
            ),
        ] {
            let path = dir.write("overlap.csv", text);
            let err = GeoIp::load(Some(&path)).unwrap_err().to_string();
            assert!(err.contains(&path.display().to_string()) && err.contains("overlaps"), "{err}");
            assert!(err.contains(lines.0) && err.contains(lines.1), "{text:?}: {err}");
        }
    }

    #[test]
    fn missing_or_empty_files_are_errors() {
        let dir = Scratch::new();
        let missing = dir.0.join("absent.csv");
        let err = GeoIp::load(Some(&missing)).unwrap_err();
        assert!(format!("{err:#}").contains(&missing.display().to_string()), "{err:#}");
        let empty = dir.write("empty.csv", "# nothing here\n\n");
        let err = GeoIp::load(Some(&empty)).unwrap_err().to_string();
        assert!(err.contains(&empty.display().to_string()) && err.contains("no ranges"), "{err}");
        // Text named .mmdb, and binary that is not MaxMind, are refused rather than misread.
        let fake = dir.write("fake.mmdb", "192.0.2.0,192.0.2.255,JP\n");
        let err = GeoIp::load(Some(&fake)).unwrap_err().to_string();
        assert!(err.contains(&fake.display().to_string()) && err.contains("MaxMind"), "{err}");
        let binary = dir.write("binary.dat", [0xff, 0xfe, 0x00, 0x01]);
        let err = GeoIp::load(Some(&binary)).unwrap_err().to_string();
        assert!(err.contains("neither UTF-8 CSV nor a MaxMind database"), "{err}");
    }

    #[test]
    fn country_policy() {
        let allowed = vec!["JP".to_string()];
        assert!(country_allowed(Some("JP"), &allowed, UnknownCountry::Deny));
        assert!(!country_allowed(Some("US"), &allowed, UnknownCountry::Allow));
        assert!(!country_allowed(Some("US"), &allowed, UnknownCountry::Deny));
        assert!(country_allowed(None, &allowed, UnknownCountry::Allow));
        assert!(!country_allowed(None, &allowed, UnknownCountry::Deny));
        let several = vec!["JP".to_string(), "KR".to_string()];
        assert!(country_allowed(Some("KR"), &several, UnknownCountry::Deny));
        assert!(!country_allowed(Some("CN"), &several, UnknownCountry::Deny));
    }

    /// A minimal MaxMind DB writer, enough to exercise the reader path (format:
    /// https://maxmind.github.io/MaxMind-DB/): 24-bit records, strings, unsigned integers, maps, arrays.
    mod mmdb {
        use ipnet::IpNet;

        pub enum V {
            Str(&'static str),
            U16(u16),
            U32(u32),
            U64(u64),
            Map(Vec<(&'static str, V)>),
            Array(Vec<V>),
        }

        fn uint(out: &mut Vec<u8>, ctrl: u8, extended: Option<u8>, value: u64) {
            let bytes = value.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(ctrl | (8 - skip) as u8);
            out.extend(extended);
            out.extend_from_slice(&bytes[skip..]);
        }

        fn encode(value: &V, out: &mut Vec<u8>) {
            match value {
                V::Str(s) => {
                    assert!(s.len() < 29);
                    out.push(0x40 | s.len() as u8);
                    out.extend_from_slice(s.as_bytes());
                }
                V::U16(n) => uint(out, 0xa0, None, u64::from(*n)),
                V::U32(n) => uint(out, 0xc0, None, u64::from(*n)),
                V::U64(n) => uint(out, 0x00, Some(2), *n),
                V::Map(pairs) => {
                    out.push(0xe0 | pairs.len() as u8);
                    for (key, value) in pairs {
                        encode(&V::Str(key), out);
                        encode(value, out);
                    }
                }
                V::Array(items) => {
                    out.extend([items.len() as u8, 4]);
                    for item in items {
                        encode(item, out);
                    }
                }
            }
        }

        #[derive(Clone, Copy)]
        enum Record {
            Empty,
            Node(usize),
            Data(usize),
        }

        /// A database of the given IP version; in an IPv6 database IPv4 networks live under ::/96.
        pub fn build(ip_version: u16, entries: Vec<(&str, V)>) -> Vec<u8> {
            let depth = if ip_version == 6 { 128 } else { 32 };
            let mut nodes = vec![[Record::Empty; 2]];
            let mut data = Vec::new();
            for (net, value) in entries {
                let (bits, len): (u128, u32) = match net.parse::<IpNet>().unwrap() {
                    IpNet::V4(n) if ip_version == 4 => (u32::from(n.network()).into(), n.prefix_len().into()),
                    IpNet::V4(n) => (u32::from(n.network()).into(), u32::from(n.prefix_len()) + 96),
                    IpNet::V6(n) => (u128::from(n.network()), n.prefix_len().into()),
                };
                let offset = data.len();
                encode(&value, &mut data);
                let mut node = 0;
                for i in 0..len {
                    let bit = ((bits >> (depth - 1 - i)) & 1) as usize;
                    if i == len - 1 {
                        nodes[node][bit] = Record::Data(offset);
                    } else if let Record::Node(next) = nodes[node][bit] {
                        node = next;
                    } else {
                        nodes.push([Record::Empty; 2]);
                        let next = nodes.len() - 1;
                        nodes[node][bit] = Record::Node(next);
                        node = next;
                    }
                }
            }
            let count = nodes.len();
            let mut out = Vec::new();
            for node in &nodes {
                for record in node {
                    let value = match *record {
                        Record::Empty => count,
                        Record::Node(n) => n,
                        Record::Data(offset) => count + 16 + offset,
                    };
                    out.extend_from_slice(&(value as u32).to_be_bytes()[1..]);
                }
            }
            out.extend([0u8; 16]);
            out.extend(data);
            out.extend_from_slice(b"\xab\xcd\xefMaxMind.com");
            let metadata = V::Map(vec![
                ("binary_format_major_version", V::U16(2)),
                ("binary_format_minor_version", V::U16(0)),
                ("build_epoch", V::U64(1_700_000_000)),
                ("database_type", V::Str("Omamori-Test-Country")),
                ("description", V::Map(vec![("en", V::Str("test"))])),
                ("ip_version", V::U16(ip_version)),
                ("languages", V::Array(vec![V::Str("en")])),
                ("node_count", V::U32(count as u32)),
                ("record_size", V::U16(24)),
            ]);
            encode(&metadata, &mut out);
            out
        }
    }

    fn iso(field: &'static str, code: &'static str) -> mmdb::V {
        mmdb::V::Map(vec![(field, mmdb::V::Map(vec![("iso_code", mmdb::V::Str(code))]))])
    }

    #[test]
    fn mmdb_country_with_registered_country_fallback() {
        use mmdb::V;
        let db = mmdb::build(
            6,
            vec![
                ("192.0.2.0/24", iso("country", "JP")),
                ("198.51.100.0/24", iso("registered_country", "US")),
                (
                    "203.0.113.0/24",
                    V::Map(vec![
                        ("country", V::Map(vec![("iso_code", V::Str("JP"))])),
                        ("registered_country", V::Map(vec![("iso_code", V::Str("US"))])),
                    ]),
                ),
                ("2001:db8::/32", iso("country", "kr")),
                ("2001:db9::/32", V::Map(vec![("continent", V::Map(vec![("code", V::Str("AS"))]))])),
                ("10.0.0.0/8", iso("country", "ZZ")),
            ],
        );
        let dir = Scratch::new();
        // Recognised by name, and by content under any other name.
        for name in ["country.mmdb", "country.bin"] {
            let geo = GeoIp::load(Some(&dir.write(name, &db))).unwrap();
            assert!(format!("{geo:?}").contains("Omamori-Test-Country"), "{geo:?}");
            assert_eq!(country(&geo, "192.0.2.77").as_deref(), Some("JP"));
            assert_eq!(country(&geo, "::ffff:192.0.2.77").as_deref(), Some("JP"));
            assert_eq!(country(&geo, "198.51.100.1").as_deref(), Some("US"));
            // `country` is preferred over `registered_country`.
            assert_eq!(country(&geo, "203.0.113.1").as_deref(), Some("JP"));
            assert_eq!(country(&geo, "2001:db8:1::1").as_deref(), Some("KR"));
            assert_eq!(country(&geo, "2001:db9::1"), None);
            assert_eq!(country(&geo, "10.1.2.3"), None);
            for addr in ["8.8.8.8", "192.0.3.1", "2001:dba::1", "127.0.0.1", "fe80::1"] {
                assert_eq!(country(&geo, addr), None, "{addr}");
            }
        }
    }

    #[test]
    fn an_ipv4_only_mmdb_covers_no_ipv6() {
        let db = mmdb::build(4, vec![("192.0.2.0/24", iso("country", "JP"))]);
        let dir = Scratch::new();
        let geo = GeoIp::load(Some(&dir.write("v4.mmdb", &db))).unwrap();
        assert_eq!(country(&geo, "192.0.2.1").as_deref(), Some("JP"));
        assert_eq!(country(&geo, "::ffff:192.0.2.1").as_deref(), Some("JP"));
        assert_eq!(country(&geo, "2001:db8::1"), None);
        // A truncated database is refused at load, naming the file.
        let path = dir.write("cut.mmdb", &db[..db.len() - 20]);
        let err = GeoIp::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}
